//! The one handler behind `/api/*`: limit, authenticate, route, act.

use crate::UserConnectionsChange;
use crate::payload;
use crate::route::{Family, Target, parse_route};
use crate::{ApiError, ApiState, ConnectionAction, MAX_BODY_BYTES, SendTarget};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use std::sync::Arc;
use switchboard_hub::unix_now;

/// Query parameters the data plane reads.
struct Query {
    application: Option<String>,
    excluded: Vec<String>,
    reason: Option<String>,
    ttl: Option<String>,
    api_version: Option<String>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        let mut q = Query { application: None, excluded: Vec::new(), reason: None, ttl: None, api_version: None };
        for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "application" => q.application = Some(value.into_owned()),
                "excluded" => q.excluded.push(value.into_owned()),
                "reason" => q.reason = Some(value.into_owned()),
                "ttl" => q.ttl = Some(value.into_owned()),
                "api-version" => q.api_version = Some(value.into_owned()),
                _ => {}
            }
        }
        q
    }
}

pub(crate) async fn handle(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    match handle_inner(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle_inner(state: &ApiState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let query = Query::parse(parts.uri.query());
    let route = parse_route(&parts.method, parts.uri.path(), query.application.as_deref())?;
    if route.target == Target::Health {
        return Ok(StatusCode::OK.into_response());
    }
    if let Some(version) = &query.api_version {
        check_api_version(version)?;
    }
    authenticate(state, &parts.headers, parts.uri.path())?;
    let body = read_body(&parts.headers, body).await?;
    let hub = state.registry.get(&route.hub);
    let family = route.family;
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let status = match route.target.clone() {
        Target::Health => StatusCode::OK,
        Target::Broadcast | Target::SendUser(_) | Target::SendGroup(_) | Target::SendConnection(_) => {
            let frames = payload::parse(content_type, &body)?;
            let target = match route.target.clone() {
                Target::SendUser(user) => SendTarget::User(user),
                Target::SendGroup(group) => SendTarget::Group(group),
                Target::SendConnection(connection) => SendTarget::Connection(connection),
                _ => SendTarget::All,
            };
            state.dispatch.send(&route.hub, target, query.excluded.clone(), frames).await.map_err(undelivered)?;
            StatusCode::ACCEPTED
        }
        Target::CloseAll | Target::CloseUser(_) | Target::CloseGroup(_) => {
            let target = match route.target.clone() {
                Target::CloseUser(user) => SendTarget::User(user),
                Target::CloseGroup(group) => SendTarget::Group(group),
                _ => SendTarget::All,
            };
            let (excluded, reason) = (query.excluded.clone(), query.reason.clone());
            state.dispatch.close(&route.hub, target, excluded, reason).await.map_err(undelivered)?;
            StatusCode::NO_CONTENT
        }
        Target::CloseConnection(connection) => {
            let close = ConnectionAction::Close { reason: query.reason.clone() };
            state.dispatch.connection(&route.hub, &connection, close).await.map_err(undelivered)?;
            by_family(family, StatusCode::ACCEPTED, StatusCode::OK)
        }
        Target::ConnectionExists(connection) => {
            let found = state.dispatch.connection(&route.hub, &connection, ConnectionAction::Exists).await;
            exists(found.map_err(undelivered)?, "Warning.Connection.NotExisted")?
        }
        Target::UserExists(user) => {
            let found = state.dispatch.exists(&route.hub, SendTarget::User(user)).await.map_err(undelivered)?;
            exists(found, "Warning.User.NotExisted")?
        }
        Target::GroupExists(group) => {
            let found = state.dispatch.exists(&route.hub, SendTarget::Group(group)).await.map_err(undelivered)?;
            exists(found, "Warning.Group.NotExisted")?
        }
        Target::UserInGroup { user, group } => {
            let persistent = state.registry.user_groups().is_member(&route.hub, &user, &group, unix_now());
            let member = persistent || hub.is_some_and(|h| h.user_in_group(&user, &group));
            exists(member, "Info.User.NotInGroup")?
        }
        Target::AddConnectionToGroup { connection, group } => {
            let add = ConnectionAction::AddToGroup(group);
            if !state.dispatch.connection(&route.hub, &connection, add).await.map_err(undelivered)? {
                return Err(ApiError::not_found("Error.Connection.NotExisted", "the connection does not exist"));
            }
            StatusCode::OK
        }
        Target::RemoveConnectionFromGroup { connection, group } => {
            let remove = ConnectionAction::RemoveFromGroup(group);
            state.dispatch.connection(&route.hub, &connection, remove).await.map_err(undelivered)?;
            StatusCode::OK
        }
        Target::RemoveConnectionFromAllGroups(connection) => {
            let remove = ConnectionAction::RemoveFromAllGroups;
            state.dispatch.connection(&route.hub, &connection, remove).await.map_err(undelivered)?;
            StatusCode::OK
        }
        Target::AddUserToGroup { user, group } => {
            match parse_ttl(query.ttl.as_deref())? {
                Some(0) => {
                    let join = UserConnectionsChange::JoinGroup(group);
                    state.dispatch.user_connections(&route.hub, &user, join).await.map_err(undelivered)?;
                }
                ttl => state.user_groups.add(&route.hub, &user, &group, ttl).await.map_err(unavailable)?,
            }
            by_family(family, StatusCode::ACCEPTED, StatusCode::OK)
        }
        Target::RemoveUserFromGroup { user, group } => {
            state.user_groups.remove(&route.hub, &user, &group).await.map_err(unavailable)?;
            let leave = UserConnectionsChange::LeaveGroup(group);
            state.dispatch.user_connections(&route.hub, &user, leave).await.map_err(undelivered)?;
            by_family(family, StatusCode::ACCEPTED, StatusCode::NO_CONTENT)
        }
        Target::RemoveUserFromAllGroups(user) => {
            state.user_groups.remove_user(&route.hub, &user).await.map_err(unavailable)?;
            let leave = UserConnectionsChange::LeaveAllGroups;
            state.dispatch.user_connections(&route.hub, &user, leave).await.map_err(undelivered)?;
            by_family(family, StatusCode::OK, StatusCode::NO_CONTENT)
        }
    };
    Ok(status.into_response())
}

/// A node holding targets could not be reached: the message may be partly delivered, so the
/// answer is a 500 (which the Azure SDK does not retry for sends).
fn undelivered(error: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error.Service.Delivery",
        format!("not delivered everywhere: {error}"),
    )
}

/// A membership store that could not commit (no quorum, shutting down): retryable.
fn unavailable(error: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Error.Service.Unavailable",
        format!("membership not stored: {error}"),
    )
}

