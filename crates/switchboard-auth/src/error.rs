//! [`AuthError`]: why a token or a connection string was refused, in words a caller can act on.

use thiserror::Error;

/// Why a token or connection string was refused. The text is shown to callers (401 bodies,
/// exit messages), so it says what to fix and never echoes secrets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("no access token: send 'Authorization: Bearer <token>' or the access_token query parameter")]
    MissingToken,
    #[error("malformed access token: {0}")]
    Malformed(String),
    #[error("unsupported token algorithm (HS256 and HS512 are accepted)")]
    Algorithm,
    #[error("invalid token signature: not signed with a configured access key")]
    Signature,
    #[error("access token expired")]
    Expired,
    #[error("access token not yet valid")]
    NotYetValid,
    #[error("token audience '{0}' does not match this request")]
    Audience(String),
    #[error("invalid connection string: {0}")]
    ConnectionString(String),
}
