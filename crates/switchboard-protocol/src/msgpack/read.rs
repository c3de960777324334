//! Reading one MessagePack hub message body into the neutral model.
//!
//! The body is decoded with `rmpv` into one array, then each layout of the
//! protocol is matched with a slice pattern that checks the *minimum* length
//! only: extra trailing elements are ignored for forward compatibility, and the
//! JS client's 5-element Invocation (no stream ids) is accepted.
//!
//! Hostile input: `rmpv` never pre-allocates from a declared array or map
//! length (it grows as elements actually arrive) and caps byte-buffer
//! pre-allocation at 64 KiB, so memory stays proportional to the body, which
//! the framing layer already bounded. Nesting is bounded by [`MAX_DEPTH`] so a
//! deep `91 91 91 …` cannot overflow the stack.

use rmpv::Value;

use crate::error::DecodeError;
use crate::message::{Completion, Headers, HubMessage};

/// Recursion budget handed to `rmpv`. Each nested array or map spends two units,
/// so this allows about 100 levels of nesting in arguments — far more than any
/// real payload, far less than a thread stack can hold.
pub const MAX_DEPTH: usize = 200;

/// Result kinds of a Completion (element 3).
const RESULT_KIND_ERROR: u64 = 1;
const RESULT_KIND_VOID: u64 = 2;
const RESULT_KIND_VALUE: u64 = 3;

/// Parses one message body (without its length prefix).
pub(super) fn parse_body(body: &[u8]) -> Result<HubMessage<Value>, DecodeError> {
    let mut reader = body;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH).map_err(|error| match error {
        rmpv::decode::Error::DepthLimitExceeded => DecodeError::invalid("message nesting is too deep"),
        other => DecodeError::Invalid(format!("invalid msgpack: {other}")),
    })?;
    let Value::Array(mut items) = value else {
        return Err(DecodeError::invalid("message is not a msgpack array"));
    };
    let message_type = match items.first() {
        Some(first) => first.as_u64().ok_or_else(|| DecodeError::invalid("message type is not an integer"))?,
        None => return Err(DecodeError::invalid("message is an empty array")),
    };
    let message = match (message_type, items.as_mut_slice()) {
        (1, [_, headers, invocation_id, target, arguments, rest @ ..]) => HubMessage::Invocation {
            headers: read_headers(headers)?,
            invocation_id: optional_string(invocation_id, "invocation id")?,
            target: string(target, "target")?,
            arguments: array(arguments, "arguments")?,
            stream_ids: stream_ids(rest.first_mut())?,
        },
        (2, [_, headers, invocation_id, item, ..]) => HubMessage::StreamItem {
            headers: read_headers(headers)?,
            invocation_id: string(invocation_id, "invocation id")?,
            item: take(item),
        },
        (3, [_, headers, invocation_id, kind, rest @ ..]) => HubMessage::Completion {
            headers: read_headers(headers)?,
            invocation_id: string(invocation_id, "invocation id")?,
            result: completion(kind, rest.first_mut())?,
        },
        (4, [_, headers, invocation_id, target, arguments, rest @ ..]) => HubMessage::StreamInvocation {
            headers: read_headers(headers)?,
            invocation_id: string(invocation_id, "invocation id")?,
            target: string(target, "target")?,
            arguments: array(arguments, "arguments")?,
            stream_ids: stream_ids(rest.first_mut())?,
        },
        (5, [_, headers, invocation_id, ..]) => HubMessage::CancelInvocation {
            headers: read_headers(headers)?,
            invocation_id: string(invocation_id, "invocation id")?,
        },
        (6, [_, ..]) => HubMessage::Ping,
        (7, [_, error, rest @ ..]) => HubMessage::Close {
            error: optional_string(error, "close error")?,
            allow_reconnect: match rest.first() {
                None | Some(Value::Nil) => false,
                Some(Value::Boolean(flag)) => *flag,
                Some(_) => return Err(DecodeError::invalid("allow reconnect is not a boolean")),
            },
        },
        (8, [_, sequence_id, ..]) => HubMessage::Ack { sequence_id: sequence(sequence_id)? },
        (9, [_, sequence_id, ..]) => HubMessage::Sequence { sequence_id: sequence(sequence_id)? },
        (1..=9, fields) => {
            return Err(DecodeError::Invalid(format!(
                "message of type {message_type} has too few elements ({})",
                fields.len()
            )));
        }
        (other, _) => return Err(DecodeError::Invalid(format!("unknown message type {other}"))),
    };
    Ok(message)
}

/// Moves a value out of the decoded array (the array is discarded afterwards).
fn take(slot: &mut Value) -> Value {
    std::mem::replace(slot, Value::Nil)
}

fn string(slot: &mut Value, what: &str) -> Result<String, DecodeError> {
    match take(slot) {
        Value::String(text) => {
            text.into_str().ok_or_else(|| DecodeError::Invalid(format!("{what} is not valid utf-8")))
        }
        _ => Err(DecodeError::Invalid(format!("{what} is not a string"))),
    }
}

fn optional_string(slot: &mut Value, what: &str) -> Result<Option<String>, DecodeError> {
    if slot.is_nil() {
        return Ok(None);
    }
    string(slot, what).map(Some)
}

fn array(slot: &mut Value, what: &str) -> Result<Vec<Value>, DecodeError> {
    match take(slot) {
        Value::Array(items) => Ok(items),
        _ => Err(DecodeError::Invalid(format!("{what} is not an array"))),
    }
}

fn read_headers(slot: &mut Value) -> Result<Headers, DecodeError> {
    let Value::Map(entries) = take(slot) else {
        return Err(DecodeError::invalid("invalid headers"));
    };
    entries
        .into_iter()
        .map(|(name, value)| match (name, value) {
            (Value::String(name), Value::String(value)) => {
                name.into_str().zip(value.into_str()).ok_or_else(|| DecodeError::invalid("invalid headers"))
            }
            _ => Err(DecodeError::invalid("invalid headers")),
        })
        .collect()
}

fn stream_ids(slot: Option<&mut Value>) -> Result<Vec<String>, DecodeError> {
    let Some(slot) = slot else {
        return Ok(Vec::new());
    };
    if slot.is_nil() {
        return Ok(Vec::new());
    }
    array(slot, "stream ids")?.iter_mut().map(|id| string(id, "stream id")).collect()
}

fn completion(kind: &Value, result: Option<&mut Value>) -> Result<Completion<Value>, DecodeError> {
    match (kind.as_u64(), result) {
        (Some(RESULT_KIND_VOID), _) => Ok(Completion::Void),
        (Some(RESULT_KIND_ERROR), Some(error)) => Ok(Completion::Error(string(error, "error")?)),
        (Some(RESULT_KIND_VALUE), Some(value)) => Ok(Completion::Value(take(value))),
        (Some(RESULT_KIND_ERROR | RESULT_KIND_VALUE), None) => {
            Err(DecodeError::invalid("completion is missing its result"))
        }
        _ => Err(DecodeError::invalid("invalid invocation result kind")),
    }
}

fn sequence(slot: &Value) -> Result<u64, DecodeError> {
    slot.as_u64().ok_or_else(|| DecodeError::invalid("sequence id is not a non-negative integer"))
}
