//! The bodies of `POST /negotiate`: query parsing and the three response shapes.
//!
//! Negotiate is plain HTTP + JSON, but clients are strict about its keys and enum
//! strings (case-sensitive, `connectionToken` only for version ≥ 1, never a
//! `ProtocolVersion` key, `useStatefulReconnect` only when asked for), so the
//! exact wire shapes live here next to the other protocol contracts. No I/O:
//! the HTTP layer passes query pairs in and writes the JSON text out.

use serde::{Deserialize, Serialize};

/// Highest negotiate version this server speaks; higher requests are answered with it.
pub const MAX_NEGOTIATE_VERSION: u32 = 1;

/// A transport a client may use after negotiating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransportKind {
    WebSockets,
    ServerSentEvents,
    LongPolling,
}

impl TransportKind {
    /// Every transport, in the order clients should try them.
    pub const ALL: [TransportKind; 3] =
        [TransportKind::WebSockets, TransportKind::ServerSentEvents, TransportKind::LongPolling];

    /// Returns the exact, case-sensitive name clients look up.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::WebSockets => "WebSockets",
            TransportKind::ServerSentEvents => "ServerSentEvents",
            TransportKind::LongPolling => "LongPolling",
        }
    }

    /// Returns the ASP.NET `HttpTransportType` flag, as carried by the `asrs.s.htt` claim.
    pub fn bitmask(self) -> u32 {
        match self {
            TransportKind::WebSockets => 1,
            TransportKind::ServerSentEvents => 2,
            TransportKind::LongPolling => 4,
        }
    }

    /// Returns the transfer formats the transport can carry (SSE is text-only).
    pub fn transfer_formats(self) -> &'static [TransferFormat] {
        match self {
            TransportKind::ServerSentEvents => &[TransferFormat::Text],
            TransportKind::WebSockets | TransportKind::LongPolling => &[TransferFormat::Text, TransferFormat::Binary],
        }
    }
}

/// Whether a transport carries text (JSON) or arbitrary bytes (MessagePack).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferFormat {
    Text,
    Binary,
}

impl TransferFormat {
    /// Returns the exact, case-sensitive name clients look up.
    pub fn name(self) -> &'static str {
        match self {
            TransferFormat::Text => "Text",
            TransferFormat::Binary => "Binary",
        }
    }
}

/// What the negotiate query string asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NegotiateQuery {
    /// The version to answer with: 0 when absent, capped at [`MAX_NEGOTIATE_VERSION`].
    pub negotiate_version: u32,
    /// The client wants stateful reconnect; the server may still decline.
    pub use_stateful_reconnect: bool,
}

impl NegotiateQuery {
    /// Reads `negotiateVersion` and `useStatefulReconnect` from decoded query pairs.
    ///
    /// Keys are case-insensitive like ASP.NET's; other keys (hub, access_token, …)
    /// are ignored. A version that is not a non-negative integer yields the
    /// ASP.NET error text, meant for an `{"error":..}` body.
    pub fn parse<K, V>(query_pairs: impl IntoIterator<Item = (K, V)>) -> Result<NegotiateQuery, String>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut version: Option<String> = None;
        let mut stateful: Option<bool> = None;
        for (key, value) in query_pairs {
            let (key, value) = (key.as_ref(), value.as_ref());
            if version.is_none() && key.eq_ignore_ascii_case("negotiateVersion") {
                version = Some(value.to_owned());
            } else if stateful.is_none() && key.eq_ignore_ascii_case("useStatefulReconnect") {
                stateful = Some(value.trim().eq_ignore_ascii_case("true"));
            }
        }
        let negotiate_version = match version {
            None => 0,
            Some(text) => text
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("The client requested an invalid protocol version '{text}'"))?
                .min(MAX_NEGOTIATE_VERSION),
        };
        Ok(NegotiateQuery { negotiate_version, use_stateful_reconnect: stateful.unwrap_or(false) })
    }
}

/// One entry of `availableTransports`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableTransport {
    pub transport: TransportKind,
    pub transfer_formats: Vec<TransferFormat>,
}

impl AvailableTransport {
    /// Describes `transport` with every format it supports.
    pub fn new(transport: TransportKind) -> Self {
        AvailableTransport { transport, transfer_formats: transport.transfer_formats().to_vec() }
    }
}

/// The normal negotiate answer (HTTP 200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NegotiateResponse {
    /// Always written, even 0: signalrcore requires an int here.
    pub negotiate_version: u32,
    /// Public id other code uses to address this client.
    pub connection_id: String,
    /// Secret sent back as `id=` on every later request; version ≥ 1 only
    /// (version-0 clients use the connection id instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_token: Option<String>,
    /// Tried by clients in this order.
    pub available_transports: Vec<AvailableTransport>,
    /// Written only when true: JS aborts if it sees it without having asked.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_stateful_reconnect: bool,
}

