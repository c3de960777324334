//! Real Redis servers for tests: [`RedisServer`] (standalone, plain or TLS with certificates
//! made by `openssl` for the test) and [`RedisCluster`] (masters with replicas, made with
//! `redis-cli --cluster create`), on free loopback ports, each in a scratch directory, stopped on
//! drop. `redis-server`, `redis-cli` and `openssl` come from Debian's packages (the test script
//! installs them); `SWITCHBOARD_REDIS_SERVER` / `SWITCHBOARD_REDIS_CLI` override the paths.

use crate::{free_port, wait_for};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Bound on a server's start and on a cluster becoming healthy.
const START: Duration = Duration::from_secs(30);

fn program(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

fn path_text(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// One `redis-server` process. See the module docs.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
    /// TLS only: the CA certificate that signed the server's (PEM).
    pub ca_file: Option<PathBuf>,
}

impl RedisServer {
    /// A standalone server with no persistence.
    pub fn start() -> RedisServer {
        Self::start_with(free_port(), &[])
    }

    /// A server on `port` with extra `redis-server` arguments.
    pub fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("switchboard-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut server = RedisServer { port, child: None, dir, extra, ca_file: None };
        server.spawn();
        server
    }

    /// A server that speaks TLS only, with a certificate for 127.0.0.1 signed by a CA made for
    /// the test ([`RedisServer::ca_file`]).
    pub fn start_tls() -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("switchboard-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let ca = crate::tls::TestCa::new(&dir.join("tls"));
        let issued = ca.issue("redis");
        let (cert, key, ca_cert) = (path_text(&issued.cert), path_text(&issued.key), path_text(&ca.cert));
        let port_text = port.to_string();
        let extra = ["--port", "0", "--tls-port", &port_text, "--tls-cert-file", &cert, "--tls-key-file", &key]
            .into_iter()
            .chain(["--tls-ca-cert-file", &ca_cert, "--tls-auth-clients", "no"])
            .map(str::to_owned)
            .collect();
        let ca_file = Some(ca.cert.clone());
        let mut server = RedisServer { port, child: None, dir, extra, ca_file };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.ca_file.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let binary = program("SWITCHBOARD_REDIS_SERVER", "redis-server");
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {binary} ({e}): the test script installs Debian's redis-server"));
        self.child = Some(child);
        let port = self.port;
        match &self.ca_file {
            None => wait_for("redis-server answers PING", START, || ping(port)),
            Some(_) => wait_for("redis-server answers PING over TLS", START, || self.cli(&["ping"]).contains("PONG")),
        };
    }

    /// Kills the server (SIGKILL): its data is gone, as with a crash without persistence.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `redis-cli -p <port> <args>` (over TLS for a TLS server) and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        match &self.ca_file {
            None => cli(self.port, args),
            Some(ca) => {
                let mut tls = vec!["--tls", "--cacert", ca.to_str().expect("a UTF-8 path")];
                tls.extend_from_slice(args);
                cli(self.port, &tls)
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `redis-cli -p <port> <args>`; what it printed.
pub fn cli(port: u16, args: &[&str]) -> String {
    let binary = program("SWITCHBOARD_REDIS_CLI", "redis-cli");
    let output = Command::new(&binary)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary} ({e}): the test script installs Debian's redis-tools"));
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Whether a server on `port` answers PING.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A Redis Cluster on loopback: `masters` masters with `replicas` replicas each.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let count = masters * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| {
                let port = cluster_port();
                let config = format!("nodes-{port}.conf");
                // No diskless-sync delay: a replica is in sync (and may take over) at once.
                RedisServer::start_with(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &config,
                        "--cluster-node-timeout",
                        "2000",
                        "--repl-diskless-sync-delay",
                        "0",
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        let replicas = replicas.to_string();
        args.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        let created = cli(nodes[0].port, &args);
        assert!(created.contains("[OK] All 16384 slots covered"), "redis-cli --cluster create: {created}");
        let cluster = RedisCluster { nodes };
        cluster.wait_healthy();
        wait_for("every replica is in sync with its master", START, || {
            cluster.nodes.iter().all(|n| {
                let role = n.cli(&["info", "replication"]);
                role.contains("role:master") || role.contains("master_link_status:up")
            })
        });
        cluster
    }

    /// Seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_healthy(&self) {
        wait_for("the Redis Cluster reports cluster_state:ok everywhere", START, || {
            self.nodes
                .iter()
                .filter(|n| n.child.is_some())
                .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
        });
    }

    /// Moves the slot of `key` (holding no key) from its master to master `to`, the way a
    /// resharding does (importing, migrating, then the new owner on both sides), and waits
    /// until every running node agrees.
    pub fn move_slot_of(&self, key: &str, to: usize) {
        let from = self.master_of(key);
        assert_ne!(from, to, "{key} is already served by node {to}");
        let slot: u16 = self.nodes[from].cli(&["cluster", "keyslot", key]).trim().parse().expect("a slot number");
        let slot_text = slot.to_string();
        let id = |index: usize| self.nodes[index].cli(&["cluster", "myid"]).trim().to_owned();
        let (source, target) = (id(from), id(to));
        let steps = [
            (to, ["cluster", "setslot", &slot_text, "importing", &source]),
            (from, ["cluster", "setslot", &slot_text, "migrating", &target]),
            (to, ["cluster", "setslot", &slot_text, "node", &target]),
            (from, ["cluster", "setslot", &slot_text, "node", &target]),
        ];
        for (index, args) in steps {
            let answer = self.nodes[index].cli(&args);
            assert_eq!(answer.trim(), "OK", "node {index}: {args:?}");
        }
        wait_for("every node sees the slot's new owner", START, || {
            let port = self.nodes[to].port;
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                n.cli(&["cluster", "nodes"])
                    .lines()
                    .any(|line| line.starts_with(&target) && line.contains(&format!(":{port}@")) && serves(line, slot))
            })
        });
    }

    /// The indexes of the running masters.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some() && self.nodes[i].cli(&["role"]).starts_with("master"))
            .collect()
    }

    /// The index of the running master serving the slot of `key` (a key or a sharded channel).
    pub fn master_of(&self, key: &str) -> usize {
        let running = self.nodes.iter().find(|n| n.child.is_some()).expect("a running node");
        let slot: u16 = running.cli(&["cluster", "keyslot", key]).trim().parse().expect("a slot number");
        let table = running.cli(&["cluster", "nodes"]);
        for line in table.lines() {
            let port: Option<u16> = line.split(' ').nth(1).and_then(|a| a.split(['@', ':']).nth(1)?.parse().ok());
            if serves(line, slot)
                && let Some(index) = self.nodes.iter().position(|n| Some(n.port) == port)
            {
                return index;
            }
        }
        panic!("no master serves slot {slot}: {table}");
    }
}

/// Whether a line of `CLUSTER NODES` is a running master serving `slot`.
fn serves(line: &str, slot: u16) -> bool {
    let fields: Vec<&str> = line.split(' ').collect();
    fields.len() >= 9
        && fields[2].contains("master")
        && !fields[2].contains("fail")
        && fields[8..].iter().any(|range| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(low), Ok(high)) if low <= slot && slot <= high)
        })
}

/// A free port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}
