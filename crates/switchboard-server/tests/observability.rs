//! The internal endpoint of a real `switchboard` process: metrics that move with the load,
//! probes through start and drain, and access keys rotated by editing the key file.

mod support;

use support::{free_port, wait_for};

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use switchboard_auth::{mint_client_token, mint_server_token};

const KEY: &str = "observability-test-key";

/// A node process with its public and internal ports; killed on drop.
struct Process {
    child: Child,
    http: u16,
    internal: u16,
    dir: PathBuf,
}

impl Process {
    fn start(extra: &[&str]) -> Process {
        let (http, internal) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("switchboard-obs-{}-{http}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (child, ready) = support::spawn_node(
            Command::new(env!("CARGO_BIN_EXE_switchboard"))
                .args(["serve", "--listen", &format!("127.0.0.1:{http}")])
                .args(["--internal-listen", &format!("127.0.0.1:{internal}")])
                .args(["--data-dir", &dir.display().to_string()])
                .args(extra)
                .env("SWITCHBOARD_LOG", "warn")
                .stderr(Stdio::null()),
        );
        ready.recv_timeout(Duration::from_secs(30)).expect("the node prints its connection string");
        Process { child, http, internal, dir }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
        assert!(status.unwrap().success());
    }

    fn metrics(&self) -> String {
        let (status, body) = http(self.internal, "GET", "/metrics", &[], "");
        assert_eq!(status, 200);
        body
    }

