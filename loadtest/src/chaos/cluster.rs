//! The local cluster a chaos run starts and hurts: real `switchboard serve` processes on
//! loopback ports chosen at run time, each with its data directory and a log file (appended
//! across restarts): voters and edge nodes of the raft engine, or nodes of the Redis engine
//! sharing one Redis.
//!
//! With a partition (`--partition`), node 1 lives alone in a network namespace joined to the
//! host by a veth pair (root and iproute2's `ip` needed); the other nodes listen on the host's
//! end of the link. Taking the namespace's end down cuts node 1 off in both directions.

use crate::client::Endpoint;
use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use switchboard_auth::mint_server_token;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a node may take to print its connection string.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a drained node may take to exit (its grace period is one second).
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const SECRET: &str = "chaos-cluster-secret";

/// One node's fixed identity: it keeps its address, ports and data across restarts.
pub(crate) struct NodeSpec {
    pub(crate) id: u64,
    pub(crate) voter: bool,
    ip: String,
    pub(crate) http: u16,
    grpc: u16,
}

/// Node 1's network namespace and the veth pair that joins it to the host; removed on drop.
struct Namespace {
    name: String,
    host_link: String,
    inner_link: String,
}

/// Ports inside the namespace (nothing else lives there).
const INNER_HTTP: u16 = 8101;
const INNER_GRPC: u16 = 7101;

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new("ip").args(args).stderr(Stdio::null()).status();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(_) => bail!("`ip {}` failed (a partition needs root)", args.join(" ")),
        Err(e) => bail!("cannot run iproute2's `ip` (a partition needs it): {e}"),
    }
}

