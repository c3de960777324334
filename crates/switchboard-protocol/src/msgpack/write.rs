//! Low-level MessagePack markers and the VarInt framing of one message.
//!
//! Hub messages are arrays of a few known fields followed by the caller's
//! argument values. Writing the fixed fields directly (instead of building an
//! `rmpv::Value` array and cloning the arguments into it) keeps encoding a
//! single pass with no intermediate allocation. Every writer picks the smallest
//! marker, as .NET and JS do.

use rmpv::Value;

use crate::varint;

/// Writes the message produced by `write_body` behind its VarInt length prefix.
///
/// One prefix byte is reserved up front; bodies of 128 bytes or more (rare for
/// hub messages) shift the body right to make room for the longer prefix.
pub(super) fn framed(out: &mut Vec<u8>, write_body: impl FnOnce(&mut Vec<u8>)) {
    let prefix_at = out.len();
    out.push(0);
    write_body(out);
    let body_len = out.len() - prefix_at - 1;
    if body_len < 0x80 {
        out[prefix_at] = body_len as u8;
        return;
    }
    let mut prefix = Vec::with_capacity(varint::MAX_PREFIX_LEN);
    varint::write(body_len, &mut prefix);
    out.splice(prefix_at..prefix_at + 1, prefix);
}

pub(super) fn array_len(len: usize, out: &mut Vec<u8>) {
    container_len(len, 0x90, 0xdc, out);
}

pub(super) fn map_len(len: usize, out: &mut Vec<u8>) {
    container_len(len, 0x80, 0xde, out);
}

/// Shared shape of array and map headers: a 4-bit fix form, then 16- and 32-bit forms.
fn container_len(len: usize, fix_marker: u8, marker16: u8, out: &mut Vec<u8>) {
    if len < 16 {
        out.push(fix_marker | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(marker16);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        debug_assert!(u32::try_from(len).is_ok(), "msgpack container too long");
        out.push(marker16 + 1);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

pub(super) fn str(text: &str, out: &mut Vec<u8>) {
    let len = text.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        out.push(0xd9);
        out.push(len);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        debug_assert!(u32::try_from(len).is_ok(), "msgpack string too long");
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(text.as_bytes());
}

pub(super) fn optional_str(text: Option<&str>, out: &mut Vec<u8>) {
    match text {
        Some(text) => str(text, out),
        None => nil(out),
    }
}

pub(super) fn uint(number: u64, out: &mut Vec<u8>) {
    if number < 0x80 {
        out.push(number as u8);
    } else if let Ok(number) = u8::try_from(number) {
        out.extend_from_slice(&[0xcc, number]);
    } else if let Ok(number) = u16::try_from(number) {
        out.push(0xcd);
        out.extend_from_slice(&number.to_be_bytes());
    } else if let Ok(number) = u32::try_from(number) {
        out.push(0xce);
        out.extend_from_slice(&number.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&number.to_be_bytes());
    }
}

pub(super) fn nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub(super) fn bool(flag: bool, out: &mut Vec<u8>) {
    out.push(if flag { 0xc3 } else { 0xc2 });
}

pub(super) fn headers(headers: &[(String, String)], out: &mut Vec<u8>) {
    map_len(headers.len(), out);
    for (name, value) in headers {
        str(name, out);
        str(value, out);
    }
}

pub(super) fn string_array(items: &[String], out: &mut Vec<u8>) {
    array_len(items.len(), out);
    for item in items {
        str(item, out);
    }
}

pub(super) fn values(items: &[Value], out: &mut Vec<u8>) {
    array_len(items.len(), out);
    for item in items {
        value(item, out);
    }
}

pub(super) fn value(item: &Value, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail (the only error source is the writer).
    let result = rmpv::encode::write_value(out, item);
    debug_assert!(result.is_ok(), "msgpack serialization failed: {result:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out);
        out
    }

    #[test]
    fn smallest_markers_are_chosen() {
        assert_eq!(bytes(|o| uint(5, o)), [0x05]);
        assert_eq!(bytes(|o| uint(200, o)), [0xcc, 200]);
        assert_eq!(bytes(|o| uint(300, o)), [0xcd, 0x01, 0x2c]);
        assert_eq!(bytes(|o| uint(70_000, o)), [0xce, 0, 1, 0x11, 0x70]);
        assert_eq!(bytes(|o| uint(u64::MAX, o))[0], 0xcf);
        assert_eq!(bytes(|o| array_len(15, o)), [0x9f]);
        assert_eq!(bytes(|o| array_len(16, o)), [0xdc, 0, 16]);
        assert_eq!(bytes(|o| map_len(70_000, o)), [0xdf, 0, 1, 0x11, 0x70]);
        assert_eq!(bytes(|o| str("hi", o)), [0xa2, b'h', b'i']);
        assert_eq!(bytes(|o| str(&"x".repeat(40), o))[..2], [0xd9, 40]);
        assert_eq!(bytes(|o| str(&"x".repeat(300), o))[..3], [0xda, 1, 0x2c]);
    }

    #[test]
    fn framing_grows_the_prefix_when_needed() {
        let small = bytes(|o| framed(o, |o| o.extend_from_slice(&[1; 127])));
        assert_eq!(small[0], 127);
        assert_eq!(small.len(), 128);
        let big = bytes(|o| framed(o, |o| o.extend_from_slice(&[1; 300])));
        assert_eq!(big[..2], [0xac, 0x02]);
        assert_eq!(big.len(), 302);
        assert!(big[2..].iter().all(|&b| b == 1));
    }
}
