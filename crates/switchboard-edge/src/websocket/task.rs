//! The task of one WebSocket connection. It owns the raw socket and waits on three things: the
//! socket becoming readable (read into a stack buffer, unframe, feed the [`Session`]), the
//! connection's outbox (drain everything queued into one WebSocket message), and a timer
//! (keep-alive Ping when nothing was sent for 15 s, close when nothing was received for 30 s,
//! handshake timeout, stateful-reconnect Acks).

use super::parking::Parked;
use super::socket::Socket;
use super::write::{give_back, opcode_for, take_buffer, write_data};
use crate::rate::{MessageRate, RATE_EXCEEDED};
use crate::session::{Output, Session};
use crate::stateful::{ReplayBuffer, encode_ack};
use crate::{EdgeState, Ticket, UNROUTABLE, outbox_ready, upstream_link};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use switchboard_auth::ClientIdentity;
use switchboard_hub::{ConnectFailure, Connection, ConnectionInfo, Disconnect, Hub};
use switchboard_protocol::websocket::{self, OpCode, WsEvent, WsReader};
use switchboard_protocol::{Protocol, handshake};
use switchboard_upstream::UpstreamQueue;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

/// How long after receiving a trackable message its Ack is sent (as ASP.NET and JS do).
const ACK_DELAY: Duration = Duration::from_secs(1);

pub(super) struct ConnectionTask {
    state: Arc<EdgeState>,
    hub: Arc<Hub>,
    connection_id: Arc<str>,
    user_id: Option<String>,
    handshake_timeout_secs: Option<u64>,
    info: Option<Box<ConnectionInfo>>,
    token_expiry: u64,
    /// The parked state of a stateful connection this socket resumes.
    resume: Option<Box<Resume>>,
    /// Keeps the socket counted against the connection caps while this task holds it.
    _ticket: Option<Ticket>,
}

/// What a resumed socket takes over from its parked connection.
struct Resume {
    session: Session,
    replay: ReplayBuffer,
    conn: Arc<Connection>,
    upstream: Option<UpstreamQueue>,
}

/// Per-connection I/O state that is not the socket.
struct Io {
    reader: WsReader,
    session: Session,
    conn: Option<Arc<Connection>>,
    /// Sent trackable messages awaiting the client's Ack (stateful reconnect only).
    replay: Option<Box<ReplayBuffer>>,
    /// When to send the next Ack, if one is due.
    ack_at: Option<Instant>,
    /// Highest received id already acknowledged.
    acked: u64,
    /// The connection's upstream queue, when upstream is configured.
    upstream: Option<UpstreamQueue>,
    /// Why the connection ended, reported to upstream as the `disconnected` error.
    end_error: Option<String>,
    /// Bytes to write at the end of this turn; empty between turns.
    out: Vec<u8>,
    outputs: Vec<Output>,
    stop: bool,
    /// Who ended the connection, for metrics; the client when nothing else did.
    ended_by: Option<Disconnect>,
    /// Set when this connection made the node interested in its user: the handshake answer
    /// waits for it, so sends from any node reach the client once it is connected.
    settle: Option<switchboard_hub::Settled>,
    /// The cap on messages per second, when one is set.
    rate: Option<Box<MessageRate>>,
}

impl ConnectionTask {
    /// The task of a new connection, once its request was authenticated.
    pub(super) fn new(
        state: Arc<EdgeState>,
        hub: Arc<Hub>,
        connection_id: String,
        identity: ClientIdentity,
        query: String,
        token_expiry: u64,
        ticket: Option<Ticket>,
    ) -> Self {
        let info = ConnectionInfo { claims: identity.claims, query };
        Self {
            state,
            hub,
            connection_id: Arc::from(connection_id),
            user_id: identity.user_id,
            handshake_timeout_secs: identity.handshake_timeout_secs,
            info: Some(Box::new(info)),
            token_expiry,
            resume: None,
            _ticket: ticket,
        }
    }

