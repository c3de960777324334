//! REST traffic: sends paced over several keep-alive connections spread round-robin over
//! the nodes, and the membership calls that build groups. Each request carries the send
//! time as the first argument, which is what end-to-end latency is measured from.

use crate::client::{Endpoint, now_us};
use crate::codec;
use crate::stats::Hist;
use crate::wire::Wire;
use crate::{Protocol, codec::rest_body};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard_auth::mint_server_token;
use tokio::sync::Semaphore;

/// One REST target and how many deliveries a call to it should make.
pub(crate) struct Route {
    pub(crate) path: String,
    /// The `Authorization` header line, or empty (baseline).
    auth: String,
    pub(crate) expected: u64,
}

/// What a send request carries.
#[derive(Clone)]
pub(crate) enum Body {
    /// None: membership calls.
    Empty,
    /// A REST payload `{"target":"m","arguments":[timestamp, padding]}`.
    Rest { padding: String },
    /// For the baseline server: the framed hub message itself, forwarded verbatim.
    Baseline { protocol: Protocol, padding: String },
}

/// A batch of requests: message `i` goes to `routes[sequence[i % sequence.len()]]`.
pub(crate) struct Load {
    pub(crate) method: &'static str,
    pub(crate) routes: Vec<Route>,
    pub(crate) sequence: Vec<usize>,
    pub(crate) body: Body,
}

impl Load {
    pub(crate) fn new(method: &'static str, routes: Vec<Route>, body: Body) -> Load {
        let sequence = (0..routes.len()).collect();
        Load { method, routes, sequence, body }
    }

    fn route(&self, message: u64) -> &Route {
        &self.routes[self.sequence[(message % self.sequence.len() as u64) as usize]]
    }

    fn body(&self, timestamp_us: u64) -> Vec<u8> {
        match &self.body {
            Body::Empty => Vec::new(),
            Body::Rest { padding } => rest_body(timestamp_us, padding).into_bytes(),
            Body::Baseline { protocol, padding } => codec::invocation(*protocol, None, "m", timestamp_us, padding),
        }
    }
}

/// What a batch did.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) sent: u64,
    /// Answered 2xx (202 for sends).
    pub(crate) accepted: u64,
    /// Answered with another status.
    pub(crate) rejected: u64,
    /// Lost in transport (connection refused or closed, timeout).
    pub(crate) errors: u64,
    /// Deliveries the accepted requests should make.
    pub(crate) expected: u64,
    pub(crate) bytes_sent: u64,
    /// Time from writing a request to reading its answer.
    pub(crate) latency: Hist,
    pub(crate) seconds: f64,
    /// The time limit ended the batch early.
    pub(crate) cut_short: bool,
    /// The first call that failed (its status, or why it got none).
    pub(crate) first_error: Option<String>,
}

impl Outcome {
    /// Adds what another batch (or a connection of this batch) did; `seconds` is left alone.
    pub(crate) fn merge(&mut self, other: &Outcome) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.errors += other.errors;
        self.expected += other.expected;
        self.bytes_sent += other.bytes_sent;
        self.latency.merge(&other.latency);
        self.cut_short |= other.cut_short;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// The REST side of a run.
pub(crate) struct Rest {
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) concurrency: usize,
    /// None for the baseline, which needs no tokens.
    pub(crate) access_key: Option<String>,
    /// Requests made so far (for the progress display).
    pub(crate) sent: Arc<AtomicU64>,
}

impl Rest {
    /// A route to `path` (a query, if any, is not part of the token's audience).
    pub(crate) fn route(&self, path: String, expected: u64) -> Route {
        let auth = match &self.access_key {
            Some(key) => {
                let audience = format!("{}{}", self.endpoints[0].url, path.split('?').next().unwrap_or_default());
                format!(
                    "Authorization: Bearer {}\r\n",
                    mint_server_token(&audience, Duration::from_secs(24 * 3600), key)
                )
            }
            None => String::new(),
        };
        Route { path, auth, expected }
    }

