//! [`ServiceClient`]: one service, built from a connection string.

use crate::SdkError;
use crate::hub::HubClient;
use crate::negotiate::{self, NegotiateResponse, client_hub_name};
use crate::retry::{ApiKind, RetryPolicy};
use crate::route::RestPath;
use crate::transport::Transport;
use reqwest::Method;
use std::sync::Arc;
use std::time::Duration;
use switchboard_auth::ConnectionString;

/// The per-attempt timeout when none is set (the Azure SDK's `HttpClientTimeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(100);

/// What every [`HubClient`] of one service shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) connection: ConnectionString,
    pub(crate) transport: Transport,
}

/// A handle on one Switchboard (or Azure SignalR) service: mints client tokens and opens
/// [`HubClient`]s for the REST API. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    shared: Arc<Shared>,
}

impl ServiceClient {
    /// Parses `connection_string` and builds a client with the default timeout and retries.
    ///
    /// `Endpoint` and `AccessKey` are required; `Port` and `ServerEndpoint` change where REST
    /// calls go, `ClientEndpoint` changes the URL handed to clients, and none of them changes
    /// token audiences. Entra ID (`AuthType=…`) is not supported.
    pub fn from_connection_string(connection_string: &str) -> Result<ServiceClient, SdkError> {
        Self::builder(connection_string)?.build()
    }

    /// Parses `connection_string` and returns a builder for non-default settings.
    pub fn builder(connection_string: &str) -> Result<ServiceClientBuilder, SdkError> {
        let connection: ConnectionString = connection_string.parse()?;
        let Some(access_key) = connection.access_key.clone() else {
            let auth_type = connection.auth_type.as_deref().unwrap_or_default();
            return Err(SdkError::Unsupported(format!(
                "AuthType={auth_type} (Entra ID) is not supported; use a connection string with an AccessKey"
            )));
        };
        Ok(ServiceClientBuilder {
            connection,
            access_key,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            http: None,
        })
    }

    /// Returns the parsed connection string.
    pub fn connection_string(&self) -> &ConnectionString {
        &self.shared.connection
    }

    /// Returns the base URL REST calls go to (`ServerEndpoint`, else `Endpoint` with `Port`).
    pub fn rest_base(&self) -> &str {
        &self.shared.transport.rest_base
    }

    /// Returns a REST client for `hub` (sent lower-cased, as the Azure SDK does).
    pub fn hub(&self, hub: &str) -> HubClient {
        HubClient::new(self.shared.clone(), hub)
    }

    /// Returns the URL clients of `hub` connect to: `{ClientEndpoint or Endpoint+Port}/client/?hub={hub}`.
    pub fn client_url(&self, hub: &str) -> String {
        self.shared.connection.client_url(&client_hub_name(hub, None))
    }

    /// Mints what a negotiate function returns to a client of `hub`.
    ///
    /// The token's `aud` is `{scheme}://{host}/client/?hub={lower(hub)}` of `Endpoint` (no
    /// port), it carries `exp` (now + `lifetime`), `nbf`, `iat`, `asrs.s.uid` when `user_id`
    /// is given, and `claims` — names the service reserves (`aud`, `exp`, `iss`, …, a second
    /// `sub`) are renamed `asrs.u.<name>`, repeated names become arrays.
    pub fn negotiate(
        &self,
        hub: &str,
        user_id: Option<&str>,
        claims: &[(String, String)],
        lifetime: Duration,
    ) -> NegotiateResponse {
        self.shared.negotiate(&client_hub_name(hub, None), user_id, claims, lifetime)
    }

    /// Asks the service whether it is healthy (`HEAD /api/health`): 2xx → `true`, ≥ 500 →
    /// `false`, any other status or a transport failure → an error.
    pub async fn health(&self) -> Result<bool, SdkError> {
        let reply = self.shared.transport.call(Method::HEAD, &RestPath::health(), None, ApiKind::Other).await?;
        match reply.status {
            200..=299 => Ok(true),
            500.. => Ok(false),
            _ => Err(reply.into_error()),
        }
    }
}

impl Shared {
    pub(crate) fn negotiate(
        &self,
        client_hub: &str,
        user_id: Option<&str>,
        claims: &[(String, String)],
        lifetime: Duration,
    ) -> NegotiateResponse {
        negotiate::negotiate(&self.connection, &self.transport.access_key, client_hub, user_id, claims, lifetime)
    }
}

/// Settings of a [`ServiceClient`] beyond the connection string.
#[derive(Debug)]
pub struct ServiceClientBuilder {
    connection: ConnectionString,
    access_key: String,
    timeout: Duration,
    retry: RetryPolicy,
    http: Option<reqwest::Client>,
}

