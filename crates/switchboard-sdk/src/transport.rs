//! Sending one REST call: a fresh server token per attempt, the per-attempt timeout and the
//! retry loop.

use crate::SdkError;
use crate::retry::{ApiKind, Outcome, RetryPolicy};
use crate::route::RestPath;
use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use std::time::Duration;
use switchboard_auth::mint_server_token;

/// Lifetime of the server token minted for each attempt (the Azure SDK's default).
const SERVER_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Sent as `Asrs-User-Agent`, the header the service logs to tell SDKs apart.
const USER_AGENT: &str = concat!("switchboard-sdk/", env!("CARGO_PKG_VERSION"));

/// What the service answered to the last attempt.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) error_code: Option<String>,
    pub(crate) body: String,
    pub(crate) method: Method,
    pub(crate) url: String,
}

impl Reply {
    /// Turns the reply into the error callers see.
    pub(crate) fn into_error(self) -> SdkError {
        SdkError::Service {
            status: self.status,
            error_code: self.error_code,
            body: self.body,
            method: self.method.to_string(),
            url: self.url,
        }
    }

    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The HTTP side shared by every client of one service.
#[derive(Debug)]
pub(crate) struct Transport {
    pub(crate) http: reqwest::Client,
    /// `ServerEndpoint`, else `Endpoint` with `Port`; no trailing `/`.
    pub(crate) rest_base: String,
    pub(crate) access_key: String,
    /// Bound of each attempt, from sending the request to reading the whole body.
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
}

impl Transport {
    /// Sends `method path` with an optional JSON `body`, retrying transient failures of `kind`.
    /// Any final status comes back as a [`Reply`]; only transport failures are errors here.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &RestPath,
        body: Option<Bytes>,
        kind: ApiKind,
    ) -> Result<Reply, SdkError> {
        let url = path.url(&self.rest_base);
        let audience = path.audience(&self.rest_base);
        let mut attempt = 1;
        loop {
            let result = self.attempt(method.clone(), &url, &audience, body.clone()).await;
            let outcome = match &result {
                Ok(reply) => Outcome::Status(reply.status),
                Err(error) if error.is_timeout() => Outcome::Timeout,
                Err(_) => Outcome::TransportError,
            };
            if !kind.is_transient(outcome) || !self.retry.has_attempt_after(attempt) {
                return result;
            }
            tokio::time::sleep(self.retry.delay_after(attempt)).await;
            attempt += 1;
        }
    }

    async fn attempt(&self, method: Method, url: &str, audience: &str, body: Option<Bytes>) -> Result<Reply, SdkError> {
        let token = mint_server_token(audience, SERVER_TOKEN_LIFETIME, &self.access_key);
        let mut request = self
            .http
            .request(method.clone(), url)
            .timeout(self.timeout)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header("Asrs-User-Agent", USER_AGENT);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json; charset=utf-8").body(body);
        }
        let transport_error =
            |source: reqwest::Error| SdkError::Transport { method: method.to_string(), url: url.to_owned(), source };
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let error_code = response.headers().get("x-ms-error-code").and_then(|v| v.to_str().ok()).map(str::to_owned);
        // The body is read even on success so the connection can be reused.
        let body = response.text().await.map_err(transport_error)?;
        Ok(Reply { status, error_code, body, method, url: url.to_owned() })
    }
}