fn is_false(flag: &bool) -> bool {
    !flag
}

impl NegotiateResponse {
    /// Builds the response, dropping the token for version 0.
    ///
    /// `stateful` must be true only if the client asked for it *and* the hub allows it.
    pub fn new(
        negotiate_version: u32,
        connection_id: impl Into<String>,
        connection_token: impl Into<String>,
        transports: &[TransportKind],
        stateful: bool,
    ) -> Self {
        NegotiateResponse {
            negotiate_version,
            connection_id: connection_id.into(),
            connection_token: (negotiate_version >= 1).then(|| connection_token.into()),
            available_transports: transports.iter().copied().map(AvailableTransport::new).collect(),
            use_stateful_reconnect: stateful,
        }
    }

    /// Serializes to the compact JSON body.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// The Azure SignalR style answer sending the client elsewhere (HTTP 200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectResponse {
    /// Replaces the client's base URL; it negotiates again there (signalrcore
    /// instead opens a WebSocket to it directly, with no `id`).
    pub url: String,
    /// Bearer token the client uses for the rest of this start.
    pub access_token: String,
}

impl RedirectResponse {
    /// Serializes to the compact JSON body.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// Builds the `{"error":"..."}` negotiate body; clients throw with this text.
pub fn error_json(message: &str) -> String {
    to_json(&serde_json::json!({ "error": message }))
}

fn to_json<T: Serialize>(value: &T) -> String {
    // These types hold only strings, numbers, bools and enums: serialization cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<NegotiateQuery, String> {
        NegotiateQuery::parse(pairs.iter().copied())
    }

    #[test]
    fn query_versions() {
        assert_eq!(query(&[("hub", "chat")]).unwrap().negotiate_version, 0);
        assert_eq!(query(&[("negotiateVersion", "1")]).unwrap().negotiate_version, 1);
        assert_eq!(query(&[("NegotiateVersion", "7")]).unwrap().negotiate_version, 1);
        assert_eq!(query(&[("negotiateversion", "0")]).unwrap().negotiate_version, 0);
        assert_eq!(
            query(&[("negotiateVersion", "one")]),
            Err("The client requested an invalid protocol version 'one'".into())
        );
        assert!(query(&[("negotiateVersion", "-1")]).is_err());
    }

    #[test]
    fn query_stateful_flag() {
        assert!(!query(&[]).unwrap().use_stateful_reconnect);
        let asked = query(&[("negotiateVersion", "1"), ("useStatefulReconnect", "true")]).unwrap();
        assert!(asked.use_stateful_reconnect);
        assert!(query(&[("UseStatefulReconnect", "True")]).unwrap().use_stateful_reconnect);
        assert!(!query(&[("useStatefulReconnect", "1")]).unwrap().use_stateful_reconnect);
    }

    #[test]
    fn response_matches_spec_shape() {
        let response = NegotiateResponse::new(1, "807809a5", "05265228", &TransportKind::ALL, false);
        assert_eq!(
            response.to_json(),
            concat!(
                r#"{"negotiateVersion":1,"connectionId":"807809a5","connectionToken":"05265228","#,
                r#""availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]},"#,
                r#"{"transport":"ServerSentEvents","transferFormats":["Text"]},"#,
                r#"{"transport":"LongPolling","transferFormats":["Text","Binary"]}]}"#
            )
        );
    }

    #[test]
    fn version_zero_omits_token_and_stateful_flag_is_opt_in() {
        let v0 = NegotiateResponse::new(0, "id", "secret", &[TransportKind::LongPolling], false);
        assert_eq!(
            v0.to_json(),
            r#"{"negotiateVersion":0,"connectionId":"id","availableTransports":[{"transport":"LongPolling","transferFormats":["Text","Binary"]}]}"#
        );
        let stateful = NegotiateResponse::new(1, "id", "secret", &[TransportKind::WebSockets], true);
        assert!(stateful.to_json().ends_with(r#","useStatefulReconnect":true}"#));
        assert!(!stateful.to_json().contains("ProtocolVersion"));
    }

    #[test]
    fn redirect_and_error_bodies() {
        let redirect = RedirectResponse { url: "https://svc/client/?hub=chat".into(), access_token: "eyJ".into() };
        assert_eq!(redirect.to_json(), r#"{"url":"https://svc/client/?hub=chat","accessToken":"eyJ"}"#);
        assert_eq!(error_json("This connection is not allowed."), r#"{"error":"This connection is not allowed."}"#);
    }

    #[test]
    fn transport_facts() {
        let names: Vec<_> = TransportKind::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["WebSockets", "ServerSentEvents", "LongPolling"]);
        let masks: Vec<_> = TransportKind::ALL.iter().map(|t| t.bitmask()).collect();
        assert_eq!(masks, [1, 2, 4]);
        assert_eq!(TransferFormat::Binary.name(), "Binary");
    }
}
