//! The single error type of every decoder in this crate.
//!
//! Decoders are fed whatever bytes the transport has read so far, so they must
//! tell "wait for more" apart from "this can never parse". The first is routine
//! and carries no data; the second ends the connection and its text is sent to
//! the client in a Close message, so it is worded for humans.

/// Returned by every decoder: either more bytes are needed or the input is bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not enough bytes yet for a whole record: read more and call again.
    #[error("incomplete message")]
    Incomplete,
    /// The bytes can never become a valid message; the text says why (shown to clients in Close errors).
    #[error("{0}")]
    Invalid(String),
}

impl DecodeError {
    /// Builds an [`DecodeError::Invalid`] from anything string-like, to keep call sites short.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        DecodeError::Invalid(message.into())
    }
}

/// Result alias used across the crate's decoders.
pub type Result<T, E = DecodeError> = std::result::Result<T, E>;
