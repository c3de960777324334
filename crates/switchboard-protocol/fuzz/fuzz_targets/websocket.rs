//! WebSocket frame reader, fed the input in pieces whose sizes come from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::websocket::{WsEvent, WsReader};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut reader = WsReader::new(4096);
    for chunk in rest.chunks(piece) {
        let mut chunk = chunk.to_vec();
        let result = reader.feed(&mut chunk, &mut |event| {
            if let WsEvent::Message { binary: false, payload } = event {
                assert!(std::str::from_utf8(payload).is_ok());
            }
            Ok(())
        });
        if result.is_err() {
            return;
        }
    }
});
