//! The operators' web console, on the internal port under `/console` (never on the public
//! port): the cluster's nodes with live numbers and charts, the hubs and where a user, group or
//! connection lives, a console that makes REST calls (and shows them), and the live trace of a
//! hub or a connection.
//!
//! Signing in takes an access key; the session is a cookie holding its expiry and an HMAC of it
//! under the primary key (`HttpOnly`, `SameSite=Strict`), so rotating the keys ends every
//! session. Every `/console/api/…` route but the sign-in answers 401 without a valid session;
//! the page itself holds no data. The front end is three static files compiled into the binary.

use crate::metrics::Observability;
use axum::Json;
use axum::extract::{Query, Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchboard_auth::{AccessKeys, mint_server_token};
use switchboard_engine::{Call, NodeBus, Target};
use switchboard_hub::{Watched, owner_of, unix_now};
use tower::ServiceExt;

/// What the console acts with, attached with the node's other parts.
#[derive(Clone)]
pub struct ConsoleParts {
    pub keys: AccessKeys,
    pub bus: Arc<dyn NodeBus>,
    /// The public endpoint (REST token audiences).
    pub endpoint: url::Url,
    /// The public port's routes, called in-process.
    pub app: axum::Router,
}

const COOKIE: &str = "switchboard_console";
/// How long a session lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// Trace events one watcher gets per second at most; the rest are counted as skipped.
const TRACE_EVENTS_PER_SECOND: u32 = 200;

/// The console's routes, to nest under `/console` of the internal router.
pub fn router() -> axum::Router<Arc<Observability>> {
    axum::Router::new()
        .route("/", get(|| async { page(INDEX, "text/html; charset=utf-8") }))
        .route("/console.js", get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/console.css", get(|| async { page(STYLE, "text/css; charset=utf-8") }))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/overview", get(overview))
        .route("/api/hubs", get(hubs))
        .route("/api/lookup", get(lookup))
        .route("/api/rest", post(rest))
        .route("/api/trace", get(trace))
}

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

fn page(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Why a console request is not served.
enum Refusal {
    /// 503: the node's parts are not attached yet.
    Starting,
    /// 401: no valid session.
    SignedOut,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Starting => error(StatusCode::SERVICE_UNAVAILABLE, "the node is starting"),
            Refusal::SignedOut => error(StatusCode::UNAUTHORIZED, "sign in with an access key"),
        }
    }
}

/// The node's parts, or 503 while it starts.
fn parts(observability: &Observability) -> Result<crate::metrics::Parts, Refusal> {
    observability.parts().ok_or(Refusal::Starting)
}

/// The node's parts for a signed-in request; 401 otherwise.
fn signed_in(observability: &Observability, headers: &HeaderMap) -> Result<crate::metrics::Parts, Refusal> {
    let parts = parts(observability)?;
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
        .any(|value| session_is_valid(&parts.console.keys, value, unix_now()));
    if session { Ok(parts) } else { Err(Refusal::SignedOut) }
}

fn session_mac(key: &str, expires: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("switchboard-console:{expires}").as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// `{expires}.{mac}` with an unexpired time and the primary key's MAC of it.
fn session_is_valid(keys: &AccessKeys, value: &str, now: u64) -> bool {
    let Some((expires, mac)) = value.split_once('.') else { return false };
    let Ok(expires) = expires.parse::<u64>() else { return false };
    if expires <= now {
        return false;
    }
    let expected = session_mac(&keys.primary(), expires);
    subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), mac.as_bytes()).into()
}

#[derive(Deserialize)]
struct Login {
    key: String,
}

