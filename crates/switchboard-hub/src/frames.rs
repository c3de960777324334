//! One outbound hub message, serialized at most once per protocol and shared by every target.

use bytes::Bytes;
use std::sync::OnceLock;
use switchboard_protocol::{HubMessage, Protocol, json, msgpack};

/// Where the message came from decides how each protocol's frame is built.
#[derive(Debug)]
enum Source {
    /// REST JSON payload: `target` plus the raw, already-validated JSON arguments array (and
    /// the invocation id of a client result).
    Json { target: String, arguments: Box<serde_json::value::RawValue>, invocation_id: Option<String> },
    /// Frames prebuilt by the caller (the `application/octet-stream` multi-protocol payload).
    Prebuilt { json: Option<Bytes>, messagepack: Option<Bytes> },
}

/// A message ready for delivery: the frame for each protocol is built on first use.
#[derive(Debug)]
pub struct Frames {
    source: Source,
    json: OnceLock<Option<Bytes>>,
    messagepack: OnceLock<Option<Bytes>>,
}

impl Frames {
    /// A server-to-client invocation of `target` with a JSON array of arguments.
    pub fn invocation(target: impl Into<String>, arguments: Box<serde_json::value::RawValue>) -> Self {
        Self::new(Source::Json { target: target.into(), arguments, invocation_id: None })
    }

    /// Frames supplied per protocol (each a whole framed hub message). A missing protocol is
    /// converted from the other when a client of that protocol is targeted.
    pub fn prebuilt(json: Option<Bytes>, messagepack: Option<Bytes>) -> Self {
        Self::new(Source::Prebuilt { json, messagepack })
    }

    /// The same invocation asking the client for a result: every frame carries `invocation_id`
    /// (prebuilt frames are rebuilt with it; a frame that is not an invocation is dropped).
    pub fn with_invocation_id(self, invocation_id: &str) -> Self {
        let source = match self.source {
            Source::Json { target, arguments, .. } => {
                Source::Json { target, arguments, invocation_id: Some(invocation_id.to_owned()) }
            }
            Source::Prebuilt { json, messagepack } => {
                let json = json.and_then(|frame| {
                    let message = with_id(json::decode(&frame).ok()?.0, invocation_id)?;
                    let mut out = Vec::new();
                    json::encode(&message, &mut out);
                    Some(Bytes::from(out))
                });
                let messagepack = messagepack.and_then(|frame| {
                    let message = with_id(msgpack::decode(&frame).ok()?.0, invocation_id)?;
                    let mut out = Vec::new();
                    msgpack::encode(&message, &mut out);
                    Some(Bytes::from(out))
                });
                Source::Prebuilt { json, messagepack }
            }
        };
        Self::new(source)
    }

    /// One item of the server-to-client stream `invocation_id` (`item`: one JSON value),
    /// built for both protocols at once (it goes to one connection). `None` when the item
    /// cannot be expressed in MessagePack.
    pub fn stream_item(invocation_id: &str, item: &serde_json::value::RawValue) -> Option<Self> {
        let mut json_frame = Vec::new();
        json::encode_stream_item_raw(invocation_id, item.get(), &mut json_frame);
        let value: serde_json::Value = serde_json::from_str(item.get()).ok()?;
        let message = HubMessage::StreamItem {
            headers: Default::default(),
            invocation_id: invocation_id.to_owned(),
            item: msgpack::json_to_msgpack(&value),
        };
        let mut messagepack_frame = Vec::new();
        msgpack::encode(&message, &mut messagepack_frame);
        Some(Self::prebuilt(Some(json_frame.into()), Some(messagepack_frame.into())))
    }

    /// The Completion that ends the stream (or invocation) `invocation_id`, with `error` or
    /// without, for both protocols.
    pub fn completion(invocation_id: &str, error: Option<&str>) -> Self {
        let frame = |protocol: Protocol| {
            let mut out = Vec::new();
            match error {
                Some(error) => protocol.encode_completion_error(invocation_id, error, &mut out),
                None => protocol.encode_completion_void(invocation_id, &mut out),
            }
            Some(Bytes::from(out))
        };
        Self::prebuilt(frame(Protocol::Json), frame(Protocol::MessagePack))
    }

    fn new(source: Source) -> Self {
        Self { source, json: OnceLock::new(), messagepack: OnceLock::new() }
    }

    /// The framed bytes for `protocol`, or `None` when this message cannot be expressed in it.
    pub fn get(&self, protocol: Protocol) -> Option<&Bytes> {
        match protocol {
            Protocol::Json => self.json.get_or_init(|| self.build(Protocol::Json)).as_ref(),
            Protocol::MessagePack => self.messagepack.get_or_init(|| self.build(Protocol::MessagePack)).as_ref(),
        }
    }

    /// The frames to ship to other nodes: every frame at hand (given, or already built for a
    /// client here), and for a REST message its JSON frame at least. A protocol left out is
    /// built by each node that has a client speaking it, so no node encodes MessagePack for a
    /// message that no MessagePack client receives.
    pub fn for_other_nodes(&self) -> (Option<Bytes>, Option<Bytes>) {
        let at_hand = |built: &OnceLock<Option<Bytes>>, given: Option<&Bytes>| {
            built.get().cloned().flatten().or_else(|| given.cloned())
        };
        match &self.source {
            Source::Json { .. } => (self.get(Protocol::Json).cloned(), at_hand(&self.messagepack, None)),
            Source::Prebuilt { json, messagepack } => {
                (at_hand(&self.json, json.as_ref()), at_hand(&self.messagepack, messagepack.as_ref()))
            }
        }
    }

