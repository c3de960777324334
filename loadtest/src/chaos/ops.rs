//! The REST operations of a chaos run, each recorded with when it was made, when it was
//! answered and how: what the checker judges deliveries against.

use super::check::{GroupChange, Member, Outcome, Send, SendTarget};
use crate::client::Endpoint;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard_auth::mint_server_token;

/// A REST call that takes longer has an unknown outcome.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The harness's one clock: microseconds since the run began (monotonic, this process only).
#[derive(Clone, Copy)]
pub(crate) struct Clock(Instant);

impl Clock {
    pub(crate) fn start() -> Clock {
        Clock(Instant::now())
    }

    pub(crate) fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// Makes REST calls to the cluster's nodes and records each one.
pub(crate) struct Ops {
    pub(crate) clock: Clock,
    endpoints: Vec<Endpoint>,
    key: String,
    hub: String,
    next_message: AtomicU64,
    pub(crate) sends: Mutex<Vec<Send>>,
    pub(crate) groups: Mutex<Vec<GroupChange>>,
}

impl Ops {
    pub(crate) fn new(clock: Clock, endpoints: Vec<Endpoint>, key: &str, hub: &str) -> Ops {
        Ops {
            clock,
            endpoints,
            key: key.to_owned(),
            hub: hub.to_owned(),
            next_message: AtomicU64::new(1),
            sends: Mutex::default(),
            groups: Mutex::default(),
        }
    }

    pub(crate) fn nodes(&self) -> usize {
        self.endpoints.len()
    }

    /// Sends a new message to `target` through node `node`; returns its number and outcome.
    pub(crate) async fn send(&self, node: usize, target: SendTarget) -> (u64, Outcome) {
        let message = self.next_message.fetch_add(1, Ordering::Relaxed);
        let hub = &self.hub;
        let path = match &target {
            SendTarget::All => format!("/api/hubs/{hub}/:send"),
            SendTarget::User(user) => format!("/api/hubs/{hub}/users/{user}/:send"),
            SendTarget::Group(group) => format!("/api/hubs/{hub}/groups/{group}/:send"),
            SendTarget::Connection(id) => format!("/api/hubs/{hub}/connections/{id}/:send"),
        };
        let body = crate::codec::rest_body(message, "");
        let invoked_us = self.clock.now_us();
        let outcome = self.call(node, "POST", &path, "", body.as_bytes()).await;
        let completed_us = self.clock.now_us();
        let send = Send { message, via: node, target, excluded: Vec::new(), invoked_us, completed_us, outcome };
        lock(&self.sends).push(send);
        (message, outcome)
    }

    /// Adds `member` to `group` (`join`) or removes it, through node `node`; a user joins
    /// with a TTL when one is given.
    pub(crate) async fn change(
        &self,
        node: usize,
        member: Member,
        group: &str,
        join: bool,
        ttl: Option<u64>,
    ) -> Outcome {
        let hub = &self.hub;
        let path = match &member {
            Member::Connection(id) => format!("/api/hubs/{hub}/groups/{group}/connections/{id}"),
            Member::User(user) => format!("/api/hubs/{hub}/users/{user}/groups/{group}"),
        };
        let query = ttl.filter(|_| join).map(|ttl| format!("&ttl={ttl}")).unwrap_or_default();
        let method = if join { "PUT" } else { "DELETE" };
        let invoked_us = self.clock.now_us();
        let outcome = self.call(node, method, &path, &query, &[]).await;
        let completed_us = self.clock.now_us();
        let change = GroupChange { member, group: group.to_owned(), join, invoked_us, completed_us, outcome };
        lock(&self.groups).push(change);
        outcome
    }

    /// One request on a connection of its own: refused before it was sent (the node is down)
    /// means not done; no answer in time means unknown.
    async fn call(&self, node: usize, method: &str, path: &str, query: &str, body: &[u8]) -> Outcome {
        let endpoint = &self.endpoints[node];
        let token = mint_server_token(&format!("{}{path}", endpoint.url), Duration::from_secs(600), &self.key);
        let head = format!(
            "{method} {path}?api-version=2022-06-01{query} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            endpoint.host,
            body.len()
        );
        let Ok(Ok(mut wire)) =
            tokio::time::timeout(CALL_TIMEOUT, crate::wire::Wire::connect(endpoint.addr, None)).await
        else {
            return Outcome::Refused;
        };
        match tokio::time::timeout(CALL_TIMEOUT, wire.request(&head, body)).await {
            Ok(Ok((status, _))) if (200..300).contains(&status) => Outcome::Ok,
            Ok(Ok((status, _))) if (400..500).contains(&status) => Outcome::Refused,
            _ => Outcome::Unknown,
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
