//! Property tests: codec round trips, robustness against arbitrary bytes, and
//! WebSocket reassembly across arbitrary read boundaries.

use proptest::collection::vec;
use proptest::prelude::*;
use switchboard_protocol::websocket::{WsEvent, WsReader};
use switchboard_protocol::{Completion, Headers, HubMessage, Protocol, handshake, json, msgpack, varint};

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------- values

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,8}",
        // Control characters, quotes and backslashes exercise escaping.
        "[\\x00-\\x1f\"\\\\\u{1e}a]{0,6}",
    ]
}

fn json_value() -> BoxedStrategy<serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Quarters have short exact decimal forms, so they survive text round trips.
        any::<i16>().prop_map(|n| Value::from(f64::from(n) / 4.0)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((text(), inner), 0..4).prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
    .boxed()
}

fn msgpack_value() -> BoxedStrategy<rmpv::Value> {
    use rmpv::Value;
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan()).prop_map(Value::F64),
        any::<f32>().prop_filter("NaN never equals itself", |f| !f.is_nan()).prop_map(Value::F32),
        text().prop_map(Value::from),
        vec(any::<u8>(), 0..8).prop_map(Value::Binary),
        (any::<i8>(), vec(any::<u8>(), 0..8)).prop_map(|(kind, data)| Value::Ext(kind, data)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
        ]
    })
    .boxed()
}

// ---------------------------------------------------------------- messages

fn headers() -> impl Strategy<Value = Headers> {
    vec((text(), text()), 0..3)
}

fn ids() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..3)
}

