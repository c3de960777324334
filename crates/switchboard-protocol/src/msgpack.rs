//! The MessagePack hub protocol (`"messagepack"`, transfer format Binary).
//!
//! Each message is a [VarInt](crate::varint) length followed by one msgpack
//! array whose first element is the message type (layouts in spec §5). As with
//! JSON, reading is two steps: [`next_record`] cuts a whole body off the byte
//! stream (checking the declared length against a limit *before* anything is
//! buffered or allocated), then [`parse`] builds the message.
//!
//! Writing follows ASP.NET rather than the minimal spec: Invocations always have
//! 6 elements (signalrcore indexes the stream-ids element) and Close always has 3.

mod convert;
mod read;
mod write;

use rmpv::Value;

use crate::error::DecodeError;
use crate::message::{Completion, HubMessage};
use crate::varint;

pub use convert::{json_to_msgpack, msgpack_to_json};
pub use read::MAX_DEPTH;

/// Largest body the framing can declare (2^31−1); servers pass a lower limit
/// to [`next_record_limited`].
pub const MAX_MESSAGE_SIZE: usize = varint::MAX_VALUE;

/// A framed Ping, always exactly these bytes.
pub const PING: &[u8] = &[0x02, 0x91, 0x06];

/// Splits the first whole message body off `buf`: (body without prefix, bytes consumed).
pub fn next_record(buf: &[u8]) -> Result<(&[u8], usize), DecodeError> {
    next_record_limited(buf, MAX_MESSAGE_SIZE)
}

/// Like [`next_record`], but rejects a declared length above `max_len` as soon as
/// the prefix is read, so a 5-byte prefix cannot make the server wait for 2 GB.
pub fn next_record_limited(buf: &[u8], max_len: usize) -> Result<(&[u8], usize), DecodeError> {
    let (body_len, prefix_len) = varint::read(buf)?;
    if body_len > max_len {
        return Err(DecodeError::Invalid(format!("message is larger than the maximum of {max_len} bytes")));
    }
    let end = prefix_len + body_len;
    if buf.len() < end {
        return Err(DecodeError::Incomplete);
    }
    Ok((&buf[prefix_len..end], end))
}

/// Parses one body (without its length prefix). Only minimum array lengths are
/// checked; trailing elements are ignored.
pub fn parse(body: &[u8]) -> Result<HubMessage<Value>, DecodeError> {
    read::parse_body(body)
}

/// Decodes the first whole message in `buf`, returning it and the bytes consumed.
pub fn decode(buf: &[u8]) -> Result<(HubMessage<Value>, usize), DecodeError> {
    let (body, consumed) = next_record(buf)?;
    Ok((parse(body)?, consumed))
}

/// Appends `msg` with its length prefix.
pub fn encode(msg: &HubMessage<Value>, out: &mut Vec<u8>) {
    write::framed(out, |out| match msg {
        HubMessage::Invocation { headers, invocation_id, target, arguments, stream_ids } => {
            write::array_len(6, out);
            write::uint(1, out);
            write::headers(headers, out);
            write::optional_str(invocation_id.as_deref(), out);
            write::str(target, out);
            write::values(arguments, out);
            write::string_array(stream_ids, out);
        }
        HubMessage::StreamItem { headers, invocation_id, item } => {
            write::array_len(4, out);
            write::uint(2, out);
            write::headers(headers, out);
            write::str(invocation_id, out);
            write::value(item, out);
        }
        HubMessage::Completion { headers, invocation_id, result } => {
            write::array_len(if matches!(result, Completion::Void) { 4 } else { 5 }, out);
            write::uint(3, out);
            write::headers(headers, out);
            write::str(invocation_id, out);
            match result {
                Completion::Error(error) => {
                    write::uint(1, out);
                    write::str(error, out);
                }
                Completion::Void => write::uint(2, out),
                Completion::Value(value) => {
                    write::uint(3, out);
                    write::value(value, out);
                }
            }
        }
        HubMessage::StreamInvocation { headers, invocation_id, target, arguments, stream_ids } => {
            write::array_len(6, out);
            write::uint(4, out);
            write::headers(headers, out);
            write::str(invocation_id, out);
            write::str(target, out);
            write::values(arguments, out);
            write::string_array(stream_ids, out);
        }
        HubMessage::CancelInvocation { headers, invocation_id } => {
            write::array_len(3, out);
            write::uint(5, out);
            write::headers(headers, out);
            write::str(invocation_id, out);
        }
        HubMessage::Ping => {
            write::array_len(1, out);
            write::uint(6, out);
        }
        HubMessage::Close { error, allow_reconnect } => write_close_body(error.as_deref(), *allow_reconnect, out),
        HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => {
            write::array_len(2, out);
            write::uint(u64::from(msg.message_type()), out);
            write::uint(*sequence_id, out);
        }
    });
}

/// Appends an Invocation (no headers) without building a message; `invocation_id` only for a
/// client result.
pub fn encode_invocation(invocation_id: Option<&str>, target: &str, arguments: &[Value], out: &mut Vec<u8>) {
    write::framed(out, |out| {
        write::array_len(6, out);
        write::uint(1, out);
        write::headers(&[], out);
        write::optional_str(invocation_id, out);
        write::str(target, out);
        write::values(arguments, out);
        write::string_array(&[], out);
    });
}

/// Appends a Close message (`[7, error|nil, allowReconnect]`).
pub fn encode_close(error: Option<&str>, allow_reconnect: bool, out: &mut Vec<u8>) {
    write::framed(out, |out| write_close_body(error, allow_reconnect, out));
}

/// Appends a Completion carrying an error for `invocation_id`.
pub fn encode_completion_error(invocation_id: &str, error: &str, out: &mut Vec<u8>) {
    write::framed(out, |out| {
        write::array_len(5, out);
        write::uint(3, out);
        write::headers(&[], out);
        write::str(invocation_id, out);
        write::uint(1, out);
        write::str(error, out);
    });
}

/// Appends a void Completion (result kind 2) for `invocation_id`.
pub fn encode_completion_void(invocation_id: &str, out: &mut Vec<u8>) {
    write::framed(out, |out| {
        write::array_len(4, out);
        write::uint(3, out);
        write::headers(&[], out);
        write::str(invocation_id, out);
        write::uint(2, out);
    });
}

fn write_close_body(error: Option<&str>, allow_reconnect: bool, out: &mut Vec<u8>) {
    write::array_len(3, out);
    write::uint(7, out);
    write::optional_str(error, out);
    write::bool(allow_reconnect, out);
}

#[cfg(test)]
mod tests;
