//! Matching Azure's REST paths (azure-serverless.md §4.3, §4.4) on decoded segments.

use crate::ApiError;
use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use std::borrow::Cow;
use switchboard_hub::{Target, is_valid_group_name, is_valid_hub_name};

/// Which route family a request used; a few status codes differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `/api/v1/...`
    V1,
    /// `/api/...?api-version=2022-06-01` and later dates.
    Dated,
}

/// The REST operation a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Health,
    /// `GET /api/auth/accessKey` (and `/api/v1/…`): Microsoft Entra ID's temporary keys, which
    /// Switchboard does not issue.
    EntraAccessKey,
    /// `POST /api/hubs/{hub}/:generateToken`: a client token for the hub.
    GenerateToken,
    /// `GET …/groups/{group}/connections` (Azure), and the extensions `GET …/users/{user}/connections`
    /// and `GET …/connections`: the live connections, paged.
    List(Target),
    /// Extensions: `GET …/:count`, `…/groups/{group}/:count`, `…/users/{user}/:count`.
    Count(Target),
    /// `POST /api/hubs/{hub}/:execute?filter=`: commands on every connection the filter matches.
    Execute,
    Broadcast,
    CloseAll,
    SendUser(String),
    CloseUser(String),
    UserExists(String),
    RemoveUserFromAllGroups(String),
    AddUserToGroup {
        user: String,
        group: String,
    },
    RemoveUserFromGroup {
        user: String,
        group: String,
    },
    UserInGroup {
        user: String,
        group: String,
    },
    SendGroup(String),
    CloseGroup(String),
    GroupExists(String),
    AddConnectionToGroup {
        connection: String,
        group: String,
    },
    RemoveConnectionFromGroup {
        connection: String,
        group: String,
    },
    RemoveConnectionFromAllGroups(String),
    SendConnection(String),
    /// `POST …/connections/{id}/:invoke`: a client result.
    Invoke(String),
    /// `POST …/connections/{id}/streams/{stream}/:send?completed=`: an item of the stream the
    /// client opened with a StreamInvocation (`stream` is its invocation id).
    SendStreamItem {
        connection: String,
        stream: String,
    },
    /// `POST …/connections/{id}/streams/{stream}/:complete?reason=`: ends that stream.
    CompleteStream {
        connection: String,
        stream: String,
    },
    ConnectionExists(String),
    CloseConnection(String),
}

impl Operation {
    /// A short name of the kind of call, without its ids (a bounded metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Health => "health",
            Operation::EntraAccessKey => "entra_access_key",
            Operation::GenerateToken => "generate_token",
            Operation::List(_) => "list_connections",
            Operation::Count(_) => "count_connections",
            Operation::Execute => "execute",
            Operation::Broadcast => "broadcast",
            Operation::CloseAll => "close_all",
            Operation::SendUser(_) => "send_user",
            Operation::CloseUser(_) => "close_user",
            Operation::UserExists(_) => "user_exists",
            Operation::RemoveUserFromAllGroups(_) => "remove_user_from_all_groups",
            Operation::AddUserToGroup { .. } => "add_user_to_group",
            Operation::RemoveUserFromGroup { .. } => "remove_user_from_group",
            Operation::UserInGroup { .. } => "user_in_group",
            Operation::SendGroup(_) => "send_group",
            Operation::CloseGroup(_) => "close_group",
            Operation::GroupExists(_) => "group_exists",
            Operation::AddConnectionToGroup { .. } => "add_connection_to_group",
            Operation::RemoveConnectionFromGroup { .. } => "remove_connection_from_group",
            Operation::RemoveConnectionFromAllGroups(_) => "remove_connection_from_all_groups",
            Operation::SendConnection(_) => "send_connection",
            Operation::Invoke(_) => "invoke",
            Operation::SendStreamItem { .. } => "send_stream_item",
            Operation::CompleteStream { .. } => "complete_stream",
            Operation::ConnectionExists(_) => "connection_exists",
            Operation::CloseConnection(_) => "close_connection",
        }
    }
}

