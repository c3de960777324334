//! The local cluster a chaos run starts and hurts: real `switchboard serve` processes on
//! loopback ports chosen at run time, each with its data directory and a log file (appended
//! across restarts): voters and edge nodes of the raft engine, or nodes of the Redis engine
//! sharing one Redis.

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

/// One node's fixed identity: it keeps its ports and data across restarts.
pub(crate) struct NodeSpec {
    pub(crate) id: u64,
    pub(crate) voter: bool,
    pub(crate) http: u16,
    grpc: u16,
}

pub(crate) struct Cluster {
    binary: PathBuf,
    /// The Redis engine's URL; `None`: the raft engine.
    redis: Option<String>,
    pub(crate) dir: PathBuf,
    pub(crate) key: String,
    pub(crate) specs: Vec<NodeSpec>,
    children: Vec<Option<Child>>,
}

impl Cluster {
    /// Chooses ports and directories for `voters` voters and `edges` edge nodes (not started);
    /// with `redis`, `voters + edges` nodes of the Redis engine.
    pub(crate) fn new(
        binary: &Path,
        dir: PathBuf,
        (voters, edges): (u64, u64),
        redis: Option<String>,
        key: &str,
    ) -> anyhow::Result<Cluster> {
        let mut specs = Vec::new();
        for id in 1..=voters + edges {
            let voter = id <= voters && redis.is_none();
            specs.push(NodeSpec { id, voter, http: free_port()?, grpc: free_port()? });
        }
        let children = specs.iter().map(|_| None).collect();
        Ok(Cluster { binary: binary.to_owned(), redis, dir, key: key.to_owned(), specs, children })
    }

    /// Whether the nodes run the raft engine (and so have a leader).
    pub(crate) fn is_raft(&self) -> bool {
        self.redis.is_none()
    }

    pub(crate) fn endpoint(&self, node: usize) -> Endpoint {
        Endpoint::parse(&format!("http://127.0.0.1:{}", self.specs[node].http)).expect("a loopback endpoint parses")
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
            self.specs.iter().filter(|s| s.voter).map(|s| format!("{}=127.0.0.1:{}", s.id, s.grpc)).collect();
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", spec.http)])
            .args(["--data-dir", &self.dir.join(format!("node-{}", spec.id)).display().to_string()])
            .args(["--access-key", &self.key])
            .args(["--node-id", &spec.id.to_string(), "--shutdown-grace", "1"]);
        if let Some(url) = &self.redis {
            command.args(["--engine", "redis", "--redis", url]);
        } else {
            command.args(["--grpc-listen", &format!("127.0.0.1:{}", spec.grpc), "--cluster-secret", SECRET]);
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
            .env("SWITCHBOARD_LOG", "warn,openraft=off")
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

/// A loopback port free right now (bound and released).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
