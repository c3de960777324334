//! The HTTP-triggered "functions": negotiate, send, group membership.

use crate::{AppState, cors, page, webhook};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router, middleware};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use switchboard_sdk::SdkError;

/// The header App Service Authentication puts the signed-in user's id in.
pub(crate) const PRINCIPAL_HEADER: &str = "x-ms-client-principal-id";

/// Lifetime of the client tokens negotiate hands out (the SDK's default).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Everything the main listener serves.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/negotiate", post(negotiate))
        .route("/api/messages", post(send_message))
        .route("/api/groups/{group}/join", post(join_group))
        .route("/api/groups/{group}/leave", post(leave_group))
        // `layer`, not `route_layer`: it also sees the OPTIONS preflights the POST-only
        // routes would answer 405.
        .layer(middleware::from_fn_with_state(state.clone(), cors::apply));
    Router::new()
        .merge(api)
        .route("/runtime/webhooks/signalr", post(webhook::handle))
        .with_state(state.clone())
        .merge(page::router(state, page::Listener::Api))
}

/// The user App Service Authentication signed in, if any.
fn principal(headers: &HeaderMap) -> Option<&str> {
    headers.get(PRINCIPAL_HEADER).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// `POST /api/negotiate`: `{url, accessToken}` for the hub, bound to the signed-in user.
async fn negotiate(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let user = principal(&headers);
    let answer = state.service.negotiate(&state.hub, user, &[], TOKEN_LIFETIME);
    tracing::info!(user = user.unwrap_or("(anonymous)"), "negotiate");
    Json(answer).into_response()
}

/// Body of `POST /api/messages`, shaped like the Functions `SignalRMessage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    #[serde(default = "default_target")]
    target: String,
    #[serde(default)]
    arguments: Vec<Value>,
    #[serde(default, alias = "userId")]
    user: Option<String>,
    #[serde(default, alias = "groupName")]
    group: Option<String>,
}

fn default_target() -> String {
    "newMessage".to_string()
}

/// `POST /api/messages`: broadcast, or to one user, or to one group.
async fn send_message(State(state): State<Arc<AppState>>, Json(body): Json<SendRequest>) -> Response {
    let hub = state.service.hub(&state.hub);
    let (result, to) = match (&body.user, &body.group) {
        (Some(_), Some(_)) => return (StatusCode::BAD_REQUEST, "give either user or group, not both").into_response(),
        (Some(user), None) => (hub.send_to_user(user, &body.target, &body.arguments).await, format!("user {user}")),
        (None, Some(group)) => {
            (hub.send_to_group(group, &body.target, &body.arguments, &[]).await, format!("group {group}"))
        }
        (None, None) => (hub.broadcast(&body.target, &body.arguments, &[]).await, "everyone".to_string()),
    };
    match result {
        Ok(()) => {
            tracing::info!(target = %body.target, "sent to {to}");
            StatusCode::ACCEPTED.into_response()
        }
        Err(error) => sdk_error(error),
    }
}

/// Body of the group membership calls: a connection or a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MemberRequest {
    #[serde(default)]
    connection_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

/// `POST /api/groups/{group}/join`.
async fn join_group(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    Json(body): Json<MemberRequest>,
) -> Response {
    membership(&state, &group, body, true).await
}

/// `POST /api/groups/{group}/leave`.
async fn leave_group(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    Json(body): Json<MemberRequest>,
) -> Response {
    membership(&state, &group, body, false).await
}

async fn membership(state: &AppState, group: &str, body: MemberRequest, join: bool) -> Response {
    let hub = state.service.hub(&state.hub);
    let result = match (body.connection_id.as_deref(), body.user_id.as_deref(), join) {
        (Some(connection), None, true) => hub.add_connection_to_group(connection, group).await,
        (Some(connection), None, false) => hub.remove_connection_from_group(connection, group).await,
        (None, Some(user), true) => hub.add_user_to_group(user, group, None).await,
        (None, Some(user), false) => hub.remove_user_from_group(user, group).await,
        _ => return (StatusCode::BAD_REQUEST, "give either connectionId or userId").into_response(),
    };
    match result {
        Ok(()) => {
            let who = body.connection_id.or(body.user_id).unwrap_or_default();
            tracing::info!("{who} {} group {group}", if join { "joined" } else { "left" });
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => sdk_error(error),
    }
}

/// The service's 4xx answers pass through (bad names, unknown connections); anything else is a 502.
fn sdk_error(error: SdkError) -> Response {
    tracing::warn!("service call failed: {error}");
    let status = error
        .status()
        .filter(|s| (400..500).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    (status, error.to_string()).into_response()
}
