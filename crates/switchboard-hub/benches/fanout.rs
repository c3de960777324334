//! One small message fanned out to 10,000 local connections.
//!
//! `enqueue`: the hub's part of a broadcast (serialize once per protocol, push the shared frame
//! into every outbox). `enqueue_and_frame`: the same plus what each connection's writer does
//! before its socket write (drain the outbox, wrap the batch in a WebSocket frame). Socket
//! writes themselves are measured by the load harness, not here. Throughput is in deliveries.
//!
//! `batches_two_threads`: what a busy node does, 64 broadcasts, then two threads (one per
//! core here) each drain half of the connections into an output buffer, as the connections'
//! writers do when they wake.
//!
//! `group_send`: the hub's part of a send to a group of 1,000 users (user-group memberships),
//! on one node holding all 10,000 users (`one_node`) and on one of three nodes holding a third
//! of them (`one_of_three`: 333 of the members are here, the rest elsewhere). Throughput is in
//! the group's members, so the two compare per member.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_hub::{Connection, ConnectionInfo, Frames, HubConfig, LocalUserGroups, Registry};
use switchboard_protocol::Protocol;
use switchboard_protocol::websocket::{self, OpCode};

const CONNECTIONS: usize = 10_000;

fn setup(msgpack_share: usize) -> (Registry, Vec<Arc<Connection>>) {
    let registry = Registry::new(HubConfig { max_queued_bytes: 1 << 20, ..HubConfig::default() });
    let hub = registry.get_or_create("bench");
    let connections = (0..CONNECTIONS)
        .map(|i| {
            let protocol = if i % 100 < msgpack_share { Protocol::MessagePack } else { Protocol::Json };
            let conn = Arc::new(Connection::new(format!("c{i}"), None, protocol, ConnectionInfo::default()));
            hub.add_connection(conn.clone());
            conn
        })
        .collect();
    (registry, connections)
}

fn message() -> Frames {
    let args = serde_json::value::RawValue::from_string(r#"["alice","hello world"]"#.into()).unwrap();
    Frames::invocation("ReceiveMessage", args)
}

fn drain_and_frame(connections: &[Arc<Connection>], batch: &mut VecDeque<Bytes>, out: &mut Vec<u8>) {
    for conn in connections {
        conn.drain(batch);
        for frame in batch.drain(..) {
            out.clear();
            websocket::write_frame(OpCode::Text, &frame, out);
        }
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_10k");
    group.throughput(Throughput::Elements(CONNECTIONS as u64));
    for (name, msgpack_share) in [("json", 0), ("half_msgpack", 50)] {
        let (registry, connections) = setup(msgpack_share);
        let hub = registry.get("bench").unwrap();
        let mut batch = VecDeque::new();
        let mut out = Vec::with_capacity(256);
        group.bench_function(format!("enqueue/{name}"), |b| {
            b.iter_custom(|iterations| {
                let mut measured = Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    hub.broadcast(&message(), &[]);
                    measured += started.elapsed();
                    drain_and_frame(&connections, &mut batch, &mut out);
                }
                measured
            })
        });
        group.bench_function(format!("enqueue_and_frame/{name}"), |b| {
            b.iter(|| {
                hub.broadcast(&message(), &[]);
                drain_and_frame(&connections, &mut batch, &mut out);
            })
        });
    }
    group.finish();

    const BATCH: usize = 64;
    let mut group = c.benchmark_group("fanout_10k");
    group.throughput(Throughput::Elements((CONNECTIONS * BATCH) as u64));
    let (registry, connections) = setup(0);
    let hub = registry.get("bench").unwrap();
    let (left, right) = connections.split_at(CONNECTIONS / 2);
    group.bench_function(format!("batches_two_threads/{BATCH}"), |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                hub.broadcast(&message(), &[]);
            }
            std::thread::scope(|scope| {
                for half in [left, right] {
                    scope.spawn(move || {
                        let mut out = Vec::with_capacity(BATCH * 128);
                        for conn in half {
                            out.clear();
                            conn.drain_with(|frame| out.extend_from_slice(frame));
                        }
                    });
                }
            });
        })
    });
    group.finish();
}

fn group_send(c: &mut Criterion) {
    const USERS: usize = 10_000;
    const MEMBERS: usize = 1_000;
    let mut group = c.benchmark_group("group_send");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    for (name, nodes) in [("one_node", 1), ("one_of_three", 3)] {
        let user_groups = Arc::new(LocalUserGroups::default());
        // Users u0, u10, u20 … are the group's members, as the load harness assigns them.
        for user in (0..USERS).step_by(USERS / MEMBERS) {
            user_groups.add_now("bench", &format!("user-{user}"), "room", Some(3600));
        }
        let config = HubConfig { max_queued_bytes: 1 << 20, ..HubConfig::default() };
        let registry = Registry::with_user_groups(config, user_groups);
        let hub = registry.get_or_create("bench");
        let connections: Vec<_> = (0..USERS)
            .filter(|user| user % nodes == 0)
            .map(|user| {
                let id = format!("c{user}");
                let user = format!("user-{user}");
                let conn = Arc::new(Connection::new(id, Some(&user), Protocol::Json, ConnectionInfo::default()));
                hub.add_connection(conn.clone());
                conn
            })
            .collect();
        let mut batch = VecDeque::new();
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut measured = Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    hub.send_to_group("room", &message(), &[]);
                    measured += started.elapsed();
                    for conn in &connections {
                        conn.drain(&mut batch);
                        batch.clear();
                    }
                }
                measured
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout, group_send);
criterion_main!(benches);