    /// Makes requests `first..first + count` of `load` at `rate` per second (0: as fast as
    /// the connections go), over `concurrency` connections; stops at `deadline`.
    ///
    /// A paced request carries the time it was due, not the time it went out: when the
    /// server answers slowly and the requests fall behind, that wait counts in the latency
    /// (no coordinated omission). The next request goes to whichever connection is free.
    /// The connections are opened before the run's clock starts, as an application's
    /// connection pool would be.
    pub(crate) async fn run(&self, load: Arc<Load>, first: u64, count: u64, rate: f64, deadline: Instant) -> Outcome {
        let connections = self.concurrency.max(self.endpoints.len()).max(1) as u64;
        let used = connections.min(count.max(1));
        let endpoints: Vec<Endpoint> =
            (0..used).map(|k| self.endpoints[(k % self.endpoints.len() as u64) as usize].clone()).collect();
        // One that fails to open is opened again by its first request, and that counts.
        let mut wires = Vec::with_capacity(endpoints.len());
        for endpoint in &endpoints {
            let opened = tokio::time::timeout_at(deadline.into(), Wire::connect(endpoint.addr, None)).await;
            wires.push(opened.ok().and_then(Result::ok));
        }
        let started = Instant::now();
        let started_us = now_us();
        let permits = (rate > 0.0).then(|| pace(started, rate, count, connections, deadline));
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (endpoint, mut wire) in endpoints.into_iter().zip(wires) {
            let load = load.clone();
            let sent = self.sent.clone();
            let next = next.clone();
            let permits = permits.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Outcome::default();
                loop {
                    if let Some(permits) = &permits {
                        match permits.acquire().await {
                            Ok(permit) => permit.forget(),
                            Err(_) => {
                                out.cut_short = true;
                                break;
                            }
                        }
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    if Instant::now() >= deadline {
                        out.cut_short = true;
                        break;
                    }
                    let timestamp = if rate > 0.0 { started_us + due(i, rate).as_micros() as u64 } else { now_us() };
                    call(&endpoint, &load, first + i, timestamp, &mut wire, &mut out, deadline).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                out
            }));
        }
        let mut outcome = Outcome::default();
        for task in tasks {
            if let Ok(out) = task.await {
                outcome.merge(&out);
            }
        }
        outcome.seconds = started.elapsed().as_secs_f64();
        outcome
    }
}

/// When request `i` of a run at `rate` per second is due, from the run's start.
fn due(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Lets paced requests go at their due times, from a thread of its own: a tokio timer
/// fires on the next millisecond tick or later, and that lateness (0.5 ms and more on
/// average) would count in every paced request's latency. Returns one permit per request
/// that is due, which the requests take in order; at `deadline` the permits close. The
/// thread ends with the run: the run's connections end only once it has released every
/// request or closed the permits.
fn pace(started: Instant, rate: f64, count: u64, connections: u64, deadline: Instant) -> Arc<Semaphore> {
    /// The thread wakes at most this often, so a high rate costs it a bounded number of
    /// wake-ups; a request leaves at most this long after it was due.
    const TICK: Duration = Duration::from_micros(100);
    let permits = Arc::new(Semaphore::new(0));
    let released_to = permits.clone();
    std::thread::spawn(move || {
        let mut released = 0;
        while released < count {
            let now = Instant::now();
            if now >= deadline {
                released_to.close();
                return;
            }
            let wake = (started + due(released, rate)).max(now + TICK).min(deadline);
            std::thread::sleep(wake.saturating_duration_since(now));
            let due_now = ((started.elapsed().as_secs_f64() * rate).floor() as u64 + 1).min(count);
            if due_now > released {
                released_to.add_permits((due_now - released) as usize);
                released = due_now;
            }
        }
        // Every connection takes one more and finds nothing left to send.
        released_to.add_permits(connections as usize);
    });
    permits
}

/// One request on the task's keep-alive connection (opened again after a failure).
async fn call(
    endpoint: &Endpoint,
    load: &Load,
    message: u64,
    timestamp_us: u64,
    wire: &mut Option<Wire>,
    out: &mut Outcome,
    deadline: Instant,
) {
    out.sent += 1;
    if wire.is_none() {
        match Wire::connect(endpoint.addr, None).await {
            Ok(w) => *wire = Some(w),
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("REST: cannot connect to {}: {e:#}", endpoint.host));
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
        }
    }
    let Some(w) = wire.as_mut() else { return };
    let route = load.route(message);
    let body = load.body(timestamp_us);
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        load.method,
        route.path,
        endpoint.host,
        route.auth,
        body.len()
    );
    out.bytes_sent += (head.len() + body.len()) as u64;
    let started = Instant::now();
    let limit = deadline.saturating_duration_since(started).max(Duration::from_secs(1));
    match tokio::time::timeout(limit, w.request(&head, &body)).await {
        Ok(Ok((status, _))) => {
            out.latency.record(started.elapsed().as_micros() as u64);
            if (200..300).contains(&status) {
                out.accepted += 1;
                out.expected += route.expected;
            } else {
                out.rejected += 1;
                out.first_error.get_or_insert_with(|| format!("REST {} {} answered {status}", load.method, route.path));
            }
        }
        failed => {
            out.errors += 1;
            out.first_error.get_or_insert_with(|| match failed {
                Ok(Err(e)) => format!("REST {} {}: {e:#}", load.method, route.path),
                _ => format!("REST {} {}: no answer in time", load.method, route.path),
            });
            *wire = None;
        }
    }
}
