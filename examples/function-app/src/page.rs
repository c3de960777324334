//! The chat page: `index.html` and `app.js` are compiled in; `signalr.min.js` is the
//! `@microsoft/signalr` npm package's browser bundle, read from disk at start-up (it is not
//! committed); `config.js` tells the page where the API is.

use crate::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");

/// Where `npm ci` in this example puts the bundle.
const BUNDLE_IN_PACKAGE: &str = "node_modules/@microsoft/signalr/dist/browser/signalr.min.js";

#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) signalr_js: Option<Bytes>,
    pub(crate) api_port: u16,
}

/// Which listener serves the page: the API's own, or the second page-only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    Api,
    PageOnly,
}

/// Reads the browser bundle from `given`, else from this example's `node_modules`, else from
/// `./node_modules`. Without it the page still loads and says what to do.
pub(crate) fn load_signalr_js(given: Option<&Path>) -> Option<Bytes> {
    let candidates: Vec<PathBuf> = match given {
        Some(path) => vec![path.to_path_buf()],
        None => vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLE_IN_PACKAGE), PathBuf::from(BUNDLE_IN_PACKAGE)],
    };
    for path in &candidates {
        match std::fs::read(path) {
            Ok(bytes) => {
                tracing::info!("serving /signalr.min.js from {}", path.display());
                return Some(Bytes::from(bytes));
            }
            Err(error) if given.is_some() => tracing::error!("cannot read --signalr-js {}: {error}", path.display()),
            Err(_) => {}
        }
    }
    if given.is_none() {
        tracing::warn!(
            "no @microsoft/signalr browser bundle: run `npm ci` in examples/function-app or pass --signalr-js; \
             the page cannot connect without it"
        );
    }
    None
}

pub(crate) fn router(state: Arc<AppState>, listener: Listener) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/app.js", get(app_js))
        .route("/signalr.min.js", get(signalr_js))
        .route("/config.js", get(move |state, headers| config_js(state, headers, listener)))
        .with_state(state)
}

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML).into_response()
}

async fn app_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS).into_response()
}

async fn signalr_js(State(state): State<Arc<AppState>>) -> Response {
    match &state.page.signalr_js {
        Some(bytes) => ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], bytes.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            "console.error('signalr.min.js is missing: run `npm ci` in examples/function-app or start the app with --signalr-js PATH');",
        )
            .into_response(),
    }
}

/// `window.FUNCTION_APP = {apiBase, hub}`: the API on the host name the page was loaded from,
/// so `localhost` and `127.0.0.1` pages each talk to a matching origin.
async fn config_js(State(state): State<Arc<AppState>>, headers: HeaderMap, listener: Listener) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let api_base = match listener {
        Listener::Api => format!("http://{host}/api"),
        Listener::PageOnly => format!("http://{}:{}/api", host_name(host), state.page.api_port),
    };
    let config = json!({ "apiBase": api_base, "hub": state.hub });
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        format!("window.FUNCTION_APP = {config};\n"),
    )
        .into_response()
}

/// `host[:port]` → `host` (brackets of IPv6 literals kept).
fn host_name(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_names() {
        assert_eq!(host_name("127.0.0.1:7072"), "127.0.0.1");
        assert_eq!(host_name("localhost"), "localhost");
        assert_eq!(host_name("[::1]:7072"), "[::1]");
    }
}
