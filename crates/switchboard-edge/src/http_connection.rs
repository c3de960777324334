//! A connection carried by plain HTTP requests (Server-Sent Events or Long Polling) instead of
//! one socket: client bytes arrive in POST bodies, server bytes leave through the SSE stream or
//! the pending poll. The same sans-io [`Session`] and hub [`Connection`] serve all transports.

use crate::rate::{MessageRate, RATE_EXCEEDED};
use crate::session::{Output, Session};
use crate::upstream_link;
use crate::{EdgeState, outbox_ready};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use switchboard_hub::{ConnectFailure, Connection, ConnectionInfo, Disconnect, Hub, Transport};
use switchboard_protocol::{Protocol, handshake};
use switchboard_upstream::UpstreamQueue;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Which HTTP transport carries the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpTransport {
    ServerSentEvents,
    LongPolling,
}

/// What a wait for server bytes produced.
#[derive(Debug)]
pub(crate) enum Payload {
    /// Whole hub messages to deliver.
    Data(Vec<u8>),
    /// Nothing arrived within the wait.
    Idle,
    /// The connection has ended.
    Ended,
    /// A newer poll took over (Long Polling).
    Displaced,
}

struct State {
    session: Session,
    conn: Option<Arc<Connection>>,
    upstream: Option<UpstreamQueue>,
    info: Option<ConnectionInfo>,
    /// Bytes the session itself answered (handshake response, errors, Close), sent before the
    /// outbox's frames.
    replies: Vec<u8>,
    ended: bool,
    /// The handshake answer waits until the node's new interest in the user is applied
    /// everywhere (see [`HttpConnection::receive`]).
    settling: bool,
    poll_generation: u64,
    polling: bool,
    last_poll_end: Instant,
    /// The cap on messages per second, when one is set.
    rate: Option<Box<MessageRate>>,
}

/// See the module docs.
pub(crate) struct HttpConnection {
    pub(crate) id: Arc<str>,
    pub(crate) transport: HttpTransport,
    hub: Arc<Hub>,
    user_id: Option<String>,
    token_expiry: u64,
    state: Mutex<State>,
    /// Wakes whoever waits for server bytes: new replies, the handshake, the end, displacement.
    changed: Notify,
}

impl HttpConnection {
    pub(crate) fn new(
        id: Arc<str>,
        transport: HttpTransport,
        hub: Arc<Hub>,
        user_id: Option<String>,
        info: ConnectionInfo,
        token_expiry: u64,
        config: &crate::EdgeConfig,
    ) -> Self {
        let binary_allowed = transport == HttpTransport::LongPolling;
        Self {
            id,
            transport,
            hub,
            user_id,
            token_expiry,
            state: Mutex::new(State {
                session: Session::new(config.max_message_size, binary_allowed, false),
                conn: None,
                upstream: None,
                info: Some(info),
                replies: Vec::new(),
                ended: false,
                settling: false,
                poll_generation: 0,
                polling: false,
                last_poll_end: Instant::now(),
                rate: MessageRate::new(config.max_messages_per_second),
            }),
            changed: Notify::new(),
        }
    }

