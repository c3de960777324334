//! Codec micro-benchmarks for the message every chat-style fan-out sends:
//! `ReceiveMessage("alice", "hello world")`, in both hub protocols, through the
//! general encoder/decoder and through the fast paths used by REST sends.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard_protocol::{HubMessage, Protocol, json, msgpack};

const JSON_TEXT: &[u8] = b"{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"alice\",\"hello world\"]}\x1e";

fn json_message() -> HubMessage<serde_json::Value> {
    HubMessage::Invocation {
        headers: Vec::new(),
        invocation_id: None,
        target: "ReceiveMessage".into(),
        arguments: vec!["alice".into(), "hello world".into()],
        stream_ids: Vec::new(),
    }
}

fn msgpack_arguments() -> Vec<rmpv::Value> {
    vec!["alice".into(), "hello world".into()]
}

fn json_benches(c: &mut Criterion) {
    let message = json_message();
    let mut out = Vec::with_capacity(128);
    c.bench_function("json/encode", |b| {
        b.iter(|| {
            out.clear();
            json::encode(black_box(&message), &mut out);
        })
    });
    c.bench_function("json/encode_invocation_raw", |b| {
        b.iter(|| {
            out.clear();
            json::encode_invocation_raw(
                None,
                black_box("ReceiveMessage"),
                black_box(r#"["alice","hello world"]"#),
                &mut out,
            );
        })
    });
    c.bench_function("json/decode", |b| b.iter(|| json::decode(black_box(JSON_TEXT)).map(|(m, _)| m.message_type())));
    let body = &JSON_TEXT[..JSON_TEXT.len() - 1];
    c.bench_function("json/inspect", |b| b.iter(|| Protocol::Json.inspect(black_box(body))));
}

fn msgpack_benches(c: &mut Criterion) {
    let message = json_message().map_values(|v| msgpack::json_to_msgpack(&v));
    let arguments = msgpack_arguments();
    let mut encoded = Vec::new();
    msgpack::encode(&message, &mut encoded);
    let mut out = Vec::with_capacity(128);
    c.bench_function("msgpack/encode", |b| {
        b.iter(|| {
            out.clear();
            msgpack::encode(black_box(&message), &mut out);
        })
    });
    c.bench_function("msgpack/encode_invocation", |b| {
        b.iter(|| {
            out.clear();
            msgpack::encode_invocation(None, black_box("ReceiveMessage"), black_box(&arguments), &mut out);
        })
    });
    c.bench_function("msgpack/decode", |b| {
        b.iter(|| msgpack::decode(black_box(&encoded)).map(|(m, _)| m.message_type()))
    });
}

criterion_group!(benches, json_benches, msgpack_benches);
criterion_main!(benches);
