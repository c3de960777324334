//! JSON hub protocol: record splitting, full parse, inspect, and re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::{Protocol, json};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((body, used)) = json::next_record_limited(rest, 64 * 1024) {
        if let Ok(message) = json::parse(body) {
            // Whatever parses must re-encode to something that parses to the same
            // message. Values are compared by shape only: float text may not
            // round-trip to the last bit with serde_json's default parser.
            let mut out = Vec::new();
            json::encode(&message, &mut out);
            let (again, _) = json::decode(&out).expect("re-encoded message must decode");
            assert_eq!(again.map_values(|_| ()), message.map_values(|_| ()));
        }
        let _ = Protocol::Json.inspect(body);
        rest = &rest[used..];
    }
});
