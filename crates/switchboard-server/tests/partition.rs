//! A network partition of one raft voter, made real with a network namespace: three
//! `switchboard` processes, one of them (node 1, the voter that initializes the cluster and so
//! most likely leads) alone in a namespace joined to the host by a veth pair. Taking the
//! namespace's end of the link down cuts it off in both directions (the host's end, whose address
//! nodes 2 and 3 also use between themselves, stays up); bringing it up heals.
//!
//! Checks: no split brain (the cut-off node commits nothing; the majority elects a leader and
//! keeps accepting writes), and after healing the node catches up on what it missed.
//!
//! Needs root and iproute2 (`ip netns`), which the test command installs.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use switchboard_auth::mint_server_token;

mod support;

use support::wait_for;

const KEY: &str = "partition-test-key";
const SECRET: &str = "partition-test-secret";
/// Ports inside the namespace (nothing else lives there).
const INNER_GRPC: u16 = 7101;
const INNER_HTTP: u16 = 8101;

/// A port free on `host` right now.
fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0)).unwrap().local_addr().unwrap().port()
}

/// The namespace, the veth pair and the addresses on each side; removed on drop.
struct Namespace {
    name: String,
    host_link: String,
    inner_link: String,
    host_ip: String,
    inner_ip: String,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("iproute2's `ip` runs (installed by scripts/test)");
    assert!(status.success(), "ip {}", args.join(" "));
}

impl Namespace {
    fn create() -> Namespace {
        let tag = std::process::id() % 100_000;
        let name = format!("sbpart{tag}");
        let (host_link, inner_link) = (format!("sbh{tag}"), format!("sbi{tag}"));
        let subnet = format!("10.{}.{}", 100 + tag % 100, tag % 250);
        let (host_ip, inner_ip) = (format!("{subnet}.1"), format!("{subnet}.2"));
        // Leftovers of an earlier run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "delete", &name]).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["link", "delete", &host_link]).stderr(Stdio::null()).status();
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host_link, "type", "veth", "peer", "name", &inner_link]);
        ip(&["link", "set", &inner_link, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_link]);
        ip(&["link", "set", &host_link, "up"]);
        ip(&["netns", "exec", &name, "ip", "addr", "add", &format!("{inner_ip}/30"), "dev", &inner_link]);
        ip(&["netns", "exec", &name, "ip", "link", "set", &inner_link, "up"]);
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        Namespace { name, host_link, inner_link, host_ip, inner_ip }
    }

    fn cut(&self) {
        ip(&["netns", "exec", &self.name, "ip", "link", "set", &self.inner_link, "down"]);
    }

    fn heal(&self) {
        ip(&["netns", "exec", &self.name, "ip", "link", "set", &self.inner_link, "up"]);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "delete", &self.host_link]).status();
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

/// Running nodes, killed on drop (before the namespace goes).
struct Nodes(Vec<Child>, std::path::PathBuf);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// One REST call with a token for its path; `None` when nothing answered in time.
fn rest(host: &str, method: &str, path_and_query: &str, timeout: Duration) -> Option<(u16, String)> {
    let path = path_and_query.split('?').next().unwrap();
    let token = mint_server_token(&format!("http://{host}{path}"), Duration::from_secs(60), KEY);
    let address = host.parse().unwrap();
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    let request = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_owned()))
}

fn member(user: &str, group: &str) -> String {
    format!("/api/hubs/chat/users/{user}/groups/{group}?api-version=2022-06-01")
}

fn leader_seen_by(host: &str) -> Option<u64> {
    let (status, body) = rest(host, "GET", "/api/admin/cluster", Duration::from_secs(5))?;
    (status == 200).then_some(())?;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["leader"].as_u64()
}

