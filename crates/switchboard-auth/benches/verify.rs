//! Token verification as a node meets it: a client token seen for the first time (a new
//! client's negotiate) against one seen before (its connect right after, a reconnect), and the
//! same for REST tokens (an SDK reuses its token for a burst of calls).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

    // A node at its most REST sends: one token per user (each names its user's path), every
    // one seen before, checked on two threads at once as two runtime workers do.
    let users: Vec<(String, String)> = (0..USERS)
        .map(|n| {
            let path = format!("/api/v1/hubs/chat/users/user-{n}");
            let token = mint_server_token(&format!("{ENDPOINT}{path}"), Duration::from_secs(3600), KEY);
            (path, token)
        })
        .collect();
    let v = verifier();
    for (path, token) in &users {
        v.verify_server(token, path).expect("valid");
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for (path, token) in users.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                v.verify_server(black_box(token), path).expect("valid");
                // The rest of a REST call: a worker verifies about once in 20 µs at most.
                let until = Instant::now() + Duration::from_micros(20);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
        });
        let mut next = users.iter().rev().cycle();
        c.bench_function("verify/REST token, seen before, 1000 users, another thread verifying every 20 us", |b| {
            b.iter(|| {
                let (path, token) = next.next().expect("cycles");
                v.verify_server(black_box(token), path).expect("valid")
            })
        });
        stop.store(true, Ordering::Relaxed);
    });
}

/// Users of the contended bench: as many as the load harness's REST rows target.
const USERS: usize = 1000;

criterion_group!(verify, benches);
criterion_main!(verify);
