//! The hub protocol chosen at handshake, as one value the session carries around.
//!
//! After the handshake a server session mostly needs three things: split the
//! input into records, learn the few routing facts of each record (type, ids,
//! target), and write its own small control messages (Ping, Close, error
//! Completions). [`Protocol`] offers exactly those, dispatching to [`json`] or
//! [`msgpack`], so session code never matches on the codec itself.

use crate::error::DecodeError;
use crate::message::HubMessage;
use crate::{json, msgpack};

/// A hub protocol a client can pick in its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `"json"`: text records ending in `0x1E`.
    Json,
    /// `"messagepack"`: VarInt-framed msgpack arrays; needs a Binary transport.
    MessagePack,
}

/// Hub protocol versions served: 0 (what signalrcore sends after negotiate version 0, which
/// ASP.NET also accepts) up to 2 (stateful reconnect).
const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 0..=2;

const JSON_PING: &[u8] = b"{\"type\":6}\x1e";

impl Protocol {
    /// Looks up the handshake name, matched exactly as ASP.NET does.
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "json" => Some(Protocol::Json),
            "messagepack" => Some(Protocol::MessagePack),
            _ => None,
        }
    }

    /// Returns the handshake name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::MessagePack => "messagepack",
        }
    }

    /// Returns true when the protocol needs the Binary transfer format
    /// (WebSocket Binary frames; not available over Server-Sent Events).
    pub fn is_binary(self) -> bool {
        self == Protocol::MessagePack
    }

    /// Returns true for the hub protocol versions this server speaks (0 to 2).
    pub fn supports_version(self, version: u32) -> bool {
        SUPPORTED_VERSIONS.contains(&version)
    }

    /// Returns the complete, framed Ping message.
    pub fn ping(self) -> &'static [u8] {
        match self {
            Protocol::Json => JSON_PING,
            Protocol::MessagePack => msgpack::PING,
        }
    }

    /// Appends a Close message.
    pub fn encode_close(self, error: Option<&str>, allow_reconnect: bool, out: &mut Vec<u8>) {
        match self {
            Protocol::Json => json::encode_close(error, allow_reconnect, out),
            Protocol::MessagePack => msgpack::encode_close(error, allow_reconnect, out),
        }
    }

    /// Appends a Completion carrying `error` for `invocation_id`.
    pub fn encode_completion_error(self, invocation_id: &str, error: &str, out: &mut Vec<u8>) {
        match self {
            Protocol::Json => json::encode_completion_error(invocation_id, error, out),
            Protocol::MessagePack => msgpack::encode_completion_error(invocation_id, error, out),
        }
    }

    /// Appends a void Completion for `invocation_id`.
    pub fn encode_completion_void(self, invocation_id: &str, out: &mut Vec<u8>) {
        match self {
            Protocol::Json => json::encode_completion_void(invocation_id, out),
            Protocol::MessagePack => msgpack::encode_completion_void(invocation_id, out),
        }
    }

    /// Splits the next whole record off `buf`: (body, consumed). Used by sessions that only need to route/inspect.
    ///
    /// Fails with `Invalid` as soon as the record is known to exceed `max_len`.
    pub fn next_record(self, buf: &[u8], max_len: usize) -> Result<(&[u8], usize), DecodeError> {
        match self {
            Protocol::Json => json::next_record_limited(buf, max_len),
            Protocol::MessagePack => msgpack::next_record_limited(buf, max_len),
        }
    }

    /// The few facts a server session needs from a client message without building full values.
    ///
    /// Applies the same structural checks as the codec's full `parse`. For JSON,
    /// argument/item/result values are kept as raw slices and only checked to be
    /// well-formed, so a payload nested deeper than `parse`'s recursion limit is
    /// accepted here (nothing is built from it, so there is no stack risk).
    pub fn inspect(self, body: &[u8]) -> Result<Inbound, DecodeError> {
        match self {
            Protocol::Json => json::parse_borrowed(body).map(Inbound::from),
            Protocol::MessagePack => msgpack::parse(body).map(Inbound::from),
        }
    }
}

