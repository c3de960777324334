//! The scenarios: connection ramp-up and hold, and REST broadcast fan-out.

use crate::client::{self, Target, now_us};
use crate::proc_stats::{self, Usage};
use crate::report::{Counters, percentiles};
use crate::{Protocol, Transport};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_auth::{mint_client_token, mint_server_token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Options every scenario takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Common {
    /// The node's endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// Access key of the node.
    #[arg(long, env = "SWITCHBOARD_ACCESS_KEY")]
    access_key: String,
    #[arg(long, default_value = "bench")]
    hub: String,
    /// Connections to open.
    #[arg(long, default_value_t = 100)]
    connections: u64,
    /// New connections per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    #[arg(long, value_enum, default_value_t = Transport::Websockets)]
    transport: Transport,
    #[arg(long, value_enum, default_value_t = Protocol::Json)]
    protocol: Protocol,
    /// Seconds to hold the connections after they are open (connect scenario).
    #[arg(long, default_value_t = 2)]
    hold: u64,
    /// Process id of the server, to read its memory and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Loopback source addresses to spread connections over (127.0.0.1 ..).
    #[arg(long, default_value_t = 32)]
    sources: u8,
    /// Upper bound on the whole run, in seconds.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
}

struct Run {
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    base_usage: Option<Usage>,
    open_usage: Option<Usage>,
    connect_seconds: f64,
    deadline: Instant,
}

fn endpoint_addr(endpoint: &str) -> anyhow::Result<SocketAddr> {
    let rest = endpoint.strip_prefix("http://").context("the endpoint must be http://host:port")?;
    let host_port = rest.trim_end_matches('/');
    host_port.to_socket_addrs()?.next().context("the endpoint does not resolve")
}

/// Who the connections are: anonymous, or user `u{i}` for connection `i`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Identity {
    Anonymous,
    UserPerConnection,
}

/// Opens the connections at the requested rate and waits until each has connected or failed.
async fn open_connections(common: &Common, identity: Identity) -> anyhow::Result<Run> {
    let deadline = Instant::now() + Duration::from_secs(common.max_seconds);
    let addr = endpoint_addr(&common.endpoint)?;
    let audience = format!("{}/client/?hub={}", common.endpoint.trim_end_matches('/'), common.hub);
    let target_for = |user: Option<&str>| {
        Arc::new(Target {
            addr,
            hub: common.hub.clone(),
            token: mint_client_token(&audience, user, Duration::from_secs(3600), &common.access_key),
            transport: common.transport,
            protocol: common.protocol,
        })
    };
    let anonymous = target_for(None);
    let counters = Arc::new(Counters::new());
    let (stop, stopped) = watch::channel(false);
    let base_usage = common.server_pid.map(proc_stats::read).transpose()?;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / common.rate.max(1) as f64);
    for i in 0..common.connections {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % common.sources.max(1) as u64) as u8));
        let target = match identity {
            Identity::Anonymous => anonymous.clone(),
            Identity::UserPerConnection => target_for(Some(&format!("u{i}"))),
        };
        tokio::spawn(client::run(target, source, counters.clone(), stopped.clone()));
        let due = started + interval.mul_f64((i + 1) as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        if Instant::now() > deadline {
            bail!("time limit reached while connecting");
        }
    }
    while Counters::get(&counters.connected) + Counters::get(&counters.failed) < common.connections {
        if Instant::now() > deadline {
            bail!("time limit reached while connecting");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    // Let the server settle (allocator, task wake-ups) before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open_usage = common.server_pid.map(proc_stats::read).transpose()?;
    Ok(Run { counters, stop, base_usage, open_usage, connect_seconds, deadline })
}

fn connection_report(common: &Common, run: &Run) -> Value {
    let connected = Counters::get(&run.counters.connected);
    let mut report = json!({
        "transport": format!("{:?}", common.transport),
        "protocol": format!("{:?}", common.protocol),
        "attempts": Counters::get(&run.counters.attempts),
        "connected": connected,
        "failed": Counters::get(&run.counters.failed),
        "connect_seconds": run.connect_seconds,
        "connections_per_second": connected as f64 / run.connect_seconds.max(1e-9),
        "connect_time": percentiles(&run.counters.connect_us),
    });
    if let (Some(base), Some(open)) = (run.base_usage, run.open_usage) {
        let grown = open.rss_bytes.saturating_sub(base.rss_bytes);
        report["server_rss_before_bytes"] = json!(base.rss_bytes);
        report["server_rss_open_bytes"] = json!(open.rss_bytes);
        report["server_bytes_per_connection"] = json!(grown as f64 / connected.max(1) as f64);
    }
    report
}

pub(crate) async fn connect(common: Common) -> anyhow::Result<Value> {
    let run = open_connections(&common, Identity::Anonymous).await?;
    tokio::time::sleep(Duration::from_secs(common.hold).min(run.deadline.saturating_duration_since(Instant::now())))
        .await;
    let report = connection_report(&common, &run);
    let _ = run.stop.send(true);
    Ok(json!({"scenario": "connect", "result": report}))
}

/// What each REST send targets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendKind {
    /// Every connection of the hub.
    Broadcast,
    /// One user (one connection each), round-robin.
    User,
}

