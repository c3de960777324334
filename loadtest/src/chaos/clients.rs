//! The clients of a chaos run: each connects over its transport and protocol, records every
//! message it receives, leaves after a while and comes back, and reconnects (through another
//! node) when its connection is lost.
//!
//! Every client also invokes `echo` now and then; the cluster's upstream (the harness's own)
//! answers each with a Completion.
//!
//! A client that leaves first sends itself a marker message through REST and waits for it:
//! by G4 every send answered before the marker was made has arrived by then, so the life
//! counts as closed from the marker's start and nothing in flight is mistaken for lost. It
//! also waits for the answers to its invocations.

use super::check::{Invocation, Outcome, SendTarget};
use super::ops::{Ops, lock};
use super::rng::Rng;
use crate::client::{self, Endpoint, Opening};
use crate::{Protocol, Transport, codec};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The transports and protocols the clients cycle through (SSE carries text only).
const KINDS: [(Transport, Protocol); 5] = [
    (Transport::Websockets, Protocol::Json),
    (Transport::Websockets, Protocol::Messagepack),
    (Transport::Sse, Protocol::Json),
    (Transport::LongPolling, Protocol::Json),
    (Transport::LongPolling, Protocol::Messagepack),
];
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leaving client waits for its marker and its answers (the upstream timeout is
/// 20 s: an invocation it did not answer still gets its Completion by then).
const MARKER_TIMEOUT: Duration = Duration::from_secs(25);
const PING_EVERY: Duration = Duration::from_secs(10);
/// A client invokes `echo` this often.
const INVOKE_EVERY: Duration = Duration::from_millis(1500);

/// One connection's life as the client saw it.
#[derive(Clone, Debug)]
pub(crate) struct LifeRecord {
    pub(crate) id: String,
    pub(crate) user: String,
    pub(crate) node: usize,
    pub(crate) transport: Transport,
    pub(crate) opened_us: u64,
    /// When it was lost (as noticed) or left (its marker's start); `None` while open.
    pub(crate) closed_us: Option<u64>,
    /// Its client left by choice once its marker and every answer had arrived.
    pub(crate) left: bool,
}

#[derive(Default)]
pub(crate) struct Recording {
    pub(crate) lives: Vec<LifeRecord>,
    /// Connection id → the messages it received, in order.
    pub(crate) received: HashMap<String, Vec<u64>>,
    pub(crate) invocations: Vec<Invocation>,
    /// Connection id → the invocation ids of the completions it received.
    pub(crate) completions: HashMap<String, Vec<u64>>,
}

/// What every client shares.
pub(crate) struct Clients {
    pub(crate) recording: Mutex<Recording>,
    ops: Arc<Ops>,
    endpoints: Vec<Endpoint>,
    hub: String,
    key: String,
    users: u64,
    /// Seconds a life lasts before the client leaves (spread over 1x..2x).
    lifetime: f64,
    next_invocation: AtomicU64,
}

impl Clients {
    pub(crate) fn new(ops: Arc<Ops>, endpoints: Vec<Endpoint>, hub: &str, key: &str, users: u64) -> Clients {
        Clients {
            recording: Mutex::default(),
            ops,
            endpoints,
            hub: hub.to_owned(),
            key: key.to_owned(),
            users: users.max(1),
            lifetime: 8.0,
            next_invocation: AtomicU64::new(1),
        }
    }

    /// The user of client `index`.
    pub(crate) fn user(&self, index: u64) -> String {
        format!("u{}", index % self.users)
    }

    /// Connections open now: (id, user).
    pub(crate) fn open_now(&self) -> Vec<(String, String)> {
        let recording = lock(&self.recording);
        recording.lives.iter().filter(|l| l.closed_us.is_none()).map(|l| (l.id.clone(), l.user.clone())).collect()
    }

    /// Runs client `index` until `stop`, then leaves with a marker.
    pub(crate) async fn run(self: Arc<Self>, index: u64, seed: u64, mut stop: watch::Receiver<bool>) {
        let (transport, protocol) = KINDS[(index % KINDS.len() as u64) as usize];
        let mut rng = Rng::new(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut node = (index % self.endpoints.len() as u64) as usize;
        while !*stop.borrow() {
            let endpoint = &self.endpoints[node];
            let token = client::token_for(endpoint, &self.hub, Some(&self.user(index)), &self.key);
            let opening = Opening { hub: &self.hub, transport, protocol, want_id: true, baseline: false, user: None };
            let opened = tokio::select! {
                opened = tokio::time::timeout(OPEN_TIMEOUT, client::open_with(&opening, endpoint, None, token)) => opened,
                _ = stop.wait_for(|s| *s) => return,
            };
            if let Ok(Ok(session)) = opened {
                let lifetime = Duration::from_secs_f64(self.lifetime * (1.0 + rng.unit()));
                self.live(session, index, node, transport, protocol, lifetime, &mut stop).await;
            }
            node = rng.below(self.endpoints.len() as u64) as usize;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One life: records what arrives until the connection is lost, or until `lifetime` is
    /// over or the run stops, when the client leaves.
    #[allow(clippy::too_many_arguments)]
    async fn live(
        &self,
        mut session: client::Session,
        index: u64,
        node: usize,
        transport: Transport,
        protocol: Protocol,
        lifetime: Duration,
        stop: &mut watch::Receiver<bool>,
    ) {
        let Some(id) = session.id.clone() else { return };
        let clock = self.ops.clock;
        // WebSockets open once the handshake answered; the others when its answer arrives.
        let mut life: Option<usize> = None;
        let start = |recording: &mut Recording| {
            let user = self.user(index);
            let opened_us = clock.now_us();
            let life = LifeRecord { id: id.clone(), user, node, transport, opened_us, closed_us: None, left: false };
            recording.lives.push(life);
            recording.received.entry(id.clone()).or_default();
            recording.lives.len() - 1
        };
        if transport == Transport::Websockets {
            life = Some(start(&mut lock(&self.recording)));
        }
        let (arrived, mut arrivals) = watch::channel(0u64);
        let mut on_payload = |payload: &[u8]| {
            let mut recording = lock(&self.recording);
            let mut payload = payload;
            if life.is_none() {
                let Some(rest) = payload.strip_prefix(b"{}\x1e") else { return };
                life = Some(start(&mut recording));
                payload = rest;
            }
            let Recording { received, completions, .. } = &mut *recording;
            let (received, completions) =
                (received.entry(id.clone()).or_default(), completions.entry(id.clone()).or_default());
            codec::for_each_message(protocol, payload, |record| {
                if let Some(invocation) = codec::completion_id(protocol, record) {
                    completions.push(invocation);
                } else if let Some(message) = codec::timestamp(protocol, record) {
                    received.push(message);
                }
            });
            drop(recording);
            arrived.send_modify(|n| *n += 1);
        };
        let long_polling = transport == Transport::LongPolling;
        let (receiving, mut sending) = client::split(&mut session, long_polling);
        let quiet = AtomicBool::new(false);
        // Pings (Long Polling's polls keep it alive) and `echo` invocations until leaving.
        let calling = async {
            let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
            let mut invoke = tokio::time::interval_at(tokio::time::Instant::now() + INVOKE_EVERY, INVOKE_EVERY);
            loop {
                let message = tokio::select! {
                    _ = ping.tick(), if !long_polling => codec::ping(protocol).to_vec(),
                    _ = invoke.tick() => {
                        if quiet.load(Ordering::SeqCst) {
                            continue;
                        }
                        let number = self.next_invocation.fetch_add(1, Ordering::Relaxed);
                        let invoked_us = clock.now_us();
                        let invocation = Invocation { connection: id.clone(), id: number, invoked_us };
                        lock(&self.recording).invocations.push(invocation);
                        codec::invocation(protocol, Some(number), "echo", number, "")
                    }
                };
                if sending.send(&message).await.is_err() {
                    return;
                }
            }
        };
        let leaving = async {
            tokio::select! {
                _ = tokio::time::sleep(lifetime) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            quiet.store(true, Ordering::SeqCst);
            let marker_us = clock.now_us();
            let (marker, outcome) = self.ops.send(node, SendTarget::Connection(id.clone())).await;
            let settled = |_: &u64| {
                let recording = lock(&self.recording);
                let arrived = recording.received.get(&id).is_some_and(|r| r.contains(&marker));
                let answered = recording.completions.get(&id).map(Vec::as_slice).unwrap_or_default();
                let unanswered = recording.invocations.iter().any(|i| i.connection == id && !answered.contains(&i.id));
                (arrived || outcome != Outcome::Ok) && !unanswered
            };
            let settled = tokio::time::timeout(MARKER_TIMEOUT, arrivals.wait_for(settled)).await.is_ok();
            (marker_us, settled)
        };
        let (closed_us, left, settled) = tokio::select! {
            _ = client::read_messages(transport, false, receiving, &mut on_payload) => (clock.now_us(), false, false),
            _ = calling => (clock.now_us(), false, false),
            (marker_us, settled) = leaving => (marker_us, true, settled),
        };
        if left {
            let _ = tokio::time::timeout(OPEN_TIMEOUT, session.delete(self.endpoints[node].addr)).await;
        }
        if let Some(life) = life {
            let mut recording = lock(&self.recording);
            recording.lives[life].closed_us = Some(closed_us);
            recording.lives[life].left = left && settled;
        }
    }
}
