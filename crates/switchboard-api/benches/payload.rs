//! Reading a send's body, as every REST send does before anything is delivered: the load
//! harness's body (lower-case names) and the SDK's (PascalCase names, one more member).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard_api::parse_payload;

fn benches(c: &mut Criterion) {
    let padding = "x".repeat(80);
    let harness = format!(r#"{{"target":"m","arguments":[1733600000000000,"{padding}"]}}"#);
    let sdk = format!(r#"{{"Target":"m","Arguments":[1733600000000000,"{padding}"],"Extra":{{"a":[1,2]}}}}"#);
    c.bench_function("payload/send body, lower-case names", |b| {
        b.iter(|| parse_payload(None, black_box(harness.as_bytes())).expect("valid"))
    });
    c.bench_function("payload/send body, PascalCase names and one more member", |b| {
        b.iter(|| parse_payload(Some("application/json"), black_box(sdk.as_bytes())).expect("valid"))
    });
}

criterion_group!(payload, benches);
criterion_main!(payload);
