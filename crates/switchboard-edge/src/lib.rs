//! The client endpoint of a node: everything a SignalR client talks to.
//!
//! ```text
//!  POST /client/negotiate?hub=  ──► negotiate: verify token, mint connection id + token
//!  GET  /client/?hub=&id=       ──► WebSocket upgrade ──► connection task
//!                                     raw TcpStream ⇄ websocket framing ⇄ Session (sans-io)
//!                                     Outbox (from the hub) ──► batched writes
//!  GET  (Accept: event-stream)  ──► SSE stream   ┐ HttpConnection: Session fed by POST bodies,
//!  GET  (otherwise)             ──► Long Polling ┘ Outbox drained by the stream or the poll
//!  POST / DELETE                ──► client bytes / end, for SSE and Long Polling
//! ```
//!
//! The WebSocket handshake is done by fastwebsockets inside the hyper upgrade; afterwards the
//! task takes the raw `TcpStream` back and frames it with the sans-io codec of
//! `switchboard-protocol`, reading into a stack buffer on readiness, so an idle connection owns
//! no heap buffers (per-connection memory is a headline number).

// Handlers return their refusal (an HTTP response) as the error of a `Result`: it is built
// at most once per request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod admission;
mod client_requests;
mod config;
mod cors;
mod forward;
mod http_connection;
mod negotiate;
mod rate;
mod request;
mod session;
mod stateful;
mod upstream_link;
mod websocket;

pub use admission::{Admission, Refusal, Ticket};
pub use client_requests::reclaim_abandoned;
pub use config::EdgeConfig;
pub use forward::PeerDirectory;
pub use session::{Output, Session};

/// The handshake error of a client whose routing could not be updated everywhere in time (a
/// cluster without a leader): it is told to try again rather than left unreachable.
pub(crate) const UNROUTABLE: &str = "The connection could not be registered with the cluster in time; try again.";

use axum::Router;
use axum::response::Response;
use axum::routing::{get, post};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use switchboard_auth::{ConnectionTokens, Verifier};
use switchboard_hub::{ConnectFailure, Registry};
use switchboard_upstream::Upstream;

/// Everything the client endpoint needs, shared by its handlers and connection tasks.
pub struct EdgeState {
    pub config: EdgeConfig,
    pub registry: Arc<Registry>,
    pub verifier: Arc<Verifier>,
    pub tokens: ConnectionTokens,
    /// Where client invocations and connection events go (disabled without templates).
    pub upstream: Arc<Upstream>,
    /// Ids of connections that ended, until their connection token expires, so a stale id is
    /// answered 404 instead of silently becoming a new connection.
    ended: Mutex<HashMap<Arc<str>, u64>>,
    /// Connections carried by SSE or Long Polling, by connection id.
    http_connections: Mutex<HashMap<Arc<str>, Arc<http_connection::HttpConnection>>>,
    /// Stateful WebSocket connections whose socket was lost, by connection id.
    parked: Mutex<HashMap<Arc<str>, websocket::Parked>>,
    park_generation: std::sync::atomic::AtomicU64,
    /// In a cluster: where other nodes' connections are served.
    peers: Option<Arc<PeerDirectory>>,
}

impl EdgeState {
    pub fn new(
        config: EdgeConfig,
        registry: Arc<Registry>,
        verifier: Arc<Verifier>,
        tokens: ConnectionTokens,
        upstream: Arc<Upstream>,
    ) -> Self {
        Self {
            config,
            registry,
            verifier,
            tokens,
            upstream,
            ended: Mutex::default(),
            http_connections: Mutex::default(),
            parked: Mutex::default(),
            park_generation: Default::default(),
            peers: None,
        }
    }

    /// Forwards transport requests for other nodes' connections to them (cluster mode).
    pub fn with_peers(mut self, peers: Arc<PeerDirectory>) -> Self {
        self.peers = Some(peers);
        self
    }

    fn remember_ended(&self, id: Arc<str>, until: u64) {
        let mut ended = self.ended.lock();
        if ended.len() >= 4096 && ended.len().is_power_of_two() {
            let now = switchboard_hub::unix_now();
            ended.retain(|_, until| *until > now);
        }
        ended.insert(id, until);
    }

    fn has_ended(&self, id: &str) -> bool {
        let ended = self.ended.lock();
        ended.get(id).is_some_and(|until| *until > switchboard_hub::unix_now())
    }
}