pub(crate) async fn send(
    common: Common,
    kind: SendKind,
    messages: u64,
    message_rate: u64,
    payload: usize,
) -> anyhow::Result<Value> {
    let identity = if kind == SendKind::User { Identity::UserPerConnection } else { Identity::Anonymous };
    let run = open_connections(&common, identity).await?;
    let connected = Counters::get(&run.counters.connected);
    let base = common.endpoint.trim_end_matches('/').to_owned();
    // One (path, token) per distinct REST target: a REST token's audience is its URL.
    let paths: Vec<String> = match kind {
        SendKind::Broadcast => vec![format!("/api/v1/hubs/{}", common.hub)],
        SendKind::User => (0..common.connections).map(|i| format!("/api/v1/hubs/{}/users/u{i}", common.hub)).collect(),
    };
    let routes: Vec<(String, String)> = paths
        .into_iter()
        .map(|path| {
            let token = mint_server_token(&format!("{base}{path}"), Duration::from_secs(3600), &common.access_key);
            (path, token)
        })
        .collect();
    let mut rest = TcpStream::connect(endpoint_addr(&common.endpoint)?).await?;
    rest.set_nodelay(true)?;
    let padding = "x".repeat(payload);
    let cpu_before = common.server_pid.map(proc_stats::read).transpose()?;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / message_rate.max(1) as f64);
    let mut rejected = 0u64;
    for i in 0..messages {
        let (path, token) = &routes[(i % routes.len() as u64) as usize];
        let body = format!(r#"{{"target":"m","arguments":[{},"{padding}"]}}"#, now_us());
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            common.endpoint.trim_start_matches("http://").trim_end_matches('/'),
            body.len()
        );
        rest.write_all(request.as_bytes()).await?;
        if read_status(&mut rest).await? != 202 {
            rejected += 1;
        }
        let due = started + interval.mul_f64((i + 1) as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        if Instant::now() > run.deadline {
            bail!("time limit reached while sending");
        }
    }
    let sent_seconds = started.elapsed().as_secs_f64();
    let per_message = if kind == SendKind::Broadcast { connected } else { 1 };
    let expected = (messages - rejected) * per_message;
    let drain_deadline = (Instant::now() + Duration::from_secs(30)).min(run.deadline);
    while Counters::get(&run.counters.received) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let received = Counters::get(&run.counters.received);
    let cpu_after = common.server_pid.map(proc_stats::read).transpose()?;
    let mut report = connection_report(&common, &run);
    report["messages_sent"] = json!(messages);
    report["messages_rejected"] = json!(rejected);
    report["send_seconds"] = json!(sent_seconds);
    report["deliveries_expected"] = json!(expected);
    report["deliveries_received"] = json!(received);
    report["deliveries_lost"] = json!(expected.saturating_sub(received));
    report["delivered_per_second"] = json!(received as f64 / elapsed.max(1e-9));
    report["latency"] = percentiles(&run.counters.latency_us);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let cpu = after.cpu.saturating_sub(before.cpu).as_secs_f64();
        report["server_cpu_seconds"] = json!(cpu);
        report["server_cpu_us_per_delivery"] = json!(cpu * 1e6 / received.max(1) as f64);
    }
    let _ = run.stop.send(true);
    let scenario = if kind == SendKind::Broadcast { "broadcast" } else { "send-to-user" };
    report["rest_sends_per_second"] = json!((messages - rejected) as f64 / sent_seconds.max(1e-9));
    Ok(json!({"scenario": scenario, "result": report}))
}

/// Reads one REST response on a keep-alive connection and returns its status.
async fn read_status(stream: &mut TcpStream) -> anyhow::Result<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            bail!("the REST connection closed");
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize =
        text.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).context("bad status line")
}
