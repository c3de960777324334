//! The VarInt length prefix that frames MessagePack hub messages.
//!
//! MessagePack bodies are not self-delimiting on a byte stream, so SignalR puts
//! each one behind an unsigned LEB128 length: 7 bits per byte, low group first,
//! high bit set on every byte but the last. Clients cap it at 5 bytes and
//! 2^31−1, and reject a 5th byte above 7 with the error text used here.

use crate::error::DecodeError;

/// Longest prefix a client will ever write (`ff ff ff ff 07` = 2^31−1).
pub const MAX_PREFIX_LEN: usize = 5;

/// Largest length the prefix can express.
pub const MAX_VALUE: usize = (1 << 31) - 1;

/// Appends `len` as a LEB128 VarInt.
///
/// Lengths above [`MAX_VALUE`] are a caller bug (no client could read them).
pub fn write(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len <= MAX_VALUE, "varint length {len} exceeds 2^31-1");
    let mut rest = len;
    loop {
        let group = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(group);
            return;
        }
        out.push(group | 0x80);
    }
}

/// Reads a VarInt from the start of `buf`, returning the value and how many bytes it used.
///
/// Returns `Incomplete` when `buf` ends inside the prefix, and `Invalid` when the
/// 5th byte would push the value past 2^31−1.
pub fn read(buf: &[u8]) -> Result<(usize, usize), DecodeError> {
    let mut value = 0usize;
    for (index, &byte) in buf.iter().take(MAX_PREFIX_LEN).enumerate() {
        let is_last_allowed = index == MAX_PREFIX_LEN - 1;
        if is_last_allowed && byte > 0x07 {
            return Err(DecodeError::invalid("messages bigger than 2GB are not supported"));
        }
        value |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok((value, index + 1));
        }
    }
    // Only reachable when `buf` ran out: a 5th byte ≤ 7 always ends the loop above.
    Err(DecodeError::Incomplete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write(len, &mut out);
        out
    }

    #[test]
    fn spec_examples() {
        assert_eq!(encoded(17), [0x11]);
        assert_eq!(encoded(300), [0xac, 0x02]);
        assert_eq!(encoded(0), [0x00]);
        assert_eq!(encoded(MAX_VALUE), [0xff, 0xff, 0xff, 0xff, 0x07]);
        assert_eq!(read(&[0x11]), Ok((17, 1)));
        assert_eq!(read(&[0xac, 0x02, 0x99]), Ok((300, 2)));
    }

    #[test]
    fn largest_value_is_accepted_and_one_more_group_is_not() {
        assert_eq!(read(&[0xff, 0xff, 0xff, 0xff, 0x07]), Ok((MAX_VALUE, 5)));
        assert_eq!(
            read(&[0xff, 0xff, 0xff, 0xff, 0x08]),
            Err(DecodeError::Invalid("messages bigger than 2GB are not supported".into()))
        );
        assert!(matches!(read(&[0x80, 0x80, 0x80, 0x80, 0x80]), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn truncated_prefix_is_incomplete() {
        assert_eq!(read(&[]), Err(DecodeError::Incomplete));
        assert_eq!(read(&[0xac]), Err(DecodeError::Incomplete));
        assert_eq!(read(&[0xff, 0xff, 0xff, 0xff]), Err(DecodeError::Incomplete));
    }

    #[test]
    fn round_trips_boundaries() {
        for len in [1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VALUE] {
            let bytes = encoded(len);
            assert_eq!(read(&bytes), Ok((len, bytes.len())), "len {len}");
        }
    }
}