/// Routes of the client endpoint. CORS applies to all of them.
pub fn router(state: Arc<EdgeState>) -> Router {
    use axum::extract::{Request, State};
    let to =
        |call: ClientCall| move |State(state): State<Arc<EdgeState>>, request: Request| dispatch(state, call, request);
    let client = || {
        get(to(ClientCall::Get))
            .post(to(ClientCall::Post))
            .delete(to(ClientCall::Delete))
            .options(to(ClientCall::Preflight))
    };
    let negotiate = || post(to(ClientCall::Negotiate)).options(to(ClientCall::Preflight));
    let routes = Router::new()
        .route("/client/negotiate", negotiate())
        .route("/client/negotiate/", negotiate())
        .route("/client", client())
        .route("/client/", client())
        .with_state(state.clone());
    routes.layer(axum::middleware::from_fn_with_state(state, front_layer))
}

/// A request [`router`] would give to one of its handlers, found without the router (see
/// [`serve_client`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCall {
    Get,
    Post,
    Delete,
    Negotiate,
    Preflight,
}

impl ClientCall {
    /// The handler [`router`] has for `method` on `path`; `None` for anything else, including
    /// a method a route does not take (the router answers that with 405) and `HEAD`.
    pub fn of(method: &http::Method, path: &str) -> Option<ClientCall> {
        use http::Method;
        match path {
            "/client" | "/client/" => match *method {
                Method::GET => Some(ClientCall::Get),
                Method::POST => Some(ClientCall::Post),
                Method::DELETE => Some(ClientCall::Delete),
                Method::OPTIONS => Some(ClientCall::Preflight),
                _ => None,
            },
            "/client/negotiate" | "/client/negotiate/" => match *method {
                Method::POST => Some(ClientCall::Negotiate),
                Method::OPTIONS => Some(ClientCall::Preflight),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Serves a client request as [`router`] does, with the same front and handler, but without
/// the route lookup and the router's boxed services and futures: a node's public port gets
/// these (new connections, Long Polling polls and sends) more than anything but REST calls.
pub async fn serve_client(state: Arc<EdgeState>, call: ClientCall, request: axum::extract::Request) -> Response {
    front(&state, request, |request| dispatch(state.clone(), call, request)).await
}

/// Runs the handler of `call`, for [`router`] and [`serve_client`] alike.
async fn dispatch(state: Arc<EdgeState>, call: ClientCall, request: axum::extract::Request) -> Response {
    let state = axum::extract::State(state);
    match call {
        ClientCall::Get => client_requests::get(state, request).await,
        ClientCall::Post => client_requests::post(state, request).await,
        ClientCall::Delete => client_requests::delete(state, request).await,
        ClientCall::Negotiate => {
            let (parts, _) = request.into_parts();
            negotiate::negotiate(state, parts.headers, parts.uri).await
        }
        ClientCall::Preflight => cors::preflight(request.into_parts().0.headers).await,
    }
}

async fn front_layer(
    axum::extract::State(state): axum::extract::State<Arc<EdgeState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    front(&state, request, |request| next.run(request)).await
}

/// Every client request passes here (one layer, not one per concern: it runs per request):
/// a foreign origin is refused, and the response gets the CORS headers for an allowed one;
/// refused connection attempts are counted by their status (the handlers answer them in many
/// places).
async fn front<F: Future<Output = Response>>(
    state: &EdgeState,
    request: axum::extract::Request,
    handler: impl FnOnce(axum::extract::Request) -> F,
) -> Response {
    use axum::http::StatusCode;
    let origin = match cors::check_origin(state, &request) {
        Ok(origin) => origin,
        Err(refused) => return refused,
    };
    let mut response = handler(request).await;
    let reason = match response.status() {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Some(ConnectFailure::Unauthorized),
        StatusCode::NOT_FOUND => Some(ConnectFailure::UnknownConnection),
        StatusCode::CONFLICT => Some(ConnectFailure::Conflict),
        _ => None,
    };
    if let Some(reason) = reason {
        state.registry.stats().connect_failed(reason);
    }
    if let Some(origin) = origin {
        cors::allow(&mut response, origin);
    }
    response
}

/// Resolves when the connection's outbox may hold frames or a close request; never before the
/// handshake made a connection.
async fn outbox_ready(conn: &Option<Arc<switchboard_hub::Connection>>) {
    match conn {
        Some(conn) => conn.outbox.ready().await,
        None => std::future::pending().await,
    }
}

/// Traces a client's hub message (an invocation of `target`, `bytes` long).
pub(crate) fn trace_message_in(state: &EdgeState, hub: &str, connection: &str, target: &str, bytes: usize) {
    state
        .registry
        .tracer()
        .emit(|| switchboard_hub::TraceEvent::new(hub, connection, "message-in", target).bytes(bytes));
}
