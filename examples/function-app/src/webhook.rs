//! `POST /runtime/webhooks/signalr`: what the Functions `SignalRTrigger` does with the
//! service's upstream calls (azure-serverless.md §5).
//!
//! - missing `X-ASRS-*` headers → 400; a missing or wrong `X-ASRS-Signature` → 401;
//!   another hub, category or event nobody handles → 404; a media type other than JSON or
//!   MessagePack → 415.
//! - `connections`/`connected` and `disconnected` are logged and answered 200.
//! - `messages`: the event is the invocation's target. `echo` answers its first argument: the
//!   body is a complete hub-protocol Completion in the client's protocol (JSON + 0x1E, or a
//!   length-prefixed MessagePack array), which the service hands to the client verbatim.

use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use switchboard_sdk::verify_upstream_signature;

/// JSON hub-protocol record separator.
const RECORD_SEPARATOR: u8 = 0x1e;

/// Hub-protocol message types and MessagePack completion result kinds.
const INVOCATION: u64 = 1;
const COMPLETION: u64 = 3;
const RESULT_KIND_NON_VOID: u64 = 3;

pub(crate) async fn handle(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(connection_id), Some(hub), Some(category), Some(event)) =
        (get("x-asrs-connection-id"), get("x-asrs-hub"), get("x-asrs-category"), get("x-asrs-event"))
    else {
        return (StatusCode::BAD_REQUEST, "missing X-ASRS-Connection-Id, -Hub, -Category or -Event").into_response();
    };
    let Some(signature) = get("x-asrs-signature") else {
        tracing::warn!(connection_id, "upstream call without X-ASRS-Signature");
        return (StatusCode::UNAUTHORIZED, "missing X-ASRS-Signature").into_response();
    };
    if !verify_upstream_signature(&state.access_keys, connection_id, signature) {
        tracing::warn!(connection_id, "upstream call with a bad X-ASRS-Signature");
        return (StatusCode::UNAUTHORIZED, "bad X-ASRS-Signature").into_response();
    }
    if !hub.eq_ignore_ascii_case(&state.hub) {
        return (StatusCode::NOT_FOUND, format!("no functions for hub {hub}")).into_response();
    }
    let user = get("x-asrs-user-id").unwrap_or("(anonymous)");
    match (category.to_ascii_lowercase().as_str(), event.to_ascii_lowercase().as_str()) {
        ("connections", "connected") => {
            tracing::info!(connection_id, user, "connected");
            StatusCode::OK.into_response()
        }
        ("connections", "disconnected") => {
            let error = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").or_else(|| v.get("Error")).and_then(Value::as_str).map(str::to_owned))
                .filter(|e| !e.is_empty());
            tracing::info!(connection_id, user, error = error.as_deref().unwrap_or("none"), "disconnected");
            StatusCode::OK.into_response()
        }
        ("messages", _) => message(&headers, &body, connection_id, user, event),
        _ => (StatusCode::NOT_FOUND, format!("no function for {category}/{event}")).into_response(),
    }
}

/// An invocation, decoded from either protocol.
struct Invocation {
    invocation_id: Option<String>,
    target: String,
    arguments: Arguments,
}

enum Arguments {
    Json(Vec<Value>),
    MessagePack(Vec<rmpv::Value>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonInvocation {
    #[serde(rename = "type")]
    kind: u64,
    #[serde(default)]
    invocation_id: Option<String>,
    target: String,
    #[serde(default)]
    arguments: Vec<Value>,
}

fn message(headers: &HeaderMap, body: &[u8], connection_id: &str, user: &str, event: &str) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let invocation = match media_type.as_str() {
        "application/json" => decode_json(body),
        "application/x-msgpack" => decode_msgpack(body),
        _ => {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("unsupported content type {content_type:?}"))
                .into_response();
        }
    };
    let invocation = match invocation {
        Ok(invocation) => invocation,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
    };
    if !invocation.target.eq_ignore_ascii_case(event) {
        return (StatusCode::BAD_REQUEST, "X-ASRS-Event does not match the invocation target").into_response();
    }
    tracing::info!(connection_id, user, invocation_id = ?invocation.invocation_id, "invocation {}", invocation.target);
    match invocation.target.to_ascii_lowercase().as_str() {
        "echo" => {
            // `send` (no invocation id) expects no answer.
            let Some(id) = invocation.invocation_id else { return StatusCode::OK.into_response() };
            match invocation.arguments {
                Arguments::Json(args) => json_completion(&id, args.into_iter().next().unwrap_or(Value::Null)),
                Arguments::MessagePack(args) => {
                    msgpack_completion(&id, args.into_iter().next().unwrap_or(rmpv::Value::Nil))
                }
            }
        }
        // Like the Functions host with no matching function: the client's invoke() rejects
        // with "Invocation failed, status code 404".
        _ => (StatusCode::NOT_FOUND, format!("no function for messages/{event}")).into_response(),
    }
}

