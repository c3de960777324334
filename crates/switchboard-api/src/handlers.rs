//! The one handler behind `/api/*`: limit, authenticate, route, act.

use crate::payload;
use crate::route::{Family, Operation, Route, parse_route};
use crate::{ApiError, ApiState, MAX_BODY_BYTES};
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use std::sync::Arc;
use switchboard_engine::{Call, ClientInvocation, Target};
use switchboard_hub::unix_now;
use switchboard_hub::{Filter, Frames};

/// How long `:invoke` waits for the client's answer (Azure documents none; the SDK's HTTP
/// client gives up after 100 s).
const CLIENT_RESULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Query parameters the data plane reads.
struct Query {
    application: Option<String>,
    excluded: Vec<String>,
    reason: Option<String>,
    ttl: Option<String>,
    api_version: Option<String>,
    user_id: Option<String>,
    minutes_to_expire: Option<String>,
    max_page_size: Option<String>,
    top: Option<String>,
    continuation: Option<String>,
    filter: Option<String>,
    completed: Option<String>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        let mut q = Query {
            application: None,
            excluded: Vec::new(),
            reason: None,
            ttl: None,
            api_version: None,
            user_id: None,
            minutes_to_expire: None,
            max_page_size: None,
            top: None,
            continuation: None,
            filter: None,
            completed: None,
        };
        for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "application" => q.application = Some(value.into_owned()),
                "excluded" => q.excluded.push(value.into_owned()),
                "reason" => q.reason = Some(value.into_owned()),
                "ttl" => q.ttl = Some(value.into_owned()),
                "api-version" => q.api_version = Some(value.into_owned()),
                "userId" => q.user_id = Some(value.into_owned()),
                "minutesToExpire" => q.minutes_to_expire = Some(value.into_owned()),
                "maxpagesize" => q.max_page_size = Some(value.into_owned()),
                "top" => q.top = Some(value.into_owned()),
                "continuationToken" => q.continuation = Some(value.into_owned()),
                "filter" => q.filter = Some(value.into_owned()),
                "completed" => q.completed = Some(value.into_owned()),
                _ => {}
            }
        }
        q
    }
}

/// Answers one REST call (any path: outside the routes, 404).
pub async fn handle(state: Arc<ApiState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query = Query::parse(parts.uri.query());
    let route = match parse_route(&parts.method, parts.uri.path(), query.application.as_deref()) {
        Ok(route) => route,
        Err(error) => return error.into_response(),
    };
    let kind = crate::RouteKind(route.operation.kind());
    let mut response =
        handle_route(&state, parts, body, query, route).await.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(kind);
    response
}

