use super::*;

/// Owned copy of a [`WsEvent`], so events can outlive the fed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Message(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, String),
}

impl From<WsEvent<'_>> for Event {
    fn from(event: WsEvent<'_>) -> Self {
        match event {
            WsEvent::Message { binary, payload } => Event::Message(binary, payload.to_vec()),
            WsEvent::Ping(payload) => Event::Ping(payload.to_vec()),
            WsEvent::Pong => Event::Pong,
            WsEvent::Close { code, reason } => Event::Close(code, reason.to_owned()),
        }
    }
}

/// Writes a frame the way a client must: masked, with an explicit FIN bit.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        len if len < 126 => out.push(0x80 | len as u8),
        len if len <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
    out
}

fn feed_all(reader: &mut WsReader, input: &[u8]) -> Result<Vec<Event>, WsError> {
    let mut events = Vec::new();
    let mut buf = input.to_vec();
    reader.feed(&mut buf, &mut |event| {
        events.push(Event::from(event));
        Ok(())
    })?;
    Ok(events)
}

fn feed_in_pieces(input: &[u8], piece: usize) -> Result<Vec<Event>, WsError> {
    let mut reader = WsReader::new(1 << 20);
    let mut events = Vec::new();
    for chunk in input.chunks(piece) {
        events.extend(feed_all(&mut reader, chunk)?);
    }
    assert!(reader.is_idle(), "reader holds data after whole frames");
    Ok(events)
}

fn error_of(input: &[u8]) -> WsError {
    feed_all(&mut WsReader::new(1024), input).expect_err("expected an error")
}