fn hub_message<V: Clone + std::fmt::Debug + 'static>(
    value: impl Strategy<Value = V> + Clone + 'static,
) -> impl Strategy<Value = HubMessage<V>> {
    let completion = prop_oneof![
        Just(Completion::Void),
        value.clone().prop_map(Completion::Value),
        text().prop_map(Completion::Error),
    ];
    prop_oneof![
        (headers(), proptest::option::of(text()), text(), vec(value.clone(), 0..4), ids()).prop_map(
            |(headers, invocation_id, target, arguments, stream_ids)| HubMessage::Invocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids,
            }
        ),
        (headers(), text(), value.clone())
            .prop_map(|(headers, invocation_id, item)| { HubMessage::StreamItem { headers, invocation_id, item } }),
        (headers(), text(), completion)
            .prop_map(|(headers, invocation_id, result)| { HubMessage::Completion { headers, invocation_id, result } }),
        (headers(), text(), text(), vec(value, 0..4), ids()).prop_map(
            |(headers, invocation_id, target, arguments, stream_ids)| {
                HubMessage::StreamInvocation { headers, invocation_id, target, arguments, stream_ids }
            }
        ),
        (headers(), text())
            .prop_map(|(headers, invocation_id)| HubMessage::CancelInvocation { headers, invocation_id }),
        Just(HubMessage::Ping),
        (proptest::option::of(text()), any::<bool>())
            .prop_map(|(error, allow_reconnect)| { HubMessage::Close { error, allow_reconnect } }),
        any::<u64>().prop_map(|sequence_id| HubMessage::Ack { sequence_id }),
        any::<u64>().prop_map(|sequence_id| HubMessage::Sequence { sequence_id }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn json_round_trip(messages in vec(hub_message(json_value()), 1..4)) {
        let mut out = Vec::new();
        for message in &messages {
            json::encode(message, &mut out);
        }
        prop_assert!(!out.contains(&b'\n') && !out.contains(&b'\r'), "raw line break in output");
        let mut rest = &out[..];
        for message in &messages {
            let (decoded, used) = json::decode(rest).unwrap();
            prop_assert_eq!(&decoded, message);
            let (body, _) = json::next_record(rest).unwrap();
            prop_assert_eq!(Protocol::Json.inspect(body).is_ok(), true);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn msgpack_round_trip(messages in vec(hub_message(msgpack_value()), 1..4)) {
        let mut out = Vec::new();
        for message in &messages {
            msgpack::encode(message, &mut out);
        }
        let mut rest = &out[..];
        for message in &messages {
            let (decoded, used) = msgpack::decode(rest).unwrap();
            prop_assert_eq!(&decoded, message);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn json_and_msgpack_convert_losslessly(value in json_value()) {
        prop_assert_eq!(msgpack::msgpack_to_json(&msgpack::json_to_msgpack(&value)), value);
    }

    #[test]
    fn varint_round_trip(len in 0usize..=varint::MAX_VALUE) {
        let mut out = Vec::new();
        varint::write(len, &mut out);
        prop_assert_eq!(varint::read(&out), Ok((len, out.len())));
    }

    #[test]
    fn decoders_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let _ = json::decode(&bytes);
        let _ = json::parse(&bytes);
        let _ = msgpack::decode(&bytes);
        let _ = msgpack::parse(&bytes);
        let _ = handshake::parse_request(&bytes);
        let _ = varint::read(&bytes);
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            let _ = protocol.inspect(&bytes);
            let _ = protocol.next_record(&bytes, 64);
        }
        let mut input = bytes.clone();
        let _ = WsReader::new(128).feed(&mut input, &mut |_| Ok(()));
    }

    #[test]
    fn msgpack_parse_never_panics_on_near_valid_arrays(
        kind in 0u8..12,
        tail in vec(any::<u8>(), 0..64),
    ) {
        // Bodies that at least start like a hub message reach the layout checks.
        let mut body = vec![0x96, kind, 0x80];
        body.extend_from_slice(&tail);
        let _ = msgpack::parse(&body);
        let _ = Protocol::MessagePack.inspect(&body);
    }
}

// ---------------------------------------------------------------- websocket

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Message(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, String),
}

/// What the client sends: a data message cut into fragments, or a control frame.
#[derive(Debug, Clone)]
enum Outbound {
    Data { binary: bool, payload: Vec<u8>, cuts: Vec<usize> },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push((u8::from(fin) << 7) | opcode);
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
}

fn outbound() -> impl Strategy<Value = Outbound> {
    let data = prop_oneof![
        vec(any::<u8>(), 0..400).prop_map(|payload| (true, payload)),
        "\\PC{0,120}".prop_map(|text| (false, text.into_bytes())),
    ];
    prop_oneof![
        4 => (data, vec(0usize..400, 0..3)).prop_map(|((binary, payload), cuts)| Outbound::Data {
            binary,
            payload,
            cuts,
        }),
        1 => vec(any::<u8>(), 0..=125).prop_map(Outbound::Ping),
        1 => vec(any::<u8>(), 0..=125).prop_map(Outbound::Pong),
    ]
}

/// Encodes the client's frames and the events the server must see for them.
/// Pings and pongs are placed between fragments to test interleaving.
fn encode_stream(items: &[Outbound], mask: [u8; 4]) -> (Vec<u8>, Vec<Event>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    let mut pending_control: Vec<&Outbound> = Vec::new();
    for item in items {
        match item {
            Outbound::Ping(_) | Outbound::Pong(_) => pending_control.push(item),
            Outbound::Data { binary, payload, cuts } => {
                // Fragment boundaries must not split a UTF-8 character; the
                // reader accepts that, but the expected events are simpler this way.
                let mut bounds: Vec<usize> = cuts
                    .iter()
                    .map(|cut| cut % (payload.len() + 1))
                    .filter(|&cut| *binary || std::str::from_utf8(&payload[..cut]).is_ok())
                    .collect();
                bounds.sort_unstable();
                bounds.dedup();
                bounds.push(payload.len());
                let mut start = 0;
                for (index, &end) in bounds.iter().enumerate() {
                    let opcode = if index == 0 { if *binary { 2 } else { 1 } } else { 0 };
                    let fin = index + 1 == bounds.len();
                    client_frame(fin, opcode, &payload[start..end], mask, &mut bytes);
                    start = end;
                    if !fin {
                        for control in pending_control.drain(..) {
                            encode_control(control, mask, &mut bytes, &mut expected);
                        }
                    }
                }
                expected.push(Event::Message(*binary, payload.clone()));
            }
        }
    }
    for control in pending_control {
        encode_control(control, mask, &mut bytes, &mut expected);
    }
    client_frame(true, 8, &[0x03, 0xe8, b'o', b'k'], mask, &mut bytes);
    expected.push(Event::Close(Some(1000), "ok".into()));
    (bytes, expected)
}

fn encode_control(control: &Outbound, mask: [u8; 4], bytes: &mut Vec<u8>, expected: &mut Vec<Event>) {
    match control {
        Outbound::Ping(payload) => {
            client_frame(true, 9, payload, mask, bytes);
            expected.push(Event::Ping(payload.clone()));
        }
        Outbound::Pong(payload) => {
            client_frame(true, 10, payload, mask, bytes);
            expected.push(Event::Pong);
        }
        Outbound::Data { .. } => {}
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn websocket_events_survive_arbitrary_read_boundaries(
        items in vec(outbound(), 0..6),
        mask in any::<[u8; 4]>(),
        reads in vec(1usize..64, 1..32),
    ) {
        let (bytes, expected) = encode_stream(&items, mask);
        let mut reader = WsReader::new(4096);
        let mut events = Vec::new();
        let mut position = 0;
        let mut sizes = reads.iter().cycle();
        while position < bytes.len() {
            let size = (*sizes.next().unwrap()).min(bytes.len() - position);
            let mut chunk = bytes[position..position + size].to_vec();
            reader
                .feed(&mut chunk, &mut |event| {
                    events.push(match event {
                        WsEvent::Message { binary, payload } => Event::Message(binary, payload.to_vec()),
                        WsEvent::Ping(payload) => Event::Ping(payload.to_vec()),
                        WsEvent::Pong => Event::Pong,
                        WsEvent::Close { code, reason } => Event::Close(code, reason.to_owned()),
                    });
                    Ok(())
                })
                .unwrap();
            position += size;
        }
        prop_assert_eq!(events, expected);
        prop_assert!(reader.is_idle());
        prop_assert!(reader.is_closed());
    }
}
