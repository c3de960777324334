//! The WebSocket transport: the upgrade handler here, then one task per connection that owns
//! the raw socket ([`task`]), its socket writes ([`write`]), and stateful reconnect's parking
//! of connections whose socket was lost ([`parking`]).

mod parking;
mod socket;
mod task;
mod write;

use crate::negotiate::allowed;
use crate::request::{ClientQuery, authenticate, refuse};
use crate::{EdgeState, Ticket};
use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use std::sync::Arc;
use switchboard_hub::{is_valid_hub_name, new_connection_id, owner_of, unix_now};
use switchboard_protocol::negotiate::TransportKind;

pub(crate) use parking::Parked;
use task::ConnectionTask;

/// A connection id named by the `id` query value, and until when it may create a connection.
pub(crate) struct ResolvedId {
    pub(crate) connection_id: String,
    pub(crate) expires_at: u64,
}

/// Turns the `id` query value into a connection id: a connection token from negotiate v1, or
/// (negotiate v0, where the client sends its connection id) a plain id of this node.
pub(crate) fn resolve_id(state: &EdgeState, id: &str, hub: &str) -> Option<ResolvedId> {
    if let Some(opened) = state.tokens.open(id, hub) {
        return Some(ResolvedId { connection_id: opened.connection_id, expires_at: opened.expires_at });
    }
    let legacy = owner_of(id) == Some(state.config.node_id) && !id.contains('~');
    legacy.then(|| ResolvedId {
        connection_id: id.to_owned(),
        expires_at: unix_now() + state.config.connect_window.as_secs(),
    })
}

/// `GET /client/?hub=&id=` with a WebSocket upgrade.
pub(crate) async fn connect(state: Arc<EdgeState>, mut request: Request, query: &ClientQuery<'_>) -> Response {
    // The socket's admission ticket goes with it into the connection task.
    let ticket = request.extensions().get::<Ticket>().cloned();
    let hub_name = query.get("hub").unwrap_or_default().to_ascii_lowercase();
    // A stateful connection coming back: its secret id is the credential (access tokens gate
    // establishment only).
    if let Some(resolved) =
        query.get("id").filter(|_| is_valid_hub_name(&hub_name)).and_then(|id| resolve_id(&state, id, &hub_name))
        && let Some(parked) = state.take_parked_soon(&resolved.connection_id, &hub_name).await
    {
        return match fastwebsockets::upgrade::upgrade(&mut request) {
            Ok((response, upgrade)) => {
                let task = ConnectionTask::resumed(state, parked, ticket);
                tokio::spawn(task.run_after(upgrade));
                response.map(|_| axum::body::Body::empty())
            }
            Err(e) => {
                state.park(parked);
                refuse(StatusCode::BAD_REQUEST, format!("invalid WebSocket upgrade: {e}"))
            }
        };
    }
    let (hub_name, identity) = match authenticate(&state, request.headers(), query) {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    if !allowed(TransportKind::WebSockets, identity.allowed_transports) {
        return refuse(StatusCode::FORBIDDEN, "the access token does not allow WebSockets");
    }
    let resolved = match query.get("id") {
        // skipNegotiation, and signalrcore after a redirect: the connection is created here.
        None => ResolvedId {
            connection_id: new_connection_id(state.config.node_id),
            expires_at: unix_now() + state.config.connect_window.as_secs(),
        },
        Some(id) => match resolve_id(&state, id, &hub_name) {
            Some(resolved) => resolved,
            None => return refuse(StatusCode::NOT_FOUND, "no connection with this id"),
        },
    };
    let hub = state.registry.get_or_create(&hub_name);
    if let Some(refused) = crate::client_requests::user_limit(&state, &hub, identity.user_id.as_deref()) {
        return refused;
    }
    let connection_id = resolved.connection_id;
    if hub.connection(&connection_id).is_some() || state.http_connections.lock().contains_key(connection_id.as_str()) {
        return refuse(StatusCode::CONFLICT, "the connection already has an active transport");
    }
    if state.has_ended(&connection_id) || resolved.expires_at <= unix_now() {
        return refuse(StatusCode::NOT_FOUND, "the connection has ended or its id expired");
    }
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(ok) => ok,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("invalid WebSocket upgrade: {e}")),
    };
    let task =
        ConnectionTask::new(state, hub, connection_id, identity, query.without_token(), resolved.expires_at, ticket);
    tokio::spawn(task.run_after(upgrade));
    response.map(|_| axum::body::Body::empty())
}