/// `POST /console/api/login {"key"}`: any current access key opens a session.
async fn login(State(observability): State<Arc<Observability>>, Json(login): Json<Login>) -> Response {
    let parts = match parts(&observability) {
        Ok(parts) => parts,
        Err(refusal) => return refusal.into_response(),
    };
    let known = parts.console.keys.current().iter().fold(false, |found, key| {
        found | bool::from(subtle::ConstantTimeEq::ct_eq(key.as_bytes(), login.key.trim().as_bytes()))
    });
    if !known {
        tracing::warn!("console: a sign-in with a wrong access key");
        return error(StatusCode::UNAUTHORIZED, "that is not an access key of this service");
    }
    let expires = unix_now() + SESSION.as_secs();
    let cookie = format!(
        "{COOKIE}={expires}.{}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        session_mac(&parts.console.keys.primary(), expires),
        SESSION.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Json(json!({ "signed_in": true }))).into_response()
}

async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Json(json!({ "signed_in": false }))).into_response()
}

/// `GET /console/api/overview`: this node's numbers and, in a raft cluster, every node's (the
/// others' fetched from their `GET /api/admin/node`).
async fn overview(State(observability): State<Arc<Observability>>, headers: HeaderMap) -> Response {
    let parts = match signed_in(&observability, &headers) {
        Ok(parts) => parts,
        Err(refusal) => return refusal.into_response(),
    };
    let here = observability.node_stats();
    let Some(_) = &parts.control else {
        let node = json!({ "id": parts.node_id, "state": "up", "stats": here });
        return Json(json!({ "nodes": [node] })).into_response();
    };
    let (status, body) = call(&parts.console, "GET", crate::cluster::STATUS_PATH, None).await;
    let Ok(cluster) = serde_json::from_str::<Value>(&body).map_err(|_| status) else {
        return error(StatusCode::BAD_GATEWAY, "the cluster status did not answer");
    };
    let mut nodes = Vec::new();
    for node in cluster["nodes"].as_array().cloned().unwrap_or_default() {
        let id = node["id"].as_u64().unwrap_or(0);
        let down = node["lease_expires_at_ms"].as_u64().is_some_and(|until| until < switchboard_hub::unix_now_ms());
        let stats = if id == parts.node_id {
            here.clone()
        } else if down {
            Value::Null
        } else {
            remote_stats(&parts.console, node["client_url"].as_str()).await
        };
        let state = if down { "down" } else { node["state"].as_str().unwrap_or("unknown") };
        let client_url = match node["client_url"].as_str() {
            Some(url) => url.to_owned(),
            // The embedded single node registers no client address: it is the endpoint.
            None if id == parts.node_id => parts.console.endpoint.as_str().trim_end_matches('/').to_owned(),
            None => String::new(),
        };
        nodes.push(json!({
            "id": id, "roles": node["roles"], "state": state, "client_url": client_url,
            "address": node["address"], "applied_index": node["applied_index"], "stats": stats,
        }));
    }
    Json(json!({ "leader": cluster["leader"], "term": cluster["term"], "nodes": nodes })).into_response()
}

/// Another node's numbers; `null` when it does not answer (or speaks TLS, which this plain
/// client does not).
async fn remote_stats(console: &ConsoleParts, client_url: Option<&str>) -> Value {
    let Some(authority) = client_url.and_then(|url| url.strip_prefix("http://")) else { return Value::Null };
    // The token names the public endpoint the cluster shares, or else the node's own address.
    for audience in [console.endpoint.as_str().trim_end_matches('/').to_owned(), format!("http://{authority}")] {
        let token =
            mint_server_token(&format!("{audience}{NODE_PATH}"), Duration::from_secs(60), &console.keys.primary());
        let answer =
            tokio::time::timeout(Duration::from_secs(2), crate::cluster::request("GET", authority, NODE_PATH, &token));
        match answer.await {
            Ok(Ok((200, body))) => return serde_json::from_str(&body).unwrap_or(Value::Null),
            Ok(Ok((401, _))) => continue,
            _ => return Value::Null,
        }
    }
    Value::Null
}

/// `GET /api/admin/node` on the public port: this node's numbers, for other nodes' consoles.
pub const NODE_PATH: &str = "/api/admin/node";

/// The public route behind [`NODE_PATH`] (a REST token for it).
pub async fn node_endpoint(
    State((observability, verifier)): State<(Arc<Observability>, Arc<switchboard_auth::Verifier>)>,
    request: Request,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if let Err(e) = verifier.verify_server(token, NODE_PATH) {
        return switchboard_api::ApiError::unauthorized(e.to_string()).into_response();
    }
    Json(observability.node_stats()).into_response()
}