/// A matched request: its family, the internal hub name (lower-cased, `app_hub` with an
/// `application`) and the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub family: Family,
    pub hub: String,
    pub operation: Operation,
}

/// The most segments a route has (`/api/v1/hubs/{hub}/connections/{id}/streams/{id}/:send`,
/// refused as dated-only); a longer path is no route.
const MAX_SEGMENTS: usize = 9;

/// Matches `method` and the raw (still percent-encoded) `path`. `application` is the
/// `application` query value, if any.
pub fn parse_route(method: &Method, path: &str, application: Option<&str>) -> Result<Route, ApiError> {
    // On the stack: this runs for every REST call.
    let mut decoded: [Cow<'_, str>; MAX_SEGMENTS] = Default::default();
    let mut count = 0;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let slot = decoded.get_mut(count).ok_or_else(not_found)?;
        // A segment that is not UTF-8 once decoded is refused: decoded lossily, `%FF` and
        // `%FE` would name the same group.
        *slot = percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| ApiError::bad_request("the path holds percent-encoded bytes that are not UTF-8"))?;
        count += 1;
    }
    let segments: [&str; MAX_SEGMENTS] = std::array::from_fn(|i| decoded[i].as_ref());
    let (family, rest) = match &segments[..count] {
        ["api", "v1", rest @ ..] => (Family::V1, rest),
        ["api", rest @ ..] => (Family::Dated, rest),
        _ => return Err(not_found()),
    };
    let read = matches!(*method, Method::GET | Method::HEAD);
    if rest == ["auth", "accessKey"] {
        return if read {
            Ok(Route { family, hub: String::new(), operation: Operation::EntraAccessKey })
        } else {
            Err(method_not_allowed())
        };
    }
    if rest == ["health"] {
        return if read {
            Ok(Route { family, hub: String::new(), operation: Operation::Health })
        } else {
            Err(method_not_allowed())
        };
    }
    let ["hubs", hub, rest @ ..] = rest else { return Err(not_found()) };
    let hub = internal_hub(hub, application)?;
    let post = *method == Method::POST;
    let put = *method == Method::PUT;
    let delete = *method == Method::DELETE;
    let s = |v: &str| v.to_owned();
    let operation = match rest {
        [] | [":send"] if post => Operation::Broadcast,
        [":generateToken"] if post && family == Family::Dated => Operation::GenerateToken,
        [":execute"] if post && family == Family::Dated => Operation::Execute,
        ["connections"] if read => Operation::List(Target::All),
        ["groups", g, "connections"] if read => Operation::List(Target::Group(group_name(g)?)),
        ["users", u, "connections"] if read => Operation::List(Target::User(user_id(u)?)),
        [":count"] if read => Operation::Count(Target::All),
        ["groups", g, ":count"] if read => Operation::Count(Target::Group(group_name(g)?)),
        ["users", u, ":count"] if read => Operation::Count(Target::User(user_id(u)?)),
        [":closeConnections"] if post => Operation::CloseAll,
        ["users", u] | ["users", u, ":send"] if post => Operation::SendUser(user_id(u)?),
        ["users", u] if read => Operation::UserExists(user_id(u)?),
        ["users", u, ":closeConnections"] if post => Operation::CloseUser(user_id(u)?),
        ["users", u, "groups"] if delete => Operation::RemoveUserFromAllGroups(user_id(u)?),
        ["users", u, "groups", g] | ["groups", g, "users", u] => {
            let (user, group) = (user_id(u)?, group_name(g)?);
            match *method {
                Method::PUT => Operation::AddUserToGroup { user, group },
                Method::DELETE => Operation::RemoveUserFromGroup { user, group },
                Method::GET | Method::HEAD => Operation::UserInGroup { user, group },
                _ => return Err(method_not_allowed()),
            }
        }
        ["groups", g] | ["groups", g, ":send"] if post => Operation::SendGroup(group_name(g)?),
        ["groups", g] if read => Operation::GroupExists(group_name(g)?),
        ["groups", g, ":closeConnections"] if post => Operation::CloseGroup(group_name(g)?),
        ["groups", g, "connections", c] | ["connections", c, "groups", g] if put || delete => {
            let (connection, group) = (s(c), group_name(g)?);
            if put {
                Operation::AddConnectionToGroup { connection, group }
            } else {
                Operation::RemoveConnectionFromGroup { connection, group }
            }
        }
        ["connections", c, "groups"] if delete => Operation::RemoveConnectionFromAllGroups(s(c)),
        ["connections", c] | ["connections", c, ":send"] if post => Operation::SendConnection(s(c)),
        ["connections", c, ":invoke"] if post && family == Family::Dated => Operation::Invoke(s(c)),
        ["connections", c, "streams", id, verb @ (":send" | ":complete")] if post && family == Family::Dated => {
            let (connection, stream) = (s(c), stream_id(id)?);
            if *verb == ":send" {
                Operation::SendStreamItem { connection, stream }
            } else {
                Operation::CompleteStream { connection, stream }
            }
        }
        ["connections", c] if read => Operation::ConnectionExists(s(c)),
        ["connections", c] if delete => Operation::CloseConnection(s(c)),
        _ => return Err(if known_shape(rest) { method_not_allowed() } else { not_found() }),
    };
    Ok(Route { family, hub, operation })
}

