//! The few hub-protocol messages the harness writes, and a cheap reader for what clients
//! receive: it counts Invocations and Completions and digs out the timestamp that the
//! sender put first in the arguments (or, for an echo, first in the result).

use crate::Protocol;
use memchr::memmem::Finder;
use std::sync::LazyLock;
use switchboard_protocol::varint;

pub(crate) fn handshake(protocol: Protocol) -> &'static [u8] {
    match protocol {
        Protocol::Json => b"{\"protocol\":\"json\",\"version\":1}\x1e",
        Protocol::Messagepack => b"{\"protocol\":\"messagepack\",\"version\":1}\x1e",
    }
}

pub(crate) fn ping(protocol: Protocol) -> &'static [u8] {
    match protocol {
        Protocol::Json => b"{\"type\":6}\x1e",
        Protocol::Messagepack => &[0x02, 0x91, 0x06],
    }
}

/// The body of a REST send.
pub(crate) fn rest_body(timestamp_us: u64, padding: &str) -> String {
    format!(r#"{{"target":"m","arguments":[{timestamp_us},"{padding}"]}}"#)
}

/// An Invocation of `target` with arguments `[timestamp, padding]`: what a client invokes
/// (with an id) and what a server sends (without one).
pub(crate) fn invocation(
    protocol: Protocol,
    id: Option<u64>,
    target: &str,
    timestamp_us: u64,
    padding: &str,
) -> Vec<u8> {
    match protocol {
        Protocol::Json => {
            let id = id.map(|id| format!(r#""invocationId":"{id}","#)).unwrap_or_default();
            format!(r#"{{"type":1,{id}"target":"{target}","arguments":[{timestamp_us},"{padding}"]}}"#)
                .into_bytes()
                .into_iter()
                .chain([0x1e])
                .collect()
        }
        Protocol::Messagepack => {
            let mut body = vec![0x95, 0x01, 0x80];
            match id {
                Some(id) => write_str(&id.to_string(), &mut body),
                None => body.push(0xc0),
            }
            write_str(target, &mut body);
            body.extend_from_slice(&[0x92, 0xcf]);
            body.extend_from_slice(&timestamp_us.to_be_bytes());
            write_str(padding, &mut body);
            frame_msgpack(&body)
        }
    }
}

/// Prefixes a MessagePack hub message with its length.
pub(crate) fn frame_msgpack(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    varint::write(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn write_str(text: &str, out: &mut Vec<u8>) {
    let len = text.len();
    match len {
        0..=31 => out.push(0xa0 | len as u8),
        32..=255 => out.extend_from_slice(&[0xd9, len as u8]),
        256..=65535 => {
            out.push(0xda);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(text.as_bytes());
}

/// Calls `each` with every Invocation or Completion in `payload` (one transport read or
/// frame of whole hub messages); pings and anything else are skipped.
pub(crate) fn for_each_message(protocol: Protocol, payload: &[u8], mut each: impl FnMut(&[u8])) {
    match protocol {
        // Byte by byte, this split was four tenths of the harness's CPU in a broadcast run
        // (the harness shares the machine with the server it measures).
        Protocol::Json => {
            let mut start = 0;
            for end in memchr::memchr_iter(0x1e, payload).chain([payload.len()]) {
                let record = &payload[start..end];
                start = end + 1;
                if matches!(json_type(record), Some(b'1' | b'3')) {
                    each(record);
                }
            }
        }
        Protocol::Messagepack => {
            let mut rest = payload;
            while let Ok((len, used)) = varint::read(rest) {
                let Some(body) = rest.get(used..used + len) else { break };
                if matches!(msgpack_type(body), Some(1 | 3)) {
                    each(body);
                }
                rest = &rest[used + len..];
            }
        }
    }
}

/// The digit of `"type":N` (every hub message type is a single digit).
fn json_type(record: &[u8]) -> Option<u8> {
    const TYPE: &[u8] = b"{\"type\":";
    if record.starts_with(TYPE) {
        return record.get(TYPE.len()).copied();
    }
    let at = find(record, &TYPE[1..])?;
    record.get(at + TYPE.len() - 1).copied()
}

fn msgpack_type(body: &[u8]) -> Option<u8> {
    match body.first()? {
        0x90..=0x9f => body.get(1).copied(),
        0xdc => body.get(3).copied(),
        _ => None,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// The timestamp first in an Invocation's arguments or in a Completion's result array.
pub(crate) fn timestamp(protocol: Protocol, record: &[u8]) -> Option<u64> {
    match protocol {
        Protocol::Json => {
            static ARGUMENTS: LazyLock<Finder> = LazyLock::new(|| Finder::new(b"\"arguments\":["));
            let start =
                ARGUMENTS.find(record).map(|at| at + 13).or_else(|| find(record, b"\"result\":[").map(|at| at + 10))?;
            let digits = &record[start..];
            let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
            std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
        }
        Protocol::Messagepack => {
            let mut reader = MsgpackReader { buf: record, pos: 0 };
            let len = reader.array_len()?;
            let kind = reader.uint()?;
            reader.skip()?; // headers
            reader.skip()?; // invocation id
            match kind {
                1 if len >= 5 => reader.skip()?,           // target
                3 if len >= 5 && reader.uint()? == 3 => {} // result kind: a value
                _ => return None,
            }
            reader.array_len().filter(|n| *n > 0)?;
            reader.uint()
        }
    }
}

/// The invocation id of a Completion, when it is a number (the harness numbers its calls).
pub(crate) fn completion_id(protocol: Protocol, record: &[u8]) -> Option<u64> {
    match protocol {
        Protocol::Json => {
            if json_type(record) != Some(b'3') {
                return None;
            }
            let message: serde_json::Value = serde_json::from_slice(record).ok()?;
            message.get("invocationId")?.as_str()?.parse().ok()
        }
        Protocol::Messagepack => {
            if msgpack_type(record) != Some(3) {
                return None;
            }
            let message = rmpv::decode::read_value(&mut &record[..]).ok()?;
            message.as_array()?.get(2)?.as_str()?.parse().ok()
        }
    }
}

/// Just enough MessagePack to walk a hub message.
struct MsgpackReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl MsgpackReader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        let bytes = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(bytes.iter().fold(0, |acc, b| acc << 8 | u64::from(*b)))
    }

    fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x90..=0x9f => Some((b & 0x0f) as usize),
            0xdc => self.be(2).map(|n| n as usize),
            0xdd => self.be(4).map(|n| n as usize),
            _ => None,
        }
    }

    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0x00..=0x7f => Some(u64::from(b)),
            0xcc | 0xd0 => self.be(1),
            0xcd | 0xd1 => self.be(2),
            0xce | 0xd2 => self.be(4),
            0xcf | 0xd3 => self.be(8),
            0xcb => self.be(8).map(|bits| f64::from_bits(bits) as u64),
            _ => None,
        }
    }

    /// Skips one value of any type.
    fn skip(&mut self) -> Option<()> {
        let b = self.byte()?;
        let (bytes, items) = match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * (b & 0x0f) as u64),
            0x90..=0x9f => (0, (b & 0x0f) as u64),
            0xa0..=0xbf => ((b & 0x1f) as u64, 0),
            0xc4 | 0xd9 => (self.be(1)?, 0),
            0xc5 | 0xda => (self.be(2)?, 0),
            0xc6 | 0xdb => (self.be(4)?, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xdc => (0, self.be(2)?),
            0xdd => (0, self.be(4)?),
            0xde => (0, 2 * self.be(2)?),
            0xdf => (0, 2 * self.be(4)?),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xc7 => (self.be(1)? + 1, 0),
            0xc8 => (self.be(2)? + 1, 0),
            0xc9 => (self.be(4)? + 1, 0),
            _ => return None,
        };
        self.pos = self.pos.checked_add(bytes as usize).filter(|p| *p <= self.buf.len())?;
        for _ in 0..items {
            self.skip()?;
        }
        Some(())
    }
}

/// The upstream's answer to an invocation (the bare hub message Switchboard posted): a
/// Completion carrying the invocation's arguments as its result, framed for the client.
/// `None` for a non-blocking send (no invocation id).
pub(crate) fn echo_completion(protocol: Protocol, invocation: &[u8]) -> Option<Vec<u8>> {
    match protocol {
        Protocol::Json => {
            let message: serde_json::Value = serde_json::from_slice(invocation).ok()?;
            let id = message.get("invocationId")?.as_str()?;
            let result = message.get("arguments").cloned().unwrap_or_default();
            let completion = serde_json::json!({"type": 3, "invocationId": id, "result": result});
            let mut out = serde_json::to_vec(&completion).ok()?;
            out.push(0x1e);
            Some(out)
        }
        Protocol::Messagepack => {
            use rmpv::Value;
            let message = rmpv::decode::read_value(&mut &invocation[..]).ok()?;
            let id = message.as_array()?.get(2)?.as_str()?.to_owned();
            let arguments = message.as_array()?.get(4)?.clone();
            let completion =
                Value::Array(vec![Value::from(3), Value::Map(vec![]), Value::from(id), Value::from(3), arguments]);
            let mut body = Vec::new();
            rmpv::encode::write_value(&mut body, &completion).ok()?;
            Some(frame_msgpack(&body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(protocol: Protocol, payload: &[u8]) -> Vec<Option<u64>> {
        let mut found = Vec::new();
        for_each_message(protocol, payload, |record| found.push(timestamp(protocol, record)));
        found
    }

    #[test]
    fn json_invocations_and_completions_are_counted_and_pings_skipped() {
        let mut payload = invocation(Protocol::Json, None, "m", 1_700_000_000_000_123, "xx");
        payload.extend_from_slice(ping(Protocol::Json));
        payload.extend_from_slice(b"{\"type\":3,\"invocationId\":\"4\",\"result\":[42,\"p\"]}\x1e");
        // A server may put "type" anywhere in the object.
        payload.extend_from_slice(b"{\"target\":\"m\",\"type\":1,\"arguments\":[5]}\x1e");
        assert_eq!(messages(Protocol::Json, &payload), [Some(1_700_000_000_000_123), Some(42), Some(5)]);
    }

    #[test]
    fn msgpack_invocations_and_completions_are_counted_and_pings_skipped() {
        let mut payload = invocation(Protocol::Messagepack, None, "m", 1_700_000_000_000_123, "xx");
        payload.extend_from_slice(ping(Protocol::Messagepack));
        payload.extend_from_slice(&invocation(Protocol::Messagepack, Some(7), "echo", 9, "pad"));
        assert_eq!(messages(Protocol::Messagepack, &payload), [Some(1_700_000_000_000_123), Some(9)]);
    }

    #[test]
    fn msgpack_timestamps_in_any_integer_width_and_after_headers() {
        // [1, {"k": "v"}, nil, "m", [300, "x"], []] as a server may write it.
        let body =
            [0x96, 0x01, 0x81, 0xa1, b'k', 0xa1, b'v', 0xc0, 0xa1, b'm', 0x92, 0xcd, 0x01, 0x2c, 0xa1, b'x', 0x90];
        assert_eq!(messages(Protocol::Messagepack, &frame_msgpack(&body)), [Some(300)]);
    }

    #[test]
    fn the_echo_upstream_answers_with_the_arguments_as_the_result() {
        let call = invocation(Protocol::Json, Some(5), "echo", 77, "p");
        let reply = echo_completion(Protocol::Json, &call[..call.len() - 1]).unwrap();
        assert!(reply.starts_with(b"{") && reply.ends_with(b"\x1e"));
        assert_eq!(messages(Protocol::Json, &reply), [Some(77)]);

        let call = invocation(Protocol::Messagepack, Some(5), "echo", 77, "p");
        let (len, used) = varint::read(&call).unwrap();
        let reply = echo_completion(Protocol::Messagepack, &call[used..used + len]).unwrap();
        assert_eq!(messages(Protocol::Messagepack, &reply), [Some(77)]);

        let send = invocation(Protocol::Json, None, "echo", 77, "p");
        assert!(echo_completion(Protocol::Json, &send[..send.len() - 1]).is_none());
    }
}