    pub(super) fn resumed(state: Arc<EdgeState>, parked: Parked, ticket: Option<Ticket>) -> Self {
        Self {
            state,
            hub: parked.hub,
            connection_id: parked.conn.id.clone(),
            user_id: parked.user_id,
            handshake_timeout_secs: None,
            info: None,
            token_expiry: parked.token_expiry,
            resume: Some(Box::new(Resume {
                session: parked.session,
                replay: parked.replay,
                conn: parked.conn,
                upstream: parked.upstream,
            })),
            _ticket: ticket,
        }
    }

    /// Waits for the upgrade to complete, takes the raw socket back (with its TLS session, if
    /// any) and runs the connection.
    pub(super) async fn run_after(self, upgrade: fastwebsockets::upgrade::UpgradeFut) {
        let upgraded = match upgrade.await {
            Ok(ws) => ws.into_inner().into_inner(),
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return self.finish(None, false);
            }
        };
        let (socket, leftover) = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (Socket::Plain(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
                Ok(parts) => {
                    let (tcp, tls) = parts.io.into_inner().into_inner();
                    (Socket::Tls(tcp, Box::new(tls)), parts.read_buf)
                }
                Err(_) => {
                    tracing::error!("websocket upgrade did not yield a TCP stream");
                    return self.finish(None, false);
                }
            },
        };
        // A task of its own, so the long-lived task holds only the connection loop.
        tokio::spawn(self.run(socket, leftover));
    }

    async fn run(mut self, mut socket: Socket, leftover: Bytes) {
        let state = self.state.clone();
        let config = &state.config;
        let mut io = Io {
            reader: WsReader::new(config.max_message_size),
            session: Session::new(config.max_message_size, true, config.stateful_reconnect),
            conn: None,
            replay: None,
            ack_at: None,
            acked: 0,
            upstream: None,
            end_error: None,
            out: Vec::new(),
            outputs: Vec::new(),
            stop: false,
            ended_by: None,
            settle: None,
            rate: MessageRate::new(config.max_messages_per_second),
        };
        if let Some(resume) = self.resume.take() {
            let Resume { mut session, replay, conn, upstream } = *resume;
            session.resume();
            io.upstream = upstream;
            let mut resend = Vec::new();
            replay.resend(conn.protocol, &mut resend);
            write_data(&mut io.out, Some(conn.protocol), &resend);
            // The Ack of what arrived on the lost socket may never have been sent: ack now.
            if session.received() > 0 {
                let mut ack = Vec::new();
                encode_ack(conn.protocol, session.received(), &mut ack);
                write_data(&mut io.out, Some(conn.protocol), &ack);
            }
            io.acked = session.received();
            io.session = session;
            io.replay = Some(Box::new(replay));
            io.conn = Some(conn);
            tracing::debug!(connection_id = %self.connection_id, "stateful connection resumed");
        }
        let started = Instant::now();
        let handshake_timeout = self
            .handshake_timeout_secs
            .map(|s| Duration::from_secs(s.clamp(1, 30)))
            .unwrap_or(config.handshake_timeout);
        let mut last_received = started;
        let mut last_sent = started;
        let mut lost = false;
        if !leftover.is_empty() {
            self.on_bytes(&mut io, &mut leftover.to_vec());
        }
        // Even when empty, these bytes can hold hyper's whole read buffer alive.
        drop(leftover);
        // TLS may hold decrypted bytes already (records read along with the upgrade request).
        if matches!(socket, Socket::Tls(..)) && !self.on_readable(&mut io, &mut socket) {
            lost = true;
            io.stop = true;
        }
        // One timer for the connection's life, moved rather than made anew each time round:
        // moving a deadline later is an atomic store, where a new timer takes the timer
        // wheel's lock to register and again to deregister. The loop keeps no copy of the
        // handshake deadline, so every connection's task is no larger than with a timer per
        // wait (an idle connection's memory is a goal).
        let timer = tokio::time::sleep_until(started + handshake_timeout);
        tokio::pin!(timer);
        while !io.stop {
            if io.out.is_empty() {
                let deadline = match &io.conn {
                    // Until the handshake: its timeout, the timer's first deadline.
                    None => timer.deadline(),
                    Some(_) => {
                        let keep_alive = (last_sent + config.keep_alive).min(last_received + config.client_timeout);
                        io.ack_at.map_or(keep_alive, |ack| ack.min(keep_alive))
                    }
                };
                // Moved only to fire sooner, or once it has fired: left to fire early, it finds
                // nothing due (`on_timer` checks the clocks) and is moved then, so a busy
                // connection does not move it for every message it sends.
                if deadline < timer.deadline() || timer.is_elapsed() {
                    timer.as_mut().reset(deadline);
                }
                let replay_full = io.replay.as_ref().is_some_and(|r| r.is_full());
                tokio::select! {
                    biased;
                    _ = outbox_ready(&io.conn), if !replay_full => {
                        self.on_outbox(&mut io);
                    }
                    readable = socket.readable() => {
                        if readable.is_err() || !self.on_readable(&mut io, &mut socket) {
                            lost = true;
                            break;
                        }
                        last_received = Instant::now();
                        if io.session.received() > io.acked && io.ack_at.is_none() {
                            io.ack_at = Some(last_received + ACK_DELAY);
                        }
                    }
                    _ = &mut timer => {
                        self.on_timer(&mut io, last_sent, last_received);
                    }
                }
            }
            if let Some(settle) = io.settle.take()
                && !settle.await
            {
                // Sends from other nodes could not reach this client: refuse the handshake
                // instead of answering it (the client tries again).
                io.out = handshake::error_response(UNROUTABLE);
                let _ = socket.write(&io.out, config.client_timeout).await;
                state.registry.stats().connect_failed(ConnectFailure::Handshake);
                lost = true;
                break;
            }
            // The last bytes (a Close) wait until the connection has left the hub, below.
            if !io.out.is_empty() && !io.stop {
                let written = socket.write(&io.out, config.client_timeout).await;
                state.registry.stats().sent(io.out.len());
                give_back(std::mem::take(&mut io.out));
                if !written {
                    lost = true;
                    break;
                }
                last_sent = Instant::now();
            }
        }
        let last_words = std::mem::take(&mut io.out);
        let Io { session, conn, replay, upstream, end_error, ended_by: io_ended_by, .. } = io;
        match (lost, replay, conn) {
            (true, Some(replay), Some(conn)) if !conn.outbox.is_closing() => {
                let parked = Parked {
                    session,
                    replay: *replay,
                    conn,
                    upstream,
                    hub: self.hub.clone(),
                    user_id: self.user_id.clone(),
                    token_expiry: self.token_expiry,
                    generation: 0,
                };
                tracing::debug!(connection_id = %self.connection_id, "socket lost; waiting for a stateful reconnect");
                self.state.park(parked);
            }
            (_, _, conn) => {
                let error = if lost { Some("The connection was lost.".to_owned()) } else { end_error };
                if conn.is_some() {
                    let reason = if lost { Disconnect::Lost } else { io_ended_by.unwrap_or(Disconnect::ClientClosed) };
                    self.hub.connection_ended(&self.connection_id, reason, error.as_deref());
                }
                // Gone before upstream hears of it: an app that counts or lists on `disconnected`
                // no longer finds this connection.
                self.finish(conn, true);
                if let Some(upstream) = upstream {
                    upstream.disconnected(error);
                }
            }
        }
        // Only now is the close answered: a client that saw it finds itself gone from every
        // listing and count, and no send answered after it counts this connection.
        if !lost && !last_words.is_empty() {
            let written = Box::pin(socket.write(&last_words, config.client_timeout)).await;
            if written {
                state.registry.stats().sent(last_words.len());
            }
        }
        // Boxed: it runs once, at the end, and would otherwise enlarge every connection's task.
        Box::pin(socket.close(lost)).await;
    }

    /// The connection is over: it leaves the hub and its id cannot be reused.
    fn finish(&self, conn: Option<Arc<Connection>>, registered: bool) {
        if registered && conn.is_some() {
            self.hub.remove_connection(&self.connection_id);
            tracing::debug!(connection_id = %self.connection_id, hub = self.hub.name(), "disconnected");
        }
        self.state.remember_ended(self.connection_id.clone(), self.token_expiry);
    }

    /// Reads what the socket has (without waiting) and handles it; `false` when it is gone.
    fn on_readable(&mut self, io: &mut Io, socket: &mut Socket) -> bool {
        let state = self.state.clone();
        socket
            .read_available(|bytes| {
                state.registry.stats().received(bytes.len());
                self.on_bytes(io, bytes);
            })
            .unwrap_or(false)
    }

    fn on_bytes(&mut self, io: &mut Io, bytes: &mut [u8]) {
        let Io { reader, session, outputs, out, .. } = io;
        let mut client_closed = false;
        let result = reader.feed(bytes, &mut |event| {
            match event {
                WsEvent::Message { payload, .. } => session.feed(payload, outputs),
                WsEvent::Ping(payload) => websocket::write_frame(OpCode::Pong, payload, out),
                WsEvent::Pong => {}
                WsEvent::Close { .. } => client_closed = true,
            }
            Ok(())
        });
        let outputs = std::mem::take(&mut io.outputs);
        for output in outputs {
            self.on_output(io, output);
        }
        if let Err(error) = result {
            websocket::write_close(error.close_code(), &error.to_string(), &mut io.out);
            io.stop = true;
            io.ended_by = Some(Disconnect::ServerClosed);
        } else if client_closed && !io.stop {
            websocket::write_close(1000, "", &mut io.out);
            io.stop = true;
        }
    }

    fn on_output(&mut self, io: &mut Io, output: Output) {
        if io.stop {
            return;
        }
        let protocol = io.session.protocol();
        match output {
            Output::Opened(protocol) => {
                let info = self.info.take().map(|info| *info).unwrap_or_default();
                let conn =
                    Arc::new(Connection::new(self.connection_id.clone(), self.user_id.as_deref(), protocol, info));
                // Held until every interest change reported so far is applied, also when this
                // connection reported none: its user's first connection here may have, and
                // still be on its way.
                self.hub.add_connection(conn.clone());
                io.settle = Some(self.state.registry.interest_settled());
                tracing::debug!(connection_id = %self.connection_id, hub = self.hub.name(), protocol = protocol.name(), "connected");
                io.upstream = upstream_link::open(&self.state, self.hub.name(), &conn);
                io.conn = Some(conn);
                if io.session.is_stateful() {
                    io.replay = Some(Box::new(ReplayBuffer::new(self.state.config.replay_buffer_bytes)));
                }
                write_data(&mut io.out, Some(protocol), handshake::RESPONSE_OK);
            }
            Output::Reply(bytes) => send_message(io, protocol, Bytes::from(bytes)),
            Output::Completion { invocation_id, frame } => {
                if let Some(conn) = &io.conn {
                    conn.complete_result(&invocation_id, Some(Bytes::from(frame)));
                }
            }
            Output::Cancel { invocation_id, body } => {
                upstream_link::cancel(io.upstream.as_ref(), io.conn.as_deref(), &invocation_id, body);
            }
            Output::Invocation { invocation_id, target, body, streaming } => {
                let stats = self.state.registry.stats();
                stats.messages_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::trace_message_in(&self.state, self.hub.name(), &self.connection_id, &target, body.len());
                let Some(protocol) = protocol else { return };
                if io.rate.as_mut().is_some_and(|rate| !rate.allow(Instant::now())) {
                    stats.rate_limited_closes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut close = Vec::new();
                    protocol.encode_close(Some(RATE_EXCEEDED), false, &mut close);
                    io.end_error = Some(RATE_EXCEEDED.to_owned());
                    io.ended_by = Some(Disconnect::ServerClosed);
                    close_with(io, Some(close), Some(protocol));
                    return;
                }
                let (queue, conn) = (io.upstream.as_ref(), io.conn.as_deref());
                if let Some(reply) =
                    upstream_link::invoke(queue, conn, protocol, invocation_id, target, body, streaming)
                {
                    send_message(io, Some(protocol), Bytes::from(reply));
                }
            }
            Output::Acked(sequence_id) => {
                if let Some(replay) = &mut io.replay {
                    replay.ack(sequence_id);
                }
            }
            Output::Close(bytes) => {
                if io.conn.is_none() {
                    self.state.registry.stats().connect_failed(ConnectFailure::Handshake);
                }
                io.ended_by = Some(Disconnect::ServerClosed);
                close_with(io, bytes, protocol);
            }
            Output::ClientClosed => {
                websocket::write_close(1000, "", &mut io.out);
                io.stop = true;
            }
        }
    }

    fn on_outbox(&mut self, io: &mut Io) {
        let Some(conn) = &io.conn else { return };
        let protocol = conn.protocol;
        // One WebSocket message carrying every queued frame, copied once into the output.
        if io.out.capacity() == 0 {
            io.out = take_buffer();
        }
        let start = websocket::begin_frame(&mut io.out);
        let (out, replay) = (&mut io.out, &mut io.replay);
        let (count, close) = conn.drain_with(|frame| {
            out.extend_from_slice(frame);
            if let Some(replay) = replay {
                replay.record(frame.clone());
            }
        });
        if count > 0 {
            websocket::finish_frame(opcode_for(Some(protocol)), start, &mut io.out);
        } else {
            io.out.truncate(start);
            if io.out.is_empty() {
                // A wake-up with nothing to write leaves no buffer behind on an idle connection.
                give_back(std::mem::take(&mut io.out));
            }
        }
        if let Some(close) = close {
            let mut bytes = Vec::new();
            protocol.encode_close(close.error.as_deref(), close.allow_reconnect, &mut bytes);
            io.ended_by = Some(Disconnect::ServerClosed);
            close_with(io, Some(bytes), Some(protocol));
        }
    }

    fn on_timer(&mut self, io: &mut Io, last_sent: Instant, last_received: Instant) {
        let now = Instant::now();
        let config = &self.state.config;
        let Some(protocol) = io.session.protocol() else {
            self.state.registry.stats().connect_failed(ConnectFailure::Handshake);
            close_with(io, Some(handshake::error_response(handshake::HANDSHAKE_CANCELED)), None);
            return;
        };
        if now >= last_received + config.client_timeout {
            let mut close = Vec::new();
            let error = "Connection closed with an error. The client sent nothing within the client timeout.";
            protocol.encode_close(Some(error), false, &mut close);
            io.end_error = Some(error.to_owned());
            io.ended_by = Some(Disconnect::Timeout);
            close_with(io, Some(close), Some(protocol));
            return;
        }
        if io.ack_at.is_some_and(|at| now >= at) {
            let received = io.session.received();
            let mut ack = Vec::new();
            encode_ack(protocol, received, &mut ack);
            write_data(&mut io.out, Some(protocol), &ack);
            io.acked = received;
            io.ack_at = None;
        }
        if now >= last_sent + config.keep_alive && io.out.is_empty() {
            write_data(&mut io.out, Some(protocol), protocol.ping());
        }
    }
}

/// Writes one trackable hub message, keeping it for replay when stateful.
fn send_message(io: &mut Io, protocol: Option<Protocol>, message: Bytes) {
    write_data(&mut io.out, protocol, &message);
    if let Some(replay) = &mut io.replay {
        replay.record(message);
    }
}

/// Writes the final hub bytes (a Close message or handshake error), then a normal WebSocket close.
fn close_with(io: &mut Io, bytes: Option<Vec<u8>>, protocol: Option<Protocol>) {
    if let Some(bytes) = bytes {
        write_data(&mut io.out, protocol, &bytes);
    }
    websocket::write_close(1000, "", &mut io.out);
    io.stop = true;
}
