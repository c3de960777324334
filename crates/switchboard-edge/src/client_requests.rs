//! `/client/?hub=&id=`: one URL, three transports. A GET is a WebSocket upgrade, an SSE stream
//! (`Accept: text/event-stream`) or a Long Polling poll; POST carries client bytes for SSE and
//! Long Polling; DELETE ends a connection.
//!
//! After the connection exists, the secret `id` (connection token) is what authenticates a
//! request: the access token is checked only when a connection is created, because access
//! tokens gate establishment, not the life of a connection.

use crate::EdgeState;
use crate::forward;
use crate::http_connection::{HttpConnection, HttpTransport, Payload};
use crate::negotiate::allowed;
use crate::request::{ClientQuery, authenticate, refuse};
use crate::websocket;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use switchboard_hub::{ConnectFailure, ConnectionInfo, Disconnect, Hub, owner_of, unix_now};
use switchboard_protocol::negotiate::TransportKind;

/// How long a Long Polling request is held before an empty 200 recycles it.
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

pub(crate) async fn get(State(state): State<Arc<EdgeState>>, request: Request) -> Response {
    let uri = request.uri().clone();
    let query = ClientQuery::parse(uri.query());
    let request = match forward::forward_if_foreign(&state, query.get("id"), request).await {
        Ok(forwarded) => return forwarded,
        Err(request) => request,
    };
    if fastwebsockets::upgrade::is_upgrade_request(&request) {
        return websocket::connect(state, request, &query).await;
    }
    let wants_sse = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    let Some(id) = query.get("id") else {
        return refuse(StatusCode::BAD_REQUEST, "missing the connection id ('id' query parameter)");
    };
    if wants_sse {
        server_sent_events(state, request.headers(), &query, id)
    } else {
        long_poll(state, request.headers(), &query, id).await
    }
}

/// Finds the HTTP connection an `id` names (after checking the secret token).
fn find(state: &EdgeState, query: &ClientQuery, id: &str) -> Option<Arc<HttpConnection>> {
    let hub = query.get("hub").unwrap_or_default().to_ascii_lowercase();
    let connection_id = match state.tokens.open(id, &hub) {
        Some(opened) => opened.connection_id,
        None if owner_of(id) == Some(state.config.node_id) && !id.contains('~') => id.to_owned(),
        None => return None,
    };
    state.http_connections.lock().get(connection_id.as_str()).cloned()
}

/// Whether `id` names a live WebSocket connection of this node.
fn is_websocket(state: &EdgeState, query: &ClientQuery, id: &str) -> bool {
    let hub = query.get("hub").unwrap_or_default().to_ascii_lowercase();
    let Some(resolved) = websocket::resolve_id(state, id, &hub) else { return false };
    state.registry.get(&hub).is_some_and(|h| h.connection(&resolved.connection_id).is_some())
}

/// Creates an HTTP connection for a negotiated id, checking the access token and transport.
fn create(
    state: &Arc<EdgeState>,
    headers: &HeaderMap,
    query: &ClientQuery,
    id: &str,
    transport: HttpTransport,
) -> Result<Arc<HttpConnection>, Response> {
    // A dead or unknown id is a 404 whatever the credentials; only a live one is authenticated.
    let hub_name = query.get("hub").unwrap_or_default().to_ascii_lowercase();
    let Some(resolved) = websocket::resolve_id(state, id, &hub_name) else {
        return Err(refuse(StatusCode::NOT_FOUND, "no connection with this id"));
    };
    let (connection_id, token_expiry) = (resolved.connection_id, resolved.expires_at);
    let taken = state.registry.get(&hub_name).is_some_and(|h| h.connection(&connection_id).is_some());
    if taken || state.has_ended(&connection_id) || token_expiry <= unix_now() {
        return Err(refuse(StatusCode::NOT_FOUND, "the connection has ended or uses another transport"));
    }
    let (hub_name, identity) = authenticate(state, headers, query)?;
    let kind = match transport {
        HttpTransport::ServerSentEvents => TransportKind::ServerSentEvents,
        HttpTransport::LongPolling => TransportKind::LongPolling,
    };
    if !allowed(kind, identity.allowed_transports) {
        return Err(refuse(StatusCode::FORBIDDEN, format!("the access token does not allow {}", kind.name())));
    }
    let hub = state.registry.get_or_create(&hub_name);
    if let Some(refused) = user_limit(state, &hub, identity.user_id.as_deref()) {
        return Err(refused);
    }
    let handshake_timeout = identity
        .handshake_timeout_secs
        .map(|secs| Duration::from_secs(secs.clamp(1, 30)))
        .unwrap_or(state.config.handshake_timeout);
    let info = ConnectionInfo { claims: identity.claims, query: query.without_token() };
    let connection = Arc::new(HttpConnection::new(
        Arc::from(connection_id),
        transport,
        hub,
        identity.user_id,
        info,
        token_expiry,
        &state.config,
    ));
    let mut map = state.http_connections.lock();
    if map.contains_key(&connection.id) {
        return Err(refuse(StatusCode::CONFLICT, "the connection is already active"));
    }
    map.insert(connection.id.clone(), connection.clone());
    drop(map);
    let (pending, timer_state) = (Arc::downgrade(&connection), state.clone());
    tokio::spawn(async move {
        tokio::time::sleep(handshake_timeout).await;
        if let Some(connection) = pending.upgrade() {
            connection.cancel_handshake_if_pending(&timer_state);
        }
    });
    Ok(connection)
}