/// Whether `rest` would match some route with another method (405 rather than 404).
fn known_shape(rest: &[&str]) -> bool {
    matches!(
        rest,
        [] | [":send" | ":closeConnections" | ":generateToken" | ":count" | ":execute"]
            | ["connections"]
            | ["users" | "groups" | "connections", _]
            | ["users", _, ":send" | ":closeConnections" | "groups" | "connections" | ":count"]
            | ["groups", _, ":send" | ":closeConnections" | "connections" | ":count"]
            | ["connections", _, ":send" | "groups" | ":invoke"]
            | ["users", _, "groups", _]
            | ["groups", _, "users" | "connections", _]
            | ["connections", _, "groups", _]
            | ["connections", _, "streams", _, ":send" | ":complete"]
    )
}

fn internal_hub(hub: &str, application: Option<&str>) -> Result<String, ApiError> {
    if !is_valid_hub_name(hub) {
        return Err(ApiError::bad_request(format!("invalid hub name '{}'", clip(hub))));
    }
    match application {
        None | Some("") => Ok(hub.to_ascii_lowercase()),
        Some(app) if is_valid_hub_name(app) => Ok(format!("{}_{}", app.to_ascii_lowercase(), hub.to_ascii_lowercase())),
        Some(app) => Err(ApiError::bad_request(format!("invalid application name '{}'", clip(app)))),
    }
}

/// Azure's bound on user ids.
pub const MAX_USER_ID_CHARS: usize = 1024;

fn user_id(user: &str) -> Result<String, ApiError> {
    if user.chars().count() <= MAX_USER_ID_CHARS {
        Ok(user.to_owned())
    } else {
        Err(ApiError::bad_request(format!("invalid user id: 1 to {MAX_USER_ID_CHARS} characters")))
    }
}

fn group_name(group: &str) -> Result<String, ApiError> {
    if is_valid_group_name(group) {
        Ok(group.to_owned())
    } else {
        Err(ApiError::bad_request("invalid group name: 1 to 1024 characters, not only whitespace"))
    }
}

/// The swagger's bound on stream ids.
const MAX_STREAM_ID_CHARS: usize = 100;

fn stream_id(id: &str) -> Result<String, ApiError> {
    if id.chars().count() <= MAX_STREAM_ID_CHARS && !id.trim().is_empty() {
        Ok(id.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid stream id: 1 to {MAX_STREAM_ID_CHARS} characters, not only whitespace"
        )))
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn not_found() -> ApiError {
    ApiError::not_found("Error.Request.NotFound", "no such route")
}

fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Error.Request.MethodNotAllowed", "method not allowed on this route")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Result<Route, ApiError> {
        parse_route(&method, path, None)
    }

    fn target(method: Method, path: &str) -> Operation {
        route(method, path).unwrap().operation
    }

    #[test]
    fn both_families_and_aliases() {
        assert_eq!(target(Method::POST, "/api/v1/hubs/Chat"), Operation::Broadcast);
        assert_eq!(target(Method::POST, "/api/hubs/chat/:send"), Operation::Broadcast);
        assert_eq!(route(Method::POST, "/api/hubs/Chat/:send").unwrap().hub, "chat");
        assert_eq!(route(Method::POST, "/api/hubs/chat/:send").unwrap().family, Family::Dated);
        assert_eq!(target(Method::POST, "/api/v1/hubs/chat/users/u1"), Operation::SendUser("u1".into()));
        assert_eq!(target(Method::HEAD, "/api/hubs/chat/users/u1"), Operation::UserExists("u1".into()));
        let add = Operation::AddUserToGroup { user: "u".into(), group: "g".into() };
        assert_eq!(target(Method::PUT, "/api/v1/hubs/chat/groups/g/users/u"), add);
        assert_eq!(target(Method::PUT, "/api/v1/hubs/chat/users/u/groups/g"), add);
        assert_eq!(target(Method::PUT, "/api/hubs/chat/users/u/groups/g"), add);
        let join = Operation::AddConnectionToGroup { connection: "c".into(), group: "g".into() };
        assert_eq!(target(Method::PUT, "/api/v1/hubs/chat/groups/g/connections/c"), join);
        assert_eq!(target(Method::PUT, "/api/v1/hubs/chat/connections/c/groups/g"), join);
        assert_eq!(target(Method::DELETE, "/api/hubs/chat/connections/c"), Operation::CloseConnection("c".into()));
        assert_eq!(target(Method::GET, "/api/v1/health"), Operation::Health);
        assert_eq!(target(Method::HEAD, "/api/health"), Operation::Health);
    }

    #[test]
    fn segments_are_decoded_after_splitting() {
        assert_eq!(target(Method::POST, "/api/hubs/chat/groups/a%2Fb%20c/:send"), Operation::SendGroup("a/b c".into()));
    }

    #[test]
    fn application_prefixes_the_hub() {
        let r = parse_route(&Method::POST, "/api/hubs/Chat/:send", Some("App")).unwrap();
        assert_eq!(r.hub, "app_chat");
        assert!(parse_route(&Method::POST, "/api/hubs/chat/:send", Some("1bad")).is_err());
    }

    #[test]
    fn bad_names_and_unknown_routes() {
        assert_eq!(route(Method::POST, "/api/hubs/1abc/:send").unwrap_err().status, StatusCode::BAD_REQUEST);
        let long = format!("/api/hubs/{}/:send", "a".repeat(129));
        assert_eq!(route(Method::POST, &long).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(
            route(Method::POST, "/api/hubs/chat/groups/%20%20/:send").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(route(Method::POST, "/api/hubs/chat/nothing/x/y/z").unwrap_err().status, StatusCode::NOT_FOUND);
        let deep = format!("/api/v1/hubs/chat{}", "/groups/g".repeat(40));
        assert_eq!(route(Method::PUT, &deep).unwrap_err().status, StatusCode::NOT_FOUND);
        assert_eq!(route(Method::PATCH, "/api/hubs/chat/users/u").unwrap_err().status, StatusCode::METHOD_NOT_ALLOWED);
    }

    /// W6: bytes that are not UTF-8 name no group (lossy decoding made `%FF` and `%FE` equal).
    #[test]
    fn segments_that_are_not_utf8_are_refused() {
        for path in ["/api/v1/hubs/chat/groups/%FF", "/api/hubs/chat/groups/%FE/:send", "/api/v1/hubs/chat/users/%C3"] {
            let error = route(Method::POST, path).expect_err("refused");
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{path}");
        }
        assert!(route(Method::POST, "/api/v1/hubs/chat/groups/%C3%A9").is_ok(), "é is UTF-8");
    }

    /// W2: user ids are 1 to 1,024 characters, on every user route.
    #[test]
    fn user_ids_longer_than_1024_characters_are_refused() {
        let long = "u".repeat(MAX_USER_ID_CHARS + 1);
        let ok = "é".repeat(MAX_USER_ID_CHARS);
        for (method, path) in [
            (Method::POST, "/api/v1/hubs/chat/users/{u}"),
            (Method::HEAD, "/api/hubs/chat/users/{u}"),
            (Method::POST, "/api/hubs/chat/users/{u}/:closeConnections"),
            (Method::PUT, "/api/v1/hubs/chat/users/{u}/groups/g"),
            (Method::DELETE, "/api/v1/hubs/chat/groups/g/users/{u}"),
            (Method::DELETE, "/api/hubs/chat/users/{u}/groups"),
        ] {
            let error = route(method.clone(), &path.replace("{u}", &long)).expect_err("refused");
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{path}");
            assert!(route(method, &path.replace("{u}", &ok)).is_ok(), "{path}");
        }
    }

    #[test]
    fn stream_routes_name_the_connection_and_the_stream() {
        let send = target(Method::POST, "/api/hubs/chat/connections/c.1/streams/s%201/:send");
        assert_eq!(send, Operation::SendStreamItem { connection: "c.1".into(), stream: "s 1".into() });
        let complete = target(Method::POST, "/api/hubs/chat/connections/c.1/streams/s/:complete");
        assert_eq!(complete, Operation::CompleteStream { connection: "c.1".into(), stream: "s".into() });
        let ok = "x".repeat(100);
        assert!(route(Method::POST, &format!("/api/hubs/chat/connections/c/streams/{ok}/:send")).is_ok());
        for stream in ["x".repeat(101), "%20%20".into()] {
            let error = route(Method::POST, &format!("/api/hubs/chat/connections/c/streams/{stream}/:send"));
            assert_eq!(error.expect_err("refused").status, StatusCode::BAD_REQUEST, "{stream}");
        }
        let v1 = route(Method::POST, "/api/v1/hubs/chat/connections/c/streams/s/:send").expect_err("dated only");
        assert_eq!(v1.status, StatusCode::METHOD_NOT_ALLOWED);
        let get = route(Method::GET, "/api/hubs/chat/connections/c/streams/s/:complete").expect_err("POST only");
        assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    /// Paths of no route are 404; 405 only where the path exists for another method.
    #[test]
    fn unknown_routes_are_404_and_wrong_methods_405() {
        for path in ["/api/v1/hubs/chat/groups/g/unknown", "/api/hubs/chat/users/u/nothing", "/api/hubs/chat/:nothing"]
        {
            assert_eq!(route(Method::POST, path).expect_err("refused").status, StatusCode::NOT_FOUND, "{path}");
        }
        for (method, path) in [(Method::GET, "/api/hubs/chat/groups/g/:send"), (Method::PUT, "/api/v1/hubs/chat")] {
            assert_eq!(route(method, path).expect_err("refused").status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        }
        assert_eq!(target(Method::POST, "/api/hubs/chat/:generateToken"), Operation::GenerateToken);
        assert_eq!(target(Method::POST, "/api/hubs/chat/connections/c/:invoke"), Operation::Invoke("c".into()));
        let v1 = route(Method::POST, "/api/v1/hubs/chat/connections/c/:invoke").expect_err("dated family only");
        assert_eq!(v1.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn the_entra_access_key_route_is_known_on_both_families() {
        assert_eq!(target(Method::GET, "/api/auth/accessKey"), Operation::EntraAccessKey);
        assert_eq!(target(Method::GET, "/api/v1/auth/accessKey"), Operation::EntraAccessKey);
        assert_eq!(route(Method::POST, "/api/auth/accessKey").expect_err("405").status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
