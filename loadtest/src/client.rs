//! One load connection over WebSockets, Server-Sent Events or Long Polling. It opens
//! (negotiate when a connection id is needed, the transport, the hub handshake), counts the
//! hub messages it receives and samples their latency, sends pings and (echo) invocations,
//! leaves and comes back when it churns, and reconnects when the server drops it.

use crate::codec;
use crate::stats::{Counter, Recorder};
use crate::wire::{Wire, client_frame};
use crate::worker::{Phase, Plan};
use crate::{Protocol, Transport};
use anyhow::{Context, bail};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchboard_auth::mint_client_token;
use tokio::sync::{Notify, watch};

/// Microseconds since the Unix epoch: the timestamp carried in payloads (comparable across
/// the harness's processes).
pub(crate) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// A client ping is sent this often so the server's client timeout never fires.
const CLIENT_PING: Duration = Duration::from_secs(10);
/// Every 16th message of a connection is parsed for its timestamp.
const SAMPLE_EVERY: u64 = 16;
/// A connection lost or refused tries again after this long.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether connection `index` is one of the `percent` % that leave and come back: exactly
/// that share of every 100 consecutive connections, spread out (37 is prime to 100).
pub(crate) fn is_churning(index: u64, percent: u64) -> bool {
    index * 37 % 100 < percent
}

/// The user of connection `index` when connections are users.
pub(crate) fn user_of(prefix: &str, index: u64) -> String {
    format!("{prefix}u{index}")
}

/// A node as the clients reach it.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
    /// `host:port` for the Host header.
    pub(crate) host: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let url = url.trim().trim_end_matches('/').to_owned();
        let host = url.strip_prefix("http://").context("an endpoint must be http://host:port")?.to_owned();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)?.next().context("the endpoint does not resolve")?;
        Ok(Endpoint { url, addr, host })
    }
}

/// What a worker's connections share.
pub(crate) struct Shared {
    pub(crate) plan: Plan,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) recorder: Recorder,
    phase: watch::Receiver<Phase>,
    /// First attempts that finished, either way.
    pub(crate) settled: AtomicU64,
    pub(crate) settled_changed: Notify,
    /// Connections whose first attempt succeeded, with their connection id when known.
    pub(crate) opened: Mutex<crate::worker::Opened>,
    padding: String,
}

impl Shared {
    pub(crate) fn new(plan: Plan, phase: watch::Receiver<Phase>) -> anyhow::Result<Shared> {
        let endpoints = plan.endpoints.iter().map(|e| Endpoint::parse(e)).collect::<anyhow::Result<Vec<_>>>()?;
        let seconds = plan.max_seconds as usize + 120;
        Ok(Shared {
            recorder: Recorder::new(plan.epoch_us, seconds),
            padding: "x".repeat(plan.payload),
            plan,
            endpoints,
            phase,
            settled: AtomicU64::new(0),
            settled_changed: Notify::new(),
            opened: Mutex::new(Vec::new()),
        })
    }

    fn settle(&self) {
        self.settled.fetch_add(1, Ordering::Relaxed);
        self.settled_changed.notify_one();
    }
}

/// Connection `index`'s token. Every connection presents a token of its own, as real clients
/// do (their lifetimes differ by `index` seconds), never one the server saw from another.
fn client_token(plan: &Plan, endpoint: &Endpoint, user: Option<&str>, index: u64) -> String {
    mint_for(endpoint, &plan.hub, user, &plan.access_key, Duration::from_secs(DAY + index))
}

const DAY: u64 = 24 * 3600;

/// A client token for `hub` on `endpoint`, valid for a day.
pub(crate) fn token_for(endpoint: &Endpoint, hub: &str, user: Option<&str>, access_key: &str) -> String {
    mint_for(endpoint, hub, user, access_key, Duration::from_secs(DAY))
}