async fn handle_route(
    state: &ApiState,
    parts: http::request::Parts,
    body: Body,
    query: Query,
    route: Route,
) -> Result<Response, ApiError> {
    if route.operation == Operation::Health {
        return Ok(StatusCode::OK.into_response());
    }
    if route.operation == Operation::EntraAccessKey {
        // The SDK asks here with a Microsoft Entra ID token for a temporary access key. Entra ID
        // tokens cannot be checked without reaching Microsoft's issuer, so this is refused plainly.
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Error.Auth.EntraIdNotSupported",
            "Microsoft Entra ID credentials are not supported: use a connection string with an AccessKey",
        ));
    }
    match &query.api_version {
        Some(version) => check_api_version(version)?,
        // The dated family's swagger requires it on every hub operation.
        None if route.family == Family::Dated => {
            return Err(ApiError::bad_request("the 'api-version' query parameter is required"));
        }
        None => {}
    }
    authenticate(state, &parts.headers, parts.uri.path())?;
    let body = read_body(&parts.headers, body).await?;
    let family = route.family;
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if let Operation::List(target) = route.operation {
        let page = Page::from_query(&query)?;
        let listed = state.bus.list(&route.hub, target).await?;
        return Ok(page.answer(&listed, &state.endpoint, parts.uri.path(), &query));
    }
    let Query { excluded, reason, ttl, user_id, minutes_to_expire, filter, completed, .. } = query;
    let bus = |call: Call| state.bus.call(&route.hub, call);
    let status = match route.operation {
        Operation::Health => StatusCode::OK,
        Operation::GenerateToken => return generate_token(state, &route.hub, user_id, minutes_to_expire),
        Operation::List(_) | Operation::EntraAccessKey => unreachable!("answered above"),
        Operation::Execute => {
            let filter = Filter::parse(filter.as_deref().filter(|f| !f.trim().is_empty()).unwrap_or("true"))
                .map_err(|error| ApiError::bad_request(error.to_string()))?;
            let commands = payload::parse_commands(&body)?;
            bus(Call::Execute { filter, commands }).await?;
            StatusCode::ACCEPTED
        }
        Operation::Count(target) => {
            let count = state.bus.list(&route.hub, target).await?.len();
            let body = serde_json::json!({ "count": count }).to_string();
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response());
        }
        Operation::Invoke(connection) => {
            let invocation_id = switchboard_hub::new_invocation_id();
            let frames = payload::parse(content_type, &body)?.with_invocation_id(&invocation_id);
            let timeout = CLIENT_RESULT_TIMEOUT;
            let invocation = ClientInvocation { connection: connection.clone(), invocation_id, frames, timeout };
            let invoked = state.bus.invoke(&route.hub, invocation).await?;
            return crate::invoke::answer(invoked, &connection, &parts.headers);
        }
        Operation::SendStreamItem { connection, stream } => {
            let item = Some(payload::parse_stream_item(&stream, &body)?);
            let end = parse_bool("completed", completed.as_deref())?.then(|| Frames::completion(&stream, None));
            if !bus(Call::Stream { connection, stream, item, end }).await? {
                return Err(ApiError::not_found(
                    "Error.Stream.NotExisted",
                    "the connection has no open stream of this id",
                ));
            }
            StatusCode::ACCEPTED
        }
        Operation::CompleteStream { connection, stream } => {
            // Idempotent (the SDK retries it): a stream already ended, or a connection gone, is fine.
            let end = Some(Frames::completion(&stream, reason.as_deref().filter(|r| !r.is_empty())));
            bus(Call::Stream { connection, stream, item: None, end }).await?;
            StatusCode::ACCEPTED
        }
        Operation::Broadcast | Operation::SendUser(_) | Operation::SendGroup(_) | Operation::SendConnection(_) => {
            let frames = payload::parse(content_type, &body)?;
            let target = match route.operation {
                Operation::SendUser(user) => Target::User(user),
                Operation::SendGroup(group) => Target::Group(group),
                Operation::SendConnection(connection) => Target::Connection(connection),
                _ => Target::All,
            };
            bus(Call::Send { target, excluded, frames }).await?;
            StatusCode::ACCEPTED
        }
        Operation::CloseAll | Operation::CloseUser(_) | Operation::CloseGroup(_) => {
            let target = match route.operation {
                Operation::CloseUser(user) => Target::User(user),
                Operation::CloseGroup(group) => Target::Group(group),
                _ => Target::All,
            };
            bus(Call::Close { target, excluded, reason }).await?;
            StatusCode::NO_CONTENT
        }
        Operation::CloseConnection(connection) => {
            bus(Call::Close { target: Target::Connection(connection), excluded, reason }).await?;
            by_family(family, StatusCode::ACCEPTED, StatusCode::OK)
        }
        Operation::ConnectionExists(connection) => {
            exists(bus(Call::Exists(Target::Connection(connection))).await?, "Warning.Connection.NotExisted")?
        }
        Operation::UserExists(user) => exists(bus(Call::Exists(Target::User(user))).await?, "Warning.User.NotExisted")?,
        Operation::GroupExists(group) => {
            exists(bus(Call::Exists(Target::Group(group))).await?, "Warning.Group.NotExisted")?
        }
        Operation::UserInGroup { user, group } => {
            let persistent = state.registry.user_groups().is_member(&route.hub, &user, &group, unix_now());
            let hub = state.registry.get(&route.hub);
            let member = persistent || hub.is_some_and(|h| h.user_in_group(&user, &group));
            exists(member, "Info.User.NotInGroup")?
        }
        Operation::AddConnectionToGroup { connection, group } => {
            if !bus(Call::AddToGroup { connection, group }).await? {
                return Err(ApiError::not_found("Error.Connection.NotExisted", "the connection does not exist"));
            }
            StatusCode::OK
        }
        Operation::RemoveConnectionFromGroup { connection, group } => {
            bus(Call::RemoveFromGroup { connection, group }).await?;
            StatusCode::OK
        }
        Operation::RemoveConnectionFromAllGroups(connection) => {
            bus(Call::RemoveFromAllGroups { connection }).await?;
            StatusCode::OK
        }
        Operation::AddUserToGroup { user, group } => {
            match parse_ttl(ttl.as_deref())? {
                Some(0) => _ = bus(Call::UserJoinGroup { user, group }).await?,
                ttl => {
                    check_membership_cap(state, &route.hub, &user, &group)?;
                    state.store.add(&route.hub, &user, &group, ttl).await?
                }
            }
            by_family(family, StatusCode::ACCEPTED, StatusCode::OK)
        }
        Operation::RemoveUserFromGroup { user, group } => {
            state.store.remove(&route.hub, &user, &group).await?;
            bus(Call::UserLeaveGroup { user, group }).await?;
            by_family(family, StatusCode::ACCEPTED, StatusCode::NO_CONTENT)
        }
        Operation::RemoveUserFromAllGroups(user) => {
            state.store.remove_user(&route.hub, &user).await?;
            bus(Call::UserLeaveAllGroups { user }).await?;
            by_family(family, StatusCode::OK, StatusCode::NO_CONTENT)
        }
    };
    Ok(status.into_response())
}