#[test]
fn a_partitioned_voter_commits_nothing_and_catches_up_after_healing() {
    let net = Namespace::create();
    // Node 1 inside the namespace; nodes 2 and 3 on the host, their gRPC reachable from node 1
    // through the host's end of the link.
    let hosts = [
        format!("{}:{INNER_HTTP}", net.inner_ip),
        format!("127.0.0.1:{}", free_port("127.0.0.1")),
        format!("127.0.0.1:{}", free_port("127.0.0.1")),
    ];
    let grpc_hosts = [net.inner_ip.clone(), net.host_ip.clone(), net.host_ip.clone()];
    let grpc_ports = [INNER_GRPC, free_port("0.0.0.0"), free_port("0.0.0.0")];
    let voters: Vec<String> = (0..3).map(|i| format!("{}={}:{}", i + 1, grpc_hosts[i], grpc_ports[i])).collect();
    let dir = std::env::temp_dir().join(format!("switchboard-partition-{}", std::process::id()));
    let mut nodes = Nodes(Vec::new(), dir.clone());
    let mut waits = Vec::new();
    for i in 0..3 {
        let mut command = if i == 0 {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &net.name, env!("CARGO_BIN_EXE_switchboard")]);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_switchboard"))
        };
        let grpc_listen =
            if i == 0 { format!("{}:{INNER_GRPC}", net.inner_ip) } else { format!("0.0.0.0:{}", grpc_ports[i]) };
        command
            .args(["serve", "--listen", &hosts[i], "--access-key", KEY])
            .args(["--data-dir", &dir.join(format!("node-{}", i + 1)).display().to_string()])
            .args(["--node-id", &(i + 1).to_string(), "--grpc-listen", &grpc_listen])
            .args(["--advertise", &format!("{}:{}", grpc_hosts[i], grpc_ports[i])])
            .args(["--voter", &voters.join(","), "--cluster-secret", SECRET, "--shutdown-grace", "1"])
            .env("SWITCHBOARD_LOG", "warn,openraft=off")
            .stderr(Stdio::null());
        let (child, ready) = support::spawn_node(&mut command);
        waits.push(ready);
        nodes.0.push(child);
    }
    for (i, ready) in waits.into_iter().enumerate() {
        ready.recv_timeout(Duration::from_secs(90)).unwrap_or_else(|_| panic!("node {} became ready", i + 1));
    }
    let long = Duration::from_secs(15);
    assert_eq!(rest(&hosts[1], "PUT", &member("before", "g"), long).map(|r| r.0), Some(200));
    let leader_before = leader_seen_by(&hosts[1]).expect("a leader");

    net.cut();
    // The majority (nodes 2 and 3) has a leader among them and keeps accepting writes; the
    // first may wait out the apply barrier on node 1 until its lease expires.
    let elected = wait_for("nodes 2 and 3 agree on a leader among them", Duration::from_secs(10), || {
        let seen = (leader_seen_by(&hosts[1]), leader_seen_by(&hosts[2]));
        matches!(seen, (Some(a), Some(b)) if a == b && a != 1)
    });
    eprintln!("leader before the cut: {leader_before}; majority leader settled {elected:?} after the cut");
    for round in 0..5 {
        let host = &hosts[1 + round % 2];
        let written = rest(host, "PUT", &member("during", &format!("g{round}")), long);
        assert_eq!(written.map(|r| r.0), Some(200), "write {round} through the majority");
    }
    // The cut-off node cannot commit: a write through it never answers 2xx.
    let isolated = rest(&hosts[0], "PUT", &member("isolated", "g"), long).map(|r| r.0);
    assert!(!matches!(isolated, Some(200..=299)), "the isolated node committed a write: {isolated:?}");

    net.heal();
    wait_for("node 1 catches up on the majority's writes", Duration::from_secs(30), || {
        (0..5).all(|round| {
            rest(&hosts[0], "GET", &member("during", &format!("g{round}")), Duration::from_secs(5)).map(|r| r.0)
                == Some(200)
        })
    });
    assert_eq!(rest(&hosts[0], "GET", &member("isolated", "g"), long).map(|r| r.0), Some(404), "nothing of its own");
    wait_for("all three agree on one leader", Duration::from_secs(15), || {
        let seen: Vec<Option<u64>> = hosts.iter().map(|h| leader_seen_by(h)).collect();
        seen[0].is_some() && seen.iter().all(|l| *l == seen[0])
    });
    // And the healed cluster takes writes through the formerly isolated node.
    assert_eq!(rest(&hosts[0], "PUT", &member("after", "g"), long).map(|r| r.0), Some(200));
    assert_eq!(rest(&hosts[2], "GET", &member("after", "g"), long).map(|r| r.0), Some(200));
    drop(nodes);
}
