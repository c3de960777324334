//! Identity and trust for Switchboard, exactly as Azure SignalR Service does it.
//!
//! - [`ConnectionString`]: the `Endpoint=…;AccessKey=…;Version=1.0;` string operators hand to
//!   application back ends, with every key Azure's SDKs understand.
//! - [`AccessKeys`]: the primary and secondary keys. Keys are used as their raw UTF-8 bytes,
//!   never base64-decoded, because that is what every Azure SDK signs with.
//! - [`Verifier`]: checks client tokens (negotiate and connect) and server tokens (REST) with
//!   Azure's lenient audience rules, and extracts the user id and claims.
//! - [`mint`]: makes tokens the way the Azure SDKs make them (tests, the `token` command).
//! - [`ConnectionTokens`]: the secret connection tokens handed out by negotiate.
//! - [`upstream_signature`]: the `X-ASRS-Signature` header value for upstream webhooks.
//!
//! Nothing here does I/O.

mod audience;
mod connection_string;
mod connection_token;
mod error;
mod keys;
mod mint;
mod verify;

pub use audience::Audience;
pub use connection_string::ConnectionString;
pub use connection_token::{ConnectionTokens, OpenedToken};
pub use error::AuthError;
pub use keys::{AccessKeys, generate_access_key, upstream_signature};
pub use mint::{Algorithm, mint, mint_client_token, mint_server_token};
pub use verify::{ClientIdentity, Verifier};
