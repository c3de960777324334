//! Handshake request parsing and protocol selection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::handshake;

fuzz_target!(|data: &[u8]| {
    if let Ok((request, used)) = handshake::parse_request(data) {
        assert!(used <= data.len());
        let _ = handshake::select_protocol(&request);
    }
});
