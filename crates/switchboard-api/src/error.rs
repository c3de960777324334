//! [`ApiError`]: REST errors in Azure's `ErrorDetail` shape with `x-ms-error-code`, and the one
//! mapping of engine failures to status codes.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use switchboard_engine::EngineError;

/// An error answered as Azure's `ErrorDetail` JSON with the `x-ms-error-code` header (the
/// Management SDK throws on a 404 without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Error.Request.Invalid", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Error.Request.Unauthorized", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "Error.Request.TooLarge", "the request body exceeds 1 MB")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.code, "message": self.message, "target": null, "details": []});
        let mut response =
            (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        response.headers_mut().insert("x-ms-error-code", HeaderValue::from_static(self.code));
        response
    }
}

/// The one mapping of engine failures to REST answers.
///
/// | engine error | status | `x-ms-error-code` |
/// |---|---|---|
/// | `NoQuorum`, `Timeout`, `ShuttingDown` (the store did not commit) | 503 | `Error.Service.Unavailable` |
/// | `Unavailable` (Redis cannot be reached: nothing was sent or stored) | 503 | `Error.Service.Unavailable` |
/// | `Unreachable`, `NodeTimeout`, `Refused`, `Incomplete` (a node holding targets did not take the call) | 500 | `Error.Service.Delivery` |
/// | `Invalid` | 400 | `Error.Request.Invalid` |
///
/// A send that may have reached some targets answers 500, which the Azure SDKs do not retry for
/// sends; a membership that was not stored answers 503, which they do retry.
impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Error.Service.Unavailable",
                format!("nothing was done: {error}"),
            ),
            EngineError::NoQuorum(_) | EngineError::Timeout(_) | EngineError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Error.Service.Unavailable",
                format!("membership not stored: {error}"),
            ),
            EngineError::Unreachable { .. }
            | EngineError::NodeTimeout { .. }
            | EngineError::Refused { .. }
            | EngineError::Incomplete { .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error.Service.Delivery",
                format!("not delivered everywhere: {error}"),
            ),
            EngineError::Invalid(_) => ApiError::bad_request(error.to_string()),
            EngineError::GroupLimit => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Error.Connection.GroupLimit",
                "the connection is in its maximum of groups (--max-groups-per-connection)",
            ),
        }
    }
}