fn mint_for(endpoint: &Endpoint, hub: &str, user: Option<&str>, access_key: &str, lifetime: Duration) -> String {
    let audience = format!("{}/client/?hub={hub}", endpoint.url);
    mint_client_token(&audience, user, lifetime, access_key)
}

/// Why a session ended.
enum End {
    Stop,
    Churn,
    Lost,
}

/// Runs connection `index` until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, index: u64, mut stop: watch::Receiver<bool>) {
    let plan = &shared.plan;
    let endpoint = &shared.endpoints[(index % shared.endpoints.len() as u64) as usize];
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (index % plan.sources.max(1) as u64) as u8));
    let churning = is_churning(index, plan.churn_percent);
    let user = plan.user_prefix.as_deref().map(|prefix| user_of(prefix, index));
    let recorder = &shared.recorder;
    let mut first = true;
    loop {
        recorder.add(if first { Counter::Attempts } else { Counter::Reconnects }, 1);
        let started = Instant::now();
        let opened = tokio::select! {
            opened = tokio::time::timeout(OPEN_TIMEOUT, open(&shared, endpoint, source, user.as_deref(), index)) => opened,
            _ = stop.wait_for(|s| *s) => return,
        };
        let session = match opened {
            Ok(Ok(session)) => session,
            failed if first => {
                recorder.error(|| match failed {
                    Ok(Err(e)) => format!("opening a connection: {e:#}"),
                    _ => format!("opening a connection: no answer within {} s", OPEN_TIMEOUT.as_secs()),
                });
                recorder.add(Counter::Failed, 1);
                shared.settle();
                return;
            }
            _ => {
                recorder.add(Counter::ReconnectFailures, 1);
                tokio::select! {
                    _ = tokio::time::sleep(RECONNECT_DELAY) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        if first {
            recorder.connect_time(started.elapsed().as_micros() as u64);
            recorder.add(Counter::Connected, 1);
            shared.opened.lock().unwrap_or_else(|e| e.into_inner()).push((index, session.id.clone()));
            shared.settle();
            first = false;
        }
        match serve(&shared, session, index, churning, &mut stop).await {
            End::Stop => return,
            End::Churn => {}
            End::Lost => {
                recorder.add(Counter::Dropped, 1);
                tokio::select! {
                    _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// An open connection.
pub(crate) struct Session {
    /// The WebSocket, the event stream or the poll connection.
    wire: Wire,
    /// SSE and Long Polling send with POSTs on a connection of their own.
    sender: Option<Wire>,
    /// `/client/?hub=..&id=..` for SSE and Long Polling requests.
    path: String,
    token: String,
    host: String,
    pub(crate) id: Option<String>,
}

/// How a connection is opened.
pub(crate) struct Opening<'a> {
    pub(crate) hub: &'a str,
    pub(crate) transport: Transport,
    pub(crate) protocol: Protocol,
    /// Negotiate WebSockets too, so the connection id is known.
    pub(crate) want_id: bool,
    /// The endpoint is the baseline server (plain WebSocket, no hub protocol).
    pub(crate) baseline: bool,
    /// The user a baseline socket is for (named in its upgrade's query; Switchboard reads the
    /// user from the token).
    pub(crate) user: Option<&'a str>,
}

async fn open(
    shared: &Shared,
    endpoint: &Endpoint,
    source: IpAddr,
    user: Option<&str>,
    index: u64,
) -> anyhow::Result<Session> {
    let plan = &shared.plan;
    let token = client_token(plan, endpoint, user, index);
    let opening = Opening {
        hub: &plan.hub,
        transport: plan.transport,
        protocol: plan.protocol,
        want_id: plan.report_ids,
        baseline: plan.baseline,
        user,
    };
    open_with(&opening, endpoint, Some(source), token).await
}

/// Opens a connection with a client token: negotiate (when needed), the transport, the
/// hub handshake.
pub(crate) async fn open_with(
    plan: &Opening<'_>,
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    token: String,
) -> anyhow::Result<Session> {
    let host = endpoint.host.clone();
    let base = format!("/client/?hub={}", plan.hub);
    if plan.baseline {
        let mut wire = Wire::connect(endpoint.addr, source).await?;
        let query = plan.user.map(|user| format!("?user={user}")).unwrap_or_default();
        upgrade(&mut wire, &format!("GET /{query} HTTP/1.1\r\nHost: {host}\r\n")).await?;
        return Ok(Session { wire, sender: None, path: String::new(), token, host, id: None });
    }
    let negotiated = if plan.transport != Transport::Websockets || plan.want_id {
        Some(negotiate(endpoint, source, &base, &token).await?)
    } else {
        None
    };
    let id = negotiated.as_ref().map(|(id, _)| id.clone());
    let path = match &negotiated {
        Some((_, connection_token)) => format!("{base}&id={connection_token}"),
        None => base,
    };
    let handshake = codec::handshake(plan.protocol);
    match plan.transport {
        Transport::Websockets => {
            let mut wire = Wire::connect(endpoint.addr, source).await?;
            upgrade(&mut wire, &format!("GET {path}&access_token={token} HTTP/1.1\r\nHost: {host}\r\n")).await?;
            wire.send(&client_frame(handshake)).await?;
            // Only the first frame: messages may follow it at once, and are counted later.
            if !wire.inbox.read_ws_frame(&wire.stream).await?.starts_with(b"{}\x1e") {
                bail!("handshake refused");
            }
            Ok(Session { wire, sender: None, path, token, host, id })
        }
        Transport::Sse | Transport::LongPolling => {
            let mut wire = Wire::connect(endpoint.addr, source).await?;
            let sse = plan.transport == Transport::Sse;
            let accept = if sse { "Accept: text/event-stream\r\n" } else { "" };
            wire.send(
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{accept}Authorization: Bearer {token}\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
            let head = wire.inbox.read_head(&wire.stream).await?;
            if head.status() != 200 {
                bail!("transport request answered {}", head.status());
            }
            if !sse {
                wire.inbox.read_body(&wire.stream, &head).await?;
            }
            let mut session = Session { wire, sender: None, path, token, host, id };
            session.post(endpoint.addr, source, handshake).await?;
            Ok(session)
        }
    }
}

async fn upgrade(wire: &mut Wire, request_start: &str) -> anyhow::Result<()> {
    let request = format!(
        "{request_start}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    wire.send(request.as_bytes()).await?;
    let head = wire.inbox.read_head(&wire.stream).await?;
    if head.status() != 101 {
        bail!("upgrade answered {}", head.status());
    }
    Ok(())
}

/// Negotiates; returns the connection id and the connection token.
async fn negotiate(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    base: &str,
    token: &str,
) -> anyhow::Result<(String, String)> {
    let mut wire = Wire::connect(endpoint.addr, source).await?;
    let path = base.replacen("/client/?", "/client/negotiate?", 1);
    let head = format!(
        "POST {path}&negotiateVersion=1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n",
        endpoint.host
    );
    let (status, body) = wire.request(&head, &[]).await?;
    if status != 200 {
        bail!("negotiate answered {status}");
    }
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    let field = |name: &str| answer[name].as_str().map(str::to_owned).with_context(|| format!("no {name}"));
    Ok((field("connectionId")?, field("connectionToken")?))
}

impl Session {
    /// Ends an SSE or Long Polling connection as a client's `stop()` does, with a `DELETE` on
    /// the connection's URL (a WebSocket ends with its socket).
    pub(crate) async fn delete(&self, addr: SocketAddr) -> anyhow::Result<()> {
        if self.sender.is_none() {
            return Ok(());
        }
        let mut wire = Wire::connect(addr, None).await?;
        let head = format!(
            "DELETE {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
            self.path, self.host, self.token
        );
        let (status, _) = wire.request(&head, &[]).await?;
        if !(200..300).contains(&status) {
            bail!("DELETE answered {status}");
        }
        Ok(())
    }

    /// Opens the sender connection of SSE and Long Polling with its first POST.
    async fn post(&mut self, addr: SocketAddr, source: Option<IpAddr>, bytes: &[u8]) -> anyhow::Result<()> {
        let mut sender = Wire::connect(addr, source).await?;
        post(&mut sender, &self.path, &self.host, &self.token, bytes).await?;
        self.sender = Some(sender);
        Ok(())
    }
}

async fn post(sender: &mut Wire, path: &str, host: &str, token: &str, body: &[u8]) -> anyhow::Result<()> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (status, _) = sender.request(&head, body).await?;
    if status != 200 {
        bail!("send answered {status}");
    }
    Ok(())
}

/// Runs an open connection until it stops, churns or is lost.
async fn serve(
    shared: &Shared,
    mut session: Session,
    index: u64,
    churning: bool,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let mut phase = shared.phase.clone();
    let mut churn_phase = shared.phase.clone();
    let churn = async {
        if !churning || churn_phase.wait_for(|p| p.churn).await.is_err() {
            return std::future::pending().await;
        }
        // Spread the leaves of different connections over the interval.
        let spread = 0.5 + (index as f64 * 0.618_033_988_7).fract();
        tokio::time::sleep(Duration::from_millis(shared.plan.churn_interval_ms).mul_f64(spread)).await;
    };
    let long_polling = shared.plan.transport == Transport::LongPolling && !shared.plan.baseline;
    let (receiving, sending) = split(&mut session, long_polling);
    tokio::select! {
        _ = stop.wait_for(|s| *s) => End::Stop,
        _ = churn => End::Churn,
        _ = receive(shared, receiving, index, churning) => End::Lost,
        _ = send(shared, sending, index, &mut phase) => End::Lost,
    }
}

/// The receiving half of a session borrows the socket and its inbox; the sending half the
/// socket (WebSockets) or the sender connection (SSE, Long Polling).
pub(crate) struct Receiving<'a> {
    inbox: &'a mut crate::wire::Inbox,
    stream: &'a tokio::net::TcpStream,
    poll: Option<String>,
}

pub(crate) enum Sending<'a> {
    Socket(&'a tokio::net::TcpStream),
    Posts { sender: &'a mut Wire, path: &'a str, host: &'a str, token: &'a str },
}

pub(crate) fn split(session: &mut Session, long_polling: bool) -> (Receiving<'_>, Sending<'_>) {
    let Session { wire, sender, path, token, host, .. } = session;
    let poll =
        long_polling.then(|| format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"));
    let stream = &wire.stream;
    let sending = match sender {
        None => Sending::Socket(stream),
        Some(sender) => Sending::Posts { sender, path, host, token },
    };
    (Receiving { inbox: &mut wire.inbox, stream, poll }, sending)
}

async fn receive(shared: &Shared, r: Receiving<'_>, index: u64, churning: bool) -> anyhow::Result<()> {
    let protocol = shared.plan.protocol;
    let recorder = &shared.recorder;
    let received = if churning { Counter::ReceivedChurning } else { Counter::Received };
    // Connections start at different points of the sampling cycle, so even when each gets
    // only a few messages (a step of an echo run), some of them sample.
    let mut sampler = index % SAMPLE_EVERY;
    let mut count = |payload: &[u8]| {
        let now = now_us();
        let mut messages = 0;
        codec::for_each_message(protocol, payload, |record| {
            messages += 1;
            sampler += 1;
            if sampler.is_multiple_of(SAMPLE_EVERY)
                && let Some(sent) = codec::timestamp(protocol, record)
            {
                recorder.latency(now, now.saturating_sub(sent));
            }
        });
        recorder.add(Counter::BytesReceived, payload.len() as u64);
        if messages > 0 {
            recorder.add(received, messages);
            recorder.delivered(now, messages);
        }
    };
    read_messages(shared.plan.transport, shared.plan.baseline, r, &mut count).await
}

/// Reads a session's transport (polls for Long Polling) until it fails, calling `each` with
/// every payload: a WebSocket frame, an SSE event or a poll's body.
pub(crate) async fn read_messages(
    transport: Transport,
    baseline: bool,
    r: Receiving<'_>,
    each: &mut impl FnMut(&[u8]),
) -> anyhow::Result<()> {
    let Receiving { inbox, stream, poll } = r;
    match (transport, poll) {
        (_, Some(poll)) => loop {
            crate::wire::write_all(stream, poll.as_bytes()).await?;
            let head = inbox.read_head(stream).await?;
            if head.status() != 200 {
                bail!("poll answered {}", head.status());
            }
            each(&inbox.read_body(stream, &head).await?);
        },
        (Transport::Sse, None) if !baseline => {
            let mut event = Vec::new();
            loop {
                inbox.read_sse(stream, &mut event, each).await?;
            }
        }
        _ => loop {
            inbox.read_ws(stream, each).await?;
        },
    }
}

/// Pings now and then and, while the phase asks for it, invokes `echo` at the phase's rate.
async fn send(
    shared: &Shared,
    mut s: Sending<'_>,
    index: u64,
    phase: &mut watch::Receiver<Phase>,
) -> anyhow::Result<()> {
    let plan = &shared.plan;
    let ping = codec::ping(plan.protocol);
    let mut next_ping = tokio::time::Instant::now() + CLIENT_PING;
    let mut next_call: Option<tokio::time::Instant> = None;
    let mut invocation_id = 0u64;
    loop {
        let rate = phase.borrow_and_update().echo_rate;
        if rate > 0.0 && next_call.is_none() {
            // Spread the calls of different connections over one period.
            let period = Duration::from_secs_f64(1.0 / rate);
            next_call = Some(tokio::time::Instant::now() + period.mul_f64((index as f64 * 0.618_033_988_7).fract()));
        }
        let call_at = next_call.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(next_ping) => {
                if plan.transport != Transport::LongPolling || plan.baseline {
                    s.send(ping).await?;
                }
                next_ping += CLIENT_PING;
            }
            _ = tokio::time::sleep_until(call_at), if rate > 0.0 => {
                // Counted before sending, and only while the phase still asks for calls, so a
                // snapshot taken after the phase ended counts every call that was made.
                if phase.borrow().echo_rate > 0.0 {
                    invocation_id += 1;
                    // Stamped with the time the call was due, so a late call counts its wait.
                    let late = tokio::time::Instant::now().saturating_duration_since(call_at);
                    let due_us = now_us().saturating_sub(late.as_micros() as u64);
                    let message = codec::invocation(plan.protocol, Some(invocation_id), "echo", due_us, &shared.padding);
                    shared.recorder.add(Counter::Invocations, 1);
                    shared.recorder.add(Counter::BytesSent, message.len() as u64);
                    s.send(&message).await?;
                }
                let now = tokio::time::Instant::now();
                // Behind by more than a second (a slow server): drop the backlog, keep the rate.
                next_call = Some((call_at + Duration::from_secs_f64(1.0 / rate)).max(now - Duration::from_secs(1)));
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
                next_call = None;
            }
        }
    }
}

impl Sending<'_> {
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Sending::Socket(stream) => crate::wire::write_all(stream, &client_frame(bytes)).await,
            Sending::Posts { sender, path, host, token } => post(sender, path, host, token, bytes).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churning_connections_are_the_given_percent() {
        assert_eq!((0..1000).filter(|i| is_churning(*i, 10)).count(), 100);
        assert_eq!((0..1000).filter(|i| is_churning(*i, 0)).count(), 0);
        assert_eq!((0..1000).filter(|i| is_churning(*i, 100)).count(), 1000);
        // Spread out: a small run has some, not a block of them.
        assert_eq!((0..20).filter(|i| is_churning(*i, 10)).count(), 3);
    }
}
