//! The Rust counterpart of Azure's SignalR Management SDK (transient mode), for application
//! back ends that drive Switchboard — or Azure SignalR Service itself — in serverless mode.
//!
//! - [`ServiceClient`]: built from the same connection string Azure hands out
//!   (`Endpoint=…;AccessKey=…;Version=1.0;`, with `Port`, `ClientEndpoint` and
//!   `ServerEndpoint` honoured). [`ServiceClient::negotiate`] mints the `{url, accessToken}`
//!   answer a negotiate endpoint returns to SignalR clients, with the claims the Azure SDK
//!   writes.
//! - [`HubClient`]: one async method per data-plane route of the `2022-06-01` REST API —
//!   sends, closes, existence checks, group membership — each with a fresh server token.
//! - [`verify_upstream_signature`]: checks `X-ASRS-Signature` on upstream webhooks.
//! - [`SdkError`]: the service's status, `x-ms-error-code` and body, or the transport failure.
//!
//! ```text
//!  app back end                                   Switchboard / Azure SignalR
//!  ───────────                                    ───────────────────────────
//!  negotiate()  ── {url, accessToken} ──▶ client ──▶ POST /client/negotiate, /client/ (WS…)
//!  HubClient    ── REST /api/hubs/…?api-version=2022-06-01 (Bearer server token) ──▶ /api
//!  verify_upstream_signature() ◀── POST upstream webhook (X-ASRS-Signature) ──
//! ```
//!
//! Retries follow the Azure SDK (azure-serverless.md §4.1): send APIs are retried only on
//! statuses above 500 (a 500 or a timeout may mean the message was delivered), every other API
//! also on 500, 408 and timeouts; see [`RetryPolicy`]. Each attempt is bounded by the timeout
//! (100 s by default, [`ServiceClientBuilder::timeout`]).
//!
//! HTTP is [`reqwest`] without default features: plain HTTP/1.1 only, no TLS, no HTTP/2, no
//! OS proxy settings (the `HTTP_PROXY`/`NO_PROXY` environment variables are still honoured;
//! pass your own client to [`ServiceClientBuilder::http_client`] to change that), so it adds
//! little beyond the hyper stack the workspace already builds and no C code. The `rustls` feature (off by default) enables HTTPS for reaching Azure or a
//! TLS-terminating Switchboard. reqwest was chosen over hyper-util's legacy client for its
//! per-request timeouts, connection pooling and error classification (`is_timeout`), which
//! the retry rules need.
//!
//! Not covered: Entra ID authentication, persistent (WebSocket) server connections, the v1
//! route family and the binary (MessagePack) payload format.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use serde_json::json;
//! use switchboard_sdk::ServiceClient;
//!
//! # async fn run() -> Result<(), switchboard_sdk::SdkError> {
//! let service = ServiceClient::from_connection_string("Endpoint=http://127.0.0.1:8080;AccessKey=secret;Version=1.0;")?;
//!
//! // In the negotiate handler: return this as JSON to the SignalR client.
//! let answer = service.negotiate("chat", Some("alice"), &[], Duration::from_secs(3600));
//! let body = serde_json::to_string(&answer).unwrap(); // {"url":"…","accessToken":"…"}
//! # let _ = body;
//!
//! // Anywhere in the back end: talk to connected clients.
//! let chat = service.hub("chat");
//! chat.broadcast("newMessage", &[json!("alice"), json!("hello")], &[]).await?;
//! chat.add_user_to_group("alice", "admins", None).await?;
//! if chat.user_exists("alice").await? {
//!     chat.send_to_group("admins", "notice", &[json!({"level": "info"})], &[]).await?;
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod error;
mod hub;
mod negotiate;
mod retry;
mod route;
mod signature;
mod transport;

pub use client::{DEFAULT_TIMEOUT, ServiceClient, ServiceClientBuilder};
pub use error::SdkError;
pub use hub::HubClient;
pub use negotiate::{NegotiateResponse, RESERVED_CLAIMS, USER_CLAIM_PREFIX, USER_ID_CLAIM};
pub use retry::{ApiKind, Outcome, RetryPolicy};
pub use signature::verify_upstream_signature;
pub use switchboard_auth::ConnectionString;
