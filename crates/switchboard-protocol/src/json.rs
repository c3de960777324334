//! The JSON hub protocol (`"json"`, transfer format Text).
//!
//! Each message is one compact JSON object followed by the record separator
//! `0x1E`. Frames, SSE events and POST bodies may hold several records, and
//! inbound bytes are a stream, so reading is split in two steps:
//! [`next_record`] finds a whole record (or says `Incomplete`), then [`parse`]
//! turns it into a [`HubMessage`]. Output is always compact (no raw newlines),
//! because SSE splits payloads on line breaks.

mod wire;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::DecodeError;
use crate::message::{Completion, Headers, HubMessage};

/// Terminates every JSON hub message and every handshake message.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// Splits the first whole record off `buf`: its body without the separator, and
/// the bytes consumed including the separator.
pub fn next_record(buf: &[u8]) -> Result<(&[u8], usize), DecodeError> {
    next_record_limited(buf, usize::MAX)
}

/// Like [`next_record`], but fails as soon as the body is known to exceed `max_len`,
/// so a client cannot make the server buffer an endless record.
pub fn next_record_limited(buf: &[u8], max_len: usize) -> Result<(&[u8], usize), DecodeError> {
    let searched = &buf[..buf.len().min(max_len.saturating_add(1))];
    match searched.iter().position(|&byte| byte == RECORD_SEPARATOR) {
        Some(end) => Ok((&buf[..end], end + 1)),
        None if buf.len() > max_len => Err(too_big(max_len)),
        None => Err(DecodeError::Incomplete),
    }
}

fn too_big(max_len: usize) -> DecodeError {
    DecodeError::Invalid(format!("message is larger than the maximum of {max_len} bytes"))
}

/// Parses one record body (without the separator) into a message.
///
/// Property names are case-sensitive and unknown properties are ignored. A
/// Completion with `result` present (even `null`) is a value; without it, void.
pub fn parse(body: &[u8]) -> Result<HubMessage<Value>, DecodeError> {
    wire::parse_message(body)
}

/// Parses a body keeping arguments, items and results as borrowed raw JSON text.
///
/// Cheaper than [`parse`] when the values are only routed, not examined. Raw
/// values are checked for syntax only, so unlike [`parse`] their nesting depth
/// is not limited.
pub fn parse_borrowed(body: &[u8]) -> Result<HubMessage<&RawValue>, DecodeError> {
    wire::parse_message(body)
}

/// Decodes the first whole message in `buf`, returning it and the bytes consumed.
pub fn decode(buf: &[u8]) -> Result<(HubMessage<Value>, usize), DecodeError> {
    let (body, consumed) = next_record(buf)?;
    Ok((parse(body)?, consumed))
}

/// Appends `msg` as compact JSON plus the record separator.
pub fn encode(msg: &HubMessage<Value>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":");
    out.push(b'0' + msg.message_type());
    match msg {
        HubMessage::Invocation { headers, invocation_id, target, arguments, stream_ids } => {
            write_call(headers, invocation_id.as_deref(), target, arguments, stream_ids, out)
        }
        HubMessage::StreamInvocation { headers, invocation_id, target, arguments, stream_ids } => {
            write_call(headers, Some(invocation_id), target, arguments, stream_ids, out)
        }
        HubMessage::StreamItem { headers, invocation_id, item } => {
            write_headers(headers, out);
            write_key("invocationId", out);
            write_json_string(invocation_id, out);
            write_key("item", out);
            write_json(item, out);
        }
        HubMessage::Completion { headers, invocation_id, result } => {
            write_headers(headers, out);
            write_key("invocationId", out);
            write_json_string(invocation_id, out);
            match result {
                Completion::Void => {}
                Completion::Value(value) => {
                    write_key("result", out);
                    write_json(value, out);
                }
                Completion::Error(error) => {
                    write_key("error", out);
                    write_json_string(error, out);
                }
            }
        }
        HubMessage::CancelInvocation { headers, invocation_id } => {
            write_headers(headers, out);
            write_key("invocationId", out);
            write_json_string(invocation_id, out);
        }
        HubMessage::Ping => {}
        HubMessage::Close { error, allow_reconnect } => write_close_fields(error.as_deref(), *allow_reconnect, out),
        HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => {
            write_key("sequenceId", out);
            write_json(sequence_id, out);
        }
    }
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
}

