//! Three fan-out nodes in one process: each a `Registry` plus a tonic server on `127.0.0.1:0`
//! serving `FanoutService`, and a `FanoutClient` as its entry side. Hub connections are created
//! directly and their outboxes drained to observe what each node delivered.
//!
//! `deliver` resolves only once the target nodes enqueued, so outboxes are read right after it
//! returns: no test waits for a delivery to show up. Other waits are bounded by timeouts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_fanout::{
    Action, Broadcast, Close, ConnectionRequest, Delivery, DeliveryTarget, Exists, FanoutClient, FanoutConfig,
    FanoutError, FanoutService, FanoutStats, GroupChange, RemoveFromAllGroups, Router, encode_delivery, fanout_server,
};
use switchboard_grpc::fanout::v1::fanout_client::FanoutClient as RawClient;
use switchboard_grpc::fanout::v1::fanout_server::{Fanout, FanoutServer};
use switchboard_grpc::fanout::v1::{ConnectionReply, DeliveryAck, DeliveryBatch};
use switchboard_grpc::{ClusterSecret, ServerAuth};
use switchboard_hub::{Connection, ConnectionInfo, Frames, Registry, new_connection_id};
use switchboard_protocol::Protocol;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

const SECRET: &str = "fanout-test-secret";
const HUB: &str = "chat";
/// Bound on server shutdown in tests.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A delivery's bound on its ack: ample for thousands of pipelined deliveries on a loaded
/// machine (2 s was not, in a debug build beside a release build). Tests of the timeout set
/// a short one of their own.
fn config() -> FanoutConfig {
    FanoutConfig { timeout: Duration::from_secs(20), ..FanoutConfig::default() }
}

/// One node: registry, fan-out server, fan-out client.
struct Node {
    id: u64,
    addr: String,
    registry: Arc<Registry>,
    client: FanoutClient,
    service: FanoutService,
    auth: ServerAuth,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Node {
    async fn start(id: u64) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Node::start_on(id, listener, Arc::new(Registry::default())).await
    }

    async fn start_on(id: u64, listener: TcpListener, registry: Arc<Registry>) -> Node {
        let secret = ClusterSecret::new(SECRET).expect("valid secret");
        let addr = listener.local_addr().expect("local addr").to_string();
        let service = FanoutService::new(registry.clone());
        let auth = secret.server();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Server::builder().add_service(fanout_server(service.clone(), auth.clone()));
        let server = tokio::spawn(router.serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = stopped.await;
        }));
        let client = FanoutClient::new(id, registry.clone(), &secret, config());
        Node { id, addr, registry, client, service, auth, stop: Some(stop), server: Some(server) }
    }

    /// Ends the fan-out streams, then stops the server (bounded): peers now get connection refused.
    async fn stop(&mut self) {
        self.service.shutdown();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let served = tokio::time::timeout(STOP_TIMEOUT, server).await.expect("server stops within 5 s");
            served.expect("server task").expect("server ran");
        }
    }

    /// A connection of this node, registered in `hub`.
    fn connect(&self, hub: &str, user: Option<&str>, protocol: Protocol) -> Arc<Connection> {
        let conn = Arc::new(Connection::new(new_connection_id(self.id), user, protocol, ConnectionInfo::default()));
        self.registry.get_or_create(hub).add_connection(conn.clone());
        conn
    }
}

async fn cluster() -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Node::start(id).await);
    }
    nodes
}

fn live(nodes: &[Node]) -> Vec<(u64, String)> {
    nodes.iter().map(|n| (n.id, n.addr.clone())).collect()
}

fn frames(n: usize) -> Frames {
    let args = serde_json::value::RawValue::from_string(format!("[{n},\"payload\"]")).expect("json");
    Frames::invocation("Receive", args)
}

fn delivery(target: DeliveryTarget, excluded: &[&Arc<Connection>], n: usize) -> Delivery {
    encode_delivery(HUB, target, excluded.iter().map(|c| c.id.to_string()).collect(), &frames(n))
}

/// The frame connection `conn` should get for message `n`.
fn expected(conn: &Connection, n: usize) -> Bytes {
    frames(n).get(conn.protocol).expect("frame").clone()
}

