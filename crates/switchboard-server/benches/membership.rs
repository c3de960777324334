//! Membership write throughput and latency, through raft, in one run:
//!
//! - `raft`: concurrent `MembershipStore::add` calls on the nodes' control planes (what a REST
//!   membership call does after parsing and auth): batching, commit on a quorum, apply barrier.
//! - `rest`: the same writes as `PUT /api/hubs/{hub}/users/{user}/groups/{group}` over HTTP/1.1
//!   keep-alive connections, spread over the nodes.
//!
//! Each on a 3-voter cluster on loopback (three in-process nodes talking gRPC) and on the
//! embedded single node, so the report is a side-by-side ratio from the same machine and run.
//! Clients share the machine's cores with the nodes.
//!
//! `cargo bench -p switchboard-server --bench membership [-- SECONDS]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard_auth::mint_server_token;
use switchboard_engine::MembershipStore;
use switchboard_server::local::LocalNode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The allocator of the `switchboard` binary, so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "membership-bench-key";
const RAFT_WRITERS: usize = 1024;
const REST_CONNECTIONS: usize = 256;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn cluster() -> Vec<LocalNode> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters: Vec<String> = ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect();
    let start = |i: usize| {
        let (port, voters) = (ports[i], voters.clone());
        LocalNode::start(KEY, move |args| {
            args.node_id = Some((i + 1).to_string());
            args.grpc_listen = Some(format!("127.0.0.1:{port}"));
            args.voters = voters;
            args.cluster_secret = Some("membership-bench-secret".into());
        })
    };
    let (a, b, c) = tokio::join!(start(0), start(1), start(2));
    vec![a, b, c]
}

/// Latencies in microseconds → (p50, p99) in milliseconds.
fn percentiles(mut micros: Vec<u32>) -> (f64, f64) {
    micros.sort_unstable();
    let at = |q: f64| micros.get(((micros.len() as f64 * q) as usize).min(micros.len().saturating_sub(1)));
    (at(0.5).map_or(0.0, |v| *v as f64 / 1000.0), at(0.99).map_or(0.0, |v| *v as f64 / 1000.0))
}

struct Outcome {
    ops: u64,
    errors: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Outcome {
    fn print(&self, what: &str) {
        // A row of failures measures nothing: say so instead of printing 0 ops/s.
        assert!(self.ops > 0, "{what}: all {} calls failed", self.errors);
        println!(
            "{what:<28} {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} ops, {} errors, {:.1} s)",
            self.ops as f64 / self.seconds,
            self.p50_ms,
            self.p99_ms,
            self.ops,
            self.errors,
            self.seconds
        );
    }
}

async fn raft_writes(nodes: &[LocalNode], seconds: u64) -> Outcome {
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..RAFT_WRITERS {
        let control = nodes[writer % nodes.len()].control.clone().expect("a raft node");
        let counter = counter.clone();
        tasks.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let begun = Instant::now();
                match control.add("bench", &format!("u{n}"), &format!("g{}", n % 100), None).await {
                    Ok(()) => latencies.push(begun.elapsed().as_micros() as u32),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    collect(tasks, started).await
}

async fn rest_writes(nodes: &[LocalNode], seconds: u64) -> Outcome {
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..REST_CONNECTIONS {
        let addr = nodes[connection % nodes.len()].addr;
        let counter = counter.clone();
        tasks.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let connect = || async {
                let stream = TcpStream::connect(addr).await.expect("connect");
                let _ = stream.set_nodelay(true);
                BufReader::new(stream)
            };
            let mut stream = connect().await;
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let begun = Instant::now();
                match put(&mut stream, addr, &format!("/api/hubs/bench/users/r{n}/groups/g{}", n % 100)).await {
                    Some(200) => latencies.push(begun.elapsed().as_micros() as u32),
                    Some(_) => errors += 1,
                    None => {
                        errors += 1;
                        stream = connect().await;
                    }
                }
            }
            (latencies, errors)
        });
    }
    collect(tasks, started).await
}

async fn collect(mut tasks: tokio::task::JoinSet<(Vec<u32>, u64)>, started: Instant) -> Outcome {
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(result) = tasks.join_next().await {
        let (latencies, failed) = result.expect("a writer task");
        all.extend(latencies);
        errors += failed;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ops = all.len() as u64;
    let (p50_ms, p99_ms) = percentiles(all);
    Outcome { ops, errors, seconds, p50_ms, p99_ms }
}

/// One keep-alive `PUT`; the status, or `None` when the connection failed.
async fn put(stream: &mut BufReader<TcpStream>, addr: SocketAddr, path: &str) -> Option<u16> {
    let token = mint_server_token(&format!("http://{addr}{path}"), Duration::from_secs(600), KEY);
    let request = format!(
        "PUT {path}?api-version=2022-06-01 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    );
    stream.get_mut().write_all(request.as_bytes()).await.ok()?;
    let (mut status, mut length, mut line) = (None, 0usize, String::new());
    loop {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if status.is_none() {
            status = trimmed.split(' ').nth(1).and_then(|s| s.parse().ok());
        } else if let Some(value) = trimmed.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    status
}

fn main() {
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        println!("membership writes, {seconds} s each; {RAFT_WRITERS} concurrent writers (raft), {REST_CONNECTIONS} connections (rest)");
        let three = cluster().await;
        raft_writes(&three, seconds).await.print("3 voters, raft");
        rest_writes(&three, seconds).await.print("3 voters, rest");
        drop(three);
        let single = vec![LocalNode::start(KEY, |_| {}).await];
        raft_writes(&single, seconds).await.print("single node, raft");
        rest_writes(&single, seconds).await.print("single node, rest");
    });
}
