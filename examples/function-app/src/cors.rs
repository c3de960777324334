//! CORS for the app's own API (what a Function App's CORS settings with "Enable
//! Access-Control-Allow-Credentials" do): the `@microsoft/signalr` client and the page send
//! credentials, so an allowed origin is echoed exactly with
//! `Access-Control-Allow-Credentials: true` (`*` would be refused by the browser), and
//! preflights are answered for the custom headers the client sends. Other origins get no CORS
//! headers, so the browser blocks the answer.

use crate::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use std::net::SocketAddr;
use std::sync::Arc;

/// Headers a preflight is told are fine when it names none.
const DEFAULT_ALLOWED_HEADERS: &str =
    "content-type, authorization, x-requested-with, x-signalr-user-agent, x-ms-client-principal-id";

#[derive(Debug, Default)]
pub(crate) struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    /// `*` allows every origin (still echoed exactly, never a literal `*`).
    pub(crate) fn new(origins: &[String]) -> Self {
        let mut cors = Cors::default();
        for origin in origins {
            let origin = origin.trim().trim_end_matches('/');
            if origin == "*" {
                cors.any = true;
            } else if !origin.is_empty() {
                cors.origins.push(origin.to_ascii_lowercase());
            }
        }
        cors
    }

    /// Allows the origins a browser shows for pages of the listener at `addr`.
    pub(crate) fn allow_listener(&mut self, addr: SocketAddr) {
        let port = addr.port();
        let mut hosts = vec!["127.0.0.1".to_string(), "localhost".to_string(), "[::1]".to_string()];
        if !addr.ip().is_unspecified() {
            hosts.push(match addr {
                SocketAddr::V4(v4) => v4.ip().to_string(),
                SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            });
        }
        for host in hosts {
            let origin = format!("http://{host}:{port}");
            if !self.origins.contains(&origin) {
                self.origins.push(origin);
            }
        }
    }

    pub(crate) fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin))
    }
}

/// Middleware for `/api/*`: answers preflights and decorates answers to allowed origins.
pub(crate) async fn apply(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin.as_ref().is_some_and(|o| o.to_str().is_ok_and(|o| state.cors.allows(o)));
    if request.method() == Method::OPTIONS {
        if !allowed {
            return StatusCode::FORBIDDEN.into_response();
        }
        return decorate(preflight(request.headers()), origin);
    }
    let response = next.run(request).await;
    if allowed { decorate(response, origin) } else { response }
}

fn preflight(headers: &HeaderMap) -> Response {
    let allow_headers = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS));
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS")),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers),
            (header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600")),
        ],
    )
        .into_response()
}

fn decorate(mut response: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_origins_and_explicit_ones() {
        let mut cors = Cors::new(&["http://Example.com:8000/".to_string()]);
        cors.allow_listener("127.0.0.1:7072".parse().unwrap());
        assert!(cors.allows("http://example.com:8000"));
        assert!(cors.allows("http://127.0.0.1:7072"));
        assert!(cors.allows("http://localhost:7072"));
        assert!(!cors.allows("http://127.0.0.1:7071"));
        assert!(!cors.allows("null"));
        assert!(Cors::new(&["*".to_string()]).allows("http://anything:1"));
    }
}
