//! CORS for browser clients (signalr-protocols.md pitfall 6): the JS client sends credentials,
//! so the exact origin is echoed with `Access-Control-Allow-Credentials: true` (`*` would fail),
//! and preflights are answered for the custom headers every request carries.

use crate::EdgeState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use std::sync::Arc;

const ALLOWED_HEADERS: &str = "authorization, content-type, x-requested-with, x-signalr-user-agent";

/// Adds CORS headers to responses for allowed origins and refuses others.
pub(crate) async fn apply(State(state): State<Arc<EdgeState>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    if let Some(origin) = &origin
        && !state.config.origin_allowed(origin.to_str().unwrap_or_default())
    {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let mut response = next.run(request).await;
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
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
