//! CORS for browser clients (signalr-protocols.md pitfall 6): the JS client sends credentials,
//! so the exact origin is echoed with `Access-Control-Allow-Credentials: true` (`*` would fail),
//! and preflights are answered for the custom headers every request carries.

use crate::EdgeState;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

const ALLOWED_HEADERS: &str = "authorization, content-type, x-requested-with, x-signalr-user-agent";

/// The request's `Origin` when it is allowed (or absent: `Ok(None)`); a 403 for others.
pub(crate) fn check_origin(state: &EdgeState, request: &Request) -> Result<Option<HeaderValue>, Response> {
    match request.headers().get(header::ORIGIN) {
        Some(origin) if !state.config.origin_allowed(origin.to_str().unwrap_or_default()) => {
            Err((StatusCode::FORBIDDEN, "origin not allowed").into_response())
        }
        origin => Ok(origin.cloned()),
    }
}

/// Adds the CORS headers for an allowed `origin` to a response.
pub(crate) fn allow(response: &mut Response, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// Answers an `OPTIONS` preflight.
pub(crate) async fn preflight(headers: HeaderMap) -> Response {
    let allow_headers = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static(ALLOWED_HEADERS));
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE, OPTIONS")),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers),
            (header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400")),
        ],
    )
        .into_response()
}