fn decode_json(body: &[u8]) -> Result<Invocation, String> {
    let invocation: JsonInvocation = serde_json::from_slice(body).map_err(|e| format!("bad invocation: {e}"))?;
    if invocation.kind != INVOCATION {
        return Err(format!("expected an invocation (type 1), got type {}", invocation.kind));
    }
    Ok(Invocation {
        invocation_id: invocation.invocation_id,
        target: invocation.target,
        arguments: Arguments::Json(invocation.arguments),
    })
}

/// `[1, headers, invocationId | nil, target, [arguments], (streamIds)]`, without a length prefix.
fn decode_msgpack(body: &[u8]) -> Result<Invocation, String> {
    let mut reader = body;
    let value = rmpv::decode::read_value(&mut reader).map_err(|e| format!("bad MessagePack: {e}"))?;
    let rmpv::Value::Array(items) = value else { return Err("expected a MessagePack array".into()) };
    if items.first().and_then(rmpv::Value::as_u64) != Some(INVOCATION) || items.len() < 5 {
        return Err("expected an invocation array [1, headers, id, target, arguments]".into());
    }
    let invocation_id = match &items[2] {
        rmpv::Value::Nil => None,
        other => Some(other.as_str().ok_or("invocation id is not a string")?.to_owned()),
    };
    let target = items[3].as_str().ok_or("target is not a string")?.to_owned();
    let arguments = match &items[4] {
        rmpv::Value::Array(args) => args.clone(),
        _ => return Err("arguments are not an array".into()),
    };
    Ok(Invocation { invocation_id, target, arguments: Arguments::MessagePack(arguments) })
}

