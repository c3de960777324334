//! The WebSocket transport: upgrade, then one task per connection that owns the raw socket.
//!
//! The task waits on three things: the socket becoming readable (read into a stack buffer,
//! unframe, feed the [`Session`]), the connection's outbox (drain everything queued into one
//! WebSocket message), and a timer (keep-alive Ping when nothing was sent for 15 s, close when
//! nothing was received for 30 s, handshake timeout).

use crate::EdgeState;
use crate::negotiate::allowed;
use crate::request::{ClientQuery, authenticate, refuse};
use crate::session::{Output, Session};
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use switchboard_auth::ClientIdentity;
use switchboard_hub::{Connection, ConnectionInfo, Hub, new_connection_id, owner_of, unix_now};
use switchboard_protocol::negotiate::TransportKind;
use switchboard_protocol::websocket::{self, OpCode, WsEvent, WsReader};
use switchboard_protocol::{Protocol, handshake};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// `GET /client/?hub=&id=` with a WebSocket upgrade.
pub(crate) async fn connect(state: Arc<EdgeState>, mut request: Request) -> Response {
    let query = ClientQuery::parse(request.uri().query());
    let (hub_name, identity) = match authenticate(&state, request.headers(), &query) {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    if !allowed(TransportKind::WebSockets, identity.allowed_transports) {
        return refuse(StatusCode::FORBIDDEN, "the access token does not allow WebSockets");
    }
    let (connection_id, token_expiry) = match query.get("id") {
        // skipNegotiation, and signalrcore after a redirect: the connection is created here.
        None => (new_connection_id(state.config.node_id), unix_now() + state.config.connect_window.as_secs()),
        Some(id) => match resolve_id(&state, id, &hub_name) {
            Some(resolved) => resolved,
            None => return refuse(StatusCode::NOT_FOUND, "no connection with this id"),
        },
    };
    let hub = state.registry.get_or_create(&hub_name);
    if hub.connection(&connection_id).is_some() || state.http_connections.lock().contains_key(connection_id.as_str()) {
        return refuse(StatusCode::CONFLICT, "the connection already has an active WebSocket");
    }
    if state.has_ended(&connection_id) {
        return refuse(StatusCode::NOT_FOUND, "the connection has ended");
    }
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(ok) => ok,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("invalid WebSocket upgrade: {e}")),
    };
    let info = ConnectionInfo { claims: identity.claims.clone(), query: query.without_token() };
    let task = ConnectionTask {
        state,
        hub,
        connection_id: Arc::from(connection_id),
        identity,
        info: Some(info),
        token_expiry,
    };
    tokio::spawn(async move {
        let raw = match upgrade.await {
            Ok(ws) => ws.into_inner().into_inner().downcast::<TokioIo<TcpStream>>(),
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        match raw {
            Ok(parts) => task.run(parts.io.into_inner(), parts.read_buf).await,
            Err(_) => tracing::error!("websocket upgrade did not yield a TCP stream"),
        }
    });
    response.map(|_| axum::body::Body::empty())
}

/// Turns the `id` query value into a connection id: a connection token from negotiate v1, or
/// (negotiate v0, where the client sends its connection id) a plain id of this node.
pub(crate) fn resolve_id(state: &EdgeState, id: &str, hub: &str) -> Option<(String, u64)> {
    if let Some(opened) = state.tokens.open(id, hub) {
        return (opened.expires_at > unix_now()).then_some((opened.connection_id, opened.expires_at));
    }
    let legacy = owner_of(id) == Some(state.config.node_id) && !id.contains('~');
    legacy.then(|| (id.to_owned(), unix_now() + state.config.connect_window.as_secs()))
}

struct ConnectionTask {
    state: Arc<EdgeState>,
    hub: Arc<Hub>,
    connection_id: Arc<str>,
    identity: ClientIdentity,
    info: Option<ConnectionInfo>,
    token_expiry: u64,
}

/// Why the loop stops.
enum Flow {
    Continue,
    Stop,
}

/// Per-connection I/O state that is not the socket.
struct Io {
    reader: WsReader,
    session: Session,
    conn: Option<Arc<Connection>>,
    /// Bytes to write at the end of this turn; empty between turns.
    out: Vec<u8>,
    outputs: Vec<Output>,
    stop: bool,
}