    fn build(&self, protocol: Protocol) -> Option<Bytes> {
        let mut out = Vec::new();
        match (&self.source, protocol) {
            (Source::Json { target, arguments, invocation_id }, Protocol::Json) => {
                json::encode_invocation_raw(invocation_id.as_deref(), target, arguments.get(), &mut out);
            }
            (Source::Json { target, arguments, invocation_id }, Protocol::MessagePack) => {
                let values: Vec<serde_json::Value> = serde_json::from_str(arguments.get()).ok()?;
                let values: Vec<rmpv::Value> = values.iter().map(msgpack::json_to_msgpack).collect();
                msgpack::encode_invocation(invocation_id.as_deref(), target, &values, &mut out);
            }
            (Source::Prebuilt { json: Some(frame), .. }, Protocol::Json) => return Some(frame.clone()),
            (Source::Prebuilt { messagepack: Some(frame), .. }, Protocol::MessagePack) => return Some(frame.clone()),
            (Source::Prebuilt { messagepack: Some(frame), .. }, Protocol::Json) => {
                let message = msgpack::decode(frame).ok()?.0;
                json::encode(&map_values(message, |v| msgpack::msgpack_to_json(&v)), &mut out);
            }
            (Source::Prebuilt { json: Some(frame), .. }, Protocol::MessagePack) => {
                let message = json::decode(frame).ok()?.0;
                msgpack::encode(&map_values(message, |v| msgpack::json_to_msgpack(&v)), &mut out);
            }
            (Source::Prebuilt { json: None, messagepack: None }, _) => return None,
        }
        Some(Bytes::from(out))
    }
}

/// An invocation with `invocation_id` set; `None` for any other message.
fn with_id<V>(message: HubMessage<V>, invocation_id: &str) -> Option<HubMessage<V>> {
    match message {
        HubMessage::Invocation { headers, target, arguments, stream_ids, .. } => Some(HubMessage::Invocation {
            headers,
            invocation_id: Some(invocation_id.to_owned()),
            target,
            arguments,
            stream_ids,
        }),
        _ => None,
    }
}

/// Converts the argument values of an invocation between protocols; other messages are not
/// something REST can send, so they are dropped.
fn map_values<A, B>(message: HubMessage<A>, f: impl Fn(A) -> B) -> HubMessage<B> {
    match message {
        HubMessage::Invocation { headers, invocation_id, target, arguments, stream_ids } => HubMessage::Invocation {
            headers,
            invocation_id,
            target,
            arguments: arguments.into_iter().map(f).collect(),
            stream_ids,
        },
        _ => HubMessage::Ping,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<serde_json::value::RawValue> {
        serde_json::value::RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn json_source_builds_both_protocols_once() {
        let frames = Frames::invocation("Receive", raw(r#"["hi",{"a":1}]"#));
        let json_frame = frames.get(Protocol::Json).unwrap().clone();
        assert_eq!(&json_frame[..], b"{\"type\":1,\"target\":\"Receive\",\"arguments\":[\"hi\",{\"a\":1}]}\x1e");
        assert!(std::ptr::eq(frames.get(Protocol::Json).unwrap().as_ptr(), json_frame.as_ptr()));
        let (message, _) = msgpack::decode(frames.get(Protocol::MessagePack).unwrap()).unwrap();
        match message {
            HubMessage::Invocation { target, arguments, .. } => {
                assert_eq!(target, "Receive");
                assert_eq!(arguments[0], rmpv::Value::from("hi"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn other_nodes_get_the_frames_at_hand_and_build_the_rest_themselves() {
        let frames = Frames::invocation("Receive", raw(r#"["hi",{"a":1}]"#));
        let (json_frame, messagepack) = frames.for_other_nodes();
        assert_eq!(json_frame.as_ref(), frames.get(Protocol::Json));
        assert!(messagepack.is_none(), "no MessagePack client here: none built");
        // Another node builds it from the JSON frame, byte for byte as the source would.
        let there = Frames::prebuilt(json_frame, None);
        assert_eq!(there.get(Protocol::MessagePack), frames.get(Protocol::MessagePack));
        // Built here (a MessagePack client here), it travels too.
        assert_eq!(frames.for_other_nodes().1.as_ref(), frames.get(Protocol::MessagePack));
        let given = Frames::prebuilt(None, Some(Bytes::from_static(b"\x01")));
        assert_eq!(given.for_other_nodes(), (None, Some(Bytes::from_static(b"\x01"))));
    }

    #[test]
    fn prebuilt_converts_the_missing_protocol() {
        let mut mp = Vec::new();
        msgpack::encode_invocation(None, "T", &[rmpv::Value::from(5)], &mut mp);
        let frames = Frames::prebuilt(None, Some(Bytes::from(mp.clone())));
        assert_eq!(frames.get(Protocol::MessagePack).unwrap().as_ref(), &mp[..]);
        assert_eq!(
            frames.get(Protocol::Json).unwrap().as_ref(),
            b"{\"type\":1,\"target\":\"T\",\"arguments\":[5]}\x1e"
        );
        assert!(Frames::prebuilt(None, None).get(Protocol::Json).is_none());
    }
}
