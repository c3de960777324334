//! The answer of `:invoke` (client results), in the two shapes callers expect:
//!
//! * the Management SDK (it sends `Accept: application/octet-stream`) reads the client's
//!   Completion itself: 200, `X-Protocol: json|messagepack`, the body the client's framed
//!   Completion message exactly as the client sent it (an error completion included: the SDK
//!   raises it);
//! * anyone else gets the swagger's `200 {"result": …}` (a MessagePack result converted to
//!   JSON), or 500 with the client's error.
//!
//! A connection that does not exist is 404 `Error.Connection.NotExisted`. Once the invocation
//! was sent every failure is a 500 (the SDK raises a 500's body and does not retry it: the
//! invocation may have reached the client), each with its own error code: the client answered
//! with an error (`Error.Invocation.Failed`, swagger shape only), went away first
//! (`Error.Invocation.Disconnected`), or did not answer in time (`Error.Invocation.Timeout`).

use crate::ApiError;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use switchboard_engine::Invoked;
use switchboard_protocol::{Completion, HubMessage, Protocol, json, msgpack};

pub(crate) fn answer(invoked: Invoked, connection: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let (protocol, frame) = match invoked {
        Invoked::Completed { protocol, frame } => (protocol, frame),
        Invoked::NotFound => {
            return Err(ApiError::not_found("Error.Connection.NotExisted", "the connection does not exist"));
        }
        Invoked::Disconnected => {
            return Err(failed("Error.Invocation.Disconnected", format!("Connection '{connection}' is disconnected.")));
        }
        Invoked::TimedOut => {
            let message = format!("Connection '{connection}' did not answer in time.");
            return Err(failed("Error.Invocation.Timeout", message));
        }
    };
    if wants_completion(headers) {
        let headers = [("x-protocol", protocol.name()), (header::CONTENT_TYPE.as_str(), "application/octet-stream")];
        return Ok((StatusCode::OK, headers, frame).into_response());
    }
    let result = match protocol {
        Protocol::Json => json::decode(&frame).ok().and_then(|(message, _)| completion(message)),
        Protocol::MessagePack => msgpack::decode(&frame)
            .ok()
            .and_then(|(message, _)| completion(message))
            .map(|result| result.map(|value| value.map(|value| msgpack::msgpack_to_json(&value)))),
    };
    match result {
        Some(Ok(value)) => {
            let body = serde_json::json!({ "result": value.unwrap_or_default() }).to_string();
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        Some(Err(error)) => Err(failed("Error.Invocation.Failed", error)),
        None => Err(failed("Error.Invocation.Failed", "the client's answer is not a completion".into())),
    }
}

/// The Management SDK asks for the client's own Completion message.
fn wants_completion(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.split(',').any(|kind| kind.trim().starts_with("application/octet-stream")))
}

/// A completion's result (`None` for a void one) or its error.
fn completion<V>(message: HubMessage<V>) -> Option<Result<Option<V>, String>> {
    match message {
        HubMessage::Completion { result: Completion::Value(value), .. } => Some(Ok(Some(value))),
        HubMessage::Completion { result: Completion::Void, .. } => Some(Ok(None)),
        HubMessage::Completion { result: Completion::Error(error), .. } => Some(Err(error)),
        _ => None,
    }
}

fn failed(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(invoked: Invoked) -> (StatusCode, &'static str) {
        let error = answer(invoked, "c", &HeaderMap::new()).expect_err("a failure");
        (error.status, error.code)
    }

    #[test]
    fn every_failure_has_its_own_status_and_code() {
        let mut error_completion = Vec::new();
        Protocol::Json.encode_completion_error("1", "nope", &mut error_completion);
        let client_error = Invoked::Completed { protocol: Protocol::Json, frame: error_completion.into() };
        assert_eq!(code(Invoked::NotFound), (StatusCode::NOT_FOUND, "Error.Connection.NotExisted"));
        assert_eq!(code(client_error), (StatusCode::INTERNAL_SERVER_ERROR, "Error.Invocation.Failed"));
        assert_eq!(code(Invoked::Disconnected), (StatusCode::INTERNAL_SERVER_ERROR, "Error.Invocation.Disconnected"));
        assert_eq!(code(Invoked::TimedOut), (StatusCode::INTERNAL_SERVER_ERROR, "Error.Invocation.Timeout"));
    }
}
