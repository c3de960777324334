use super::*;

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace().map(|byte| u8::from_str_radix(byte, 16).unwrap()).collect()
}

/// Frames a raw body with its VarInt prefix.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint::write(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn encoded(msg: &HubMessage<Value>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, &mut out);
    out
}

fn invalid(body: &[u8]) -> String {
    match parse(body) {
        Err(DecodeError::Invalid(message)) => message,
        other => panic!("{body:02x?}: expected Invalid, got {other:?}"),
    }
}

const RECEIVE_HI: &str = "11 96 01 80 c0 a7 52 65 63 65 69 76 65 91 a2 68 69 90";

fn receive_hi() -> HubMessage<Value> {
    HubMessage::Invocation {
        headers: Vec::new(),
        invocation_id: None,
        target: "Receive".into(),
        arguments: vec![Value::from("hi")],
        stream_ids: Vec::new(),
    }
}

#[test]
fn spec_invocation_bytes() {
    assert_eq!(encoded(&receive_hi()), hex(RECEIVE_HI));
    let mut fast = Vec::new();
    encode_invocation(None, "Receive", &[Value::from("hi")], &mut fast);
    assert_eq!(fast, hex(RECEIVE_HI));
    let bytes = hex(RECEIVE_HI);
    assert_eq!(decode(&bytes), Ok((receive_hi(), bytes.len())));
}

#[test]
fn spec_completion_and_ping_bytes() {
    let completion = HubMessage::Completion {
        headers: Vec::new(),
        invocation_id: "0".into(),
        result: Completion::Value(Value::from(42)),
    };
    let bytes = hex("07 95 03 80 a1 30 03 2a");
    assert_eq!(encoded(&completion), bytes);
    assert_eq!(decode(&bytes), Ok((completion, 8)));
    assert_eq!(encoded(&HubMessage::Ping), PING);
    assert_eq!(decode(PING), Ok((HubMessage::Ping, 3)));
}

#[test]
fn js_five_element_invocation_is_accepted() {
    let body = hex("95 01 80 c0 a7 52 65 63 65 69 76 65 91 a2 68 69");
    assert_eq!(parse(&body), Ok(receive_hi()));
}

#[test]
fn trailing_elements_are_ignored() {
    assert_eq!(parse(&hex("93 06 01 02")), Ok(HubMessage::Ping));
    assert_eq!(
        parse(&hex("96 03 80 a1 30 02 c0 c0")),
        Ok(HubMessage::Completion { headers: Vec::new(), invocation_id: "0".into(), result: Completion::Void })
    );
    assert_eq!(
        parse(&hex("97 01 80 a1 31 a1 54 90 91 a1 32 ff")),
        Ok(HubMessage::Invocation {
            headers: Vec::new(),
            invocation_id: Some("1".into()),
            target: "T".into(),
            arguments: Vec::new(),
            stream_ids: vec!["2".into()],
        })
    );
}

#[test]
fn sequence_ids_accept_any_uint_width() {
    for (body, id) in [
        ("92 08 05", 5),
        ("92 08 cc 05", 5),
        ("92 09 cd 01 00", 256),
        ("92 08 ce 00 01 00 00", 65_536),
        ("92 09 cf 00 00 00 01 00 00 00 00", 1 << 32),
    ] {
        let message = parse(&hex(body)).unwrap();
        let found = match message {
            HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => sequence_id,
            other => panic!("{other:?}"),
        };
        assert_eq!(found, id, "{body}");
    }
    assert!(matches!(parse(&hex("92 08 ff")), Err(DecodeError::Invalid(_))));
}

#[test]
fn close_layouts() {
    assert_eq!(parse(&hex("92 07 c0")), Ok(HubMessage::Close { error: None, allow_reconnect: false }));
    let close = HubMessage::Close { error: Some("x".into()), allow_reconnect: true };
    assert_eq!(encoded(&close), hex("05 93 07 a1 78 c3"));
    let mut convenience = Vec::new();
    encode_close(Some("x"), true, &mut convenience);
    assert_eq!(convenience, hex("05 93 07 a1 78 c3"));
}

#[test]
fn completion_kinds() {
    let mut out = Vec::new();
    encode_completion_error("1", "boom", &mut out);
    encode_completion_void("2", &mut out);
    let (first, used) = decode(&out).unwrap();
    assert_eq!(
        first,
        HubMessage::Completion {
            headers: Vec::new(),
            invocation_id: "1".into(),
            result: Completion::Error("boom".into()),
        }
    );
    let (second, _) = decode(&out[used..]).unwrap();
    assert_eq!(
        second,
        HubMessage::Completion { headers: Vec::new(), invocation_id: "2".into(), result: Completion::Void }
    );
    assert_eq!(invalid(&hex("94 03 80 a1 30 03")), "completion is missing its result");
    assert_eq!(invalid(&hex("95 03 80 a1 30 04 c0")), "invalid invocation result kind");
}

#[test]
fn headers_must_map_strings_to_strings() {
    assert_eq!(invalid(&hex("93 05 90 a1 31")), "invalid headers");
    assert_eq!(invalid(&hex("93 05 81 01 a1 31 a1 31")), "invalid headers");
    let with_headers = HubMessage::CancelInvocation {
        headers: vec![("b".into(), "1".into()), ("a".into(), "2".into())],
        invocation_id: "9".into(),
    };
    let bytes = encoded(&with_headers);
    assert_eq!(decode(&bytes), Ok((with_headers, bytes.len())));
}

#[test]
fn malformed_layouts_are_invalid() {
    assert_eq!(invalid(&hex("a1 30")), "message is not a msgpack array");
    assert_eq!(invalid(&hex("90")), "message is an empty array");
    assert_eq!(invalid(&hex("91 2a")), "unknown message type 42");
    assert_eq!(invalid(&hex("93 01 80 c0")), "message of type 1 has too few elements (3)");
    assert_eq!(invalid(&hex("95 01 80 c0 01 90")), "target is not a string");
    assert_eq!(invalid(&hex("95 01 80 c0 a1 54 c0")), "arguments is not an array");
    assert_eq!(invalid(&hex("94 01 80 c0 a1 54")), "message of type 1 has too few elements (4)");
    assert!(invalid(&hex("")).starts_with("invalid msgpack"));
}

#[test]
fn hostile_lengths_do_not_allocate_or_panic() {
    // Declared 65 535-element array / 4 G-element map / 4 GB bin with almost no bytes behind them.
    for body in ["dc ff ff 01", "df ff ff ff ff 01", "c6 ff ff ff ff 00", "dd ff ff ff ff"] {
        assert!(invalid(&hex(body)).starts_with("invalid msgpack"), "{body}");
    }
    let deep = vec![0x91; 100_000];
    assert_eq!(invalid(&deep), "message nesting is too deep");
}

#[test]
fn framing_limits_and_partial_input() {
    let bytes = hex(RECEIVE_HI);
    for cut in 0..bytes.len() {
        assert_eq!(decode(&bytes[..cut]), Err(DecodeError::Incomplete), "cut {cut}");
    }
    assert_eq!(next_record(&hex("ff ff ff ff 07 00")), Err(DecodeError::Incomplete));
    assert!(matches!(next_record_limited(&hex("ff ff ff ff 07 00"), 32 * 1024), Err(DecodeError::Invalid(_))));
    let two = [framed(&hex("91 06")), framed(&hex("92 08 01"))].concat();
    let (first, used) = next_record_limited(&two, 2).unwrap();
    assert_eq!((first, used), (&[0x91, 0x06][..], 3));
    assert!(next_record_limited(&two[used..], 2).is_err());
}
