//! Token verification as a node meets it: a client token seen for the first time (a new
//! client's negotiate) against one seen before (its connect right after, a reconnect), and the
//! same for REST tokens (an SDK reuses its token for a burst of calls).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard_auth::{AccessKeys, Audience, Verifier, mint_client_token, mint_server_token};
use url::Url;

const KEY: &str = "bench-access-key-0123456789abcdefghijklmnop";
const ENDPOINT: &str = "http://127.0.0.1:8080";
const REST_PATH: &str = "/api/v1/hubs/chat/users/alice";
/// More distinct tokens than the verifier keeps, so each is new when it comes round again.
const DISTINCT: u64 = 10_000;

fn verifier() -> Verifier {
    let keys = AccessKeys::new([KEY]).expect("a key");
    Verifier::new(keys, Audience::new([&Url::parse(ENDPOINT).expect("a url")]), 30)
}

/// `DISTINCT` tokens made by `mint` with lifetimes a second apart (so no two are alike).
fn tokens(mint: impl Fn(Duration) -> String) -> Vec<String> {
    (0..DISTINCT).map(|n| mint(Duration::from_secs(3600 + n))).collect()
}

fn benches(c: &mut Criterion) {
    let audience = format!("{ENDPOINT}/client/?hub=chat");
    let clients = tokens(|lifetime| mint_client_token(&audience, Some("alice"), lifetime, KEY));
    let rest_audience = format!("{ENDPOINT}{REST_PATH}");
    let rest = tokens(|lifetime| mint_server_token(&rest_audience, lifetime, KEY));

    let v = verifier();
    let mut next = clients.iter().cycle();
    c.bench_function("verify/client token, first seen", |b| {
        b.iter(|| v.verify_client(black_box(next.next().expect("cycles")), "chat").expect("valid"))
    });
    c.bench_function("verify/client token, seen before", |b| {
        b.iter(|| v.verify_client(black_box(&clients[0]), "chat").expect("valid"))
    });
    let mut next = rest.iter().cycle();
    c.bench_function("verify/REST token, first seen", |b| {
        b.iter(|| v.verify_server(black_box(next.next().expect("cycles")), REST_PATH).expect("valid"))
    });
    c.bench_function("verify/REST token, seen before", |b| {
        b.iter(|| v.verify_server(black_box(&rest[0]), REST_PATH).expect("valid"))
    });
}

criterion_group!(verify, benches);
criterion_main!(verify);
