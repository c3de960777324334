//! The handshake: the first record a client sends once its transport is up.
//!
//! It picks the hub protocol and its version, and is always JSON text ending in
//! `0x1E`, even for MessagePack clients. Hub messages may follow in the same
//! frame, so the parser reports how many bytes it used and leaves the rest to
//! the caller. The error texts are those of ASP.NET, because clients show them
//! to users and tests compare them.

use serde_json::Value;

use crate::error::DecodeError;
use crate::json::{self, RECORD_SEPARATOR};
use crate::protocol::Protocol;

/// The successful handshake response; it must not contain a `type` key.
pub const RESPONSE_OK: &[u8] = b"{}\x1e";

/// Sent when the client did not finish its handshake in time.
pub const HANDSHAKE_CANCELED: &str = "Handshake was canceled.";

/// Largest handshake request accepted while still waiting for its separator
/// (ASP.NET's default maximum message size). Real requests are ~40 bytes.
pub const MAX_REQUEST_SIZE: usize = 32 * 1024;

/// What the client asked for in its handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// Hub protocol name, e.g. `json` or `messagepack` (matched exactly).
    pub protocol: String,
    /// Hub protocol version: 1, or 2 for clients that negotiated stateful reconnect.
    pub version: u32,
}

/// Parses the handshake request at the start of `buf`, returning it and the bytes
/// consumed including the separator. Bytes after the separator are hub messages.
pub fn parse_request(buf: &[u8]) -> Result<(HandshakeRequest, usize), DecodeError> {
    let (body, consumed) = json::next_record_limited(buf, MAX_REQUEST_SIZE)?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| DecodeError::Invalid(format!("invalid handshake request: {error}")))?;
    let Value::Object(mut fields) = value else {
        return Err(DecodeError::invalid("invalid handshake request: expected a json object"));
    };
    let protocol = match fields.remove("protocol") {
        Some(Value::String(protocol)) => protocol,
        Some(_) => return Err(DecodeError::invalid("expected 'protocol' to be a string")),
        None => return Err(DecodeError::invalid("missing required property 'protocol'")),
    };
    let version = match fields.remove("version") {
        Some(version) => version
            .as_u64()
            .and_then(|version| u32::try_from(version).ok())
            .ok_or_else(|| DecodeError::invalid("expected 'version' to be an integer"))?,
        None => return Err(DecodeError::invalid("missing required property 'version'")),
    };
    Ok((HandshakeRequest { protocol, version }, consumed))
}

/// Resolves a request to a protocol, or to the error text to send back.
///
/// Whether the transport can carry the protocol (MessagePack needs Binary, which
/// SSE lacks) is the caller's check; see [`unsupported_transfer_format`].
pub fn select_protocol(request: &HandshakeRequest) -> Result<Protocol, String> {
    let Some(protocol) = Protocol::from_name(&request.protocol) else {
        return Err(unknown_protocol(&request.protocol));
    };
    if !protocol.supports_version(request.version) {
        return Err(unsupported_version(&request.protocol, request.version));
    }
    Ok(protocol)
}

/// Builds `{"error":"..."}` plus the separator; after sending it, close the connection.
pub fn error_response(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 12);
    out.extend_from_slice(b"{\"error\":");
    json::write_json_string(message, &mut out);
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
    out
}

/// ASP.NET's text for a version the server does not speak.
pub fn unsupported_version(protocol: &str, version: u32) -> String {
    format!("The server does not support version {version} of the '{protocol}' protocol.")
}

/// ASP.NET's text for an unknown protocol name.
pub fn unknown_protocol(protocol: &str) -> String {
    format!("Requested protocol '{protocol}' is not available.")
}

/// ASP.NET's text for a protocol whose transfer format the transport lacks
/// (MessagePack over Server-Sent Events).
pub fn unsupported_transfer_format(protocol: Protocol) -> String {
    format!(
        "Cannot use the '{}' protocol on the current transport. The transport does not support 'Binary' transfer format.",
        protocol.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(protocol: &str, version: u32) -> HandshakeRequest {
        HandshakeRequest { protocol: protocol.into(), version }
    }

    #[test]
    fn parses_json_and_messagepack_requests() {
        let buf = b"{\"protocol\":\"json\",\"version\":1}\x1e";
        assert_eq!(parse_request(buf), Ok((request("json", 1), buf.len())));
        let buf = b"{\"version\":2, \"protocol\":\"messagepack\", \"extra\":[]}\x1e";
        assert_eq!(parse_request(buf), Ok((request("messagepack", 2), buf.len())));
    }

    #[test]
    fn trailing_hub_messages_are_left_to_the_caller() {
        let mut buf = b"{\"protocol\":\"json\",\"version\":1}\x1e".to_vec();
        let handshake_len = buf.len();
        buf.extend_from_slice(b"{\"type\":6}\x1e{\"type\":1,\"target\":\"A\",\"arguments\":[]}\x1e");
        let (parsed, used) = parse_request(&buf).unwrap();
        assert_eq!((parsed, used), (request("json", 1), handshake_len));
        let (ping, ping_len) = json::decode(&buf[used..]).unwrap();
        assert_eq!(ping, crate::HubMessage::Ping);
        assert!(json::decode(&buf[used + ping_len..]).is_ok());

        let mut binary = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e".to_vec();
        let handshake_len = binary.len();
        binary.extend_from_slice(&[0x02, 0x91, 0x06]);
        let (_, used) = parse_request(&binary).unwrap();
        assert_eq!(used, handshake_len);
        assert!(crate::msgpack::decode(&binary[used..]).is_ok());
    }

    #[test]
    fn partial_and_malformed_requests() {
        assert_eq!(parse_request(b"{\"protocol\":\"json\""), Err(DecodeError::Incomplete));
        let invalid = |buf: &[u8]| match parse_request(buf) {
            Err(DecodeError::Invalid(message)) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(invalid(b"{\"version\":1}\x1e"), "missing required property 'protocol'");
        assert_eq!(invalid(b"{\"protocol\":\"json\"}\x1e"), "missing required property 'version'");
        assert_eq!(invalid(b"{\"protocol\":1,\"version\":1}\x1e"), "expected 'protocol' to be a string");
        assert_eq!(invalid(b"{\"protocol\":\"json\",\"version\":\"1\"}\x1e"), "expected 'version' to be an integer");
        assert!(invalid(b"[]\x1e").starts_with("invalid handshake request"));
        assert!(invalid(b"{\x1e").starts_with("invalid handshake request"));
        assert!(invalid(&vec![b' '; MAX_REQUEST_SIZE + 1]).contains("maximum"));
    }

    #[test]
    fn protocol_selection_uses_aspnet_texts() {
        assert_eq!(select_protocol(&request("json", 2)), Ok(Protocol::Json));
        assert_eq!(select_protocol(&request("messagepack", 1)), Ok(Protocol::MessagePack));
        assert_eq!(
            select_protocol(&request("json", 3)),
            Err("The server does not support version 3 of the 'json' protocol.".into())
        );
        assert_eq!(select_protocol(&request("JSON", 1)), Err("Requested protocol 'JSON' is not available.".into()));
    }

    #[test]
    fn responses() {
        assert_eq!(RESPONSE_OK, b"{}\x1e");
        assert_eq!(error_response(HANDSHAKE_CANCELED), b"{\"error\":\"Handshake was canceled.\"}\x1e");
        assert_eq!(error_response("a\"b"), b"{\"error\":\"a\\\"b\"}\x1e");
    }
}