impl ConnectionTask {
    async fn run(mut self, mut stream: TcpStream, leftover: Bytes) {
        let config = self.state.config.clone();
        let mut io = Io {
            reader: WsReader::new(config.max_message_size),
            session: Session::new(config.max_message_size, true),
            conn: None,
            out: Vec::new(),
            outputs: Vec::new(),
            stop: false,
        };
        let started = Instant::now();
        let handshake_timeout = self
            .identity
            .handshake_timeout_secs
            .map(|s| Duration::from_secs(s.clamp(1, 30)))
            .unwrap_or(config.handshake_timeout);
        let mut last_received = started;
        let mut last_sent = started;
        let mut batch: Vec<Bytes> = Vec::new();
        if !leftover.is_empty() {
            self.on_bytes(&mut io, &mut leftover.to_vec());
        }
        while !io.stop {
            if io.out.is_empty() {
                let deadline = match &io.conn {
                    None => started + handshake_timeout,
                    Some(_) => (last_sent + config.keep_alive).min(last_received + config.client_timeout),
                };
                tokio::select! {
                    biased;
                    _ = outbox_ready(&io.conn) => {
                        self.on_outbox(&mut io, &mut batch);
                    }
                    readable = stream.readable() => {
                        if readable.is_err() || matches!(self.on_readable(&mut io, &stream), Flow::Stop) {
                            break;
                        }
                        last_received = Instant::now();
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        let now = Instant::now();
                        if io.conn.is_none() {
                            close_with(&mut io, Some(handshake::error_response(handshake::HANDSHAKE_CANCELED)), None);
                        } else if now >= last_received + config.client_timeout {
                            let protocol = io.session.protocol().unwrap_or(Protocol::Json);
                            let mut close = Vec::new();
                            protocol.encode_close(Some("Connection closed with an error. The client sent nothing within the client timeout."), false, &mut close);
                            close_with(&mut io, Some(close), Some(protocol));
                        } else {
                            let protocol = io.session.protocol().unwrap_or(Protocol::Json);
                            write_data(&mut io.out, Some(protocol), protocol.ping());
                        }
                    }
                }
            }
            if !io.out.is_empty() {
                let written = tokio::time::timeout(config.client_timeout, stream.write_all(&io.out)).await;
                io.out = Vec::new();
                if !matches!(written, Ok(Ok(()))) {
                    break;
                }
                last_sent = Instant::now();
            }
        }
        let _ = stream.shutdown().await;
        if io.conn.is_some() {
            self.hub.remove_connection(&self.connection_id);
            tracing::debug!(connection_id = %self.connection_id, hub = self.hub.name(), "disconnected");
        }
        self.state.remember_ended(self.connection_id.clone(), self.token_expiry);
    }

    /// Reads what the socket has (without waiting) and handles it.
    fn on_readable(&mut self, io: &mut Io, stream: &TcpStream) -> Flow {
        let mut buffer = [0u8; 4096];
        match stream.try_read(&mut buffer) {
            Ok(0) => Flow::Stop,
            Ok(n) => {
                self.on_bytes(io, &mut buffer[..n]);
                Flow::Continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Flow::Continue,
            Err(_) => Flow::Stop,
        }
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
                let info = self.info.take().unwrap_or_default();
                let conn = Arc::new(Connection::new(
                    self.connection_id.clone(),
                    self.identity.user_id.as_deref(),
                    protocol,
                    info,
                ));
                self.hub.add_connection(conn.clone());
                tracing::debug!(connection_id = %self.connection_id, hub = self.hub.name(), protocol = protocol.name(), "connected");
                io.conn = Some(conn);
            }
            Output::Reply(bytes) => write_data(&mut io.out, protocol, &bytes),
            Output::Invocation { invocation_id, target } => {
                // Serverless without upstream: a blocking invoke gets an error, a send is dropped.
                if let (Some(id), Some(protocol)) = (invocation_id, protocol) {
                    let mut reply = Vec::new();
                    let error = format!("No upstream is configured to handle '{target}'.");
                    protocol.encode_completion_error(&id, &error, &mut reply);
                    write_data(&mut io.out, Some(protocol), &reply);
                }
            }
            Output::Close(bytes) => close_with(io, bytes, protocol),
            Output::ClientClosed => {
                websocket::write_close(1000, "", &mut io.out);
                io.stop = true;
            }
        }
    }

    fn on_outbox(&mut self, io: &mut Io, batch: &mut Vec<Bytes>) {
        let Some(conn) = &io.conn else { return };
        let (count, close) = conn.outbox.drain(batch);
        let protocol = conn.protocol;
        if count > 0 {
            let total: usize = batch.iter().map(Bytes::len).sum();
            let mut payload = Vec::with_capacity(total);
            for frame in batch.drain(..) {
                payload.extend_from_slice(&frame);
            }
            write_data(&mut io.out, Some(protocol), &payload);
        }
        *batch = Vec::new();
        if let Some(close) = close {
            let mut bytes = Vec::new();
            protocol.encode_close(close.error.as_deref(), close.allow_reconnect, &mut bytes);
            close_with(io, Some(bytes), Some(protocol));
        }
    }
}

async fn outbox_ready(conn: &Option<Arc<Connection>>) {
    match conn {
        Some(conn) => conn.outbox.ready().await,
        None => std::future::pending().await,
    }
}

/// Writes hub bytes as one WebSocket message: Binary for MessagePack, Text otherwise.
fn write_data(out: &mut Vec<u8>, protocol: Option<Protocol>, payload: &[u8]) {
    let opcode = if protocol.is_some_and(Protocol::is_binary) { OpCode::Binary } else { OpCode::Text };
    websocket::write_frame(opcode, payload, out);
}

/// Writes the final hub bytes (a Close message or handshake error), then a normal WebSocket close.
fn close_with(io: &mut Io, bytes: Option<Vec<u8>>, protocol: Option<Protocol>) {
    if let Some(bytes) = bytes {
        write_data(&mut io.out, protocol, &bytes);
    }
    websocket::write_close(1000, "", &mut io.out);
    io.stop = true;
}
