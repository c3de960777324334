//! [`FanoutError`]: why a delivery or a connection call did not reach its node.

use std::time::Duration;

use tonic::{Code, Status};

/// Why a delivery or a connection call failed. Every variant but [`FanoutError::Invalid`] names
/// the target node. Cloned to every caller whose delivery rode in a failed batch.
///
/// After any error the delivery may or may not have been applied (at most once, G5): a batch is
/// only known to be applied once acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FanoutError {
    /// No connection to the node, or the connection broke.
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: u64, reason: String },
    /// Nothing listens at the node's address any more (the connection was refused), or the
    /// node said it is shutting down (it has already told its clients to reconnect elsewhere):
    /// its clients' connections with it are gone.
    #[error("node {node} is down: {reason}")]
    Down { node: u64, reason: String },
    /// The node refused the call: wrong cluster secret or incompatible protocol version.
    #[error(
        "node {node} refused the call: {reason} (check that every node has the same cluster secret and a compatible release)"
    )]
    Refused { node: u64, reason: String },
    /// The node did not acknowledge (or answer) within the configured timeout.
    #[error("node {node} did not answer within {timeout:?}")]
    Timeout { node: u64, timeout: Duration },
    /// The node answered with an error status other than the above (a malformed request, for
    /// example).
    #[error("node {node} rejected the call: {code:?}: {reason}")]
    Rejected { node: u64, code: Code, reason: String },
    /// The delivery or request cannot be sent as given (no target, too large); nothing was sent.
    #[error("invalid fan-out request: {0}")]
    Invalid(String),
}

impl FanoutError {
    /// The node the error is about, if any.
    pub fn node(&self) -> Option<u64> {
        match self {
            FanoutError::Unreachable { node, .. }
            | FanoutError::Down { node, .. }
            | FanoutError::Refused { node, .. }
            | FanoutError::Timeout { node, .. }
            | FanoutError::Rejected { node, .. } => Some(*node),
            FanoutError::Invalid(_) => None,
        }
    }

    /// Maps a gRPC status from (or about) `node`:
    ///
    /// | status | error |
    /// |---|---|
    /// | `PERMISSION_DENIED`, `UNAUTHENTICATED`, `FAILED_PRECONDITION` | [`Refused`](FanoutError::Refused) |
    /// | `DEADLINE_EXCEEDED` | [`Timeout`](FanoutError::Timeout) |
    /// | `INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`, `RESOURCE_EXHAUSTED`, `OUT_OF_RANGE`, `UNIMPLEMENTED` | [`Rejected`](FanoutError::Rejected) |
    /// | a refused TCP connection (nothing listens at the address), or `UNAVAILABLE` with [`SHUTTING_DOWN`] | [`Down`](FanoutError::Down) |
    /// | anything else (`UNAVAILABLE`, transport errors, resets, ...) | [`Unreachable`](FanoutError::Unreachable) |
    pub(crate) fn from_status(node: u64, status: &Status, timeout: Duration) -> Self {
        let reason = status.message().to_owned();
        match status.code() {
            Code::PermissionDenied | Code::Unauthenticated | Code::FailedPrecondition => {
                FanoutError::Refused { node, reason }
            }
            Code::DeadlineExceeded => FanoutError::Timeout { node, timeout },
            code @ (Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::ResourceExhausted
            | Code::OutOfRange
            | Code::Unimplemented) => FanoutError::Rejected { node, code, reason },
            code => {
                let reason = if reason.is_empty() { format!("{code:?}") } else { reason };
                match code == Code::Unavailable && status.message() == SHUTTING_DOWN || connection_refused(status) {
                    true => FanoutError::Down { node, reason },
                    false => FanoutError::Unreachable { node, reason },
                }
            }
        }
    }
}

/// What a node answers once it is shutting down: it has drained its clients by then, so a
/// sender treats it as [`FanoutError::Down`] rather than as a node cut off with live clients.
pub(crate) const SHUTTING_DOWN: &str = "node is shutting down";

/// Whether `status` says the call was never written: the connection it was given closed
/// before it started (hyper's "canceled"), so sending it again cannot apply it twice.
pub(crate) fn never_sent(status: &Status) -> bool {
    caused_by::<hyper::Error>(status, hyper::Error::is_canceled)
}

/// Whether `status` comes from a TCP connection the peer's address refused.
fn connection_refused(status: &Status) -> bool {
    caused_by::<std::io::Error>(status, |e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Whether an error of type `E` matching `matches` is among the causes of `status`.
fn caused_by<E: std::error::Error + 'static>(status: &Status, matches: impl Fn(&E) -> bool) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.downcast_ref::<E>().is_some_and(&matches) {
            return true;
        }
        source = error.source();
    }
    false
}
