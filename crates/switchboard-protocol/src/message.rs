//! The protocol-neutral hub message model (types 1–9 of the SignalR hub protocol).
//!
//! JSON and MessagePack carry the same nine messages with different encodings, so
//! the server reasons about one model and only the codecs know the bytes. The
//! model is generic over the argument value type `V` (`serde_json::Value`,
//! `rmpv::Value`, or a borrowed raw JSON slice) so that translating between the
//! two codecs is a value conversion, not a re-parse.

/// Message headers: string→string pairs, kept in the order they were read.
pub type Headers = Vec<(String, String)>;

/// One hub protocol message. The numbers in the variant docs are the wire `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage<V> {
    /// 1: calls `target`. Without an `invocation_id` the call is fire-and-forget and
    /// the callee must not answer at all, not even with an error.
    Invocation {
        headers: Headers,
        invocation_id: Option<String>,
        target: String,
        arguments: Vec<V>,
        /// Ids of the upload streams the caller will feed with StreamItems.
        stream_ids: Vec<String>,
    },
    /// 2: one item of a stream, addressed by the stream's invocation (or stream) id.
    StreamItem { headers: Headers, invocation_id: String, item: V },
    /// 3: ends an invocation or a stream; after it the id is dead.
    Completion { headers: Headers, invocation_id: String, result: Completion<V> },
    /// 4: calls a streaming method; answered by StreamItems and a final Completion.
    StreamInvocation {
        headers: Headers,
        invocation_id: String,
        target: String,
        arguments: Vec<V>,
        stream_ids: Vec<String>,
    },
    /// 5: asks the callee to stop a stream started by a StreamInvocation.
    CancelInvocation { headers: Headers, invocation_id: String },
    /// 6: keep-alive; needs no answer.
    Ping,
    /// 7: the sender is closing the connection; `allow_reconnect` lets clients retry.
    Close { error: Option<String>, allow_reconnect: bool },
    /// 8: stateful reconnect: everything up to `sequence_id` arrived and may be forgotten.
    Ack { sequence_id: u64 },
    /// 9: stateful reconnect: the next trackable message carries `sequence_id`.
    Sequence { sequence_id: u64 },
}

/// How an invocation ended. JSON tells Void from Value by the presence of `result`,
/// MessagePack by its result-kind number.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion<V> {
    /// The method returned nothing (or a stream ended normally).
    Void,
    /// The method returned this value.
    Value(V),
    /// The method failed; the text is shown to the caller.
    Error(String),
}

impl<V> HubMessage<V> {
    /// Returns the wire `type` number (1–9).
    pub fn message_type(&self) -> u8 {
        match self {
            HubMessage::Invocation { .. } => 1,
            HubMessage::StreamItem { .. } => 2,
            HubMessage::Completion { .. } => 3,
            HubMessage::StreamInvocation { .. } => 4,
            HubMessage::CancelInvocation { .. } => 5,
            HubMessage::Ping => 6,
            HubMessage::Close { .. } => 7,
            HubMessage::Ack { .. } => 8,
            HubMessage::Sequence { .. } => 9,
        }
    }

    /// Returns true for the types stateful reconnect numbers, buffers and replays (1–5).
    pub fn is_trackable(&self) -> bool {
        (1..=5).contains(&self.message_type())
    }

    /// Returns the headers of types 1–5; the other types have none on the wire.
    pub fn headers(&self) -> Option<&Headers> {
        match self {
            HubMessage::Invocation { headers, .. }
            | HubMessage::StreamItem { headers, .. }
            | HubMessage::Completion { headers, .. }
            | HubMessage::StreamInvocation { headers, .. }
            | HubMessage::CancelInvocation { headers, .. } => Some(headers),
            HubMessage::Ping | HubMessage::Close { .. } | HubMessage::Ack { .. } | HubMessage::Sequence { .. } => None,
        }
    }

    /// Returns the invocation id, if this message type has one and it is set.
    pub fn invocation_id(&self) -> Option<&str> {
        match self {
            HubMessage::Invocation { invocation_id, .. } => invocation_id.as_deref(),
            HubMessage::StreamItem { invocation_id, .. }
            | HubMessage::Completion { invocation_id, .. }
            | HubMessage::StreamInvocation { invocation_id, .. }
            | HubMessage::CancelInvocation { invocation_id, .. } => Some(invocation_id),
            HubMessage::Ping | HubMessage::Close { .. } | HubMessage::Ack { .. } | HubMessage::Sequence { .. } => None,
        }
    }

    /// Converts every argument value with `convert`, keeping everything else.
    ///
    /// This is how a message read by one codec is re-encoded by the other, e.g.
    /// `msg.map_values(|v| msgpack::json_to_msgpack(&v))`.
    pub fn map_values<W>(self, mut convert: impl FnMut(V) -> W) -> HubMessage<W> {
        match self {
            HubMessage::Invocation { headers, invocation_id, target, arguments, stream_ids } => {
                HubMessage::Invocation {
                    headers,
                    invocation_id,
                    target,
                    arguments: arguments.into_iter().map(convert).collect(),
                    stream_ids,
                }
            }
            HubMessage::StreamItem { headers, invocation_id, item } => {
                HubMessage::StreamItem { headers, invocation_id, item: convert(item) }
            }
            HubMessage::Completion { headers, invocation_id, result } => HubMessage::Completion {
                headers,
                invocation_id,
                result: match result {
                    Completion::Void => Completion::Void,
                    Completion::Value(value) => Completion::Value(convert(value)),
                    Completion::Error(error) => Completion::Error(error),
                },
            },
            HubMessage::StreamInvocation { headers, invocation_id, target, arguments, stream_ids } => {
                HubMessage::StreamInvocation {
                    headers,
                    invocation_id,
                    target,
                    arguments: arguments.into_iter().map(convert).collect(),
                    stream_ids,
                }
            }
            HubMessage::CancelInvocation { headers, invocation_id } => {
                HubMessage::CancelInvocation { headers, invocation_id }
            }
            HubMessage::Ping => HubMessage::Ping,
            HubMessage::Close { error, allow_reconnect } => HubMessage::Close { error, allow_reconnect },
            HubMessage::Ack { sequence_id } => HubMessage::Ack { sequence_id },
            HubMessage::Sequence { sequence_id } => HubMessage::Sequence { sequence_id },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trackable_types_are_one_to_five() {
        let ping: HubMessage<u8> = HubMessage::Ping;
        let cancel: HubMessage<u8> = HubMessage::CancelInvocation { headers: Vec::new(), invocation_id: "1".into() };
        let ack: HubMessage<u8> = HubMessage::Ack { sequence_id: 3 };
        assert!(!ping.is_trackable());
        assert!(cancel.is_trackable());
        assert!(!ack.is_trackable());
        assert_eq!(ack.message_type(), 8);
    }

    #[test]
    fn map_values_converts_arguments_and_results() {
        let msg: HubMessage<u8> =
            HubMessage::Completion { headers: Vec::new(), invocation_id: "0".into(), result: Completion::Value(7) };
        let mapped = msg.map_values(u32::from);
        assert_eq!(
            mapped,
            HubMessage::Completion { headers: Vec::new(), invocation_id: "0".into(), result: Completion::Value(7u32) }
        );
        assert_eq!(mapped.invocation_id(), Some("0"));
    }
}