/// One page of a connection listing: `maxpagesize` (1 to 200, default 200), `top` (at most this
/// many over every page; absent: all) and `continuationToken` (opaque: the last connection id of
/// the previous page). Listings are sorted by connection id, so a page never repeats or skips a
/// connection that stayed connected.
struct Page {
    size: usize,
    top: Option<usize>,
    after: Option<String>,
}

impl Page {
    const MAX_SIZE: usize = 200;

    fn from_query(query: &Query) -> Result<Page, ApiError> {
        let number = |text: &Option<String>, name: &str, range: std::ops::RangeInclusive<usize>| match text.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => text.parse::<usize>().ok().filter(|n| range.contains(n)).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "'{name}' must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ))
            }),
        };
        let size = number(&query.max_page_size, "maxpagesize", 1..=Self::MAX_SIZE)?.unwrap_or(Self::MAX_SIZE);
        let top = number(&query.top, "top", 1..=usize::MAX)?;
        let after = match query.continuation.as_deref() {
            None | Some("") => None,
            Some(token) => Some(
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| ApiError::bad_request("'continuationToken' is not one this service issued"))?,
            ),
        };
        Ok(Page { size, top, after })
    }

    /// `{"value":[{"connectionId","userId"}],"nextLink"}`; `nextLink` (absolute) only when more follow.
    fn answer(
        &self,
        listed: &[switchboard_engine::Listed],
        endpoint: &url::Url,
        path: &str,
        query: &Query,
    ) -> Response {
        let start = self.after.as_ref().map_or(0, |after| listed.partition_point(|l| l.connection_id <= *after));
        let take = self.top.map_or(self.size, |top| top.min(self.size));
        let page = &listed[start..(start + take).min(listed.len())];
        let value: Vec<serde_json::Value> = page
            .iter()
            .map(|l| match &l.user_id {
                Some(user) => serde_json::json!({ "connectionId": l.connection_id, "userId": user }),
                None => serde_json::json!({ "connectionId": l.connection_id }),
            })
            .collect();
        let left_in_top = self.top.map(|top| top - page.len());
        let more = start + page.len() < listed.len() && left_in_top != Some(0);
        let mut body = serde_json::json!({ "value": value });
        if let (true, Some(last)) = (more, page.last()) {
            let mut next = endpoint.clone();
            next.set_path(path);
            {
                let mut pairs = next.query_pairs_mut();
                pairs.append_pair("maxpagesize", &self.size.to_string());
                if let Some(left) = left_in_top {
                    pairs.append_pair("top", &left.to_string());
                }
                let token =
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &last.connection_id);
                pairs.append_pair("continuationToken", &token);
                if let Some(application) = &query.application {
                    pairs.append_pair("application", application);
                }
                if let Some(version) = &query.api_version {
                    pairs.append_pair("api-version", version);
                }
            }
            body["nextLink"] = serde_json::Value::String(next.to_string());
        }
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

