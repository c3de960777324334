//! The REST data plane application back ends drive Switchboard with, exactly as they drive
//! Azure SignalR Service (azure-serverless.md §4): both route families (`/api/hubs/...` with
//! `api-version`, and `/api/v1/hubs/...` with its aliases), server tokens with lenient
//! audiences, `ErrorDetail` errors with `x-ms-error-code`, and the 1 MB body limit.
//!
//! Paths are matched by hand on percent-decoded segments ([`route`]) because Azure's literal
//! segments such as `:send` are not expressible in axum's path syntax, and because a group
//! may contain an encoded `/`.

mod error;
mod handlers;
mod invoke;
mod payload;
mod route;

pub use error::ApiError;
pub use handlers::handle;
pub use payload::{MAX_ARGUMENTS_DEPTH, MAX_EXECUTE_COMMANDS, parse as parse_payload, parse_commands};
pub use route::{Family, MAX_USER_ID_CHARS, Operation, Route, parse_route};

use axum::Router;
use axum::extract::{Request, State};
use std::sync::Arc;
use switchboard_auth::Verifier;
use switchboard_engine::{MembershipStore, NodeBus};
use switchboard_hub::Registry;

/// Largest accepted request body (Azure's documented limit).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What REST handlers share.
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub verifier: Arc<Verifier>,
    /// The public endpoint: the audience of the client tokens `:generateToken` mints.
    pub endpoint: url::Url,
    /// Where persistent user-group memberships are kept (the engine's store).
    pub store: Arc<dyn MembershipStore>,
    /// Where sends and connection calls go (the engine's bus: this node, or the cluster).
    pub bus: Arc<dyn NodeBus>,
    /// User-group memberships one hub may store (0: no cap). Checked against this node's view
    /// before a write, so concurrent writes through several nodes may pass it by a few.
    pub max_memberships_per_hub: usize,
}

/// The kind of call ([`Operation::kind`]) a REST response answered, in its extensions: what
/// the server's metrics label it with, without parsing the route again.
#[derive(Debug, Clone, Copy)]
pub struct RouteKind(pub &'static str);

/// Every `/api` route, as a fallback: merged into a router, it answers each path no other
/// route there matched (404 outside `/api`). A fallback rather than a wildcard route, so a
/// REST call is not matched twice and its path is not also decoded into axum's parameters.
/// A server may also call [`handle`] directly, without a router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .fallback(|State(state): State<Arc<ApiState>>, request: Request| handle(state, request))
        .with_state(state)
}
