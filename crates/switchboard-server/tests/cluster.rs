//! A cluster of real `switchboard` processes on loopback: formation, status, replicated
//! membership visible on every node once answered (G3), leader loss (G7) and a full restart (G6).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchboard_auth::mint_server_token;

const KEY: &str = "cluster-test-access-key";
const SECRET: &str = "cluster-test-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct NodeSpec {
    id: u64,
    http: u16,
    grpc: u16,
    voter: bool,
}

struct Cluster {
    dir: PathBuf,
    specs: Vec<NodeSpec>,
    children: Vec<Option<Child>>,
}

impl Cluster {
    fn new(nodes: u64, voters: u64) -> Cluster {
        let dir = std::env::temp_dir().join(format!("switchboard-cluster-{}-{}", std::process::id(), free_port()));
        let specs =
            (1..=nodes).map(|id| NodeSpec { id, http: free_port(), grpc: free_port(), voter: id <= voters }).collect();
        let mut cluster = Cluster { dir, specs, children: Vec::new() };
        cluster.children = (0..nodes).map(|_| None).collect();
        cluster
    }

    fn voter_list(&self) -> String {
        let voters: Vec<String> =
            self.specs.iter().filter(|s| s.voter).map(|s| format!("{}=127.0.0.1:{}", s.id, s.grpc)).collect();
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
            "--grpc-listen".into(),
            format!("127.0.0.1:{}", spec.grpc),
            "--cluster-secret".into(),
            SECRET.into(),
            "--shutdown-grace".into(),
            "1".into(),
        ];
        if spec.voter {
            args.extend(["--role".into(), "both".into(), "--voter".into(), self.voter_list()]);
        } else {
            args.extend(["--role".into(), "edge".into(), "--join".into(), format!("127.0.0.1:{}", self.specs[0].grpc)]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(&args)
            .env("SWITCHBOARD_LOG", "warn,openraft=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (ready, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if BufReader::new(stdout).read_line(&mut line).is_ok() {
                let _ = ready.send(line);
            }
        });
        self.children[(id - 1) as usize] = Some(child);
        ready_rx
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
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
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

fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
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