/// `{"type":3,"invocationId":…,"result":…}` + 0x1E.
fn json_completion(invocation_id: &str, result: Value) -> Response {
    let mut body = serde_json::to_vec(&json!({ "type": COMPLETION, "invocationId": invocation_id, "result": result }))
        .expect("a JSON value serializes");
    body.push(RECORD_SEPARATOR);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `[3, {}, invocationId, 3, result]` behind its varint length.
fn msgpack_completion(invocation_id: &str, result: rmpv::Value) -> Response {
    let message = rmpv::Value::Array(vec![
        COMPLETION.into(),
        rmpv::Value::Map(Vec::new()),
        invocation_id.into(),
        RESULT_KIND_NON_VOID.into(),
        result,
    ]);
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &message).expect("writing to a Vec cannot fail");
    let mut body = Vec::with_capacity(payload.len() + 5);
    let mut length = payload.len();
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            body.push(byte);
            break;
        }
        body.push(byte | 0x80);
    }
    body.extend_from_slice(&payload);
    ([(header::CONTENT_TYPE, "application/x-msgpack")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cors::Cors;
    use crate::page::Page;
    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt;
    use switchboard_auth::{AccessKeys, upstream_signature};
    use switchboard_sdk::ServiceClient;
    use tower::ServiceExt;

    const KEY: &str = "test-access-key";

    fn app() -> axum::Router {
        let service =
            ServiceClient::from_connection_string(&format!("Endpoint=http://127.0.0.1:9;AccessKey={KEY};Version=1.0;"))
                .unwrap();
        let state = Arc::new(AppState {
            service,
            hub: "chat".into(),
            access_keys: vec![KEY.into()],
            cors: Cors::default(),
            page: Page { signalr_js: None, api_port: 0 },
        });
        crate::api::router(state)
    }

    fn request(
        category: &str,
        event: &str,
        signature: Option<String>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Request<Body> {
        let mut builder = Request::post("/runtime/webhooks/signalr")
            .header("x-asrs-connection-id", "conn-1")
            .header("x-asrs-hub", "chat")
            .header("x-asrs-category", category)
            .header("x-asrs-event", event)
            .header("content-type", content_type);
        if let Some(signature) = signature {
            builder = builder.header("x-asrs-signature", signature);
        }
        builder.body(Body::from(body)).unwrap()
    }

    fn signed() -> Option<String> {
        Some(upstream_signature(&AccessKeys::new([KEY]).unwrap(), "conn-1"))
    }

    async fn call(request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let response = app().oneshot(request).await.unwrap();
        let status = response.status();
        (status, response.into_body().collect().await.unwrap().to_bytes().to_vec())
    }

    #[tokio::test]
    async fn signature_is_required_and_checked() {
        let body = br#"{"type":10}"#.to_vec();
        let (status, _) = call(request("connections", "connected", None, "application/json", body.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let forged = Some(upstream_signature(&AccessKeys::new(["other-key"]).unwrap(), "conn-1"));
        let (status, _) = call(request("connections", "connected", forged, "application/json", body.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = call(request("connections", "connected", signed(), "application/json", body)).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn echo_answers_a_json_completion() {
        let body = br#"{"type":1,"invocationId":"7","target":"echo","arguments":["hi",2]}"#.to_vec();
        let (status, reply) = call(request("messages", "echo", signed(), "application/json", body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reply.last(), Some(&RECORD_SEPARATOR));
        let completion: Value = serde_json::from_slice(&reply[..reply.len() - 1]).unwrap();
        assert_eq!(completion, json!({"type": 3, "invocationId": "7", "result": "hi"}));
    }

    #[tokio::test]
    async fn echo_answers_a_msgpack_completion() {
        let invocation = rmpv::Value::Array(vec![
            1.into(),
            rmpv::Value::Map(Vec::new()),
            "9".into(),
            "echo".into(),
            rmpv::Value::Array(vec![42.into()]),
        ]);
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &invocation).unwrap();
        let (status, reply) = call(request("messages", "echo", signed(), "application/x-msgpack", body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reply[0] as usize, reply.len() - 1, "one-byte length prefix");
        let completion = rmpv::decode::read_value(&mut &reply[1..]).unwrap();
        assert_eq!(
            completion,
            rmpv::Value::Array(vec![3.into(), rmpv::Value::Map(Vec::new()), "9".into(), 3.into(), 42.into()])
        );
    }

    #[tokio::test]
    async fn unknown_targets_and_bad_requests() {
        let body = br#"{"type":1,"invocationId":"1","target":"nope","arguments":[]}"#.to_vec();
        let (status, _) = call(request("messages", "nope", signed(), "application/json", body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let body = br#"{"type":1,"target":"echo","arguments":["x"]}"#.to_vec();
        let (status, reply) = call(request("messages", "echo", signed(), "application/json", body.clone())).await;
        assert_eq!((status, reply.len()), (StatusCode::OK, 0), "send() gets no completion");
        let (status, _) = call(request("messages", "echo", signed(), "text/plain", body.clone())).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (status, _) = call(request("messages", "other", signed(), "application/json", body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "event must match the target");
        let missing = Request::post("/runtime/webhooks/signalr").body(Body::empty()).unwrap();
        assert_eq!(call(missing).await.0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn api_preflight_and_credentials() {
        let mut cors = Cors::new(&[]);
        cors.allow_listener("127.0.0.1:7072".parse().unwrap());
        let state = Arc::new(AppState {
            service: ServiceClient::from_connection_string("Endpoint=http://127.0.0.1:9;AccessKey=k").unwrap(),
            hub: "chat".into(),
            access_keys: vec!["k".into()],
            cors,
            page: Page { signalr_js: None, api_port: 7071 },
        });
        let preflight = Request::options("/api/negotiate")
            .header("origin", "http://localhost:7072")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-requested-with,x-signalr-user-agent")
            .body(Body::empty())
            .unwrap();
        let response = crate::api::router(state.clone()).oneshot(preflight).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(response.headers()["access-control-allow-origin"], "http://localhost:7072");
        assert_eq!(response.headers()["access-control-allow-credentials"], "true");
        assert_eq!(response.headers()["access-control-allow-headers"], "x-requested-with,x-signalr-user-agent");

        let negotiate = Request::post("/api/negotiate")
            .header("origin", "http://localhost:7072")
            .header("x-ms-client-principal-id", "alice")
            .body(Body::empty())
            .unwrap();
        let response = crate::api::router(state.clone()).oneshot(negotiate).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["access-control-allow-origin"], "http://localhost:7072");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["url"], "http://127.0.0.1:9/client/?hub=chat");
        assert!(answer["accessToken"].as_str().is_some_and(|t| t.split('.').count() == 3));

        let stranger =
            Request::post("/api/negotiate").header("origin", "http://evil.example").body(Body::empty()).unwrap();
        let response = crate::api::router(state).oneshot(stranger).await.unwrap();
        assert!(!response.headers().contains_key("access-control-allow-origin"));
    }
}