fn drain(conn: &Connection) -> Vec<Bytes> {
    let mut out = std::collections::VecDeque::new();
    conn.drain(&mut out);
    out.into()
}

/// Routes `target` over the live nodes and delivers message `n` from `entry`.
async fn send(entry: &Node, nodes: &[(u64, String)], target: DeliveryTarget, excluded: &[&Arc<Connection>], n: usize) {
    let route = Router::route(&target, nodes);
    entry.client.deliver_all(&route, delivery(target, excluded, n)).await.expect("delivered");
}

/// Asserts that exactly the connections in `receivers` got message `n` (once each) and every
/// other connection in `all` got nothing.
fn assert_received(all: &[&Arc<Connection>], receivers: &[&Arc<Connection>], n: usize) {
    for conn in all {
        let got = drain(conn);
        if receivers.iter().any(|r| Arc::ptr_eq(r, conn)) {
            assert_eq!(got, vec![expected(conn, n)], "connection {} should get message {n} once", conn.id);
        } else {
            assert!(got.is_empty(), "connection {} should get nothing, got {} frames", conn.id, got.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_from_one_node_reaches_every_connection_on_all_nodes_exactly_once() {
    let nodes = cluster().await;
    let mut chat = Vec::new();
    let mut other = Vec::new();
    for node in &nodes {
        chat.push(node.connect(HUB, None, Protocol::Json));
        chat.push(node.connect(HUB, Some("u"), Protocol::MessagePack));
        other.push(node.connect("other", None, Protocol::Json));
    }
    let live = live(&nodes);
    assert_eq!(Router::route(&DeliveryTarget::All(Broadcast {}), &live).len(), 3);
    for n in 0..3 {
        send(&nodes[0], &live, DeliveryTarget::All(Broadcast {}), &[], n).await;
        let all: Vec<_> = chat.iter().chain(&other).collect();
        let receivers: Vec<_> = chat.iter().collect();
        assert_received(&all, &receivers, n);
    }
    // Both protocols travelled as encoded by the entry node.
    let json = frames(0).get(Protocol::Json).unwrap().clone();
    assert!(json.starts_with(b"{\"type\":1,\"target\":\"Receive\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_group_and_connection_targets_reach_exactly_the_right_connections() {
    let nodes = cluster().await;
    let alice1 = nodes[0].connect(HUB, Some("alice"), Protocol::Json);
    let alice3 = nodes[2].connect(HUB, Some("alice"), Protocol::MessagePack);
    let bob2 = nodes[1].connect(HUB, Some("bob"), Protocol::Json);
    let anon3 = nodes[2].connect(HUB, None, Protocol::Json);
    let anon1 = nodes[0].connect(HUB, None, Protocol::MessagePack);
    let all = [&alice1, &alice3, &bob2, &anon3, &anon1];
    for (node, conn) in [(0, &alice1), (1, &bob2), (2, &anon3)] {
        assert!(nodes[node].registry.get(HUB).unwrap().add_to_group(&conn.id, "g"));
    }
    let live = live(&nodes);

    send(&nodes[1], &live, DeliveryTarget::User("alice".into()), &[], 1).await;
    assert_received(&all, &[&alice1, &alice3], 1);

    send(&nodes[2], &live, DeliveryTarget::Group("g".into()), &[], 2).await;
    assert_received(&all, &[&alice1, &bob2, &anon3], 2);

    // `excluded` is honoured on every node, local (node 3) and remote (node 1).
    send(&nodes[2], &live, DeliveryTarget::Group("g".into()), &[&alice1, &anon3], 3).await;
    assert_received(&all, &[&bob2], 3);
    send(&nodes[0], &live, DeliveryTarget::All(Broadcast {}), &[&alice3, &bob2, &anon1], 4).await;
    assert_received(&all, &[&alice1, &anon3], 4);

    // A connection target goes to its owner only.
    let target = DeliveryTarget::ConnectionId(bob2.id.to_string());
    assert_eq!(Router::route(&target, &live), vec![(2, nodes[1].addr.as_str())]);
    send(&nodes[0], &live, target, &[], 5).await;
    assert_received(&all, &[&bob2], 5);

    // Targets without connections reach nobody, and succeed.
    send(&nodes[0], &live, DeliveryTarget::User("carol".into()), &[], 6).await;
    send(&nodes[0], &live, DeliveryTarget::Group("empty".into()), &[], 6).await;
    send(&nodes[0], &live, DeliveryTarget::ConnectionId(new_connection_id(3)), &[], 6).await;
    assert_received(&all, &[], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_awaited_one_after_another_through_alternating_entry_nodes_arrive_in_order() {
    let nodes = cluster().await;
    let conn = nodes[2].connect(HUB, None, Protocol::Json);
    let target = nodes[2].addr.as_str();
    for n in 0..1000 {
        let entry = &nodes[n % 2];
        let delivery = delivery(DeliveryTarget::ConnectionId(conn.id.to_string()), &[], n);
        entry.client.deliver(3, target, delivery).await.expect("delivered");
    }
    let want: Vec<Bytes> = (0..1000).map(|n| expected(&conn, n)).collect();
    assert_eq!(drain(&conn), want);
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<(), FanoutError>> + Send + 'a>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_deliveries_to_one_peer_keep_submission_order() {
    let nodes = cluster().await;
    let conn = nodes[2].connect(HUB, None, Protocol::Json);
    let client = &nodes[0].client;
    let target = nodes[2].addr.as_str();
    const N: usize = 2000;
    let mut pending: Vec<Pending<'_>> = (0..N)
        .map(|n| {
            let d = delivery(DeliveryTarget::ConnectionId(conn.id.to_string()), &[], n);
            Box::pin(client.deliver(3, target, d)) as Pending<'_>
        })
        .collect();
    // Poll each once, in order: each is queued before the next, none awaits its ack first.
    let mut results: Vec<Option<Result<(), FanoutError>>> = (0..N).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (future, result) in pending.iter_mut().zip(&mut results) {
            if let Poll::Ready(outcome) = future.as_mut().poll(cx) {
                *result = Some(outcome);
            }
        }
        Poll::Ready(())
    })
    .await;
    for (future, result) in pending.into_iter().zip(results) {
        match result {
            Some(outcome) => outcome.expect("delivered"),
            None => future.await.expect("delivered"),
        }
    }
    let want: Vec<Bytes> = (0..N).map(|n| expected(&conn, n)).collect();
    assert_eq!(drain(&conn), want);
    // Queued faster than acknowledged, so they shared batches; one stream carried them all.
    let stats = client.stats();
    assert_eq!(FanoutStats::get(&stats.deliveries), N as u64);
    assert!(FanoutStats::get(&stats.batches) < N as u64, "{stats:?}");
    assert_eq!(FanoutStats::get(&stats.streams_opened), 1);
}

fn call(conn: &Connection, action: Action) -> ConnectionRequest {
    ConnectionRequest { hub: HUB.into(), connection_id: conn.id.to_string(), action: Some(action) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_calls_go_to_the_owner_and_group_sends_from_another_node_follow() {
    let nodes = cluster().await;
    let live = live(&nodes);
    let conn = nodes[2].connect(HUB, None, Protocol::Json);
    let bystander = nodes[1].connect(HUB, None, Protocol::Json);
    let all = [&conn, &bystander];
    let (owner, addr) = Router::owner(&conn.id, &live).expect("owner is live");
    assert_eq!(owner, 3);
    let join = || Action::AddToGroup(GroupChange { group: "room".into() });

    let reply = nodes[0].client.connection_call(owner, addr, call(&conn, join())).await.unwrap();
    assert!(reply.found);
    send(&nodes[1], &live, DeliveryTarget::Group("room".into()), &[], 1).await;
    assert_received(&all, &[&conn], 1);

    let exists = nodes[0].client.connection_call(owner, addr, call(&conn, Action::Exists(Exists {}))).await.unwrap();
    assert!(exists.found);
    let mut unknown = call(&conn, Action::Exists(Exists {}));
    unknown.connection_id = new_connection_id(3);
    assert!(!nodes[0].client.connection_call(owner, addr, unknown).await.unwrap().found);
    let mut other_hub = call(&conn, join());
    other_hub.hub = "nohub".into();
    assert!(!nodes[0].client.connection_call(owner, addr, other_hub).await.unwrap().found);

    let leave = Action::RemoveFromGroup(GroupChange { group: "room".into() });
    assert!(nodes[1].client.connection_call(owner, addr, call(&conn, leave)).await.unwrap().found);
    send(&nodes[0], &live, DeliveryTarget::Group("room".into()), &[], 2).await;
    assert_received(&all, &[], 2);

    assert!(nodes[1].client.connection_call(owner, addr, call(&conn, join())).await.unwrap().found);
    let leave_all = Action::RemoveFromAllGroups(RemoveFromAllGroups {});
    assert!(nodes[1].client.connection_call(owner, addr, call(&conn, leave_all)).await.unwrap().found);
    send(&nodes[0], &live, DeliveryTarget::Group("room".into()), &[], 3).await;
    assert_received(&all, &[], 3);

    // The owner's own client applies locally.
    assert!(nodes[2].client.connection_call(owner, addr, call(&conn, join())).await.unwrap().found);
    send(&nodes[0], &live, DeliveryTarget::Group("room".into()), &[], 4).await;
    assert_received(&all, &[&conn], 4);

    let close = Action::Close(Close { reason: "bye".into() });
    assert!(nodes[0].client.connection_call(owner, addr, call(&conn, close)).await.unwrap().found);
    let mut out = std::collections::VecDeque::new();
    let (_, request) = conn.drain(&mut out);
    let request = request.expect("close requested");
    assert_eq!(request.error.as_deref(), Some("bye"));
    assert!(!request.allow_reconnect);

    let no_action = ConnectionRequest { action: None, ..call(&conn, join()) };
    let error = nodes[0].client.connection_call(owner, addr, no_action).await.unwrap_err();
    assert!(matches!(error, FanoutError::Rejected { node: 3, code: Code::InvalidArgument, .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cluster_secret_is_refused() {
    let nodes = cluster().await;
    let conn = nodes[1].connect(HUB, None, Protocol::Json);
    let wrong = ClusterSecret::new("not-the-secret").unwrap();
    let outsider = FanoutClient::new(9, Arc::new(Registry::default()), &wrong, config());
    let d = delivery(DeliveryTarget::All(Broadcast {}), &[], 1);
    let error = outsider.deliver(2, &nodes[1].addr, d).await.unwrap_err();
    assert!(matches!(error, FanoutError::Refused { node: 2, .. }), "{error:?}");
    assert!(error.to_string().contains("wrong cluster secret"), "{error}");
    let error = outsider.connection_call(2, &nodes[1].addr, call(&conn, Action::Exists(Exists {}))).await.unwrap_err();
    assert!(matches!(error, FanoutError::Refused { node: 2, .. }), "{error:?}");
    assert!(drain(&conn).is_empty());
    assert_eq!(nodes[1].auth.refused(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_is_down_while_the_others_get_their_deliveries_and_a_restart_reopens() {
    let mut nodes = cluster().await;
    let live = live(&nodes);
    let conns: Vec<_> = nodes.iter().map(|n| n.connect(HUB, None, Protocol::Json)).collect();
    let all: Vec<_> = conns.iter().collect();
    // Streams to nodes 2 and 3 are open.
    send(&nodes[0], &live, DeliveryTarget::All(Broadcast {}), &[], 1).await;
    assert_received(&all, &all, 1);

    let addr = nodes[1].addr.clone();
    nodes[1].stop().await;
    let route = Router::route(&DeliveryTarget::All(Broadcast {}), &live);
    let started = Instant::now();
    // A dead node holds no live clients: the fan-out skips it and succeeds for the others.
    nodes[0]
        .client
        .deliver_all(&route, delivery(DeliveryTarget::All(Broadcast {}), &[], 2))
        .await
        .expect("a node that is down does not fail a fan-out");
    assert!(started.elapsed() < config().timeout, "took {:?}", started.elapsed());
    assert_received(&all, &[&conns[0], &conns[2]], 2);
    // Still down on the next send (nothing listens at its address; no stale stream), still
    // bounded.
    let error =
        nodes[0].client.deliver(2, &addr, delivery(DeliveryTarget::All(Broadcast {}), &[], 3)).await.unwrap_err();
    assert!(matches!(error, FanoutError::Down { node: 2, .. }), "{error:?}");

    // Node 2 comes back on the same address: the next delivery opens a new stream.
    let listener = TcpListener::bind(&addr).await.expect("rebind the same port");
    let registry = nodes[1].registry.clone();
    nodes[1] = Node::start_on(2, listener, registry).await;
    send(&nodes[0], &live, DeliveryTarget::All(Broadcast {}), &[], 4).await;
    assert_received(&all, &all, 4);
}

/// A runtime on a thread of its own, and the sender that stops it (dropping the runtime).
fn runtime_on_a_thread() -> (tokio::runtime::Handle, oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || drop(runtime.block_on(stopped)));
    (handle, stop, thread)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_streams_run_on_the_configured_runtime() {
    let nodes = cluster().await;
    let conn = nodes[1].connect(HUB, None, Protocol::Json);
    let (runtime, stop, thread) = runtime_on_a_thread();
    let secret = ClusterSecret::new(SECRET).expect("valid secret");
    let config = FanoutConfig { runtime: Some(runtime), ..config() };
    let client = FanoutClient::new(1, nodes[0].registry.clone(), &secret, config);
    let to_node_2 = |n| client.deliver(2, &nodes[1].addr, delivery(DeliveryTarget::All(Broadcast {}), &[], n));
    to_node_2(1).await.expect("delivered");
    assert_eq!(drain(&conn), vec![expected(&conn, 1)]);

    // The peer's task and connection end with that runtime, not with this one.
    let _ = stop.send(());
    tokio::task::spawn_blocking(move || thread.join()).await.expect("joined").expect("the thread ended");
    let error = to_node_2(2).await.expect_err("the stream's runtime is gone");
    assert!(!matches!(error, FanoutError::Timeout { .. }), "failed at once, not by timing out: {error:?}");
    assert!(drain(&conn).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_shutting_down_is_skipped_like_one_that_is_down() {
    let nodes = cluster().await;
    let live = live(&nodes);
    let conns: Vec<_> = nodes.iter().map(|n| n.connect(HUB, None, Protocol::Json)).collect();
    let all: Vec<_> = conns.iter().collect();
    send(&nodes[0], &live, DeliveryTarget::All(Broadcast {}), &[], 1).await;
    assert_received(&all, &all, 1);

    // Node 2 has drained its clients and ends its streams, its server still answering: the
    // open stream and any new one both say it is shutting down, and the fan-out skips it.
    nodes[1].service.shutdown();
    for n in 2..=3 {
        send(&nodes[0], &live, DeliveryTarget::All(Broadcast {}), &[], n).await;
        assert_received(&all, &[&conns[0], &conns[2]], n);
    }
    let error = nodes[0]
        .client
        .deliver(2, &nodes[1].addr, delivery(DeliveryTarget::All(Broadcast {}), &[], 4))
        .await
        .unwrap_err();
    assert!(matches!(error, FanoutError::Down { node: 2, .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_times_out_within_the_bound_while_the_others_get_their_deliveries() {
    let nodes = cluster().await;
    let conn = nodes[2].connect(HUB, None, Protocol::Json);
    // Accepts TCP connections (kernel backlog) but never speaks HTTP/2.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let timeout = Duration::from_millis(300);
    let secret = ClusterSecret::new(SECRET).unwrap();
    let client = FanoutClient::new(1, nodes[0].registry.clone(), &secret, FanoutConfig { timeout, ..config() });
    let route = [(7, silent_addr.as_str()), (3, nodes[2].addr.as_str())];
    let started = Instant::now();
    let error = client.deliver_all(&route, delivery(DeliveryTarget::All(Broadcast {}), &[], 1)).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error, FanoutError::Timeout { node: 7, timeout });
    assert!(elapsed >= timeout && elapsed < timeout + Duration::from_secs(2), "failed after {elapsed:?}");
    assert_eq!(drain(&conn), vec![expected(&conn, 1)]);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_batch_ends_the_stream_before_any_of_it_is_applied() {
    let nodes = cluster().await;
    let conn = nodes[1].connect(HUB, None, Protocol::Json);
    let secret = ClusterSecret::new(SECRET).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", nodes[1].addr)).unwrap().connect_lazy();
    let mut raw = RawClient::with_interceptor(channel, secret.client());
    let valid = delivery(DeliveryTarget::All(Broadcast {}), &[], 1);
    let invalid = Delivery { target: None, ..valid.clone() };
    let batches = vec![
        DeliveryBatch { batch_id: 1, deliveries: vec![valid.clone()] },
        DeliveryBatch { batch_id: 2, deliveries: vec![valid, invalid] },
    ];
    let batches = tonic::codegen::tokio_stream::iter(batches);
    let mut acks =
        tokio::time::timeout(Duration::from_secs(5), raw.deliver(batches)).await.unwrap().unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), acks.message()).await.unwrap();
    assert_eq!(first.unwrap().unwrap().batch_id, 1);
    let second = tokio::time::timeout(Duration::from_secs(5), acks.message()).await.unwrap();
    assert_eq!(second.unwrap_err().code(), Code::InvalidArgument);
    // Batch 1 applied, nothing of batch 2.
    assert_eq!(drain(&conn), vec![expected(&conn, 1)]);

    // The client checks before sending.
    let error = nodes[0].client.deliver(2, &nodes[1].addr, Delivery::default()).await.unwrap_err();
    assert!(matches!(error, FanoutError::Invalid(_)), "{error:?}");
    let huge = Delivery {
        json: Bytes::from(vec![b'x'; switchboard_fanout::MAX_DELIVERY_BYTES + 1]),
        ..delivery(DeliveryTarget::All(Broadcast {}), &[], 1)
    };
    let error = nodes[0].client.deliver(2, &nodes[1].addr, huge).await.unwrap_err();
    assert!(matches!(error, FanoutError::Invalid(_)), "{error:?}");
}

/// A fan-out server that accepts streams and calls but never answers.
struct Stalled;

#[tonic::async_trait]
impl Fanout for Stalled {
    type DeliverStream = ReceiverStream<Result<DeliveryAck, tonic::Status>>;

    async fn deliver(
        &self,
        request: tonic::Request<tonic::Streaming<DeliveryBatch>>,
    ) -> Result<tonic::Response<Self::DeliverStream>, tonic::Status> {
        let (acks, rx) = mpsc::channel(1);
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(_batch)) = inbound.message().await {}
            drop(acks);
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }

    async fn connection_call(
        &self,
        _request: tonic::Request<ConnectionRequest>,
    ) -> Result<tonic::Response<ConnectionReply>, tonic::Status> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_acknowledging_times_out_within_the_bound() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::builder().add_service(FanoutServer::new(Stalled));
    let server = tokio::spawn(server.serve_with_incoming(TcpIncoming::from(listener)));
    let timeout = Duration::from_millis(300);
    let secret = ClusterSecret::new(SECRET).unwrap();
    let client = FanoutClient::new(1, Arc::new(Registry::default()), &secret, FanoutConfig { timeout, ..config() });
    for n in 0..2 {
        let started = Instant::now();
        let error = client.deliver(5, &addr, delivery(DeliveryTarget::All(Broadcast {}), &[], n)).await.unwrap_err();
        assert_eq!(error, FanoutError::Timeout { node: 5, timeout });
        assert!(started.elapsed() < timeout + Duration::from_secs(2), "failed after {:?}", started.elapsed());
    }
    let started = Instant::now();
    let conn = Connection::new(new_connection_id(5), None, Protocol::Json, ConnectionInfo::default());
    let error = client.connection_call(5, &addr, call(&conn, Action::Exists(Exists {}))).await.unwrap_err();
    assert_eq!(error, FanoutError::Timeout { node: 5, timeout });
    assert!(started.elapsed() < timeout + Duration::from_secs(2), "failed after {:?}", started.elapsed());
    server.abort();
}