#[test]
fn whole_frames_borrow_the_input() {
    let mut input = [client_frame(true, 1, b"{\"type\":6}\x1e"), client_frame(true, 2, &[1, 2])].concat();
    let range = input.as_ptr_range();
    let mut reader = WsReader::new(1024);
    let mut seen = Vec::new();
    reader
        .feed(&mut input, &mut |event| {
            if let WsEvent::Message { payload, .. } = event {
                assert!(range.contains(&payload.as_ptr()), "payload was copied");
            }
            seen.push(Event::from(event));
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, [Event::Message(false, b"{\"type\":6}\x1e".to_vec()), Event::Message(true, vec![1, 2])]);
    assert!(reader.is_idle());
}

#[test]
fn byte_by_byte_feeding_gives_the_same_events() {
    let input = [
        client_frame(true, 1, b"hello"),
        client_frame(true, 2, &vec![7; 300]),
        client_frame(true, 2, &vec![9; 70_000]),
        client_frame(true, 9, b"ping"),
        client_frame(true, 0xa, b""),
    ]
    .concat();
    let whole = feed_in_pieces(&input, input.len()).unwrap();
    assert_eq!(whole.len(), 5);
    for piece in [1, 2, 3, 13, 14, 15, 1000] {
        assert_eq!(feed_in_pieces(&input, piece).unwrap(), whole, "piece {piece}");
    }
}

#[test]
fn fragments_are_reassembled_around_control_frames() {
    let input = [
        client_frame(false, 1, b"hel"),
        client_frame(true, 9, b"p"),
        client_frame(false, 0, b"lo "),
        client_frame(true, 0, "wörld".as_bytes()),
    ]
    .concat();
    let expected = vec![Event::Ping(b"p".to_vec()), Event::Message(false, "hello wörld".as_bytes().to_vec())];
    assert_eq!(feed_in_pieces(&input, input.len()).unwrap(), expected);
    assert_eq!(feed_in_pieces(&input, 1).unwrap(), expected);
}

#[test]
fn framing_violations_are_protocol_errors() {
    let mut unmasked = client_frame(true, 1, b"");
    unmasked[1] &= 0x7f;
    unmasked.truncate(2);
    let cases = [
        (unmasked, "client frames must be masked"),
        (client_frame(true, 0x41, b""), "reserved bits set"),
        (client_frame(true, 3, b""), "reserved opcode"),
        (client_frame(true, 9, &[0; 126]), "control frame longer than 125 bytes"),
        (client_frame(false, 9, b""), "fragmented control frame"),
        (client_frame(true, 0, b"x"), "continuation frame without a message"),
        (
            [client_frame(false, 1, b"a"), client_frame(true, 1, b"b")].concat(),
            "new message inside a fragmented message",
        ),
        (client_frame(true, 8, &[3]), "close frame with a one-byte payload"),
        (client_frame(true, 8, &1005u16.to_be_bytes()), "invalid close code"),
    ];
    for (input, reason) in cases {
        let error = error_of(&input);
        assert_eq!(error, WsError::Protocol(reason));
        assert_eq!(error.close_code(), CLOSE_PROTOCOL_ERROR);
    }
    let huge = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(error_of(&huge), WsError::Protocol("frame length has its top bit set"));
}

#[test]
fn oversized_messages_fail_from_the_header_alone() {
    // A header announcing 2000 bytes with no payload behind it.
    let header = &client_frame(true, 2, &[0; 2000])[..8];
    assert_eq!(error_of(header), WsError::TooBig);
    assert_eq!(WsError::TooBig.close_code(), CLOSE_TOO_BIG);
    let fragments = [client_frame(false, 2, &[0; 600]), client_frame(true, 0, &[0; 600])].concat();
    assert_eq!(error_of(&fragments), WsError::TooBig);
    let exact = client_frame(true, 2, &[0; 1024]);
    assert_eq!(feed_all(&mut WsReader::new(1024), &exact).unwrap().len(), 1);
}

#[test]
fn text_must_be_utf8_binary_need_not() {
    assert_eq!(error_of(&client_frame(true, 1, &[0xff])), WsError::InvalidUtf8);
    assert_eq!(WsError::InvalidUtf8.close_code(), CLOSE_INVALID_PAYLOAD);
    let split_char = [client_frame(false, 1, &[0xc3]), client_frame(true, 0, &[0xb6])].concat();
    assert_eq!(
        feed_all(&mut WsReader::new(64), &split_char).unwrap(),
        [Event::Message(false, "ö".as_bytes().to_vec())]
    );
    assert_eq!(
        feed_all(&mut WsReader::new(64), &client_frame(true, 2, &[0xff])).unwrap(),
        [Event::Message(true, vec![0xff])]
    );
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.push(0xff);
    assert_eq!(error_of(&client_frame(true, 8, &close)), WsError::InvalidUtf8);
}

#[test]
fn close_ends_the_stream() {
    let mut close = 1001u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    let input = [client_frame(true, 8, &close), client_frame(true, 1, b"ignored")].concat();
    let mut reader = WsReader::new(64);
    assert_eq!(feed_all(&mut reader, &input).unwrap(), [Event::Close(Some(1001), "bye".into())]);
    assert!(reader.is_closed());
    assert!(feed_all(&mut reader, &client_frame(true, 1, b"x")).unwrap().is_empty());
    assert_eq!(
        feed_all(&mut WsReader::new(64), &client_frame(true, 8, b"")).unwrap(),
        [Event::Close(None, String::new())]
    );
}

#[test]
fn callback_errors_stop_processing() {
    let mut input = [client_frame(true, 1, b"a"), client_frame(true, 1, b"b")].concat();
    let mut count = 0;
    let result = WsReader::new(64).feed(&mut input, &mut |_| {
        count += 1;
        Err(WsError::Protocol("stop"))
    });
    assert_eq!(result, Err(WsError::Protocol("stop")));
    assert_eq!(count, 1);
}

#[test]
fn partial_frames_are_released_once_complete() {
    let frame = client_frame(true, 2, &[5; 200]);
    let mut reader = WsReader::new(1024);
    assert!(feed_all(&mut reader, &frame[..50]).unwrap().is_empty());
    assert!(!reader.is_idle());
    assert_eq!(feed_all(&mut reader, &frame[50..]).unwrap().len(), 1);
    assert!(reader.is_idle());
}

#[test]
fn server_frames_use_minimal_lengths() {
    let mut out = Vec::new();
    write_frame(OpCode::Text, b"hi", &mut out);
    assert_eq!(out, [0x81, 2, b'h', b'i']);
    out.clear();
    write_frame(OpCode::Binary, &[0; 126], &mut out);
    assert_eq!(out[..4], [0x82, 126, 0, 126]);
    out.clear();
    write_frame(OpCode::Binary, &[0; 65_536], &mut out);
    assert_eq!(out[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(out.len(), 65_546);
    out.clear();
    write_frame(OpCode::Pong, b"p", &mut out);
    assert_eq!(out, [0x8a, 1, b'p']);
}

#[test]
fn close_frames_truncate_long_reasons_on_char_boundaries() {
    let mut out = Vec::new();
    write_close(CLOSE_NORMAL, "", &mut out);
    assert_eq!(out, [0x88, 2, 0x03, 0xe8]);
    out.clear();
    let reason = "é".repeat(100);
    write_close(CLOSE_GOING_AWAY, &reason, &mut out);
    assert_eq!(out[1] as usize, out.len() - 2);
    assert!(out.len() - 2 <= MAX_CONTROL_PAYLOAD);
    assert!(std::str::from_utf8(&out[4..]).is_ok());
}

#[test]
fn opcodes_round_trip() {
    for code in 0..16 {
        if let Some(opcode) = OpCode::from_code(code) {
            assert_eq!(opcode.code(), code);
            assert_eq!(opcode.is_control(), code >= 8);
        }
    }
}

#[test]
fn a_frame_built_piece_by_piece_is_the_frame_written_at_once() {
    for len in [0, 1, 125, 126, 65_535, 65_536, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut whole = b"before".to_vec();
        write_frame(OpCode::Binary, &payload, &mut whole);
        let mut pieces = b"before".to_vec();
        let start = begin_frame(&mut pieces);
        for chunk in payload.chunks(1000) {
            pieces.extend_from_slice(chunk);
        }
        finish_frame(OpCode::Binary, start, &mut pieces);
        assert_eq!(pieces, whole, "payload of {len} bytes");
    }
}