/// `GET /console/api/hubs`: the hubs this node serves, with their connections here by
/// transport and protocol and across the cluster.
async fn hubs(State(observability): State<Arc<Observability>>, headers: HeaderMap) -> Response {
    let parts = match signed_in(&observability, &headers) {
        Ok(parts) => parts,
        Err(refusal) => return refusal.into_response(),
    };
    let mut hubs = Vec::new();
    for hub in parts.registry.hubs() {
        let mut here: HashMap<String, u64> = HashMap::new();
        for conn in hub.connections() {
            *here.entry(format!("{} {}", conn.transport.label(), conn.protocol.name())).or_default() += 1;
        }
        let cluster = parts.console.bus.list(hub.name(), Target::All).await.map(|listed| listed.len()).ok();
        hubs.push(json!({ "hub": hub.name(), "here": hub.connection_count(), "by_kind": here, "cluster": cluster }));
    }
    hubs.sort_by(|a, b| a["hub"].as_str().cmp(&b["hub"].as_str()));
    Json(json!({ "hubs": hubs })).into_response()
}

#[derive(Deserialize)]
struct LookupQuery {
    hub: String,
    /// `user`, `group` or `connection`.
    kind: String,
    id: String,
}

/// `GET /console/api/lookup?hub=&kind=&id=`: where a user's or a group's connections live, or
/// whether a connection is live, its node and (when it is here) its groups.
async fn lookup(
    State(observability): State<Arc<Observability>>,
    headers: HeaderMap,
    Query(query): Query<LookupQuery>,
) -> Response {
    let parts = match signed_in(&observability, &headers) {
        Ok(parts) => parts,
        Err(refusal) => return refusal.into_response(),
    };
    let hub = query.hub.to_ascii_lowercase();
    let bus = &parts.console.bus;
    let target = match query.kind.as_str() {
        "user" => Target::User(query.id.clone()),
        "group" => Target::Group(query.id.clone()),
        "connection" => {
            let live = bus.call(&hub, Call::Exists(Target::Connection(query.id.clone()))).await.unwrap_or(false);
            let groups = parts.registry.get(&hub).and_then(|h| h.connection(&query.id)).map(|conn| conn.group_names());
            let user = parts.registry.get(&hub).and_then(|h| h.connection(&query.id)).and_then(|c| c.user_id.clone());
            return Json(json!({
                "connections": if live { vec![json!({"connectionId": query.id, "userId": user, "node": owner_of(&query.id)})] } else { vec![] },
                "groups": groups,
            }))
            .into_response();
        }
        _ => return error(StatusCode::BAD_REQUEST, "kind is user, group or connection"),
    };
    match bus.list(&hub, target).await {
        Ok(listed) => {
            let connections: Vec<Value> = listed
                .iter()
                .map(|l| json!({ "connectionId": l.connection_id, "userId": l.user_id, "node": owner_of(&l.connection_id) }))
                .collect();
            Json(json!({ "connections": connections })).into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct RestCall {
    method: String,
    /// `/api/…` with its query.
    path: String,
    #[serde(default)]
    body: Option<Value>,
}

/// `POST /console/api/rest {"method","path","body"}`: makes the REST call with a fresh token
/// and answers with the call as made (method, URL, body) and the service's answer.
async fn rest(
    State(observability): State<Arc<Observability>>,
    headers: HeaderMap,
    Json(call_made): Json<RestCall>,
) -> Response {
    let parts = match signed_in(&observability, &headers) {
        Ok(parts) => parts,
        Err(refusal) => return refusal.into_response(),
    };
    if !call_made.path.starts_with("/api/")
        || !matches!(call_made.method.as_str(), "GET" | "HEAD" | "POST" | "PUT" | "DELETE")
    {
        return error(StatusCode::BAD_REQUEST, "a REST call is GET, HEAD, POST, PUT or DELETE of /api/…");
    }
    let body = call_made.body.as_ref().map(Value::to_string);
    let (status, answer) = call(&parts.console, &call_made.method, &call_made.path, body.clone()).await;
    let url = format!("{}{}", parts.console.endpoint.as_str().trim_end_matches('/'), call_made.path);
    Json(json!({
        "request": { "method": call_made.method, "url": url, "body": call_made.body },
        "status": status,
        "answer": serde_json::from_str::<Value>(&answer).unwrap_or(Value::String(answer)),
    }))
    .into_response()
}

/// One public route called in-process with a REST token for it: (status, body).
async fn call(console: &ConsoleParts, method: &str, path_and_query: &str, body: Option<String>) -> (u16, String) {
    let path = path_and_query.split('?').next().unwrap_or_default();
    let endpoint = console.endpoint.as_str().trim_end_matches('/');
    let token = mint_server_token(&format!("{endpoint}{path}"), Duration::from_secs(60), &console.keys.primary());
    let mut request = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let Ok(request) = request.body(axum::body::Body::from(body.unwrap_or_default())) else {
        return (400, "an invalid request".into());
    };
    let Ok(response) = console.app.clone().oneshot(request).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[derive(Deserialize)]
struct TraceQuery {
    hub: String,
    connection: Option<String>,
}

/// `GET /console/api/trace?hub=[&connection=]`: the live trace as server-sent events, at most
/// [`TRACE_EVENTS_PER_SECOND`] (a `skipped` event counts the rest, and those lost when the
/// watcher fell behind).
async fn trace(
    State(observability): State<Arc<Observability>>,
    headers: HeaderMap,
    Query(query): Query<TraceQuery>,
) -> Response {
    let parts = match signed_in(&observability, &headers) {
        Ok(parts) => parts,
        Err(refusal) => return refusal.into_response(),
    };
    let hub = query.hub.to_ascii_lowercase();
    let connection = query.connection.filter(|c| !c.is_empty());
    let watch = parts.registry.tracer().watch();
    let state = (watch, hub, connection, 0u32, tokio::time::Instant::now(), 0u64);
    let events = futures_util::stream::unfold(
        state,
        |(mut watch, hub, connection, mut sent, mut window, mut skipped)| async move {
            loop {
                let watched = watch.next().await?;
                let event = match watched {
                    Watched::Missed(n) => {
                        skipped += n;
                        continue;
                    }
                    Watched::Event(event) => event,
                };
                if event.hub != hub || connection.as_ref().is_some_and(|c| *c != event.connection) {
                    continue;
                }
                if window.elapsed() >= Duration::from_secs(1) {
                    (sent, window) = (0, tokio::time::Instant::now());
                }
                if sent >= TRACE_EVENTS_PER_SECOND {
                    skipped += 1;
                    continue;
                }
                sent += 1;
                let mut data = serde_json::to_value(&*event).unwrap_or_default();
                if skipped > 0 {
                    data["skipped_before"] = skipped.into();
                    skipped = 0;
                }
                let sse = Event::default().data(data.to_string());
                return Some((Ok::<_, std::convert::Infallible>(sse), (watch, hub, connection, sent, window, skipped)));
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_need_the_primary_keys_mac_and_an_unexpired_time() {
        let keys = AccessKeys::new(["primary", "secondary"]).unwrap();
        let value = format!("2000.{}", session_mac("primary", 2000));
        assert!(session_is_valid(&keys, &value, 1999));
        assert!(!session_is_valid(&keys, &value, 2000), "expired");
        assert!(!session_is_valid(&keys, &format!("2000.{}", session_mac("secondary", 2000)), 1999));
        assert!(!session_is_valid(&keys, &format!("2001.{}", session_mac("primary", 2000)), 1999), "time changed");
        for garbage in ["", ".", "x.y", "2000", "2000."] {
            assert!(!session_is_valid(&keys, garbage, 1999), "{garbage}");
        }
        keys.replace(["rotated"]);
        assert!(!session_is_valid(&keys, &value, 1999), "a rotation ends sessions");
    }
}
