//! The four envelopes, encoded and decoded. Decoding is strict about types and lenient about
//! length, as the .NET reader is: an array needs at least its known items, extra items are
//! ignored, integers may use any encoding whose value fits, a `nil` string reads as empty.
//! Untrusted input is bounded: `rmpv` never pre-allocates from declared lengths, and nesting
//! is capped.

use bytes::Bytes;
use rmpv::Value;

/// Nesting budget for `rmpv` (the envelopes nest two levels; anything deeper is refused).
const MAX_DEPTH: usize = 16;

/// Why bytes are not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a backplane {what}: {reason}")]
pub struct DecodeError {
    what: &'static str,
    reason: String,
}

/// A hub message for the connections a channel names, pre-serialized once per protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Connection ids not to write to (checked on `all` and `group` channels).
    pub excluded: Vec<String>,
    /// Protocol name (`json`, `messagepack`, …) → that protocol's framed message, in order.
    pub frames: Vec<(String, Bytes)>,
    /// A client-result invocation: its id and the invoker's return channel (unprefixed).
    pub client_result: Option<(String, String)>,
    /// Who published it, when that was a Switchboard node (a trailing item the .NET reader
    /// ignores): Switchboard nodes skip their own deployment's messages, whose clients the
    /// deployment has already reached.
    pub origin: Option<String>,
}

/// Add to or remove from a group, sent to every server; the connection's owner acts and acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAction {
    Add = 1,
    Remove = 2,
}

/// A group change for a connection another server may own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCommand {
    /// Unique per sending server; echoed in the [`Ack`].
    pub id: u32,
    /// The sender: its ack channel is `…:internal:ack:{server}`.
    pub server: String,
    pub action: GroupAction,
    pub group: String,
    pub connection_id: String,
}

/// The owner's acknowledgement of a [`GroupCommand`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub id: u32,
}

/// A client's answer to a client-result invocation, framed in the client's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub protocol: String,
    pub frame: Bytes,
}

impl Invocation {
    pub fn encode(&self) -> Vec<u8> {
        let excluded = Value::Array(self.excluded.iter().map(|id| Value::from(id.as_str())).collect());
        let frames =
            self.frames.iter().map(|(name, frame)| (Value::from(name.as_str()), Value::Binary(frame.to_vec())));
        let mut items = vec![excluded, Value::Map(frames.collect())];
        if let Some((invocation_id, return_channel)) = &self.client_result {
            items.push(Value::from(invocation_id.as_str()));
            items.push(Value::from(return_channel.as_str()));
        }
        // Three items never read as a client result: .NET takes items 2 and 3 only from four on.
        if let Some(origin) = &self.origin {
            items.push(Value::from(origin.as_str()));
        }
        write(Value::Array(items))
    }

    pub fn decode(bytes: &[u8]) -> Result<Invocation, DecodeError> {
        let error = |reason: &str| DecodeError { what: "invocation", reason: reason.to_owned() };
        let items = read_array(bytes, 2).map_err(|reason| error(&reason))?;
        let excluded = match &items[0] {
            Value::Array(ids) => ids.iter().map(|id| text(id).ok_or_else(|| error("an excluded id is not a string"))),
            _ => return Err(error("the excluded ids are not an array")),
        }
        .collect::<Result<_, _>>()?;
        let Value::Map(pairs) = &items[1] else { return Err(error("the frames are not a map")) };
        let frames = pairs
            .iter()
            .map(|(name, frame)| match (text(name), frame) {
                (Some(name), Value::Binary(frame)) => Ok((name, Bytes::copy_from_slice(frame))),
                _ => Err(error("a frame is not a protocol name and bytes")),
            })
            .collect::<Result<_, _>>()?;
        let client_result = match items.get(2..4) {
            Some([id, channel]) => Some((
                text(id).ok_or_else(|| error("the invocation id is not a string"))?,
                text(channel).ok_or_else(|| error("the return channel is not a string"))?,
            )),
            _ => None,
        };
        let origin = match items.len() {
            3 => text(&items[2]),
            n if n > 4 => text(&items[4]),
            _ => None,
        };
        Ok(Invocation { excluded, frames, client_result, origin })
    }