/// Appends an Invocation whose arguments are already JSON text; `invocation_id` only for a
/// client result (the id the client's Completion answers).
///
/// This is the REST send path: the body the app posted is forwarded without
/// being parsed into values. The caller guarantees `arguments_json_array` is a
/// valid compact JSON array; it is copied verbatim.
pub fn encode_invocation_raw(invocation_id: Option<&str>, target: &str, arguments_json_array: &str, out: &mut Vec<u8>) {
    debug_assert!(arguments_json_array.trim_start().starts_with('['));
    out.reserve(target.len() + arguments_json_array.len() + 40);
    out.extend_from_slice(b"{\"type\":1,");
    if let Some(id) = invocation_id {
        out.extend_from_slice(b"\"invocationId\":");
        write_json_string(id, out);
        out.push(b',');
    }
    out.extend_from_slice(b"\"target\":");
    write_json_string(target, out);
    out.extend_from_slice(b",\"arguments\":");
    out.extend_from_slice(arguments_json_array.as_bytes());
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
}

/// Appends a StreamItem whose item is already JSON text (copied verbatim: the caller
/// guarantees it is one valid JSON value).
pub fn encode_stream_item_raw(invocation_id: &str, item_json: &str, out: &mut Vec<u8>) {
    out.reserve(invocation_id.len() + item_json.len() + 40);
    out.extend_from_slice(b"{\"type\":2,\"invocationId\":");
    write_json_string(invocation_id, out);
    out.extend_from_slice(b",\"item\":");
    out.extend_from_slice(item_json.as_bytes());
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
}

/// Appends a Close message; `error` and `allowReconnect` are written only when set.
pub fn encode_close(error: Option<&str>, allow_reconnect: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":7");
    write_close_fields(error, allow_reconnect, out);
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
}

/// Appends a Completion carrying an error for `invocation_id`.
pub fn encode_completion_error(invocation_id: &str, error: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":3,\"invocationId\":");
    write_json_string(invocation_id, out);
    out.extend_from_slice(b",\"error\":");
    write_json_string(error, out);
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
}

/// Appends a void Completion (no `result` key) for `invocation_id`.
pub fn encode_completion_void(invocation_id: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":3,\"invocationId\":");
    write_json_string(invocation_id, out);
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
}

/// Writes the fields shared by Invocation and StreamInvocation.
fn write_call(
    headers: &Headers,
    invocation_id: Option<&str>,
    target: &str,
    arguments: &[Value],
    stream_ids: &[String],
    out: &mut Vec<u8>,
) {
    write_headers(headers, out);
    if let Some(id) = invocation_id {
        write_key("invocationId", out);
        write_json_string(id, out);
    }
    write_key("target", out);
    write_json_string(target, out);
    write_key("arguments", out);
    write_json(arguments, out);
    if !stream_ids.is_empty() {
        write_key("streamIds", out);
        write_json(stream_ids, out);
    }
}

fn write_close_fields(error: Option<&str>, allow_reconnect: bool, out: &mut Vec<u8>) {
    if let Some(error) = error {
        write_key("error", out);
        write_json_string(error, out);
    }
    if allow_reconnect {
        out.extend_from_slice(b",\"allowReconnect\":true");
    }
}

/// Writes `,"key":`; every key follows `type`, so a comma always precedes it.
fn write_key(key: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn write_headers(headers: &Headers, out: &mut Vec<u8>) {
    if headers.is_empty() {
        return;
    }
    write_key("headers", out);
    out.push(b'{');
    for (index, (name, value)) in headers.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_json_string(name, out);
        out.push(b':');
        write_json_string(value, out);
    }
    out.push(b'}');
}

/// Writes `text` as an escaped JSON string (control characters, including
/// newlines, become escapes, so output never contains a raw line break).
pub(crate) fn write_json_string(text: &str, out: &mut Vec<u8>) {
    write_json(text, out);
}

/// Writes any serializable value as compact JSON.
fn write_json<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Writing strings, numbers and `Value`s (whose keys are strings) into a Vec
    // cannot fail; a failure would be a serde_json bug, so it is only asserted.
    let result = serde_json::to_writer(&mut *out, value);
    debug_assert!(result.is_ok(), "json serialization failed: {result:?}");
}

#[cfg(test)]
mod tests;