impl ServiceClientBuilder {
    /// Bounds each attempt of a REST call, from sending to the last byte of the answer
    /// (default [`DEFAULT_TIMEOUT`], 100 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how often and how patiently transient failures are retried.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Uses `http` for requests (proxy, TLS or pool settings); the timeout set here still applies per attempt.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<ServiceClient, SdkError> {
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder().build().map_err(SdkError::HttpClient)?,
        };
        let transport = Transport {
            http,
            rest_base: self.connection.rest_base(),
            access_key: self.access_key,
            timeout: self.timeout,
            retry: self.retry,
        };
        Ok(ServiceClient { shared: Arc::new(Shared { connection: self.connection, transport }) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::Value;
    use switchboard_auth::{AccessKeys, Audience, Verifier};
    use url::Url;

    fn payload(token: &str) -> Value {
        let part = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn negotiate_writes_the_sdk_claims() {
        let client =
            ServiceClient::from_connection_string("Endpoint=http://localhost:8080;AccessKey=K;Port=9999").unwrap();
        let claims: Vec<(String, String)> = [("aud", "spoof"), ("exp", "1"), ("nonce", "n"), ("role", "admin")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let before = now();
        let answer = client.negotiate("Chat", Some("alice"), &claims, Duration::from_secs(600));
        let after = now();
        assert_eq!(answer.url, "http://localhost:9999/client/?hub=chat");
        let claims = payload(&answer.access_token);
        let object = claims.as_object().unwrap();
        assert_eq!(claims["aud"], "http://localhost/client/?hub=chat");
        let iat = claims["iat"].as_u64().unwrap();
        assert!((before..=after).contains(&iat));
        assert_eq!(claims["nbf"].as_u64(), Some(iat));
        assert_eq!(claims["exp"].as_u64(), Some(iat + 600));
        assert_eq!(claims["asrs.s.uid"], "alice");
        assert_eq!(claims["asrs.u.aud"], "spoof");
        assert_eq!(claims["asrs.u.exp"], "1");
        assert_eq!(claims["asrs.u.nonce"], "n");
        assert_eq!(claims["role"], "admin");
        let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            ["asrs.s.uid", "asrs.u.aud", "asrs.u.exp", "asrs.u.nonce", "aud", "exp", "iat", "nbf", "role"]
        );
    }

    #[test]
    fn negotiate_tokens_pass_the_services_verifier() {
        let client = ServiceClient::from_connection_string("Endpoint=http://svc.local:7000;AccessKey=secret").unwrap();
        let claims = vec![("aud".to_string(), "x".to_string()), ("team".to_string(), "blue".to_string())];
        let answer =
            client.hub("Chat").with_application("App").negotiate(Some("bob"), &claims, Duration::from_secs(60));
        assert_eq!(answer.url, "http://svc.local:7000/client/?hub=app_chat");
        let verifier = Verifier::new(
            AccessKeys::new(["other", "secret"]).unwrap(),
            Audience::new([&Url::parse("http://svc.local:7000").unwrap()]),
            0,
        );
        let identity = verifier.verify_client(&answer.access_token, "app_chat").unwrap();
        assert_eq!(identity.user_id.as_deref(), Some("bob"));
        assert!(identity.claims.contains(&("aud".to_string(), "x".to_string())), "{:?}", identity.claims);
        assert!(identity.claims.contains(&("team".to_string(), "blue".to_string())));
        assert!(verifier.verify_client(&answer.access_token, "chat").is_err());
    }

    #[test]
    fn negotiate_response_serializes_like_azure() {
        let answer = NegotiateResponse { url: "http://a/client/?hub=h".into(), access_token: "t".into() };
        assert_eq!(serde_json::to_string(&answer).unwrap(), r#"{"url":"http://a/client/?hub=h","accessToken":"t"}"#);
    }

    #[test]
    fn endpoints_for_rest_and_clients() {
        let plain = ServiceClient::from_connection_string("Endpoint=http://127.0.0.1:8080;AccessKey=K").unwrap();
        assert_eq!(plain.rest_base(), "http://127.0.0.1:8080");
        assert_eq!(plain.client_url("Chat"), "http://127.0.0.1:8080/client/?hub=chat");
        let aud = payload(&plain.negotiate("Chat", None, &[], Duration::from_secs(60)).access_token)["aud"].clone();
        assert_eq!(aud, "http://127.0.0.1/client/?hub=chat");

        let port = ServiceClient::from_connection_string("Endpoint=http://localhost;Port=8888;AccessKey=K").unwrap();
        assert_eq!(port.rest_base(), "http://localhost:8888");
        assert_eq!(port.client_url("h"), "http://localhost:8888/client/?hub=h");

        let split = ServiceClient::from_connection_string(
            "Endpoint=https://svc.example.com;AccessKey=K;Port=444;ClientEndpoint=https://gw.example.com/signalr;\
             ServerEndpoint=http://10.0.0.5:9000",
        )
        .unwrap();
        assert_eq!(split.rest_base(), "http://10.0.0.5:9000");
        let answer = split.negotiate("Hub", Some("u"), &[], Duration::from_secs(60));
        assert_eq!(answer.url, "https://gw.example.com/signalr/client/?hub=hub");
        assert_eq!(payload(&answer.access_token)["aud"], "https://svc.example.com/client/?hub=hub");
    }

    #[test]
    fn refuses_bad_and_unsupported_connection_strings() {
        assert!(matches!(
            ServiceClient::from_connection_string("Endpoint=http://x"),
            Err(SdkError::ConnectionString(_))
        ));
        assert!(matches!(
            ServiceClient::from_connection_string("Endpoint=https://x;AuthType=azure.msi"),
            Err(SdkError::Unsupported(_))
        ));
    }

    #[test]
    fn builder_settings_reach_the_transport() {
        let retry = RetryPolicy { max_attempts: 5, ..RetryPolicy::default() };
        let client = ServiceClient::builder("Endpoint=http://x;AccessKey=K")
            .unwrap()
            .timeout(Duration::from_secs(3))
            .retry(retry)
            .build()
            .unwrap();
        assert_eq!(client.shared.transport.timeout, Duration::from_secs(3));
        assert_eq!(client.shared.transport.retry, retry);
    }
}