    /// The frame for a connection speaking `protocol`, if the sender made one.
    pub fn frame(&self, protocol: &str) -> Option<&Bytes> {
        self.frames.iter().find(|(name, _)| name == protocol).map(|(_, frame)| frame)
    }
}

impl GroupCommand {
    pub fn encode(&self) -> Vec<u8> {
        write(Value::Array(vec![
            Value::from(self.id),
            Value::from(self.server.as_str()),
            Value::from(self.action as u8),
            Value::from(self.group.as_str()),
            Value::from(self.connection_id.as_str()),
        ]))
    }

    pub fn decode(bytes: &[u8]) -> Result<GroupCommand, DecodeError> {
        let error = |reason: &str| DecodeError { what: "group command", reason: reason.to_owned() };
        let items = read_array(bytes, 5).map_err(|reason| error(&reason))?;
        let string =
            |value: &Value, name: &str| text(value).ok_or_else(|| error(&format!("the {name} is not a string")));
        let action = match items[2].as_u64() {
            Some(1) => GroupAction::Add,
            Some(2) => GroupAction::Remove,
            _ => return Err(error("the action is neither 1 (add) nor 2 (remove)")),
        };
        Ok(GroupCommand {
            id: id(&items[0]).ok_or_else(|| error("the id is not a 32-bit integer"))?,
            server: string(&items[1], "server name")?,
            action,
            group: string(&items[3], "group")?,
            connection_id: string(&items[4], "connection id")?,
        })
    }
}

impl Ack {
    pub fn encode(&self) -> Vec<u8> {
        write(Value::Array(vec![Value::from(self.id)]))
    }

    pub fn decode(bytes: &[u8]) -> Result<Ack, DecodeError> {
        let error = |reason: &str| DecodeError { what: "ack", reason: reason.to_owned() };
        let items = read_array(bytes, 1).map_err(|reason| error(&reason))?;
        Ok(Ack { id: id(&items[0]).ok_or_else(|| error("the id is not a 32-bit integer"))? })
    }
}

impl Completion {
    pub fn encode(&self) -> Vec<u8> {
        write(Value::Array(vec![Value::from(self.protocol.as_str()), Value::Binary(self.frame.to_vec())]))
    }

    pub fn decode(bytes: &[u8]) -> Result<Completion, DecodeError> {
        let error = |reason: &str| DecodeError { what: "completion", reason: reason.to_owned() };
        let items = read_array(bytes, 2).map_err(|reason| error(&reason))?;
        let protocol = text(&items[0]).ok_or_else(|| error("the protocol is not a string"))?;
        let Value::Binary(frame) = &items[1] else { return Err(error("the message is not bytes")) };
        Ok(Completion { protocol, frame: Bytes::copy_from_slice(frame) })
    }
}

fn write(value: Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value).expect("writing to a Vec cannot fail");
    out
}

/// One whole MessagePack array of at least `min` items, and nothing after it.
fn read_array(bytes: &[u8], min: usize) -> Result<Vec<Value>, String> {
    let mut reader = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH).map_err(|e| e.to_string())?;
    if !reader.is_empty() {
        return Err(format!("{} bytes after the message", reader.len()));
    }
    match value {
        Value::Array(items) if items.len() >= min => Ok(items),
        Value::Array(items) => Err(format!("{} items, at least {min} expected", items.len())),
        _ => Err("not an array".into()),
    }
}

/// A string, `nil` as empty (as the .NET reader returns null).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => text.as_str().map(str::to_owned),
        Value::Nil => Some(String::new()),
        _ => None,
    }
}

fn id(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|id| u32::try_from(id).ok())
}

#[cfg(test)]
mod tests;