fn server_sent_events(state: Arc<EdgeState>, headers: &HeaderMap, query: &ClientQuery<'_>, id: &str) -> Response {
    if find(&state, query, id).is_some() {
        return refuse(StatusCode::CONFLICT, "the connection already has an active stream");
    }
    let connection = match create(&state, headers, query, id, HttpTransport::ServerSentEvents) {
        Ok(connection) => connection,
        Err(response) => return response,
    };
    let stream = SseStream { state: state.clone(), connection, started: false, done: false };
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), stream))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache, no-store"),
            (header::PRAGMA, "no-cache"),
            (header::CONTENT_ENCODING, "identity"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The body of an SSE response; dropping it (the client went away) ends the connection.
struct SseStream {
    state: Arc<EdgeState>,
    connection: Arc<HttpConnection>,
    started: bool,
    done: bool,
}

impl SseStream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.started {
            // A comment first, flushed at once, so browsers fire `open` (as ASP.NET does).
            self.started = true;
            return Some(Bytes::from_static(b":\r\n"));
        }
        if self.done {
            return None;
        }
        let keep_alive = self.state.config.keep_alive;
        match self.connection.next_payload(&self.state, keep_alive, 0).await {
            Payload::Data(data) => Some(Bytes::from(sse_event(&data))),
            Payload::Idle => {
                let ping = self.connection.protocol().map(|p| p.ping()).unwrap_or(b":\r\n");
                Some(Bytes::from(sse_event(ping)))
            }
            Payload::Ended | Payload::Displaced => {
                self.done = true;
                None
            }
        }
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        self.connection.end(&self.state, Disconnect::Lost);
        self.state.http_connections.lock().remove(&self.connection.id);
    }
}

/// One SSE event: every line of the payload as `data: <line>\r\n`, then a blank line.
fn sse_event(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 16);
    for line in payload.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

async fn long_poll(state: Arc<EdgeState>, headers: &HeaderMap, query: &ClientQuery<'_>, id: &str) -> Response {
    let no_cache = [
        (header::CACHE_CONTROL, "no-cache, no-store"),
        (header::PRAGMA, "no-cache"),
        (header::EXPIRES, "Thu, 01 Jan 1970 00:00:00 GMT"),
    ];
    let connection = match find(&state, query, id) {
        Some(connection) if connection.transport == HttpTransport::LongPolling => connection,
        Some(_) => return refuse(StatusCode::BAD_REQUEST, "the connection uses Server-Sent Events"),
        None => {
            // The first poll creates the connection and returns at once: the JS client waits
            // for it before sending the handshake.
            return match create(&state, headers, query, id, HttpTransport::LongPolling) {
                Ok(_) => {
                    (StatusCode::OK, no_cache, [(header::CONTENT_TYPE, "application/octet-stream")], Body::empty())
                        .into_response()
                }
                Err(response) => response,
            };
        }
    };
    let poll = connection.begin_poll();
    let payload = connection.next_payload(&state, POLL_TIMEOUT, poll.generation).await;
    drop(poll);
    match payload {
        Payload::Data(data) => {
            (StatusCode::OK, no_cache, [(header::CONTENT_TYPE, "application/octet-stream")], data).into_response()
        }
        Payload::Idle => {
            (StatusCode::OK, no_cache, [(header::CONTENT_TYPE, "application/octet-stream")], Body::empty())
                .into_response()
        }
        Payload::Displaced => (StatusCode::NO_CONTENT, no_cache).into_response(),
        Payload::Ended => {
            state.http_connections.lock().remove(&connection.id);
            (StatusCode::NO_CONTENT, no_cache).into_response()
        }
    }
}

