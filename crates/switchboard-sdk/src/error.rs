//! [`SdkError`]: why an SDK call failed, keeping what the service answered.

use switchboard_auth::AuthError;
use thiserror::Error;

/// Why an SDK call failed.
///
/// Service answers keep everything the service said (status, `x-ms-error-code`, body) so
/// callers can tell a 400 (bad argument) from a 401 (wrong key) or a 404 with a known code.
#[derive(Debug, Error)]
pub enum SdkError {
    /// The connection string could not be parsed.
    #[error(transparent)]
    ConnectionString(#[from] AuthError),
    /// The connection string asks for something this SDK does not do (Entra ID auth types).
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
    /// An argument cannot be expressed as a request (for example an empty or `..` path segment).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The service answered with a status the operation does not accept.
    #[error("{method} {url} answered {status}{}: {body}", error_code_suffix(.error_code))]
    Service {
        /// The HTTP status code.
        status: u16,
        /// The `x-ms-error-code` response header (`Warning.Connection.NotExisted`, …), if any.
        error_code: Option<String>,
        /// The response body as text (an `ErrorDetail` JSON document for the dated API).
        body: String,
        method: String,
        url: String,
    },
    /// The request did not produce a response: connection refused, reset, or timed out.
    #[error("{method} {url} failed: {source}")]
    Transport {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be built (TLS back end initialisation).
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

fn error_code_suffix(code: &Option<String>) -> String {
    code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
}

impl SdkError {
    /// Returns the HTTP status when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            SdkError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Returns the `x-ms-error-code` header of the service's answer, if it sent one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            SdkError::Service { error_code, .. } => error_code.as_deref(),
            _ => None,
        }
    }

    /// Returns the body of the service's answer.
    pub fn body(&self) -> Option<&str> {
        match self {
            SdkError::Service { body, .. } => Some(body),
            _ => None,
        }
    }

    /// Returns whether the last attempt ran into the configured request timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SdkError::Transport { source, .. } if source.is_timeout())
    }
}