    /// The value of one series, e.g. `switchboard_connects_total{transport="websockets"}`.
    fn metric(&self, series: &str) -> f64 {
        let text = self.metrics();
        let line = text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
        line.unwrap_or_else(|| panic!("no {series} in\n{text}")).rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// A REST call signed with `key`; returns the status.
    fn rest(&self, key: &str, method: &str, path: &str, body: &str) -> u16 {
        let token = mint_server_token(&format!("http://127.0.0.1:{}{path}", self.http), Duration::from_secs(60), key);
        let auth = format!("Bearer {token}");
        http(self.http, method, path, &[("Authorization", &auth)], body).0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.1 request (Connection: close); returns status and body.
fn http(port: u16, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_owned())
}

async fn connect(port: u16, key: &str) -> support::WsClient {
    let token =
        mint_client_token(&format!("http://127.0.0.1:{port}/client/?hub=chat"), None, Duration::from_secs(60), key);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut ws = support::WsClient::open(addr, &format!("hub=chat&access_token={token}")).await.expect("upgrade");
    ws.send(1, b"{\"protocol\":\"json\",\"version\":1}\x1e").await;
    assert_eq!(ws.next_data().await, b"{}\x1e");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_load() {
    let node = Process::start(&["--access-key", KEY]);
    let (http, internal) = (node.http, node.internal);
    assert_eq!(http_get(internal, "/healthz").await, (200, "ok".to_owned()));
    assert_eq!(http_get(internal, "/readyz").await, (200, "ready".to_owned()));
    let node = std::sync::Arc::new(node);

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(http, KEY).await);
    }
    let broadcast = "/api/v1/hubs/chat";
    let body = r#"{"target":"m","arguments":["x"]}"#;
    for _ in 0..5 {
        let node = node.clone();
        assert_eq!(blocking(move || node.rest(KEY, "POST", broadcast, body)).await, 202);
    }
    // A data frame may carry several messages.
    for client in &mut clients {
        let mut received = 0;
        while received < 5 {
            let data = client.next_data().await;
            received += data.split(|b| *b == 0x1e).filter(|m| m.starts_with(b"{\"type\":1")).count();
        }
        assert_eq!(received, 5);
    }
    let refused = node.clone();
    assert_eq!(blocking(move || refused.rest("wrong-key", "POST", broadcast, body)).await, 401);
    // A client token signed with another key: refused before any connection exists.
    let token =
        mint_client_token(&format!("http://127.0.0.1:{http}/client/?hub=chat"), None, Duration::from_secs(60), "x");
    let addr = format!("127.0.0.1:{http}").parse().unwrap();
    assert_eq!(support::WsClient::open(addr, &format!("hub=chat&access_token={token}")).await.err(), Some(401));
    // One client leaves with a close frame.
    let mut leaving = clients.pop().unwrap();
    leaving.send(8, &[0x03, 0xe8]).await;
    let node2 = node.clone();
    blocking(move || {
        wait_for("the disconnect is counted", Duration::from_secs(10), || {
            node2.metric("switchboard_disconnects_total{reason=\"client_closed\"}") == 1.0
        })
    })
    .await;

    let m = node.clone();
    blocking(move || {
        assert_eq!(m.metric("switchboard_connections{transport=\"websockets\",protocol=\"json\"}"), 2.0);
        assert_eq!(m.metric("switchboard_connects_total{transport=\"websockets\"}"), 3.0);
        assert_eq!(m.metric("switchboard_messages_out_total{route=\"broadcast\"}"), 15.0);
        assert_eq!(m.metric("switchboard_rest_requests_total{route=\"broadcast\",status=\"202\"}"), 5.0);
        assert_eq!(m.metric("switchboard_rest_requests_total{route=\"broadcast\",status=\"401\"}"), 1.0);
        assert_eq!(m.metric("switchboard_rest_request_duration_seconds_count{route=\"broadcast\"}"), 6.0);
        assert_eq!(m.metric("switchboard_connect_failures_total{reason=\"unauthorized\"}"), 1.0);
        assert!(m.metric("switchboard_bytes_out_total") > 15.0 * 30.0);
        assert!(m.metric("switchboard_bytes_in_total") > 0.0);
        assert!(m.metric("process_resident_memory_bytes") > 1e6);
        assert!(m.metric("process_open_fds") >= 3.0);
        assert_eq!(m.metric("switchboard_raft_leader"), 1.0);
        assert_eq!(m.metric("switchboard_ready"), 1.0);
    })
    .await;
    drop(clients);
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn http_get(port: u16, path: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || http(port, "GET", path, &[], "")).await.unwrap()
}

/// A Long Polling client that stops polling keeps its connection through the drain (it cannot
/// be told to leave until it polls), which holds the node in the draining state long enough
/// to watch `/readyz`.
#[test]
fn readiness_turns_not_serving_while_draining() {
    let node = Process::start(&["--access-key", KEY, "--shutdown-grace", "5"]);
    let token = mint_client_token(
        &format!("http://127.0.0.1:{}/client/?hub=chat", node.http),
        None,
        Duration::from_secs(60),
        KEY,
    );
    let auth = format!("Bearer {token}");
    let (status, body) =
        http(node.http, "POST", "/client/negotiate?hub=chat&negotiateVersion=1", &[("Authorization", &auth)], "");
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = answer["connectionToken"].as_str().unwrap().to_owned();
    let target = format!("/client/?hub=chat&id={id}");
    assert_eq!(http(node.http, "GET", &target, &[("Authorization", &auth)], "").0, 200);
    let handshake = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
    assert_eq!(http(node.http, "POST", &target, &[("Authorization", &auth)], handshake).0, 200);
    wait_for("the connection is counted", Duration::from_secs(10), || {
        node.metric("switchboard_connections{transport=\"longpolling\",protocol=\"json\"}") == 1.0
    });
    assert_eq!(http(node.internal, "GET", "/readyz", &[], ""), (200, "ready".to_owned()));

    node.signal("TERM");
    wait_for("/readyz answers 503 draining", Duration::from_secs(4), || {
        http(node.internal, "GET", "/readyz", &[], "") == (503, "draining".to_owned())
    });
    assert_eq!(http(node.internal, "GET", "/healthz", &[], "").0, 200, "alive while draining");
}

/// Keys come from a file; a token of a key that stays keeps working while the other is
/// replaced, and a removed key is refused once the node reloads (on SIGHUP, or by itself
/// when the file changes).
#[test]
fn access_keys_rotate_through_the_key_file() {
    let dir = std::env::temp_dir().join(format!("switchboard-keys-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("access-keys");
    std::fs::write(&file, "old-primary-key\nsecondary-key\n").unwrap();
    let node = Process::start(&["--access-key-file", &file.display().to_string()]);
    let send = |key: &str| node.rest(key, "POST", "/api/v1/hubs/chat", r#"{"target":"m","arguments":[]}"#);
    assert_eq!(send("old-primary-key"), 202);
    assert_eq!(send("secondary-key"), 202);
    assert_eq!(send("new-primary-key"), 401);

    // Replace the primary and tell the node.
    std::fs::write(&file, "new-primary-key\nsecondary-key\n").unwrap();
    node.signal("HUP");
    wait_for("the new key is accepted", Duration::from_secs(5), || send("new-primary-key") == 202);
    assert_eq!(send("old-primary-key"), 401, "a removed key is refused after the reload");
    assert_eq!(send("secondary-key"), 202, "the kept key worked throughout");

    // Without a signal the node notices the change by itself.
    std::fs::write(&file, "new-primary-key\n").unwrap();
    wait_for("the removed secondary is refused", Duration::from_secs(15), || send("secondary-key") == 401);
    assert_eq!(send("new-primary-key"), 202);

    let _ = std::fs::remove_dir_all(&dir);
}

/// `cluster status` run next to a node whose public endpoint differs from the address asked (a
/// pod asked on 127.0.0.1 behind a public URL): the node's config file supplies the audience,
/// the key file the key.
#[test]
fn cluster_status_signs_for_the_nodes_public_endpoint() {
    let dir = std::env::temp_dir().join(format!("switchboard-status-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("switchboard.toml");
    std::fs::write(&config, "endpoint = \"https://switchboard.example.com\"\n").unwrap();
    let keys = dir.join("access-keys");
    std::fs::write(&keys, format!("{KEY}\n")).unwrap();
    let node = Process::start(&["--config", &config.display().to_string(), "--access-key", KEY]);
    let status = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["cluster", "status", "--endpoint", &format!("http://127.0.0.1:{}", node.http)])
            .args(extra)
            .env_remove("SWITCHBOARD_CONFIG")
            .output()
            .expect("the binary runs")
    };
    let asked_plainly = status(&["--access-key-file", &keys.display().to_string()]);
    assert_eq!(asked_plainly.status.code(), Some(1), "the audience names 127.0.0.1, which the node refuses");
    assert!(String::from_utf8_lossy(&asked_plainly.stderr).contains("401"));
    let with_config =
        status(&["--access-key-file", &keys.display().to_string(), "--config", &config.display().to_string()]);
    let stdout = String::from_utf8_lossy(&with_config.stdout);
    assert!(with_config.status.success(), "{}", String::from_utf8_lossy(&with_config.stderr));
    assert!(stdout.starts_with("leader: 1"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