/// Runs `nft` in namespace `namespace` with `script` (one command, or a ruleset) on stdin.
fn nft(namespace: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.context("cannot run `ip netns exec … nft` (a lossy link needs iproute2 and nftables)")?;
    child.stdin.take().context("nft's stdin")?.write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "`nft` failed (a lossy link needs root and nftables): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

impl Namespace {
    /// Creates the namespace; returns it with the host's and the namespace's addresses.
    fn create() -> anyhow::Result<(Namespace, String, String)> {
        let tag = std::process::id() % 100_000;
        let name = format!("sbchaos{tag}");
        let (host_link, inner_link) = (format!("sbch{tag}"), format!("sbci{tag}"));
        let subnet = format!("10.{}.{}", 200 + tag % 50, tag % 250);
        let (host_ip, inner_ip) = (format!("{subnet}.1"), format!("{subnet}.2"));
        // Leftovers of an earlier run with the same pid would make `add` fail.
        let _ = ip(&["netns", "delete", &name]);
        let _ = ip(&["link", "delete", &host_link]);
        ip(&["netns", "add", &name])?;
        let namespace = Namespace { name, host_link, inner_link };
        let (name, host_link, inner_link) = (&namespace.name, &namespace.host_link, &namespace.inner_link);
        ip(&["link", "add", host_link, "type", "veth", "peer", "name", inner_link])?;
        ip(&["link", "set", inner_link, "netns", name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", host_link])?;
        ip(&["link", "set", host_link, "up"])?;
        ip(&["-n", name, "addr", "add", &format!("{inner_ip}/30"), "dev", inner_link])?;
        ip(&["-n", name, "link", "set", inner_link, "up"])?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok((namespace, host_ip, inner_ip))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["link", "delete", &self.host_link]);
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// A redis-server the run started: its binary and port stay for restarts.
struct RedisServer {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
}

pub(crate) struct Cluster {
    /// Dropped after the children (fields drop in order): node 1's namespace, if any.
    children: Vec<Option<Child>>,
    namespace: Option<Namespace>,
    binary: PathBuf,
    /// The Redis engine's URL (`redis://127.0.0.1:port`); `None`: the raft engine.
    pub(crate) redis: Option<String>,
    /// Each node on its own, with no engine flags: what `serve` runs by default (for one node;
    /// not with `redis`).
    pub(crate) standalone: bool,
    /// The harness's own redis-server, if it started one.
    redis_server: Option<RedisServer>,
    /// The nodes' `--upstream` URL template, if any.
    pub(crate) upstream: Option<String>,
    /// The nodes' log filter (`SWITCHBOARD_LOG`).
    pub(crate) log: String,
    /// The address every node can reach the harness at (upstream, clients).
    pub(crate) host_ip: String,
    pub(crate) dir: PathBuf,
    pub(crate) key: String,
    pub(crate) specs: Vec<NodeSpec>,
}

impl Cluster {
    /// Chooses addresses, ports and directories for `voters` voters and `edges` edge nodes
    /// (not started); with `redis`, `voters + edges` nodes of the Redis engine (`Some("")`: on
    /// a Redis [`Cluster::start_redis`] starts once the addresses are known); with
    /// `partition`, node 1 in a namespace of its own.
    pub(crate) fn new(
        binary: &Path,
        dir: PathBuf,
        (voters, edges): (u64, u64),
        redis: Option<String>,
        partition: bool,
        key: &str,
    ) -> anyhow::Result<Cluster> {
        let (namespace, host_ip, inner_ip) = match partition {
            true => {
                let (namespace, host_ip, inner_ip) = Namespace::create()?;
                (Some(namespace), host_ip, Some(inner_ip))
            }
            false => (None, "127.0.0.1".to_owned(), None),
        };
        let mut specs = Vec::new();
        for id in 1..=voters + edges {
            let voter = id <= voters && redis.is_none();
            let spec = match (&inner_ip, id) {
                (Some(inner), 1) => NodeSpec { id, voter, ip: inner.clone(), http: INNER_HTTP, grpc: INNER_GRPC },
                _ => {
                    NodeSpec { id, voter, http: free_port(&host_ip)?, grpc: free_port(&host_ip)?, ip: host_ip.clone() }
                }
            };
            specs.push(spec);
        }
        let children = specs.iter().map(|_| None).collect();
        let binary = binary.to_owned();
        let log = "warn,openraft=off".to_owned();
        Ok(Cluster {
            children,
            namespace,
            binary,
            redis,
            standalone: false,
            redis_server: None,
            upstream: None,
            log,
            host_ip,
            dir,
            key: key.to_owned(),
            specs,
        })
    }

    /// Whether node 1 can be cut off (it lives in a namespace).
    pub(crate) fn can_partition(&self) -> bool {
        self.namespace.is_some()
    }

    /// Cuts node 1 off from every other node and the clients (`true`), or heals (`false`).
    pub(crate) fn cut(&self, cut: bool) -> anyhow::Result<()> {
        let namespace = self.namespace.as_ref().context("no node lives in a namespace")?;
        ip(&["-n", &namespace.name, "link", "set", &namespace.inner_link, if cut { "down" } else { "up" }])
    }

    /// Makes node 1's link lose `percent` of its packets each way (`Some`), or heals it
    /// (`None`): a slow, lossy link, TCP retransmitting (nftables in its namespace; `tc netem`
    /// delays are not available on every kernel).
    pub(crate) fn lossy(&self, percent: Option<u32>) -> anyhow::Result<()> {
        let namespace = self.namespace.as_ref().context("no node lives in a namespace")?;
        let Some(percent) = percent else {
            return nft(&namespace.name, "delete table inet sbchaos");
        };
        let rules = format!(
            "table inet sbchaos {{\n\
             chain lose_in {{ type filter hook input priority 0; numgen random mod 100 < {percent} drop; }}\n\
             chain lose_out {{ type filter hook output priority 0; numgen random mod 100 < {percent} drop; }}\n}}\n"
        );
        nft(&namespace.name, &rules)
    }

    /// Whether the nodes run the raft engine (and so have a leader).
    pub(crate) fn is_raft(&self) -> bool {
        self.redis.is_none() && !self.standalone
    }

    pub(crate) fn endpoint(&self, node: usize) -> Endpoint {
        let spec = &self.specs[node];
        Endpoint::parse(&format!("http://{}:{}", spec.ip, spec.http)).expect("an IPv4 endpoint parses")
    }

    pub(crate) fn log_path(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node-{}.log", self.specs[node].id))
    }

    /// Starts every node and waits until each serves.
    pub(crate) async fn start_all(&mut self) -> anyhow::Result<()> {
        let mut waits = Vec::new();
        for node in 0..self.specs.len() {
            waits.push(self.spawn(node)?);
        }
        for (node, ready) in waits.into_iter().enumerate() {
            self.await_ready(node, ready).await?;
        }
        Ok(())
    }

    /// Starts node `node` again (its data directory kept) and waits until it serves.
    pub(crate) async fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        let ready = self.spawn(node)?;
        self.await_ready(node, ready).await
    }

    fn spawn(&mut self, node: usize) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
        let spec = &self.specs[node];
        let voters: Vec<String> =
            self.specs.iter().filter(|s| s.voter).map(|s| format!("{}={}:{}", s.id, s.ip, s.grpc)).collect();
        let mut command = match (&self.namespace, spec.id) {
            (Some(namespace), 1) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &namespace.name]).arg(&self.binary);
                command
            }
            _ => Command::new(&self.binary),
        };
        command
            .arg("serve")
            .args(["--listen", &format!("{}:{}", spec.ip, spec.http)])
            .args(["--data-dir", &self.dir.join(format!("node-{}", spec.id)).display().to_string()])
            .args(["--access-key", &self.key])
            .args(["--node-id", &spec.id.to_string(), "--shutdown-grace", "1"]);
        if let Some(upstream) = &self.upstream {
            command.args(["--upstream", upstream]);
        }
        if let Some(url) = &self.redis {
            // Node 1 in its namespace reaches the host's loopback Redis at the host's address.
            let url = match self.namespace {
                Some(_) if spec.id == 1 => url.replace("127.0.0.1", &self.host_ip),
                _ => url.clone(),
            };
            command.args(["--engine", "redis", "--redis", &url]);
        } else if !self.standalone {
            command.args(["--grpc-listen", &format!("{}:{}", spec.ip, spec.grpc), "--cluster-secret", SECRET]);
            if spec.voter {
                command.args(["--role", "both", "--voter", &voters.join(",")]);
            } else {
                let joins: Vec<&str> =
                    voters.iter().map(|v| v.split_once('=').map_or(v.as_str(), |(_, a)| a)).collect();
                command.args(["--role", "edge", "--join", &joins.join(",")]);
            }
        }
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(node))?;
        let mut child = command
            .env("SWITCHBOARD_LOG", &self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let (ready, ready_rx) = tokio::sync::oneshot::channel();
        // The first line is the connection string, printed once the node serves; the rest
        // is read so the node never blocks on a full pipe.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            if let Ok(Some(_)) = lines.next_line().await {
                let _ = ready.send(());
                while let Ok(Some(_)) = lines.next_line().await {}
            }
        });
        self.children[node] = Some(child);
        Ok(ready_rx)
    }

    async fn await_ready(&mut self, node: usize, ready: tokio::sync::oneshot::Receiver<()>) -> anyhow::Result<()> {
        match tokio::time::timeout(READY_TIMEOUT, ready).await {
            Ok(Ok(())) => Ok(()),
            _ => bail!(
                "node {} did not start within {} s (its log: {})",
                self.specs[node].id,
                READY_TIMEOUT.as_secs(),
                self.log_path(node).display()
            ),
        }
    }

    pub(crate) fn pid(&self, node: usize) -> Option<u32> {
        self.children[node].as_ref().and_then(Child::id)
    }

    /// `kill -9`, and waits for the process to be gone.
    pub(crate) async fn kill(&mut self, node: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.children[node].take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM (a drain), and waits for the process to exit.
    pub(crate) async fn terminate(&mut self, node: usize) -> anyhow::Result<()> {
        self.signal(node, Signal::TERM)?;
        if let Some(mut child) = self.children[node].take()
            && tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await.is_err()
        {
            child.kill().await?;
            bail!("node {} did not exit within {} s of SIGTERM", self.specs[node].id, EXIT_TIMEOUT.as_secs());
        }
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`).
    pub(crate) fn pause(&self, node: usize, paused: bool) -> anyhow::Result<()> {
        self.signal(node, if paused { Signal::STOP } else { Signal::CONT })
    }

    fn signal(&self, node: usize, signal: Signal) -> anyhow::Result<()> {
        let pid = self.pid(node).and_then(|pid| Pid::from_raw(pid as i32)).context("the node is not running")?;
        kill_process(pid, signal)?;
        Ok(())
    }

    /// Starts `binary` (a redis-server) for the Redis engine on a free port, listening on
    /// loopback and, with a namespace, on the host's side of it; durable (every write in the
    /// append-only file before it is answered), so memberships survive its restarts.
    pub(crate) async fn start_redis(&mut self, binary: &Path) -> anyhow::Result<()> {
        let port = match &self.redis_server {
            Some(running) => running.port,
            None => free_port("127.0.0.1")?,
        };
        let dir = self.dir.join("redis");
        std::fs::create_dir_all(&dir)?;
        let bind = if self.namespace.is_some() { format!("127.0.0.1 {}", self.host_ip) } else { "127.0.0.1".into() };
        let log = std::fs::File::create(self.dir.join("redis.log"))?;
        let child = Command::new(binary)
            // Protected mode would refuse node 1: it connects from outside loopback.
            .args(["--port", &port.to_string(), "--bind", &bind, "--save", "", "--protected-mode", "no"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir", &dir.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.redis_server = Some(RedisServer { child: Some(child), binary: binary.to_owned(), port });
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} did not listen on port {port} (its log: {})",
                    binary.display(),
                    self.dir.join("redis.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.redis = Some(format!("redis://127.0.0.1:{port}"));
        Ok(())
    }

    /// Whether the run started the Redis (and so can kill it).
    pub(crate) fn owns_redis(&self) -> bool {
        self.redis_server.is_some()
    }

    /// `kill -9` of the run's redis-server.
    pub(crate) async fn kill_redis(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.redis_server.as_mut().and_then(|r| r.child.take()) {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts the run's redis-server again, on its port and its append-only file.
    pub(crate) async fn restart_redis(&mut self) -> anyhow::Result<()> {
        let binary = self.redis_server.as_ref().context("the run started no Redis")?.binary.clone();
        self.start_redis(&binary).await
    }

    /// Stops every node (`kill -9`: nothing is checked after this).
    pub(crate) async fn stop_all(&mut self) {
        for node in 0..self.children.len() {
            let _ = self.kill(node).await;
        }
    }

    /// `GET /api/admin/node` of node `node`: its readiness, raft numbers and process stats.
    pub(crate) async fn node_stats(&self, node: usize) -> Option<serde_json::Value> {
        let (status, body) = self.get(node, "/api/admin/node").await?;
        (status == 200).then(|| serde_json::from_slice(&body).ok()).flatten()
    }

    /// A GET with a REST token, bounded in time; `None` when the node does not answer.
    pub(crate) async fn get(&self, node: usize, path_and_query: &str) -> Option<(u16, Vec<u8>)> {
        let endpoint = self.endpoint(node);
        let path = path_and_query.split('?').next().unwrap_or_default();
        let token = mint_server_token(&format!("{}{path}", endpoint.url), Duration::from_secs(600), &self.key);
        let head = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
            endpoint.host
        );
        let request = async {
            let mut wire = crate::wire::Wire::connect(endpoint.addr, None).await?;
            wire.request(&head, &[]).await
        };
        tokio::time::timeout(Duration::from_secs(5), request).await.ok()?.ok()
    }
}

/// A port free on `ip` right now (bound and released), below Linux's ephemeral range
/// (32768 and up), so no connection the nodes open meanwhile takes it as its source port.
fn free_port(ip: &str) -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    let start = (std::process::id() % u32::from(COUNT)) as u16;
    for _ in 0..COUNT {
        let port = FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT;
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on {ip} between {FIRST} and {}", FIRST + COUNT)
}
