//! Upstream: what makes client-to-server messages work in serverless mode
//! (azure-serverless.md §5).
//!
//! ```text
//!  session ──► UpstreamQueue (one per connection, ordered, bounded)
//!                 └─► worker: template match ─► POST {url} with X-ASRS-* headers and signature
//!                                                  └─► reply ─► completion ─► connection outbox
//! ```
//!
//! Templates are checked in order and the first match is called. A connection's events
//! (`connected`, its invocations, `disconnected`) reach the application in order; calls are
//! bounded in time, in concurrency across the node, and in reply size, so a slow or dead
//! upstream costs only the connections that use it.

mod client;
mod template;

pub use client::{ConnectionContext, OUTCOMES, Stats, Upstream, UpstreamConfig, UpstreamQueue};
pub use template::{Pattern, Template};
