//! `POST /client/negotiate?hub=`: the second hop of the serverless flow. The client arrives
//! with the access token the application minted and leaves with a connection id and token.

use crate::EdgeState;
use crate::request::{ClientQuery, authenticate, refuse};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri, header};
use std::sync::Arc;
use switchboard_hub::{new_connection_id, unix_now};
use switchboard_protocol::negotiate::{NegotiateQuery, NegotiateResponse, TransportKind, error_json};

/// Transports this node serves, in the order clients should try them.
pub(crate) const TRANSPORTS: [TransportKind; 3] = TransportKind::ALL;

/// Transports allowed by the token's `asrs.s.htt` bitmask (all when absent).
pub(crate) fn allowed(transport: TransportKind, mask: Option<u32>) -> bool {
    mask.is_none_or(|m| m & transport.bitmask() != 0)
}

pub(crate) async fn negotiate(State(state): State<Arc<EdgeState>>, headers: HeaderMap, uri: Uri) -> Response {
    let query = ClientQuery::parse(uri.query());
    let (hub, identity) = match authenticate(&state, &headers, &query) {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let negotiate = match NegotiateQuery::parse(query.pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))) {
        Ok(q) => q,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let transports: Vec<TransportKind> =
        TRANSPORTS.into_iter().filter(|t| allowed(*t, identity.allowed_transports)).collect();
    if transports.is_empty() {
        return json(error_json("The access token allows no transport this server offers."));
    }
    let connection_id = new_connection_id(state.config.node_id);
    // Version 0 clients present the connection id itself; the token is dropped from the answer.
    let expires_at = unix_now() + state.config.connect_window.as_secs();
    let token = state.tokens.issue(&connection_id, &hub, expires_at);
    let stateful = negotiate.use_stateful_reconnect && state.config.stateful_reconnect;
    let response = NegotiateResponse::new(negotiate.negotiate_version, connection_id, token, &transports, stateful);
    json(response.to_json())
}

fn json(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