    /// Handles a POST body from the client. When the handshake made the node interested in the
    /// client's user, returns what to await (then call [`HttpConnection::settled`]) before the
    /// handshake answer may leave, so sends from any node reach the client once it is connected.
    pub(crate) fn receive(&self, state: &EdgeState, body: &[u8]) -> Option<switchboard_hub::Settled> {
        let mut outputs = Vec::new();
        let mut guard = self.state.lock();
        if guard.ended {
            return None;
        }
        let mut settle = None;
        state.registry.stats().received(body.len());
        guard.session.feed(body, &mut outputs);
        let mut end = None;
        for output in outputs {
            let protocol = guard.session.protocol();
            match output {
                Output::Opened(protocol) => {
                    let info = guard.info.take().unwrap_or_default();
                    let transport = match self.transport {
                        HttpTransport::ServerSentEvents => Transport::ServerSentEvents,
                        HttpTransport::LongPolling => Transport::LongPolling,
                    };
                    let conn = Connection::new(self.id.clone(), self.user_id.as_deref(), protocol, info);
                    let conn = Arc::new(conn.over(transport));
                    // Held until every interest change reported so far is applied, also when
                    // this connection reported none: its user's first connection here may
                    // have, and still be on its way.
                    self.hub.add_connection(conn.clone());
                    guard.settling = true;
                    settle = Some(state.registry.interest_settled());
                    tracing::debug!(connection_id = %self.id, transport = ?self.transport, "connected");
                    guard.upstream = upstream_link::open(state, self.hub.name(), &conn);
                    guard.conn = Some(conn);
                    guard.replies.extend_from_slice(handshake::RESPONSE_OK);
                }
                Output::Acked(_) => {}
                Output::Completion { invocation_id, frame } => {
                    if let Some(conn) = &guard.conn {
                        conn.complete_result(&invocation_id, Some(frame.into()));
                    }
                }
                Output::Reply(bytes) => guard.replies.extend_from_slice(&bytes),
                Output::Cancel { invocation_id, body } => {
                    upstream_link::cancel(guard.upstream.as_ref(), guard.conn.as_deref(), &invocation_id, body);
                }
                Output::Invocation { invocation_id, target, body, streaming } => {
                    state.registry.stats().messages_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::trace_message_in(state, self.hub.name(), &self.id, &target, body.len());
                    let Some(protocol) = protocol else { continue };
                    if end.is_some() {
                        continue;
                    }
                    if guard.rate.as_mut().is_some_and(|rate| !rate.allow(Instant::now())) {
                        state.registry.stats().rate_limited_closes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        protocol.encode_close(Some(RATE_EXCEEDED), false, &mut guard.replies);
                        end = Some(Disconnect::ServerClosed);
                        continue;
                    }
                    let (queue, conn) = (guard.upstream.as_ref(), guard.conn.as_deref());
                    if let Some(reply) =
                        upstream_link::invoke(queue, conn, protocol, invocation_id, target, body, streaming)
                    {
                        guard.replies.extend_from_slice(&reply);
                    }
                }
                Output::Close(bytes) => {
                    if guard.conn.is_none() {
                        state.registry.stats().connect_failed(ConnectFailure::Handshake);
                    }
                    guard.replies.extend(bytes.unwrap_or_default());
                    end = Some(Disconnect::ServerClosed);
                }
                Output::ClientClosed => end = Some(Disconnect::ClientClosed),
            }
        }
        drop(guard);
        if let Some(reason) = end {
            self.end(state, reason);
        }
        self.changed.notify_waiters();
        settle
    }

    /// Ends the connection with Azure's handshake-canceled answer if the client has not
    /// completed its handshake (the same timeout as on WebSockets).
    pub(crate) fn cancel_handshake_if_pending(&self, state: &EdgeState) {
        {
            let mut guard = self.state.lock();
            if guard.ended || guard.conn.is_some() {
                return;
            }
            guard.replies.extend_from_slice(&handshake::error_response(handshake::HANDSHAKE_CANCELED));
        }
        state.registry.stats().connect_failed(ConnectFailure::Handshake);
        self.end(state, Disconnect::ServerClosed);
    }

    /// Ends a connection whose routing could not be updated everywhere in time, answering its
    /// handshake with an error instead of success: sends from other nodes would miss it.
    pub(crate) fn refuse_unroutable(&self, state: &EdgeState) {
        {
            let mut guard = self.state.lock();
            guard.replies = handshake::error_response(crate::UNROUTABLE);
            guard.settling = false;
        }
        state.registry.stats().connect_failed(ConnectFailure::Handshake);
        self.end(state, Disconnect::ServerClosed);
    }

    /// Lets the held handshake answer (and what follows it) go out.
    pub(crate) fn settled(&self) {
        self.state.lock().settling = false;
        self.changed.notify_waiters();
    }