fn by_family(family: Family, v1: StatusCode, dated: StatusCode) -> StatusCode {
    match family {
        Family::V1 => v1,
        Family::Dated => dated,
    }
}

fn exists(found: bool, code: &'static str) -> Result<StatusCode, ApiError> {
    if found { Ok(StatusCode::OK) } else { Err(ApiError::not_found(code, "not found")) }
}

fn parse_ttl(ttl: Option<&str>) -> Result<Option<u64>, ApiError> {
    match ttl {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request("'ttl' must be a whole number of seconds, 0 or more")),
    }
}

/// `YYYY-MM-DD` with an optional `-preview` suffix; any date is accepted so newer clients
/// keep working.
fn check_api_version(version: &str) -> Result<(), ApiError> {
    let date = version.strip_suffix("-preview").unwrap_or(version);
    let b = date.as_bytes();
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if ok { Ok(()) } else { Err(ApiError::bad_request(format!("unsupported api-version '{version}'"))) }
}

fn authenticate(state: &ApiState, headers: &HeaderMap, path: &str) -> Result<(), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    state.verifier.verify_server(token, path).map_err(|e| ApiError::unauthorized(e.to_string()))
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        discard(body).await;
        return Err(ApiError::too_large());
    }
    let mut body = body;
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > MAX_BODY_BYTES {
                discard(body).await;
                return Err(ApiError::too_large());
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(bytes::Bytes::from(collected))
}

/// Reads and drops the rest of an oversized body (up to a bound), so the client finishes
/// sending and sees the 413 instead of a broken pipe.
async fn discard(mut body: Body) {
    const DRAIN_LIMIT: usize = 16 * MAX_BODY_BYTES;
    let mut drained = 0;
    let drain = async {
        while let Some(Ok(frame)) = body.frame().await {
            drained += frame.data_ref().map_or(0, |d| d.len());
            if drained > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
}
