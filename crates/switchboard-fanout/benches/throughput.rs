//! Deliveries per second from one entry node to one peer over one `Deliver` stream (loopback,
//! both nodes in this process on one 2-worker tokio runtime).
//!
//! * `sequential`: one caller awaiting each delivery: one round trip per delivery, no batching.
//! * `concurrent/C`: C callers, each awaiting its own deliveries: the queue fills while batches
//!   are in flight, so deliveries share batches.
//!
//! * `local`: baseline in the same run, one caller delivering to its own node (applied to the
//!   local registry without gRPC), to read the others as a ratio.
//!
//! Each delivery is a ~60-byte invocation (JSON and MessagePack frames) to one connection on the
//! peer, whose outbox a task drains. Throughput is in deliveries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard_fanout::{
    DeliveryTarget, FanoutClient, FanoutConfig, FanoutService, FanoutStats, encode_delivery, fanout_server,
};
use switchboard_grpc::ClusterSecret;
use switchboard_hub::{Connection, ConnectionInfo, Frames, Registry, new_connection_id};
use switchboard_protocol::Protocol;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

struct Setup {
    client: FanoutClient,
    addr: String,
    delivery: switchboard_fanout::Delivery,
}

/// A registry holding one connection of `node` in hub `bench`, whose outbox a task drains.
fn registry_of(node: u64) -> Arc<Registry> {
    let registry = Arc::new(Registry::default());
    let conn = Arc::new(Connection::new(new_connection_id(node), None, Protocol::Json, ConnectionInfo::default()));
    registry.get_or_create("bench").add_connection(conn.clone());
    tokio::spawn(async move {
        let mut out = std::collections::VecDeque::new();
        loop {
            conn.outbox.ready().await;
            conn.drain(&mut out);
            out.clear();
        }
    });
    registry
}

async fn setup() -> Setup {
    let secret = ClusterSecret::new("bench-secret").unwrap();
    let registry = registry_of(2);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::builder().add_service(fanout_server(FanoutService::new(registry.clone()), secret.server()));
    tokio::spawn(server.serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))));
    // FANOUT_WINDOW overrides the in-flight window, to compare settings.
    let window = std::env::var("FANOUT_WINDOW").ok().and_then(|w| w.parse().ok());
    let config = FanoutConfig { window: window.unwrap_or(FanoutConfig::default().window), ..Default::default() };
    let client = FanoutClient::new(1, registry_of(1), &secret, config);
    let args = serde_json::value::RawValue::from_string(r#"["alice","hello world"]"#.into()).unwrap();
    let frames = Frames::invocation("ReceiveMessage", args);
    let delivery = encode_delivery("bench", DeliveryTarget::All(switchboard_fanout::Broadcast {}), vec![], &frames);
    // Open the stream before measuring.
    client.deliver(2, &addr, delivery.clone()).await.unwrap();
    Setup { client, addr, delivery }
}

/// Runs about `total` deliveries split over `callers` tasks; returns the time `total` took.
async fn run(setup: &Setup, node: u64, callers: u64, total: u64) -> Duration {
    let per_caller = total.div_ceil(callers);
    let actual = per_caller * callers;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (client, addr, delivery) = (setup.client.clone(), setup.addr.clone(), setup.delivery.clone());
        tasks.spawn(async move {
            for _ in 0..per_caller {
                client.deliver(node, &addr, delivery.clone()).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    started.elapsed().mul_f64(total as f64 / actual as f64)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("fanout_stream");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    let setup = runtime.block_on(setup());
    group.bench_function("local", |b| b.iter_custom(|iters| block(&runtime, run(&setup, 1, 1, iters))));
    let stats = setup.client.stats();
    for callers in [1, 16, 256] {
        let before = (FanoutStats::get(&stats.batches), FanoutStats::get(&stats.deliveries));
        group.bench_with_input(BenchmarkId::new("callers", callers), &callers, |b, &callers| {
            b.iter_custom(|iters| block(&runtime, run(&setup, 2, callers, iters)));
        });
        let batches = FanoutStats::get(&stats.batches) - before.0;
        let deliveries = FanoutStats::get(&stats.deliveries) - before.1;
        eprintln!("{callers} callers: {:.1} deliveries per batch", deliveries as f64 / batches as f64);
    }
    group.finish();
}

fn block<F: Future>(runtime: &Runtime, future: F) -> F::Output {
    runtime.block_on(future)
}

criterion_group!(benches, bench);
criterion_main!(benches);