/// The routing facts of one client message; see [`Protocol::inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A hub method call; without an id it must not be answered. `uploads`: the caller will
    /// feed upload streams (it named stream ids).
    Invocation {
        invocation_id: Option<String>,
        target: String,
        uploads: bool,
    },
    /// A call of a streaming method, answered by StreamItems and a final Completion.
    StreamInvocation {
        invocation_id: String,
        target: String,
        uploads: bool,
    },
    StreamItem,
    /// A client result or the end of an upload stream.
    Completion {
        invocation_id: String,
    },
    /// The client stops a stream it started with a StreamInvocation.
    CancelInvocation {
        invocation_id: String,
    },
    Ping,
    Close {
        error: Option<String>,
    },
    Ack {
        sequence_id: u64,
    },
    Sequence {
        sequence_id: u64,
    },
}

impl<V> From<HubMessage<V>> for Inbound {
    fn from(message: HubMessage<V>) -> Self {
        match message {
            HubMessage::Invocation { invocation_id, target, stream_ids, .. } => {
                Inbound::Invocation { invocation_id, target, uploads: !stream_ids.is_empty() }
            }
            HubMessage::StreamInvocation { invocation_id, target, stream_ids, .. } => {
                Inbound::StreamInvocation { invocation_id, target, uploads: !stream_ids.is_empty() }
            }
            HubMessage::StreamItem { .. } => Inbound::StreamItem,
            HubMessage::Completion { invocation_id, .. } => Inbound::Completion { invocation_id },
            HubMessage::CancelInvocation { invocation_id, .. } => Inbound::CancelInvocation { invocation_id },
            HubMessage::Ping => Inbound::Ping,
            HubMessage::Close { error, .. } => Inbound::Close { error },
            HubMessage::Ack { sequence_id } => Inbound::Ack { sequence_id },
            HubMessage::Sequence { sequence_id } => Inbound::Sequence { sequence_id },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exact() {
        assert_eq!(Protocol::from_name("json"), Some(Protocol::Json));
        assert_eq!(Protocol::from_name("messagepack"), Some(Protocol::MessagePack));
        assert_eq!(Protocol::from_name("MessagePack"), None);
        assert_eq!(Protocol::MessagePack.name(), "messagepack");
        assert!(Protocol::MessagePack.is_binary());
        assert!(!Protocol::Json.is_binary());
        assert!(Protocol::Json.supports_version(2));
        assert!(Protocol::Json.supports_version(0));
        assert!(!Protocol::Json.supports_version(3));
        assert!(!Protocol::MessagePack.supports_version(3));
    }

    #[test]
    fn pings_decode_as_pings() {
        assert_eq!(Protocol::Json.ping(), b"{\"type\":6}\x1e");
        assert_eq!(Protocol::MessagePack.ping(), [0x02, 0x91, 0x06]);
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            let (body, used) = protocol.next_record(protocol.ping(), 100).unwrap();
            assert_eq!(used, protocol.ping().len());
            assert_eq!(protocol.inspect(body), Ok(Inbound::Ping));
        }
    }

    #[test]
    fn control_messages_inspect_back() {
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            let mut out = Vec::new();
            protocol.encode_close(Some("bye"), true, &mut out);
            protocol.encode_completion_error("3", "nope", &mut out);
            protocol.encode_completion_void("4", &mut out);
            let mut seen = Vec::new();
            let mut rest = &out[..];
            while !rest.is_empty() {
                let (body, used) = protocol.next_record(rest, 1024).unwrap();
                seen.push(protocol.inspect(body).unwrap());
                rest = &rest[used..];
            }
            assert_eq!(
                seen,
                [
                    Inbound::Close { error: Some("bye".into()) },
                    Inbound::Completion { invocation_id: "3".into() },
                    Inbound::Completion { invocation_id: "4".into() },
                ],
                "{protocol:?}"
            );
        }
    }

    #[test]
    fn inspect_reports_invocation_routing_facts() {
        let body = br#"{"type":1,"invocationId":"0","target":"Send","arguments":[{"deep":[1]}]}"#;
        assert_eq!(
            Protocol::Json.inspect(body),
            Ok(Inbound::Invocation { invocation_id: Some("0".into()), target: "Send".into(), uploads: false })
        );
        let bad = br#"{"type":1,"target":"Send","arguments":{}}"#;
        assert_eq!(
            Protocol::Json.inspect(bad),
            Err(DecodeError::Invalid("expected 'arguments' to be an array".into()))
        );
        assert_eq!(
            Protocol::Json.next_record(b"{\"type\":6}", 4),
            Err(DecodeError::Invalid("message is larger than the maximum of 4 bytes".into()))
        );
    }
}
