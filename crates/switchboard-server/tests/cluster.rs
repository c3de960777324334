//! A cluster of real `switchboard` processes on loopback: formation, status, replicated
//! membership visible on every node once answered (G3), leader loss (G7) and a full restart (G6).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchboard_auth::mint_server_token;
use switchboard_testkit::redis::{RedisCluster, RedisServer};
use switchboard_testkit::tls::TestCa;

const KEY: &str = "cluster-test-access-key";
const SECRET: &str = "cluster-test-secret";

struct NodeSpec {
    id: u64,
    http: u16,
    grpc: u16,
    internal: u16,
    voter: bool,
}

struct Cluster {
    /// `None`: the raft engine; `Some(flags)`: `--engine redis` with these flags.
    redis: Option<Vec<String>>,
    /// More flags for every node.
    extra: Vec<String>,
    dir: PathBuf,
    specs: Vec<NodeSpec>,
    children: Vec<Option<Child>>,
    /// One cluster at a time: the tests time elections and failovers, which two clusters' worth
    /// of processes competing for the same cores would stretch.
    _alone: std::sync::MutexGuard<'static, ()>,
}

static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cluster {
    fn new(nodes: u64, voters: u64) -> Cluster {
        // A test that failed while holding the lock leaves it poisoned; the next one may go on.
        let alone = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Ports are chosen once the cluster runs alone: chosen earlier, a waiting test's ports could
        // be taken meanwhile as source ports of the running cluster's connections.
        let dir = std::env::temp_dir().join(format!("switchboard-cluster-{}-{}", std::process::id(), free_port()));
        let specs = (1..=nodes)
            .map(|id| NodeSpec { id, http: free_port(), grpc: free_port(), internal: free_port(), voter: id <= voters })
            .collect();
        let mut cluster = Cluster { redis: None, extra: Vec::new(), dir, specs, children: Vec::new(), _alone: alone };
        cluster.children = (0..nodes).map(|_| None).collect();
        cluster
    }

    /// `nodes` stateless nodes of the Redis engine, started with the flags `redis` returns for
    /// the Redis it starts (`--redis URL` or `--redis-cluster URL,…`). The Redis is started
    /// once the cluster runs alone, like the nodes' ports are chosen.
    fn on_redis<R>(nodes: u64, redis: impl FnOnce() -> (R, Vec<String>)) -> (Cluster, R) {
        let mut cluster = Cluster::new(nodes, 0);
        let (server, flags) = redis();
        cluster.redis = Some(flags);
        (cluster, server)
    }

    /// Voters by host name (`localhost`), so peer addresses go through name resolution.
    fn voter_list(&self) -> String {
        let voters: Vec<String> =
            self.specs.iter().filter(|s| s.voter).map(|s| format!("{}=localhost:{}", s.id, s.grpc)).collect();
        voters.join(",")
    }

    /// Every voter's gRPC address: an edge node tries them in turn to join.
    fn join_list(&self) -> String {
        let voters: Vec<String> =
            self.specs.iter().filter(|s| s.voter).map(|s| format!("localhost:{}", s.grpc)).collect();
        voters.join(",")
    }

    /// Starts node `id` and returns once it printed its connection string (ready).
    fn spawn(&mut self, id: u64) -> std::sync::mpsc::Receiver<String> {
        let spec = &self.specs[(id - 1) as usize];
        let mut args = vec![
            "serve".to_owned(),
            "--listen".into(),
            format!("127.0.0.1:{}", spec.http),
            "--data-dir".into(),
            self.dir.join(format!("node-{id}")).display().to_string(),
            "--access-key".into(),
            KEY.into(),
            "--node-id".into(),
            id.to_string(),
            "--shutdown-grace".into(),
            "1".into(),
            "--internal-listen".into(),
            format!("127.0.0.1:{}", spec.internal),
        ];
        if let Some(flags) = &self.redis {
            args.extend(["--engine".into(), "redis".into()]);
            args.extend(flags.iter().cloned());
        } else {
            args.extend(["--grpc-listen".into(), format!("127.0.0.1:{}", spec.grpc)]);
            args.extend(["--cluster-secret".into(), SECRET.into()]);
        }
        if self.redis.is_none() && spec.voter {
            args.extend(["--role".into(), "both".into(), "--voter".into(), self.voter_list()]);
        } else if self.redis.is_none() {
            args.extend(["--role".into(), "edge".into(), "--join".into(), self.join_list()]);
        }
        args.extend(self.extra.iter().cloned());
        let (child, ready_rx) = support::spawn_node(
            Command::new(env!("CARGO_BIN_EXE_switchboard"))
                .args(&args)
                .env(
                    "SWITCHBOARD_LOG",
                    std::env::var("SWITCHBOARD_TEST_NODE_LOG").as_deref().unwrap_or("warn,openraft=off"),
                )
                .stderr(if std::env::var_os("SWITCHBOARD_TEST_NODE_STDERR").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::from(self.log_file(id))
                }),
        );
        self.children[(id - 1) as usize] = Some(child);
        ready_rx
    }

    /// Where node `id` writes its log (appended across restarts).
    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    fn log_file(&self, id: u64) -> std::fs::File {
        std::fs::create_dir_all(&self.dir).expect("the cluster's directory");
        std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(id)).expect("a log file")
    }

    fn start_all(&mut self) {
        let ids: Vec<u64> = self.specs.iter().map(|s| s.id).collect();
        let waits: Vec<_> = ids.iter().map(|id| (*id, self.spawn(*id))).collect();
        for (id, ready) in waits {
            ready.recv_timeout(Duration::from_secs(90)).unwrap_or_else(|_| panic!("node {id} became ready"));
        }
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children[(id - 1) as usize].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill_all(&mut self) {
        for id in 1..=self.specs.len() as u64 {
            self.kill(id);
        }
    }

    fn http(&self, id: u64) -> u16 {
        self.specs[(id - 1) as usize].http
    }

    /// A counter or gauge of node `id`'s /metrics.
    fn metric(&self, id: u64, name: &str) -> u64 {
        use std::io::{Read, Write};
        let port = self.specs[(id - 1) as usize].internal;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("internal port");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let line = text.lines().find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ')));
        line.unwrap_or_else(|| panic!("no {name} on node {id}")).rsplit(' ').next().unwrap().parse().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        // A failing test shows what its nodes said (their logs go with the directory).
        if std::thread::panicking() {
            for spec in &self.specs {
                let log = std::fs::read_to_string(self.log_path(spec.id)).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("---- node {} log (last 40 lines) ----", spec.id);
                lines[lines.len().saturating_sub(40)..].iter().for_each(|line| eprintln!("{line}"));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP request with a REST token for the path; returns (status, body).
fn rest(port: u16, method: &str, path_and_query: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let path = path_and_query.split('?').next().unwrap();
    let token = mint_server_token(&format!("http://127.0.0.1:{port}{path}"), Duration::from_secs(60), KEY);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let request = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_owned())
}

fn status(port: u16) -> serde_json::Value {
    let (code, body) = rest(port, "GET", "/api/admin/cluster");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn member_path(user: &str, group: &str) -> String {
    format!("/api/hubs/chat/users/{user}/groups/{group}?api-version=2022-06-01")
}

#[test]
fn three_voters_and_two_edges_form_a_cluster_with_linearizable_durable_membership() {
    let mut cluster = Cluster::new(5, 3);
    cluster.start_all();

    // Every node answers the status, with the same leader and all five nodes.
    let first = status(cluster.http(4));
    let leader = first["leader"].as_u64().expect("a leader");
    assert_eq!(first["nodes"].as_array().unwrap().len(), 5, "{first}");
    for id in 1..=5 {
        assert_eq!(status(cluster.http(id))["leader"].as_u64(), Some(leader));
    }
    let edges = first["nodes"].as_array().unwrap().iter().filter(|n| n["state"] == "learner").count();
    assert_eq!(edges, 2, "edge-only nodes are learners: {first}");

    // G3: a membership answered by one node is seen at once by every other node.
    for round in 0..20 {
        let writer = 1 + round % 5;
        let reader = 1 + (round + 2) % 5;
        let group = format!("g{round}");
        assert_eq!(rest(cluster.http(writer), "PUT", &member_path("alice", &group)).0, 200);
        assert_eq!(
            rest(cluster.http(reader), "GET", &member_path("alice", &group)).0,
            200,
            "round {round}: node {reader} missed a write answered by node {writer}"
        );
    }
    assert_eq!(rest(cluster.http(2), "DELETE", &member_path("alice", "g0")).0, 204);
    assert_eq!(rest(cluster.http(5), "GET", &member_path("alice", "g0")).0, 404);

    // G7: kill the leader; writes through the survivors resume within one election.
    cluster.kill(leader);
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    let resumed = wait_for("writes resume after the leader died", Duration::from_secs(10), || {
        rest(cluster.http(survivor), "PUT", &member_path("bob", "after-failover")).0 == 200
    });
    eprintln!("writes resumed {resumed:?} after killing leader {leader}");
    assert_eq!(rest(cluster.http(4), "GET", &member_path("bob", "after-failover")).0, 200);

    // G6: stop and restart the whole cluster: memberships are intact.
    cluster.kill_all();
    cluster.start_all();
    for id in 1..=5 {
        assert_eq!(rest(cluster.http(id), "GET", &member_path("alice", "g7")).0, 200, "node {id} after restart");
        assert_eq!(rest(cluster.http(id), "GET", &member_path("bob", "after-failover")).0, 200);
        assert_eq!(rest(cluster.http(id), "GET", &member_path("alice", "g0")).0, 404);
    }
}

#[test]
fn a_node_with_the_wrong_secret_cannot_join() {
    let mut cluster = Cluster::new(1, 1);
    cluster.start_all();
    let port = free_port();
    let dir = cluster.dir.join("intruder");
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir", &dir.display().to_string()])
        .args(["--access-key", KEY, "--node-id", "9", "--grpc-listen", &format!("127.0.0.1:{port}")])
        .args(["--cluster-secret", "not-the-secret", "--role", "edge", "--join"])
        .arg(format!("127.0.0.1:{}", cluster.specs[0].grpc))
        .env("SWITCHBOARD_LOG", "off")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused"), "{stderr}");
    assert_eq!(status(cluster.http(1))["nodes"].as_array().unwrap().len(), 1);
}

mod support;

use support::{free_port, wait_for};

/// Negotiates on node `port` (to learn the connection id) and connects a JSON WebSocket.
async fn connect_client(port: u16, user: &str) -> (support::WsClient, String) {
    connect_client_speaking(port, user, "json").await
}

/// [`connect_client`] with the hub protocol `protocol` (`json` or `messagepack`).
async fn connect_client_speaking(port: u16, user: &str, protocol: &str) -> (support::WsClient, String) {
    let token = switchboard_auth::mint_client_token(
        &format!("http://127.0.0.1:{port}/client/?hub=chat"),
        Some(user),
        Duration::from_secs(60),
        KEY,
    );
    let (code, body) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let request = format!(
            "POST /client/negotiate?hub=chat&negotiateVersion=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.split(' ').nth(1).unwrap().to_owned(), body.to_owned())
    })
    .await
    .unwrap();
    assert_eq!(code, "200", "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = answer["connectionId"].as_str().unwrap().to_owned();
    let connection_token = answer["connectionToken"].as_str().unwrap().to_owned();
    let client_token = switchboard_auth::mint_client_token(
        &format!("http://127.0.0.1:{port}/client/?hub=chat"),
        Some(user),
        Duration::from_secs(60),
        KEY,
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let query = format!("hub=chat&id={connection_token}&access_token={client_token}");
    let mut ws = support::WsClient::open(addr, &query).await.expect("upgrade");
    ws.send(1, format!("{{\"protocol\":\"{protocol}\",\"version\":1}}\x1e").as_bytes()).await;
    assert_eq!(ws.next_data().await, b"{}\x1e");
    (ws, id)
}

/// The string argument of every MessagePack invocation in the next binary frames (pings
/// skipped) until `count` were read: each message is a length prefix (varint) and
/// `[1, headers, invocationId, target, [argument], …]`.
async fn messagepack_arguments(ws: &mut support::WsClient, count: usize) -> Vec<String> {
    let mut arguments = Vec::new();
    while arguments.len() < count {
        let data = ws.next_data().await;
        let mut rest = data.as_slice();
        while !rest.is_empty() {
            let (mut length, mut shift, mut used) = (0usize, 0, 0);
            loop {
                let byte = rest[used];
                length |= usize::from(byte & 0x7f) << shift;
                used += 1;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            let message = &rest[used..used + length];
            rest = &rest[used + length..];
            if message == [0x91, 0x06] {
                continue;
            }
            assert!(matches!(message[..2], [0x95 | 0x96, 0x01]), "an invocation: {message:02x?}");
            let body = message.strip_suffix(&[0x90]).filter(|_| message[0] == 0x96).unwrap_or(message);
            let start = (0..body.len())
                .find(|&i| {
                    i > 0
                        && body[i - 1] == 0x91
                        && (0xa0..=0xbf).contains(&body[i])
                        && i + 1 + usize::from(body[i] - 0xa0) == body.len()
                })
                .unwrap_or_else(|| panic!("one string argument: {message:02x?}"));
            arguments.push(String::from_utf8(body[start + 1..].to_vec()).unwrap());
        }
    }
    arguments
}

/// The body of a REST broadcast of `m(argument)`.
fn broadcast(argument: &str) -> String {
    format!(r#"{{"target":"m","arguments":["{argument}"]}}"#)
}

/// Client "a" on node 1 and client "b" on node 2 (hub `chat`), each with its buffer of received
/// records, once a broadcast through node 1 reached both.
async fn clients_a_and_b(cluster: &Cluster) -> [(support::WsClient, Vec<Vec<u8>>); 2] {
    let (mut a, _) = connect_client(cluster.http(1), "a").await;
    let (mut b, _) = connect_client(cluster.http(2), "b").await;
    let (mut pending_a, mut pending_b) = (Vec::new(), Vec::new());
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat", &broadcast("before")).await, 202);
    assert_eq!(next_messages(&mut a, &mut pending_a).await, invocation("before"));
    assert_eq!(next_messages(&mut b, &mut pending_b).await, invocation("before"));
    [(a, pending_a), (b, pending_b)]
}

async fn post(port: u16, path: &str, body: &str) -> u16 {
    let (path, body) = (path.to_owned(), body.to_owned());
    tokio::task::spawn_blocking(move || rest_post(port, &path, &body)).await.unwrap()
}

fn invocation(argument: &str) -> Vec<u8> {
    format!("{{\"type\":1,\"target\":\"m\",\"arguments\":[\"{argument}\"]}}\u{1e}").into_bytes()
}

/// Reads the next message, skipping WebSocket and SignalR pings (a test that pauses a node
/// may see a keep-alive); frames may hold several messages, so split them.
async fn next_messages(ws: &mut support::WsClient, pending: &mut Vec<Vec<u8>>) -> Vec<u8> {
    while pending.is_empty() {
        let data = ws.next_data().await;
        for record in data.split_inclusive(|b| *b == 0x1e) {
            if record != b"{\"type\":6}\x1e" {
                pending.push(record.to_vec());
            }
        }
    }
    pending.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_calls_on_any_node_reach_clients_on_every_node_exactly_once() {
    let mut cluster = Cluster::new(5, 3);
    rest_calls_reach_clients_on_every_node_exactly_once(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_calls_reach_clients_on_every_node_exactly_once_through_redis() {
    let (mut cluster, _redis) = tokio::task::block_in_place(|| Cluster::on_redis(5, standalone));
    rest_calls_reach_clients_on_every_node_exactly_once(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_calls_reach_clients_on_every_node_exactly_once_through_a_redis_cluster() {
    let (mut cluster, _redis) = tokio::task::block_in_place(|| Cluster::on_redis(5, redis_cluster));
    rest_calls_reach_clients_on_every_node_exactly_once(&mut cluster).await;
}

/// A standalone Redis and the flags that point nodes at it.
fn standalone() -> (RedisServer, Vec<String>) {
    let redis = RedisServer::start();
    let flags = vec!["--redis".into(), redis.url()];
    (redis, flags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_engine_rides_out_a_killed_node_and_a_redis_restart() {
    let (mut cluster, mut redis) = tokio::task::block_in_place(|| Cluster::on_redis(3, standalone));
    tokio::task::block_in_place(|| cluster.start_all());
    let (mut a, _) = connect_client(cluster.http(1), "a").await;
    let (mut b, _) = connect_client(cluster.http(2), "b").await;
    let (_c, c) = connect_client(cluster.http(3), "c").await;
    let (mut pending_a, mut pending_b) = (Vec::new(), Vec::new());

    // kill -9 of a node: sends through the others succeed at once and reach everyone left;
    // its connection is gone for existence questions.
    cluster.kill(3);
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat", &broadcast("after-kill")).await, 202);
    assert_eq!(next_messages(&mut a, &mut pending_a).await, invocation("after-kill"));
    assert_eq!(next_messages(&mut b, &mut pending_b).await, invocation("after-kill"));
    let exists = format!("/api/hubs/chat/connections/{c}?api-version=2022-06-01");
    assert_eq!(tokio::task::block_in_place(|| rest(cluster.http(2), "HEAD", &exists)).0, 404);

    // Redis goes away: REST answers 503 (nothing was sent or stored), clients stay connected.
    // (A node may have resubscribed before, after a probe: count from here.)
    let resubscribed_before: Vec<u64> = tokio::task::block_in_place(|| {
        (1..=2).map(|id| cluster.metric(id, "switchboard_redis_resubscribes_total")).collect()
    });
    tokio::task::block_in_place(|| redis.kill());
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat", &broadcast("lost")).await, 503);
    assert!(tokio::task::block_in_place(|| cluster.metric(1, "switchboard_redis_unavailable_total")) >= 1);
    let membership = "/api/hubs/chat/users/a/groups/g?api-version=2022-06-01";
    assert_eq!(tokio::task::block_in_place(|| rest(cluster.http(2), "PUT", membership)).0, 503);

    // Redis is back: each node reconnects and resubscribes, and deliveries resume.
    tokio::task::block_in_place(|| {
        redis.restart();
        wait_for("both nodes resubscribed", Duration::from_secs(30), || {
            (1..=2).all(|id| {
                cluster.metric(id, "switchboard_redis_resubscribes_total") > resubscribed_before[id as usize - 1]
            })
        });
    });
    assert_eq!(post(cluster.http(2), "/api/v1/hubs/chat", &broadcast("resumed")).await, 202);
    assert_eq!(next_messages(&mut a, &mut pending_a).await, invocation("resumed"));
    assert_eq!(next_messages(&mut b, &mut pending_b).await, invocation("resumed"));
    assert_eq!(tokio::task::block_in_place(|| rest(cluster.http(2), "PUT", membership)).0, 200);
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat/groups/g", &broadcast("to-g")).await, 202);
    assert_eq!(next_messages(&mut a, &mut pending_a).await, invocation("to-g"));
}

/// The Redis Cluster master holding the all-nodes channel dies: its replica takes over, the
/// nodes resubscribe there, and broadcasts reach every client again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_engine_rides_out_a_redis_cluster_failover() {
    let (mut cluster, mut redis) = tokio::task::block_in_place(|| Cluster::on_redis(3, redis_cluster));
    tokio::task::block_in_place(|| cluster.start_all());
    let [(mut a, mut pending_a), (mut b, mut pending_b)] = clients_a_and_b(&cluster).await;

    let master = tokio::task::block_in_place(|| redis.master_of("switchboard:all"));
    let resubscribed_before: Vec<u64> = tokio::task::block_in_place(|| {
        (1..=2).map(|id| cluster.metric(id, "switchboard_redis_resubscribes_total")).collect()
    });
    tokio::task::block_in_place(|| redis.nodes[master].kill());
    // A send meanwhile fails or succeeds without the dead shard; either way the nodes notice.
    let during = post(cluster.http(1), "/api/v1/hubs/chat", &broadcast("during")).await;
    assert!(matches!(during, 202 | 500 | 503), "{during}");
    tokio::task::block_in_place(|| {
        redis.wait_healthy();
        // Once at the new master, and once more when the cluster connection has settled.
        wait_for("both nodes resubscribed twice after the failover", Duration::from_secs(30), || {
            (1..=2).all(|id| {
                cluster.metric(id, "switchboard_redis_resubscribes_total") >= resubscribed_before[id as usize - 1] + 2
            })
        });
    });
    assert_eq!(post(cluster.http(2), "/api/v1/hubs/chat", &broadcast("after")).await, 202);
    for (ws, pending) in [(&mut a, &mut pending_a), (&mut b, &mut pending_b)] {
        let mut message = next_messages(ws, pending).await;
        if message == invocation("during") {
            message = next_messages(ws, pending).await;
        }
        assert_eq!(message, invocation("after"));
    }
}

/// A resharding moves the slot of the hub's channel to another master: Redis ends the nodes'
/// subscriptions to it there, and they subscribe again at the new owner, so broadcasts reach
/// every client as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_engine_follows_a_slot_moved_to_another_master() {
    let (mut cluster, redis) = tokio::task::block_in_place(|| Cluster::on_redis(2, redis_cluster));
    tokio::task::block_in_place(|| cluster.start_all());
    let [(mut a, mut pending_a), (mut b, mut pending_b)] = clients_a_and_b(&cluster).await;

    tokio::task::block_in_place(|| {
        let channel = "switchboard:hub:chat";
        let from = redis.master_of(channel);
        let to = redis.masters().into_iter().find(|&m| m != from).expect("another master");
        redis.move_slot_of(channel, to);
    });
    for (entry, n) in [(2, "after-1"), (1, "after-2")] {
        assert_eq!(post(cluster.http(entry), "/api/v1/hubs/chat", &broadcast(n)).await, 202);
        assert_eq!(next_messages(&mut a, &mut pending_a).await, invocation(n));
        assert_eq!(next_messages(&mut b, &mut pending_b).await, invocation(n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_joins_are_seen_at_once_and_memberships_survive_restarting_every_node() {
    let (mut cluster, _redis) = tokio::task::block_in_place(|| Cluster::on_redis(5, standalone));
    joins_are_seen_at_once_and_memberships_survive_restarting_every_node(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_joins_are_seen_at_once_and_memberships_survive_restarting_every_node() {
    let (mut cluster, _redis) = tokio::task::block_in_place(|| Cluster::on_redis(5, redis_cluster));
    joins_are_seen_at_once_and_memberships_survive_restarting_every_node(&mut cluster).await;
}

/// G3 through processes (a group join answered through one node is seen by the next send
/// through another, 30 times) and G6 (every Switchboard node restarted: the memberships stored
/// in Redis are intact and routed again).
async fn joins_are_seen_at_once_and_memberships_survive_restarting_every_node(cluster: &mut Cluster) {
    tokio::task::block_in_place(|| cluster.start_all());
    let nodes = cluster.specs.len() as u64;
    let (mut ws, id) = connect_client(cluster.http(nodes), "joiner").await;
    let mut pending = Vec::new();
    for i in 0..30u64 {
        let (join_through, send_through) = (i % nodes + 1, (i + 1) % nodes + 1);
        let join = format!("/api/v1/hubs/chat/groups/g{i}/connections/{id}");
        assert_eq!(tokio::task::block_in_place(|| rest(cluster.http(join_through), "PUT", &join)).0, 200);
        let body = format!(r#"{{"target":"m","arguments":["g{i}"]}}"#);
        assert_eq!(post(cluster.http(send_through), &format!("/api/v1/hubs/chat/groups/g{i}"), &body).await, 202);
        assert_eq!(next_messages(&mut ws, &mut pending).await, invocation(&format!("g{i}")), "G3 round {i}");
    }
    drop(ws);
    for user in ["kept1", "kept2"] {
        let path = format!("/api/hubs/chat/users/{user}/groups/durable?api-version=2022-06-01");
        assert_eq!(tokio::task::block_in_place(|| rest(cluster.http(1), "PUT", &path)).0, 200);
    }
    tokio::task::block_in_place(|| {
        cluster.kill_all();
        cluster.start_all();
    });
    let (mut kept, _) = connect_client(cluster.http(2), "kept2").await;
    let path = "/api/hubs/chat/users/kept1/groups/durable?api-version=2022-06-01";
    assert_eq!(tokio::task::block_in_place(|| rest(cluster.http(3), "HEAD", path)).0, 200, "G6 after a restart");
    let body = r#"{"target":"m","arguments":["durable"]}"#;
    assert_eq!(post(cluster.http(3), "/api/v1/hubs/chat/groups/durable", body).await, 202);
    assert_eq!(next_messages(&mut kept, &mut Vec::new()).await, invocation("durable"));
}

/// `rediss://`: nodes that trust the test's CA (`--redis-ca-file`) serve through a
/// TLS-only Redis; a node that does not trust it refuses to start (exit 69, naming the reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_engine_speaks_tls_to_redis_and_checks_its_certificate() {
    let (mut cluster, redis) = tokio::task::block_in_place(|| {
        Cluster::on_redis(2, || {
            let redis = RedisServer::start_tls();
            let ca = redis.ca_file.clone().expect("a TLS server").display().to_string();
            let flags = vec!["--redis".into(), redis.url(), "--redis-ca-file".into(), ca];
            (redis, flags)
        })
    });
    tokio::task::block_in_place(|| cluster.start_all());
    let (mut ws, _) = connect_client(cluster.http(2), "over-tls").await;
    let body = r#"{"target":"m","arguments":["encrypted"]}"#;
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat/users/over-tls", body).await, 202);
    assert_eq!(next_messages(&mut ws, &mut Vec::new()).await, invocation("encrypted"));

    let untrusting = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--access-key", KEY, "--engine", "redis", "--redis", &redis.url()])
        .env("SWITCHBOARD_LOG", "off")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&untrusting.stderr);
    assert_eq!(untrusting.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("cannot reach Redis at rediss://127.0.0.1:") && stderr.contains("ertificate"), "{stderr}");
}

/// Mutual TLS between nodes: a cluster whose nodes hold certificates from the cluster CA forms,
/// replicates and fans out as usual (the certificate names no address, only the name every
/// node checks, `--cluster-tls-name`); a process that knows the cluster secret and trusts the
/// CA but holds a certificate from another CA is refused at the TLS handshake, and both sides
/// say so in their logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_over_mutual_tls_serve_and_refuse_a_node_without_a_cluster_certificate() {
    let mut cluster = Cluster::new(3, 3);
    let ca = TestCa::new(&cluster.dir.join("pki"));
    let node = ca.issue_for("node", "DNS:switchboard-node");
    let text = |path: &std::path::Path| path.display().to_string();
    cluster.extra.extend(["--cluster-tls-cert".into(), text(&node.cert), "--cluster-tls-key".into(), text(&node.key)]);
    cluster.extra.extend([
        "--cluster-ca".into(),
        text(&ca.cert),
        "--cluster-tls-name".into(),
        "switchboard-node".into(),
    ]);
    tokio::task::block_in_place(|| cluster.start_all());
    let (mut ws, _) = connect_client(cluster.http(3), "over-mtls").await;
    let body = r#"{"target":"m","arguments":["encrypted"]}"#;
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat/users/over-mtls", body).await, 202);
    assert_eq!(next_messages(&mut ws, &mut Vec::new()).await, invocation("encrypted"));
    // A membership written through raft on node 2 routes a group send from node 1.
    let (status, _) =
        tokio::task::block_in_place(|| rest(cluster.http(2), "PUT", "/api/v1/hubs/chat/groups/g/users/over-mtls"));
    assert_eq!(status, 202);
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat/groups/g", body).await, 202);
    assert_eq!(next_messages(&mut ws, &mut Vec::new()).await, invocation("encrypted"));

    let stranger = TestCa::new(&cluster.dir.join("foreign")).issue("stranger");
    let stranger_log = cluster.dir.join("stranger.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--access-key", KEY, "--node-id", "9"])
        .args(["--grpc-listen", &format!("127.0.0.1:{}", free_port()), "--role", "edge", "--cluster-secret", SECRET])
        .args(["--join", &format!("localhost:{}", cluster.specs[0].grpc)])
        .args(["--cluster-tls-cert", &text(&stranger.cert), "--cluster-tls-key", &text(&stranger.key)])
        .args(["--cluster-ca", &text(&ca.cert), "--data-dir", &text(&cluster.dir.join("stranger"))])
        .args(["--cluster-tls-name", "switchboard-node"])
        .env("SWITCHBOARD_LOG", "warn,openraft=off")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&stranger_log).expect("a log file")))
        .spawn()
        .expect("the binary runs");
    let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    tokio::task::block_in_place(|| {
        wait_for("node 1 logs the refused peer", Duration::from_secs(20), || {
            read(&cluster.log_path(1)).contains("refused a peer on the gRPC port")
        });
        wait_for("the stranger logs why it cannot join", Duration::from_secs(20), || {
            read(&stranger_log).contains("cannot join the cluster yet")
        });
    });
    let _ = child.kill();
    let _ = child.wait();
    let refusal = read(&cluster.log_path(1));
    assert!(refusal.contains("UnknownIssuer") || refusal.contains("certificate"), "{refusal}");
    assert_eq!(post(cluster.http(2), "/api/v1/hubs/chat/users/over-mtls", body).await, 202, "the cluster is unharmed");
    assert_eq!(next_messages(&mut ws, &mut Vec::new()).await, invocation("encrypted"));
}

/// The ASP.NET backplane bridge on every node of a raft cluster: a publish from an ASP.NET
/// server reaches the clients of every node; a REST broadcast reaches each client once (the
/// cluster delivers it; every node skips its deployment's echo from the backplane).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_cluster_joins_the_aspnet_backplane() {
    let mut cluster = Cluster::new(3, 3);
    let redis = tokio::task::block_in_place(RedisServer::start);
    let hub_type = "Chat.Hubs.ChatHub";
    cluster.extra.extend(["--aspnet-backplane".into(), redis.url(), "--aspnet-hub".into(), format!("chat={hub_type}")]);
    tokio::task::block_in_place(|| cluster.start_all());
    let (mut two, _) = connect_client(cluster.http(2), "two").await;
    let (mut three, _) = connect_client(cluster.http(3), "three").await;
    let publish = |argument: &str| {
        let frame = invocation(argument);
        let payload = switchboard_backplane::Invocation {
            excluded: vec![],
            frames: vec![("json".into(), frame.into())],
            client_result: None,
            origin: None,
        }
        .encode();
        let receivers: usize = redis::cmd("PUBLISH")
            .arg(format!("{hub_type}:all"))
            .arg(payload)
            .query(&mut redis::Client::open(redis.url()).unwrap().get_connection().unwrap())
            .unwrap();
        receivers
    };
    assert_eq!(tokio::task::block_in_place(|| publish("from-aspnet")), 3, "every node listens");
    assert_eq!(next_messages(&mut two, &mut Vec::new()).await, invocation("from-aspnet"));
    assert_eq!(next_messages(&mut three, &mut Vec::new()).await, invocation("from-aspnet"));
    let body = r#"{"target":"m","arguments":["from-rest"]}"#;
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat", body).await, 202);
    tokio::task::block_in_place(|| publish("marker"));
    for ws in [&mut two, &mut three] {
        let mut pending = Vec::new();
        assert_eq!(next_messages(ws, &mut pending).await, invocation("from-rest"));
        assert_eq!(next_messages(ws, &mut pending).await, invocation("marker"), "the REST broadcast came once");
    }
}

/// Client results and server-to-client streams through another node: `:invoke` asked on node
/// 1 reaches the client on node 3, and its Completion comes back as the REST answer; a stream
/// the client on node 3 opened is fed and ended through nodes 1 and 2. On the raft engine (gRPC
/// to the owner) and on the Redis engine (the owner's node channel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_results_and_streams_travel_between_the_owner_and_other_nodes() {
    let mut cluster = Cluster::new(3, 3);
    let upstream = Upstream::start(&mut cluster);
    client_results_and_streams_through_another_node(&mut cluster, upstream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_results_and_streams_travel_through_redis() {
    let (mut cluster, _redis) = tokio::task::block_in_place(|| Cluster::on_redis(3, standalone));
    let upstream = Upstream::start(&mut cluster);
    client_results_and_streams_through_another_node(&mut cluster, upstream).await;
}

async fn client_results_and_streams_through_another_node(cluster: &mut Cluster, upstream: Upstream) {
    tokio::task::block_in_place(|| cluster.start_all());
    let (mut ws, id) = connect_client(cluster.http(3), "answering").await;
    let port = cluster.http(1);
    let path = format!("/api/hubs/chat/connections/{id}/:invoke?api-version=2024-12-01");
    let asked =
        tokio::task::spawn_blocking(move || rest_post_answer(port, &path, r#"{"target":"ask","arguments":["ping"]}"#));
    let invocation = ws.next_record().await;
    assert_eq!((invocation["type"].as_u64(), invocation["target"].as_str()), (Some(1), Some("ask")), "{invocation}");
    assert_eq!(invocation["arguments"], serde_json::json!(["ping"]));
    let invocation_id = invocation["invocationId"].as_str().expect("an invocation id").to_owned();
    let completion = format!(r#"{{"type":3,"invocationId":"{invocation_id}","result":"pong"}}"#) + "\u{1e}";
    ws.send(1, completion.as_bytes()).await;
    let (status, body) = asked.await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"result":"pong"}"#));
    // A connection id that names no live node is unknown everywhere.
    let path = "/api/hubs/chat/connections/AAAAAAAAAAAAAAAAAAAAAA.99/:invoke?api-version=2024-12-01";
    let (status, _) =
        tokio::task::block_in_place(|| rest_post_answer(port, path, r#"{"target":"ask","arguments":[]}"#));
    assert_eq!(status, 404);

    // The client opens a stream; once its invocation reached the app, the app feeds it
    // through the other nodes.
    ws.send(1, b"{\"type\":4,\"invocationId\":\"s1\",\"target\":\"count\",\"arguments\":[]}\x1e").await;
    let asked = tokio::task::block_in_place(|| upstream.requests.recv_timeout(Duration::from_secs(10)));
    assert!(asked.expect("the stream invocation reached the app").contains("\"type\":4"));
    let stream = |verb: &str| format!("/api/hubs/chat/connections/{id}/streams/s1/{verb}?api-version=2024-12-01");
    for (node, item) in [(1, "1"), (2, "{\"two\":2}"), (1, "\"three\"")] {
        assert_eq!(post(cluster.http(node), &stream(":send"), item).await, 202);
    }
    assert_eq!(post(cluster.http(2), &stream(":complete"), "").await, 202);
    assert_eq!(post(cluster.http(1), &stream(":complete"), "").await, 202, ":complete is idempotent");
    assert_eq!(post(cluster.http(1), &stream(":send"), "4").await, 404, "the stream ended");
    let mut received = Vec::new();
    for _ in 0..4 {
        received.push(ws.next_record().await);
    }
    let items: Vec<&serde_json::Value> = received[..3].iter().map(|item| &item["item"]).collect();
    assert_eq!(items, [&serde_json::json!(1), &serde_json::json!({"two": 2}), &serde_json::json!("three")]);
    assert!(received[..3].iter().all(|item| item["type"] == 2 && item["invocationId"] == "s1"), "{received:?}");
    assert_eq!(received[3], serde_json::json!({"type": 3, "invocationId": "s1"}));
}

/// An upstream app that answers every call 200 with no body and hands each request (head and
/// body as text) to the test. The nodes of `cluster` are pointed at it.
struct Upstream {
    requests: std::sync::mpsc::Receiver<String>,
}

impl Upstream {
    fn start(cluster: &mut Cluster) -> Upstream {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port for the app");
        let url = format!("http://{}/{{hub}}/{{category}}/{{event}}", listener.local_addr().unwrap());
        cluster.extra.extend(["--upstream".to_owned(), url]);
        let (tx, requests) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("a socket clones"));
                    let (mut request, mut length) = (String::new(), 0);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                        request.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    let _ = reader.read_exact(&mut body);
                    request.push_str(&String::from_utf8_lossy(&body));
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    if request.to_ascii_lowercase().contains("x-asrs-category: messages") {
                        let _ = tx.send(request);
                    }
                });
            }
        });
        Upstream { requests }
    }
}

/// A Redis Cluster of three masters with a replica each, and the flags that point nodes at it.
fn redis_cluster() -> (RedisCluster, Vec<String>) {
    let redis = RedisCluster::start(3, 1);
    let flags = vec!["--redis-cluster".into(), redis.urls().join(",")];
    (redis, flags)
}

/// A node that hangs (SIGSTOP) keeps its connection to Redis open: once its lease runs out
/// another node closes that connection, so sends stop waiting for it; when it resumes it
/// reconnects and its client is reached again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_is_cut_off_from_redis_and_comes_back() {
    let (mut cluster, _redis) = tokio::task::block_in_place(|| Cluster::on_redis(3, standalone));
    tokio::task::block_in_place(|| cluster.start_all());
    let (mut a, _) = connect_client(cluster.http(1), "a").await;
    let (mut c, _) = connect_client(cluster.http(3), "c").await;
    let (mut pending_a, mut pending_c) = (Vec::new(), Vec::new());
    let pid = cluster.children[2].as_ref().expect("node 3 runs").id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    tokio::task::block_in_place(|| {
        wait_for("the hung node's connection is closed", Duration::from_secs(20), || {
            (1..=2).map(|id| cluster.metric(id, "switchboard_redis_reaped_total")).sum::<u64>() >= 1
        })
    });
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat", &broadcast("while-hung")).await, 202);
    assert_eq!(next_messages(&mut a, &mut pending_a).await, invocation("while-hung"));
    signal("-CONT");
    tokio::task::block_in_place(|| {
        wait_for("the resumed node resubscribed", Duration::from_secs(30), || {
            cluster.metric(3, "switchboard_redis_resubscribes_total") >= 1
        })
    });
    assert_eq!(post(cluster.http(2), "/api/v1/hubs/chat", &broadcast("resumed")).await, 202);
    assert_eq!(next_messages(&mut a, &mut pending_a).await, invocation("resumed"));
    assert_eq!(next_messages(&mut c, &mut pending_c).await, invocation("resumed"));
}

/// Five nodes, a client on each: broadcast, user, group, connection sends through other
/// nodes reach exactly the right clients once; G4 across entry nodes; existence; closes.
async fn rest_calls_reach_clients_on_every_node_exactly_once(cluster: &mut Cluster) {
    tokio::task::block_in_place(|| cluster.start_all());
    let mut clients = Vec::new();
    for id in 1..=5u64 {
        let (ws, connection) = connect_client(cluster.http(id), &format!("u{id}")).await;
        clients.push((ws, connection, Vec::new()));
    }
    // A MessagePack client too: sends enter elsewhere as JSON, its node builds its frames.
    let (mut packed, _) = connect_client_speaking(cluster.http(3), "mp", "messagepack").await;

    // Broadcast through node 2, then a marker: each client sees the broadcast once, then the marker.
    assert_eq!(post(cluster.http(2), "/api/v1/hubs/chat", r#"{"target":"m","arguments":["all"]}"#).await, 202);
    assert_eq!(post(cluster.http(4), "/api/v1/hubs/chat", r#"{"target":"m","arguments":["marker"]}"#).await, 202);
    for (ws, _, pending) in &mut clients {
        assert_eq!(next_messages(ws, pending).await, invocation("all"));
        assert_eq!(next_messages(ws, pending).await, invocation("marker"));
    }

    // A user on node 5, reached through node 1.
    assert_eq!(
        post(cluster.http(1), "/api/v1/hubs/chat/users/u5", r#"{"target":"m","arguments":["to-u5"]}"#).await,
        202
    );
    // Node 4's connection joins a group through node 3 (routed to its owner); a group send
    // through node 5 reaches it.
    let c4 = clients[3].1.clone();
    let (code, _) = tokio::task::block_in_place(|| {
        rest(cluster.http(3), "PUT", &format!("/api/v1/hubs/chat/groups/g/connections/{c4}"))
    });
    assert_eq!(code, 200);
    assert_eq!(
        post(cluster.http(5), "/api/v1/hubs/chat/groups/g", r#"{"target":"m","arguments":["to-g"]}"#).await,
        202
    );
    // A connection on node 3 reached through node 1.
    let c3 = clients[2].1.clone();
    assert_eq!(
        post(
            cluster.http(1),
            &format!("/api/v1/hubs/chat/connections/{c3}"),
            r#"{"target":"m","arguments":["to-c3"]}"#
        )
        .await,
        202
    );
    assert_eq!(post(cluster.http(2), "/api/v1/hubs/chat", r#"{"target":"m","arguments":["end"]}"#).await, 202);
    let expected: [&[&str]; 5] = [&["end"], &["end"], &["to-c3", "end"], &["to-g", "end"], &["to-u5", "end"]];
    for ((ws, _, pending), want) in clients.iter_mut().zip(expected) {
        for argument in want {
            assert_eq!(
                String::from_utf8(next_messages(ws, pending).await).unwrap(),
                String::from_utf8(invocation(argument)).unwrap()
            );
        }
    }
    let to_mp = r#"{"target":"m","arguments":["to-mp"]}"#;
    assert_eq!(post(cluster.http(5), "/api/v1/hubs/chat/users/mp", to_mp).await, 202);
    assert_eq!(messagepack_arguments(&mut packed, 4).await, ["all", "marker", "end", "to-mp"]);

    // The largest REST body (1 MiB) crosses to another node and arrives whole.
    let largest = "z".repeat(switchboard_api::MAX_BODY_BYTES - broadcast("").len());
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat/users/u5", &broadcast(&largest)).await, 202);
    let (ws, _, pending) = &mut clients[4];
    assert!(next_messages(ws, pending).await == invocation(&largest), "the 1 MiB message did not arrive whole");

    // G4: sequential sends to one connection through alternating entry nodes arrive in order.
    let c5 = clients[4].1.clone();
    for i in 0..300 {
        let entry = if i % 2 == 0 { 1 } else { 2 };
        let body = format!(r#"{{"target":"m","arguments":["{i}"]}}"#);
        assert_eq!(post(cluster.http(entry), &format!("/api/v1/hubs/chat/connections/{c5}"), &body).await, 202);
    }
    let (ws, _, pending) = &mut clients[4];
    for i in 0..300 {
        assert_eq!(next_messages(ws, pending).await, invocation(&i.to_string()), "message {i} in order");
    }

    // Existence of users and groups is answered for the whole cluster.
    tokio::task::block_in_place(|| {
        assert_eq!(rest(cluster.http(1), "HEAD", "/api/hubs/chat/users/u5?api-version=2022-06-01").0, 200);
        assert_eq!(rest(cluster.http(2), "HEAD", "/api/hubs/chat/groups/g?api-version=2022-06-01").0, 200);
        assert_eq!(rest(cluster.http(3), "HEAD", "/api/hubs/chat/users/nobody?api-version=2022-06-01").0, 404);
    });

    // `:closeConnections` for a user on node 5, asked on node 1, with a reason.
    let path = "/api/hubs/chat/users/u5/:closeConnections?api-version=2022-06-01&reason=maintenance";
    assert_eq!(post(cluster.http(1), path, "").await, 204);
    let close = String::from_utf8(next_messages(ws, pending).await).unwrap();
    assert!(close.starts_with("{\"type\":7,\"error\":\"maintenance\""), "{close}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_an_edge_node_costs_only_its_own_clients_and_its_routes_are_purged() {
    let mut cluster = Cluster::new(4, 3);
    tokio::task::block_in_place(|| cluster.start_all());
    let (mut survivor, _) = connect_client(cluster.http(2), "stays").await;
    let (_doomed, _) = connect_client(cluster.http(4), "goes").await;
    cluster.kill(4);

    // Sends keep working at once: the dead node is skipped, the others still get them.
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat", r#"{"target":"m","arguments":["after"]}"#).await, 202);
    let mut pending = Vec::new();
    assert_eq!(next_messages(&mut survivor, &mut pending).await, invocation("after"));

    // Its registration (and so its routes) is removed once its lease runs out.
    let purged = tokio::task::block_in_place(|| {
        wait_for("the dead node's routes are purged", Duration::from_secs(20), || {
            let status = status(cluster.http(1));
            status["nodes"].as_array().unwrap().iter().all(|n| n["id"] != 4 || n["lease_expires_at_ms"].is_null())
        })
    });
    eprintln!("routes of the dead edge node purged {purged:?} after it was killed");
    assert!(purged <= Duration::from_secs(10), "lease 6 s + one check period: {purged:?}");
}

/// Negotiates on node `port`; returns (connection id, connection token, client token).
async fn negotiate_on(port: u16, user: &str) -> (String, String, String) {
    let token = switchboard_auth::mint_client_token(
        &format!("http://127.0.0.1:{port}/client/?hub=chat"),
        Some(user),
        Duration::from_secs(60),
        KEY,
    );
    let auth = token.clone();
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let request = format!(
            "POST /client/negotiate?hub=chat&negotiateVersion=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.split_once("\r\n\r\n").unwrap().1.to_owned()
    })
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    (answer["connectionId"].as_str().unwrap().into(), answer["connectionToken"].as_str().unwrap().into(), token)
}

/// One plain HTTP request (no auth header needed: the connection token is the credential).
fn plain(port: u16, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&response[..split]).split(' ').nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_requests_may_land_on_any_node() {
    transport_requests_may_land_on_any_node_of(&mut Cluster::new(3, 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_requests_may_land_on_any_node_through_redis() {
    let (mut cluster, _redis) = tokio::task::block_in_place(|| Cluster::on_redis(5, standalone));
    transport_requests_may_land_on_any_node_of(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_requests_may_land_on_any_node_through_a_redis_cluster() {
    let (mut cluster, _redis) = tokio::task::block_in_place(|| Cluster::on_redis(5, redis_cluster));
    transport_requests_may_land_on_any_node_of(&mut cluster).await;
}

/// WebSockets, Long Polling and SSE requests of one connection arriving at different nodes.
async fn transport_requests_may_land_on_any_node_of(cluster: &mut Cluster) {
    tokio::task::block_in_place(|| cluster.start_all());

    // WebSockets: negotiated on node 1, connected through node 2, reached through node 3.
    let (id, token, client_token) = negotiate_on(cluster.http(1), "ws-user").await;
    let addr = format!("127.0.0.1:{}", cluster.http(2)).parse().unwrap();
    let mut ws = support::WsClient::open(addr, &format!("hub=chat&id={token}&access_token={client_token}"))
        .await
        .expect("upgrade through another node");
    ws.send(1, b"{\"protocol\":\"json\",\"version\":1}\x1e").await;
    assert_eq!(ws.next_data().await, b"{}\x1e");
    assert_eq!(
        post(
            cluster.http(3),
            &format!("/api/v1/hubs/chat/connections/{id}"),
            r#"{"target":"m","arguments":["via-2"]}"#
        )
        .await,
        202
    );
    let mut pending = Vec::new();
    assert_eq!(next_messages(&mut ws, &mut pending).await, invocation("via-2"));

    // Long Polling: negotiated on node 1, polled through node 2, sent through node 3.
    let (lp_id, lp_token, lp_client_token) = negotiate_on(cluster.http(1), "lp-user").await;
    let path = format!("/client/?hub=chat&id={lp_token}&access_token={lp_client_token}");
    let (first_poll, _) = tokio::task::block_in_place(|| plain(cluster.http(2), "GET", &path, b""));
    assert_eq!(first_poll, 200);
    let (sent, _) = tokio::task::block_in_place(|| {
        plain(cluster.http(3), "POST", &path, b"{\"protocol\":\"json\",\"version\":1}\x1e")
    });
    assert_eq!(sent, 200);
    let (polled, body) = tokio::task::block_in_place(|| plain(cluster.http(2), "GET", &path, b""));
    assert_eq!((polled, body), (200, b"{}\x1e".to_vec()));
    assert_eq!(
        post(
            cluster.http(2),
            &format!("/api/v1/hubs/chat/connections/{lp_id}"),
            r#"{"target":"m","arguments":["lp"]}"#
        )
        .await,
        202
    );
    let (polled, body) = tokio::task::block_in_place(|| plain(cluster.http(3), "GET", &path, b""));
    assert_eq!((polled, body), (200, invocation("lp")));
    let (deleted, _) = tokio::task::block_in_place(|| plain(cluster.http(2), "DELETE", &path, b""));
    assert_eq!(deleted, 202);

    // Server-Sent Events: negotiated on node 1, streamed through node 2, handshake posted and
    // a message sent through node 3, ended through node 1.
    let (sse_id, sse_token, sse_client_token) = negotiate_on(cluster.http(1), "sse-user").await;
    let path = format!("/client/?hub=chat&id={sse_token}&access_token={sse_client_token}");
    let mut stream = tokio::task::block_in_place(|| SseReader::open(cluster.http(2), &path));
    stream.read_until(b":\r\n");
    let (sent, _) = tokio::task::block_in_place(|| {
        plain(cluster.http(3), "POST", &path, b"{\"protocol\":\"json\",\"version\":1}\x1e")
    });
    assert_eq!(sent, 200);
    tokio::task::block_in_place(|| stream.read_until(b"data: {}\x1e"));
    let send = format!("/api/v1/hubs/chat/connections/{sse_id}");
    assert_eq!(post(cluster.http(3), &send, r#"{"target":"m","arguments":["sse"]}"#).await, 202);
    let expected = [b"data: ".as_slice(), &invocation("sse")].concat();
    tokio::task::block_in_place(|| stream.read_until(&expected));
    let (deleted, _) = tokio::task::block_in_place(|| plain(cluster.http(1), "DELETE", &path, b""));
    assert_eq!(deleted, 202);
    tokio::task::block_in_place(|| stream.read_to_end());
}

/// An SSE response read as raw bytes as they arrive (chunk framing included, which is fine for
/// finding whole events).
struct SseReader {
    stream: std::net::TcpStream,
    seen: Vec<u8>,
}

impl SseReader {
    fn open(port: u16, target: &str) -> SseReader {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        SseReader { stream, seen: Vec::new() }
    }

    /// Reads until `needle` arrived (a read timeout fails the test).
    fn read_until(&mut self, needle: &[u8]) {
        use std::io::Read;
        let mut buffer = [0u8; 4096];
        while !self.seen.windows(needle.len()).any(|w| w == needle) {
            let n = self.stream.read(&mut buffer).expect("more of the stream within 20 s");
            assert!(n > 0, "the stream ended before {:?}", String::from_utf8_lossy(needle));
            self.seen.extend_from_slice(&buffer[..n]);
        }
        let at = self.seen.windows(needle.len()).position(|w| w == needle).unwrap();
        self.seen.drain(..at + needle.len());
    }

    /// Reads until the server ends the response.
    fn read_to_end(&mut self) {
        use std::io::Read;
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).expect("the stream ends within 20 s");
        assert!(rest.ends_with(b"0\r\n\r\n"), "a chunked response's last chunk: {:?}", String::from_utf8_lossy(&rest));
    }
}

#[test]
fn a_draining_leader_hands_off_leadership_and_exits() {
    let mut cluster = Cluster::new(3, 3);
    cluster.start_all();
    let leader = status(cluster.http(1))["leader"].as_u64().expect("a leader");
    let other = (1..=3).find(|id| *id != leader).unwrap();
    let mut child = cluster.children[(leader - 1) as usize].take().expect("running");
    let terminated = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(terminated.success());
    // Writes through another node keep succeeding while the leader drains and after it left.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut round = 0;
    let exited = loop {
        let write_started = Instant::now();
        assert_eq!(
            rest(cluster.http(other), "PUT", &member_path("drain", &format!("g{round}"))).0,
            200,
            "write {round}"
        );
        slowest = slowest.max(write_started.elapsed());
        round += 1;
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the leader exits within its grace period");
    };
    assert!(exited.success(), "{exited:?}");
    let new_leader = status(cluster.http(other))["leader"].as_u64();
    assert!(new_leader.is_some_and(|l| l != leader), "{new_leader:?}");
    assert_eq!(rest(cluster.http(other), "PUT", &member_path("drain", "after")).0, 200);
    eprintln!("leader {leader} drained in {:?}; slowest write meanwhile {slowest:?}", started.elapsed());
    // About one election timeout at most (see `hand_off_leadership`): the stopping node stops
    // campaigning and leaves the routing table before it stops applying, so no barrier waits on it.
    assert!(slowest < Duration::from_secs(3), "{slowest:?}");
}

/// User and group sends reach only the nodes holding the user or group (routing interest), and
/// fresh interest is visible at once: a user's client is reachable from any node as soon as its
/// handshake is answered, and a connection is reachable through its group as soon as the add
/// answered (G3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_group_sends_follow_routing_interest() {
    let mut cluster = Cluster::new(4, 3);
    tokio::task::block_in_place(|| cluster.start_all());
    let deliveries = |cluster: &Cluster| cluster.metric(1, "switchboard_fanout_deliveries_total");

    // Fresh users, each reached through another node right after connecting.
    let mut clients = Vec::new();
    for i in 0..12u64 {
        let home = 2 + i % 3;
        let (mut ws, id) = connect_client(cluster.http(home), &format!("fresh-{i}")).await;
        let entry = 1 + (home % 4);
        let body = format!(r#"{{"target":"m","arguments":["hello-{i}"]}}"#);
        assert_eq!(post(cluster.http(entry), &format!("/api/v1/hubs/chat/users/fresh-{i}"), &body).await, 202);
        let mut pending = Vec::new();
        assert_eq!(next_messages(&mut ws, &mut pending).await, invocation(&format!("hello-{i}")), "user {i}");
        clients.push((ws, id, pending, home));
    }

    // G3 for connection groups: added through one node, reached through a third right away.
    for (i, (ws, id, pending, home)) in clients.iter_mut().enumerate() {
        let through = 1 + (*home % 4);
        let path = format!("/api/v1/hubs/chat/groups/team-{i}/connections/{id}");
        let (code, _) = tokio::task::block_in_place(|| rest(cluster.http(through), "PUT", &path));
        assert_eq!(code, 200);
        let entry = 1 + ((*home + 1) % 4);
        let body = format!(r#"{{"target":"m","arguments":["team-{i}"]}}"#);
        assert_eq!(post(cluster.http(entry), &format!("/api/v1/hubs/chat/groups/team-{i}"), &body).await, 202);
        assert_eq!(next_messages(ws, pending).await, invocation(&format!("team-{i}")), "group {i}");
    }

    // Only interested nodes get a delivery: a user on node 2 costs node 1 one delivery, a
    // group with members on nodes 2 and 3 two, a broadcast one per other edge node.
    let send_counted = |path: &str| {
        let before = deliveries(&cluster);
        assert_eq!(rest_post(cluster.http(1), path, r#"{"target":"m","arguments":["x"]}"#), 202);
        deliveries(&cluster) - before
    };
    tokio::task::block_in_place(|| {
        assert_eq!(send_counted("/api/v1/hubs/chat/users/fresh-0"), 1, "user on node 2 only");
        assert_eq!(send_counted("/api/v1/hubs/chat/users/nobody"), 0, "nobody anywhere");
        for c in [clients[0].1.clone(), clients[1].1.clone()] {
            let path = format!("/api/v1/hubs/chat/groups/pair/connections/{c}");
            assert_eq!(rest(cluster.http(4), "PUT", &path).0, 200);
        }
        assert_eq!(send_counted("/api/v1/hubs/chat/groups/pair"), 2, "members on nodes 2 and 3");
        assert_eq!(send_counted("/api/v1/hubs/chat"), 3, "broadcast: every other edge node");
    });

    // `ttl=0`: the user's current connections (here on node 3) join the group through node 1,
    // a send through node 2 reaches them at once; leaving through node 4 is seen everywhere.
    let (ws, _, pending, home) = &mut clients[1];
    assert_eq!(*home, 3);
    let (code, _) = tokio::task::block_in_place(|| {
        rest(cluster.http(1), "PUT", "/api/v1/hubs/chat/groups/now/users/fresh-1?ttl=0")
    });
    assert_eq!(code, 202, "the v1 family accepts");
    let body = r#"{"target":"m","arguments":["now"]}"#;
    assert_eq!(post(cluster.http(2), "/api/v1/hubs/chat/groups/now", body).await, 202);
    // (Skipping the "x" sends above, which reached this client through "pair" and the broadcast.)
    let mut next = next_messages(ws, pending).await;
    while next == invocation("x") {
        next = next_messages(ws, pending).await;
    }
    assert_eq!(next, invocation("now"));
    let (code, _) =
        tokio::task::block_in_place(|| rest(cluster.http(4), "DELETE", "/api/v1/hubs/chat/groups/now/users/fresh-1"));
    assert_eq!(code, 202, "the v1 family accepts");
    // A group send right after the leave no longer reaches it: the next message is the marker.
    let body = r#"{"target":"m","arguments":["after-leave"]}"#;
    assert_eq!(post(cluster.http(2), "/api/v1/hubs/chat/groups/now", body).await, 202);
    let body = r#"{"target":"m","arguments":["marker"]}"#;
    assert_eq!(post(cluster.http(2), "/api/v1/hubs/chat/users/fresh-1", body).await, 202);
    assert_eq!(next_messages(ws, pending).await, invocation("marker"));

    // When the user's last connection on node 2 goes, node 2 loses the interest.
    let (ws, _, _, _) = clients.remove(0);
    drop(ws);
    tokio::task::block_in_place(|| {
        wait_for("node 2 stops receiving sends to the departed user", Duration::from_secs(10), || {
            send_counted("/api/v1/hubs/chat/users/fresh-0") == 0
        });
    });
}

/// A POST with a REST token (for the path without its query); returns the status.
fn rest_post(port: u16, path: &str, body: &str) -> u16 {
    rest_post_answer(port, path, body).0
}

/// A REST POST's status and body.
fn rest_post_answer(port: u16, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let audience = format!("http://127.0.0.1:{port}{}", path.split('?').next().unwrap());
    let token = mint_server_token(&audience, Duration::from_secs(60), KEY);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_owned())
}

/// Operators remove stopped nodes for good: a voter (the quorum shrinks with it, writes go on)
/// with `switchboard cluster remove`, an edge node through the REST route; unknown nodes and
/// bad tokens are refused.
#[test]
fn stopped_nodes_are_removed_by_an_admin_command() {
    let mut cluster = Cluster::new(4, 3);
    cluster.start_all();
    cluster.kill(3);
    let ports: Vec<u16> = (1..=4).map(|id| cluster.http(id)).collect();
    let remove = |node: &str, endpoint_node: u64| {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["cluster", "remove", "--node", node, "--access-key", KEY])
            .args(["--endpoint", &format!("http://127.0.0.1:{}", ports[endpoint_node as usize - 1])])
            .env_remove("SWITCHBOARD_CONFIG")
            .output()
            .expect("the binary runs")
    };
    let removed = remove("3", 2);
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    let nodes = |port| -> Vec<(u64, String)> {
        let status = status(port);
        let list = status["nodes"].as_array().unwrap().iter();
        list.map(|n| (n["id"].as_u64().unwrap(), n["state"].as_str().unwrap().to_owned())).collect()
    };
    wait_for("node 3 is gone from every view", Duration::from_secs(10), || {
        [1, 2, 4].iter().all(|id| nodes(cluster.http(*id)).iter().all(|(n, _)| *n != 3))
    });
    let voters = nodes(cluster.http(1)).iter().filter(|(_, s)| s == "leader" || s == "voter").count();
    assert_eq!(voters, 2, "{:?}", nodes(cluster.http(1)));
    assert_eq!(rest(cluster.http(4), "PUT", &member_path("after-removal", "g")).0, 200, "writes go on");

    // An edge node, through the REST route on another node.
    cluster.kill(4);
    let path = "/api/admin/cluster/nodes/4";
    assert_eq!(rest(cluster.http(1), "DELETE", path).0, 200);
    assert!(nodes(cluster.http(2)).iter().all(|(n, _)| *n != 4), "{:?}", nodes(cluster.http(2)));

    // Refusals: an unknown node, a node removing itself, a token for another path.
    let unknown = remove("99", 1);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not in the cluster"));
    assert_eq!(rest(cluster.http(1), "DELETE", "/api/admin/cluster/nodes/1").0, 400);
    assert_eq!(rest(cluster.http(1), "DELETE", "/api/admin/cluster/nodes/x").0, 400);
    let token = mint_server_token(
        &format!("http://127.0.0.1:{}/api/admin/cluster", cluster.http(1)),
        Duration::from_secs(60),
        KEY,
    );
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", cluster.http(1))).unwrap();
    use std::io::{Read, Write};
    let request = format!(
        "DELETE /api/admin/cluster/nodes/2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert_eq!(nodes(cluster.http(2)).len(), 2, "nothing else removed");
}

/// The 2024-12-01 listing and 2023-07-01 `:execute` over a real cluster: a group's connections
/// on three nodes listed through any node, counted, and an OData filter applied through another
/// node reaching the matching clients wherever they are, and no others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_execute_span_the_cluster() {
    let mut cluster = Cluster::new(3, 3);
    tokio::task::block_in_place(|| cluster.start_all());
    let version = "api-version=2024-12-01";
    let mut clients = Vec::new();
    for (node, user) in [(1, "x-ann"), (2, "bob"), (3, "x-cy")] {
        let (ws, id) = connect_client(cluster.http(node), user).await;
        let path = format!("/api/hubs/chat/groups/crew/connections/{id}?{version}");
        assert_eq!(tokio::task::block_in_place(|| rest(cluster.http(node % 3 + 1), "PUT", &path)).0, 200);
        clients.push((ws, id, user));
    }
    let mut ids: Vec<&str> = clients.iter().map(|(_, id, _)| id.as_str()).collect();
    ids.sort();
    for node in 1..=3 {
        let (code, body) = tokio::task::block_in_place(|| {
            rest(cluster.http(node), "GET", &format!("/api/hubs/chat/groups/crew/connections?{version}"))
        });
        assert_eq!(code, 200, "{body}");
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        let listed: Vec<&str> =
            listed["value"].as_array().unwrap().iter().map(|c| c["connectionId"].as_str().unwrap()).collect();
        assert_eq!(listed, ids, "the whole group, sorted, through node {node}");
        let (_, body) = tokio::task::block_in_place(|| {
            rest(cluster.http(node), "GET", &format!("/api/hubs/chat/:count?{version}"))
        });
        assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["count"], 3);
    }
    let filter = "startswith(userId%2C%27x-%27)";
    let body = r#"[{"type":"SendMessage","message":{"target":"m","arguments":["picked"]}}]"#;
    assert_eq!(post(cluster.http(2), &format!("/api/hubs/chat/:execute?filter={filter}&{version}"), body).await, 202);
    let marker = r#"{"target":"m","arguments":["marker"]}"#;
    assert_eq!(post(cluster.http(1), "/api/v1/hubs/chat", marker).await, 202);
    for (ws, _, user) in &mut clients {
        let mut pending = Vec::new();
        let first = next_messages(ws, &mut pending).await;
        if user.starts_with("x-") {
            assert_eq!(first, invocation("picked"), "{user} matched");
            assert_eq!(next_messages(ws, &mut pending).await, invocation("marker"));
        } else {
            assert_eq!(first, invocation("marker"), "{user} did not match: the marker comes first");
        }
    }
}

/// `switchboard cluster status` aligns its columns, shows a stopped node as down once its lease
/// ran out, lists each node's client URL, and names the URL it could not reach.
#[test]
fn cluster_status_shows_down_nodes_client_urls_and_unreachable_urls() {
    let mut cluster = Cluster::new(3, 3);
    cluster.start_all();
    cluster.kill(3);
    wait_for("node 3's lease runs out", Duration::from_secs(20), || {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        status(cluster.http(1))["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == 3 && n["lease_expires_at_ms"].as_u64().is_none_or(|at| at <= now))
    });
    let run = |endpoint: String| {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["cluster", "status", "--access-key", KEY, "--endpoint", &endpoint])
            .env_remove("SWITCHBOARD_CONFIG")
            .output()
            .expect("the binary runs")
    };
    let out = run(format!("http://127.0.0.1:{}", cluster.http(1)));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let address_at = lines[1].find("address").expect("a header row");
    for line in &lines[2..] {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(line.find(cells[2]), Some(address_at), "aligned: {text}");
        match cells[0] {
            "3" => assert_eq!(cells[3], "down", "{text}"),
            id => {
                let port = cluster.http(id.parse().unwrap());
                assert!(line.ends_with(&format!("http://127.0.0.1:{port}")), "client URL: {text}");
            }
        }
    }
    let gone = format!("http://127.0.0.1:{}", cluster.http(3));
    let out = run(gone.clone());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&gone), "{}", String::from_utf8_lossy(&out.stderr));
}