    /// Ends the connection: it leaves the hub and every waiter learns it.
    pub(crate) fn end(&self, state: &EdgeState, reason: Disconnect) {
        let (conn, upstream) = {
            let mut guard = self.state.lock();
            if guard.ended {
                return;
            }
            guard.ended = true;
            (guard.conn.take(), guard.upstream.take())
        };
        if conn.is_some() {
            self.hub.remove_connection(&self.id);
            self.hub.connection_ended(&self.id, reason, None);
            tracing::debug!(connection_id = %self.id, transport = ?self.transport, "disconnected");
        }
        // Upstream hears of it only once it is gone from the hub's listings and counts.
        if let Some(upstream) = upstream {
            upstream.disconnected(None);
        }
        state.remember_ended(self.id.clone(), self.token_expiry);
        self.changed.notify_waiters();
    }

    /// Starts a Long Polling request; an older pending poll is displaced. The poll ends when
    /// the returned guard drops: also when the request is dropped because its client went
    /// away mid-poll, so an abandoned connection is still reclaimed.
    pub(crate) fn begin_poll(&self) -> Poll<'_> {
        let mut guard = self.state.lock();
        guard.poll_generation += 1;
        guard.polling = true;
        let generation = guard.poll_generation;
        drop(guard);
        self.changed.notify_waiters();
        Poll { connection: self, generation }
    }

    /// Ends a Long Polling request (whatever its outcome).
    fn finish_poll(&self, generation: u64) {
        let mut guard = self.state.lock();
        if guard.poll_generation == generation {
            guard.polling = false;
            guard.last_poll_end = Instant::now();
        }
    }

    /// Whether a Long Polling client has stopped polling for longer than `timeout`.
    pub(crate) fn is_abandoned(&self, timeout: Duration) -> bool {
        let guard = self.state.lock();
        guard.ended || (!guard.polling && guard.last_poll_end.elapsed() > timeout)
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.state.lock().ended
    }

    /// Waits up to `wait` for bytes to send. `generation` is the poll's (0 for SSE).
    pub(crate) async fn next_payload(&self, state: &EdgeState, wait: Duration, generation: u64) -> Payload {
        let deadline = Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (conn, payload) = self.take_ready(state, generation);
            if let Some(payload) = payload {
                if matches!(payload, Payload::Displaced) {
                    // Racing the newer poll on another thread, this one may have become the
                    // outbox's waiter after it (an outbox keeps one): wake the newer one to
                    // wait again, or it would sleep through its data.
                    self.changed.notify_waiters();
                }
                return payload;
            }
            tokio::select! {
                // `changed` first: a poll displaced by a newer one must leave without waiting
                // on the outbox again, which would take the newer poll's place as its waiter.
                biased;
                () = &mut changed => {}
                () = outbox_ready(&conn) => {}
                () = tokio::time::sleep_until(deadline) => return Payload::Idle,
            }
        }
    }

    fn take_ready(&self, state: &EdgeState, generation: u64) -> (Option<Arc<Connection>>, Option<Payload>) {
        let mut guard = self.state.lock();
        if generation != 0 && generation != guard.poll_generation {
            return (None, Some(Payload::Displaced));
        }
        if guard.settling && !guard.ended {
            return (None, None);
        }
        let mut out = std::mem::take(&mut guard.replies);
        let mut close_now = false;
        if let Some(conn) = guard.conn.clone() {
            let (_, close) = conn.drain_with(|frame| out.extend_from_slice(frame));
            if let Some(close) = close {
                conn.protocol.encode_close(close.error.as_deref(), close.allow_reconnect, &mut out);
                close_now = true;
            }
        }
        let ended = guard.ended;
        let conn = guard.conn.clone();
        drop(guard);
        if close_now {
            self.end(state, Disconnect::ServerClosed);
        }
        if !out.is_empty() {
            state.registry.stats().sent(out.len());
            return (conn, Some(Payload::Data(out)));
        }
        if ended {
            return (conn, Some(Payload::Ended));
        }
        (conn, None)
    }

    /// The protocol once the handshake is done (for keep-alive pings).
    pub(crate) fn protocol(&self) -> Option<Protocol> {
        self.state.lock().session.protocol()
    }
}

/// A Long Polling request in progress ([`HttpConnection::begin_poll`]).
pub(crate) struct Poll<'a> {
    connection: &'a HttpConnection,
    pub(crate) generation: u64,
}

impl Drop for Poll<'_> {
    fn drop(&mut self) {
        self.connection.finish_poll(self.generation);
    }
}