/// `POST /client/?id=`: client bytes for an SSE or Long Polling connection.
pub(crate) async fn post(State(state): State<Arc<EdgeState>>, request: Request) -> Response {
    let uri = request.uri().clone();
    let query = ClientQuery::parse(uri.query());
    let request = match forward::forward_if_foreign(&state, query.get("id"), request).await {
        Ok(forwarded) => return forwarded,
        Err(request) => request,
    };
    let Some(id) = query.get("id") else {
        return refuse(StatusCode::BAD_REQUEST, "missing the connection id ('id' query parameter)");
    };
    let connection = match find(&state, &query, id) {
        Some(connection) => connection,
        None if is_websocket(&state, &query, id) => {
            return refuse(StatusCode::METHOD_NOT_ALLOWED, "POST requests are not allowed for WebSocket connections.");
        }
        // A client may send its handshake before its first poll (signalrcore does): the
        // connection starts here then, as a Long Polling one.
        None => match create(&state, request.headers(), &query, id, HttpTransport::LongPolling) {
            Ok(connection) => connection,
            Err(response) => return response,
        },
    };
    if connection.is_ended() {
        return refuse(StatusCode::NOT_FOUND, "the connection has ended");
    }
    let limit = state.config.max_message_size;
    let body = match http_body_util::Limited::new(request.into_body(), limit).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("the body exceeds {limit} bytes"));
        }
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "could not read the request body"),
    };
    if let Some(settle) = connection.receive(&state, &body) {
        // Released on drop too, so a client that gives up on this POST does not stall its stream.
        struct Release(Arc<HttpConnection>);
        impl Drop for Release {
            fn drop(&mut self) {
                self.0.settled();
            }
        }
        let _release = Release(connection.clone());
        if !settle.await {
            connection.refuse_unroutable(&state);
        }
    }
    // An empty body: signalrcore parses any non-empty answer as JSON.
    StatusCode::OK.into_response()
}

/// `DELETE /client/?id=`: the client ends its connection.
pub(crate) async fn delete(State(state): State<Arc<EdgeState>>, request: Request) -> Response {
    let uri = request.uri().clone();
    let query = ClientQuery::parse(uri.query());
    if let Ok(forwarded) = forward::forward_if_foreign(&state, query.get("id"), request).await {
        return forwarded;
    }
    let Some(connection) = query.get("id").and_then(|id| find(&state, &query, id)) else {
        return refuse(StatusCode::NOT_FOUND, "no connection with this id");
    };
    connection.end(&state, Disconnect::ClientClosed);
    (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "text/plain")], "").into_response()
}

/// Ends Long Polling connections whose client stopped polling without a DELETE.
pub async fn reclaim_abandoned(state: Arc<EdgeState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let timeout = state.config.client_timeout;
        let abandoned: Vec<Arc<HttpConnection>> = state
            .http_connections
            .lock()
            .values()
            .filter(|c| c.transport == HttpTransport::LongPolling && c.is_abandoned(timeout))
            .cloned()
            .collect();
        for connection in abandoned {
            connection.end(&state, Disconnect::Lost);
            state.http_connections.lock().remove(&connection.id);
        }
    }
}

/// A 429 when `user` already holds `--max-connections-per-user` connections on this node.
pub(crate) fn user_limit(state: &EdgeState, hub: &Hub, user: Option<&str>) -> Option<Response> {
    let max = state.config.max_connections_per_user;
    let user = user.filter(|_| max > 0)?;
    if hub.user_connection_count(user) < max {
        return None;
    }
    state.registry.stats().connect_failed(ConnectFailure::UserLimit);
    Some(refuse(StatusCode::TOO_MANY_REQUESTS, format!("the user holds its maximum of {max} connections on this node")))
}
