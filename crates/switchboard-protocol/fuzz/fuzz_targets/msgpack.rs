//! MessagePack hub protocol: varint framing, full parse, inspect, and re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::{Protocol, msgpack};

fuzz_target!(|data: &[u8]| {
    // Also treat the whole input as one body, so the parser is reached without a valid prefix.
    let _ = msgpack::parse(data);
    let mut rest = data;
    while let Ok((body, used)) = msgpack::next_record_limited(rest, 64 * 1024) {
        if let Ok(message) = msgpack::parse(body) {
            let mut out = Vec::new();
            msgpack::encode(&message, &mut out);
            let (again, _) = msgpack::decode(&out).expect("re-encoded message must decode");
            // NaN floats never compare equal; compare the bytes instead.
            let mut out_again = Vec::new();
            msgpack::encode(&again, &mut out_again);
            assert_eq!(out, out_again);
        }
        let _ = Protocol::MessagePack.inspect(body);
        rest = &rest[used..];
    }
});