/// `:generateToken`: a client token for the hub (audience `{endpoint}/client/?hub={hub}`),
/// signed with the primary key, valid `minutesToExpire` minutes (default 60, at least 1).
fn generate_token(
    state: &ApiState,
    hub: &str,
    user_id: Option<String>,
    minutes: Option<String>,
) -> Result<Response, ApiError> {
    let minutes =
        match minutes.as_deref() {
            None | Some("") => 60,
            Some(text) => text.parse::<u32>().ok().filter(|minutes| *minutes >= 1).ok_or_else(|| {
                ApiError::bad_request("'minutesToExpire' must be a whole number of minutes, 1 or more")
            })?,
        };
    if user_id.as_ref().is_some_and(|user| user.chars().count() > crate::MAX_USER_ID_CHARS) {
        return Err(ApiError::bad_request("invalid user id: 1 to 1024 characters"));
    }
    let audience = format!("{}/client/?hub={hub}", state.endpoint.as_str().trim_end_matches('/'));
    let lifetime = std::time::Duration::from_secs(u64::from(minutes) * 60);
    let key = state.verifier.keys().primary();
    let token =
        switchboard_auth::mint_client_token(&audience, user_id.as_deref().filter(|u| !u.is_empty()), lifetime, &key);
    let body = serde_json::json!({ "token": token }).to_string();
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
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

/// `--max-memberships-per-hub`: a new membership in a full hub is refused (refreshing one is not).
fn check_membership_cap(state: &ApiState, hub: &str, user: &str, group: &str) -> Result<(), ApiError> {
    let cap = state.max_memberships_per_hub;
    let stored = state.registry.user_groups();
    if cap == 0 || stored.is_member(hub, user, group, unix_now()) || stored.hub_membership_count(hub) < cap {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Error.Hub.MembershipLimit",
        format!("the hub stores {cap} user-group memberships, the most this service allows"),
    ))
}

/// A boolean query parameter (`true`/`false` in any case; absent is false).
fn parse_bool(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("") => Ok(false),
        Some(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Some(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ApiError::bad_request(format!("'{name}' must be true or false"))),
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
    // A body that arrives in one frame (most do) is kept as it came; more frames are joined.
    let mut first = bytes::Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if joined.as_ref().map_or(first.len(), Vec::len) + data.len() > MAX_BODY_BYTES {
            discard(body).await;
            return Err(ApiError::too_large());
        }
        match &mut joined {
            Some(joined) => joined.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => joined = Some([first.as_ref(), data.as_ref()].concat()),
        }
    }
    Ok(joined.map_or(first, bytes::Bytes::from))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A request body that arrives in the given pieces, one frame each (as a chunked upload does).
    struct Pieces(VecDeque<bytes::Bytes>);

    impl http_body::Body for Pieces {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|piece| Ok(http_body::Frame::data(piece))))
        }
    }

    fn body(pieces: &[&[u8]]) -> Body {
        Body::new(Pieces(pieces.iter().map(|piece| bytes::Bytes::copy_from_slice(piece)).collect()))
    }

    #[tokio::test]
    async fn a_body_is_read_whole_in_one_piece_or_many() {
        let headers = HeaderMap::new();
        assert_eq!(read_body(&headers, body(&[])).await.unwrap(), "");
        assert_eq!(read_body(&headers, body(&[b"{\"target\":1}"])).await.unwrap(), "{\"target\":1}");
        let read = read_body(&headers, body(&[b"{\"tar", b"", b"get\"", b":1}"])).await.unwrap();
        assert_eq!(read, "{\"target\":1}");
    }

    /// Without a `Content-Length` (chunked), the limit holds however the pieces fall.
    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_in_one_piece_or_many() {
        let headers = HeaderMap::new();
        let half = vec![b' '; MAX_BODY_BYTES / 2];
        assert_eq!(read_body(&headers, body(&[&half, &half])).await.unwrap().len(), MAX_BODY_BYTES);
        for pieces in [vec![&half[..], &half, b"x"], vec![&[b' '; MAX_BODY_BYTES + 1][..]]] {
            let error = read_body(&headers, body(&pieces)).await.unwrap_err();
            assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        }
    }
}
