//! `switchboard-loadtest chaos`: starts a local cluster (raft, or the Redis engine on a Redis
//! given with `--redis` or started with `--redis-server`), runs a mixed workload against it
//! while a fault schedule hurts its nodes, records every operation and every delivery, and
//! checks the history against Switchboard's promises (see [`check`]).
//!
//! The workload: clients on every transport and protocol that connect, leave and come back
//! through random nodes; REST sends of every kind (all, user, group, connection) and group
//! changes of connections and of users (with and without TTL) through random nodes. The
//! faults, one at a time so a quorum survives: `kill -9` of the leader, of another voter and
//! of an edge node (on Redis: of any node), each restarted on its data; a SIGTERM drain and
//! restart; a SIGSTOP pause and SIGCONT; with `--partition`, node 1 cut off the network (its
//! clients, its peers and its Redis) and healed, and its link made to lose packets; with
//! `--redis-server`, `kill -9` of Redis itself. After the faults: every node must be ready
//! again and (raft) agree on one leader, and once every client has left, every node must list
//! no connection in any group (routes of dead nodes purged).

mod check;
mod clients;
pub(crate) mod cluster;
mod ops;
mod rng;
mod soak;

use check::{History, Life, Member, Outcome, SendTarget, Violation};
use clients::Clients;
use cluster::Cluster;
use ops::{Clock, Ops, lock};
use rng::Rng;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const HUB: &str = "chaos";
const KEY: &str = "chaos-run-access-key-0123456789abcdef";
const GROUPS: u64 = 4;
/// How long the cluster may take to agree again after the faults.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long routes of closed connections may take to be purged: a Long Polling connection
/// whose node lost its client unnoticed is reclaimed after the 30 s client timeout (and a
/// 5 s sweep); a dead node's routes within its lease.
const ROUTES_TIMEOUT: Duration = Duration::from_secs(45);
/// Sends keep going this long after the cluster converged (after every restart: G6).
const AFTER_FAULTS: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ChaosArgs {
    /// The `switchboard` binary the cluster runs.
    #[arg(long, default_value = "target/debug/switchboard")]
    switchboard: PathBuf,
    /// Voters (role both).
    #[arg(long, default_value_t = 3)]
    voters: u64,
    /// Edge nodes.
    #[arg(long, default_value_t = 1)]
    edges: u64,
    /// Run the Redis engine on this Redis (`redis://host:port`) instead of raft: `--voters`
    /// plus `--edges` nodes, all alike.
    #[arg(long, conflicts_with = "redis_server")]
    redis: Option<String>,
    /// Run the Redis engine on a redis-server the run starts itself (this binary, e.g.
    /// `redis-server`), durable (`appendfsync always`) and reachable from a partitioned node.
    #[arg(long)]
    redis_server: Option<PathBuf>,
    /// Also partition node 1 (a voter, or on Redis any node) from everything else now and
    /// then, and make its link lose packets: it runs in a network namespace of its own (needs
    /// root, iproute2 and nftables; on Redis, `--redis-server`, since a Redis on the host's
    /// loopback is out of its reach).
    #[arg(long)]
    partition: bool,
    /// Seconds of faults (the run takes this plus starting, converging and checking).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Clients (each leaves and comes back every 8-16 s).
    #[arg(long, default_value_t = 20)]
    connections: u64,
    /// REST operations per second (sends and group changes).
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Seconds from one fault to the next.
    #[arg(long, default_value_t = 8.0)]
    fault_interval: f64,
    /// Seconds a node stays down or paused.
    #[arg(long, default_value_t = 3.0)]
    fault_length: f64,
    /// Soak instead: no faults for `--seconds`; every node's memory and open files sampled
    /// every `--sample-seconds`, failing when either keeps growing.
    #[arg(long)]
    soak: bool,
    #[arg(long, default_value_t = 10.0)]
    sample_seconds: f64,
    /// Seed of every choice (fault order, targets, clients' lifetimes).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the nodes keep their data and logs (default: a new temporary directory, removed
    /// after a passing run).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the JSON report here (`-`: stdout).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the whole history (every operation, life and delivery) here as JSON.
    #[arg(long)]
    history: Option<PathBuf>,
    /// The nodes' log filter (their `SWITCHBOARD_LOG`; the logs are in the run's directory).
    #[arg(long, default_value = "warn,openraft=off")]
    node_log: String,
}

/// The faults, in the order the seed shuffles them into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillLeader,
    KillVoter,
    KillEdge,
    Drain,
    Pause,
    Partition,
    Lossy,
    KillRedis,
}

impl Fault {
    const ALL: [Fault; 5] = [Fault::KillLeader, Fault::Pause, Fault::KillEdge, Fault::Drain, Fault::KillVoter];

    fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill -9 the leader",
            Fault::KillVoter => "kill -9 a follower voter",
            Fault::KillEdge => "kill -9 an edge node",
            Fault::Drain => "SIGTERM (drain) a voter",
            Fault::Pause => "SIGSTOP a voter",
            Fault::Partition => "cut a voter off the network",
            Fault::Lossy => "lose 30% of a voter's packets",
            Fault::KillRedis => "kill -9 the Redis server",
        }
    }

    fn name_on_redis(self) -> &'static str {
        match self {
            Fault::KillLeader | Fault::KillVoter | Fault::KillEdge => "kill -9 a node",
            Fault::Drain => "SIGTERM (drain) a node",
            Fault::Pause => "SIGSTOP a node",
            Fault::Partition => "cut a node off the network",
            Fault::Lossy => "lose 30% of a node's packets",
            Fault::KillRedis => "kill -9 the Redis server",
        }
    }
}

/// A fault as it happened.
struct Done {
    fault: Fault,
    name: &'static str,
    node: usize,
    at_us: u64,
    back_us: u64,
}

/// Runs the chaos run; `Ok(true)` when the history keeps every promise.
pub(crate) async fn run(args: &ChaosArgs) -> anyhow::Result<bool> {
    let keep_dir = args.dir.is_some();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("switchboard-chaos-{}-{}", std::process::id(), args.seed))
    });
    let sizes = (args.voters.max(1), args.edges);
    anyhow::ensure!(
        !(args.partition && args.redis.is_some()),
        "--partition on the Redis engine needs --redis-server (the partitioned node cannot reach a Redis on loopback)"
    );
    // The Redis engine on a Redis started below: its URL is known once it runs.
    let redis = args.redis.clone().or_else(|| args.redis_server.as_ref().map(|_| String::new()));
    let mut cluster = Cluster::new(&args.switchboard, dir.clone(), sizes, redis, args.partition, KEY)?;
    if let Some(binary) = &args.redis_server {
        cluster.start_redis(binary).await?;
    }
    cluster.log = args.node_log.clone();
    // The harness's echo upstream answers every client invocation.
    let upstream = tokio::net::TcpListener::bind((cluster.host_ip.as_str(), 0)).await?;
    cluster.upstream = Some(format!("http://{}/{{event}}", upstream.local_addr()?));
    let upstream_calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let upstream = tokio::spawn(crate::upstream::serve(upstream, upstream_calls.clone()));
    let nodes = cluster.specs.len();
    let shape = match &cluster.redis {
        None => format!("{} voters + {} edge nodes", args.voters, args.edges),
        Some(url) => format!("{nodes} nodes of the Redis engine on {url}"),
    };
    eprintln!("chaos: {shape} in {}, {} s of faults, seed {}", dir.display(), args.seconds, args.seed);
    let work = async {
        cluster.start_all().await?;
        let leader = converge(&cluster).await?;
        eprintln!("chaos: the cluster serves{}", leader.map(|l| format!(" (leader {l})")).unwrap_or_default());
        let clock = Clock::start();
        let endpoints: Vec<_> = (0..nodes).map(|n| cluster.endpoint(n)).collect();
        let ops = Arc::new(Ops::new(clock, endpoints.clone(), KEY, HUB));
        let clients = Arc::new(Clients::new(ops.clone(), endpoints, HUB, KEY, args.connections.div_ceil(2)));
        let memory_before = memory(&cluster).await;
        let (stop_clients, stopping) = watch::channel(false);
        let client_tasks: Vec<_> =
            (0..args.connections).map(|i| tokio::spawn(clients.clone().run(i, args.seed, stopping.clone()))).collect();
        let (stop_load, load_stopping) = watch::channel(false);
        let load = tokio::spawn(workload(ops.clone(), clients.clone(), args.rate, args.seed, load_stopping));
        let (faults, samples) = if args.soak {
            let every = Duration::from_secs_f64(args.sample_seconds.max(1.0));
            let samples = soak::sample_for(&cluster, args.seconds, every, || lock(&ops.sends).clone()).await;
            (Vec::new(), samples)
        } else {
            (faults(&mut cluster, args, clock).await?, Vec::new())
        };
        let growth = soak::growth(&samples);
        for finding in &growth {
            eprintln!("soak: {finding}");
        }
        let after = converge(&cluster).await?;
        let leader = after.map(|l| format!(" (leader {l})")).unwrap_or_default();
        let what = if args.soak { "soak over" } else { "faults over" };
        eprintln!("chaos: {what}; every node serves again{leader}");
        tokio::time::sleep(AFTER_FAULTS).await;
        let _ = stop_load.send(true);
        let _ = load.await;
        let _ = stop_clients.send(true);
        for task in client_tasks {
            let _ = task.await;
        }
        let routes = routes_purged(&cluster, &clients).await;
        let memory_after = memory(&cluster).await;
        let memory_kept = memory_returned(&memory_before, &memory_after);
        if let Err(why) = &memory_kept {
            eprintln!("chaos: memory did not return: {why}");
        }
        let history = history(&clients, &ops, &faults);
        let by_transport = lives_by_transport(&clients);
        let verdict = check::check(&history);
        if let Some(path) = &args.history {
            std::fs::write(path, serde_json::to_string(&history)?)?;
        }
        let mut report = report(args, &history, &verdict, &faults, &routes, (&memory_before, &memory_after));
        report["lives_by_transport"] = json!(by_transport);
        report["memory_returned"] = json!(memory_kept.clone().err().unwrap_or_else(|| "yes".into()));
        if args.soak {
            report["samples"] = json!(samples);
            report["growth"] = json!(growth);
        }
        let pass = verdict.pass() && routes.is_ok() && growth.is_empty() && memory_kept.is_ok();
        Ok::<_, anyhow::Error>((pass, report))
    };
    // Interrupted, the run still stops the nodes it started.
    let outcome = tokio::select! {
        outcome = work => outcome,
        signal = interrupted() => Err(anyhow::anyhow!("stopped by {signal}; the nodes were stopped too")),
    };
    cluster.stop_all().await;
    upstream.abort();
    let (pass, mut report) = outcome?;
    report["upstream_calls"] = json!(upstream_calls.load(std::sync::atomic::Ordering::Relaxed));
    match args.report.as_deref() {
        Some(path) if path == std::path::Path::new("-") => println!("{}", serde_json::to_string_pretty(&report)?),
        Some(path) => std::fs::write(path, serde_json::to_string_pretty(&report)?)?,
        None => {}
    }
    if pass && !keep_dir {
        let _ = std::fs::remove_dir_all(&dir);
    } else if !pass {
        eprintln!("chaos: the nodes' logs are in {}", dir.display());
    }
    Ok(pass)
}

/// Resolves with the signal's name on SIGINT or SIGTERM.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

/// Waits until every node is ready and (raft) all name the same leader; returns it.
async fn converge(cluster: &Cluster) -> anyhow::Result<Option<u64>> {
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let mut ready = Vec::new();
        let mut leaders = Vec::new();
        for node in 0..cluster.specs.len() {
            let stats = cluster.node_stats(node).await;
            ready.push(stats.as_ref().is_some_and(|s| s["ready"] == true));
            leaders.push(stats.and_then(|s| s["raft"]["leader"].as_u64()));
        }
        let leader = leaders.first().copied().flatten();
        let agreed = !cluster.is_raft() || (leader.is_some() && leaders.iter().all(|l| *l == leader));
        if agreed && ready.iter().all(|r| *r) {
            return Ok(leader);
        }
        if tokio::time::Instant::now() >= deadline {
            let seconds = CONVERGE_TIMEOUT.as_secs();
            anyhow::bail!("the nodes did not converge within {seconds} s (ready: {ready:?}, leaders: {leaders:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The fault schedule: one fault every `fault_interval` seconds for `seconds`.
async fn faults(cluster: &mut Cluster, args: &ChaosArgs, clock: Clock) -> anyhow::Result<Vec<Done>> {
    let mut rng = Rng::new(args.seed);
    let mut order = Fault::ALL.to_vec();
    if cluster.can_partition() {
        order.push(Fault::Partition);
    }
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // Kinds of fault added later go in after a seed's first two, placed by a generator of
    // their own: a seed's first faults and every choice of node stay what they were, so a
    // schedule kept as a regression test (a seed) stays the same schedule.
    let mut later = Rng::new(args.seed ^ 0x1a7e_fa17);
    let added = [(Fault::Lossy, cluster.can_partition()), (Fault::KillRedis, cluster.owns_redis())];
    for (fault, _) in added.into_iter().filter(|(_, applies)| *applies) {
        let at = 2 + later.below(order.len() as u64 - 1) as usize;
        order.insert(at.min(order.len()), fault);
    }
    let voters: Vec<usize> = (0..cluster.specs.len()).filter(|n| cluster.specs[*n].voter).collect();
    let edges: Vec<usize> = (0..cluster.specs.len()).filter(|n| !cluster.specs[*n].voter).collect();
    let all: Vec<usize> = (0..cluster.specs.len()).collect();
    let end = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    let interval = Duration::from_secs_f64(args.fault_interval.max(1.0));
    let length = Duration::from_secs_f64(args.fault_length.max(0.1));
    let mut done = Vec::new();
    let mut next = tokio::time::Instant::now() + interval / 2;
    while next + length < end {
        tokio::time::sleep_until(next).await;
        let fault = order[done.len() % order.len()];
        let leader = converge(cluster).await?.map(|id| id as usize - 1);
        let followers: Vec<usize> = voters.iter().copied().filter(|n| Some(*n) != leader).collect();
        let pick = |rng: &mut Rng, from: &[usize]| from.get(rng.below(from.len() as u64) as usize).copied();
        let node = match fault {
            // Node 1 is the one in a namespace of its own (Redis is no node: any will do).
            Fault::Partition | Fault::Lossy | Fault::KillRedis => Some(0),
            // The Redis engine's nodes are all alike: any of them.
            _ if !cluster.is_raft() => pick(&mut rng, &all),
            Fault::KillLeader => leader,
            Fault::KillVoter | Fault::Pause => pick(&mut rng, &followers).or(leader),
            Fault::Drain => pick(&mut rng, &voters),
            Fault::KillEdge => pick(&mut rng, &edges),
        };
        let Some(node) = node else {
            next += interval;
            continue;
        };
        let at_us = clock.now_us();
        let name = if cluster.is_raft() { fault.name() } else { fault.name_on_redis() };
        let whom =
            if fault == Fault::KillRedis { String::new() } else { format!(" (node {})", cluster.specs[node].id) };
        eprintln!("chaos: {:>6.1} s  {name}{whom}", at_us as f64 / 1e6);
        match fault {
            Fault::Pause => {
                cluster.pause(node, true)?;
                tokio::time::sleep(length).await;
                cluster.pause(node, false)?;
            }
            Fault::Partition => {
                cluster.cut(true)?;
                tokio::time::sleep(length).await;
                cluster.cut(false)?;
            }
            Fault::Lossy => {
                cluster.lossy(Some(LOSS_PERCENT))?;
                tokio::time::sleep(length).await;
                cluster.lossy(None)?;
            }
            Fault::KillRedis => {
                cluster.kill_redis().await?;
                tokio::time::sleep(length).await;
                cluster.restart_redis().await?;
            }
            Fault::Drain => {
                cluster.terminate(node).await?;
                tokio::time::sleep(length).await;
                cluster.restart(node).await?;
            }
            _ => {
                cluster.kill(node).await?;
                tokio::time::sleep(length).await;
                cluster.restart(node).await?;
            }
        }
        let back_us = clock.now_us();
        done.push(Done { fault, name, node, at_us, back_us });
        next += interval;
    }
    tokio::time::sleep_until(end).await;
    Ok(done)
}

/// REST operations at `rate` per second until `stop`: sends of every kind, and group changes
/// of connections and users, each through a random node.
async fn workload(ops: Arc<Ops>, clients: Arc<Clients>, rate: f64, seed: u64, stop: watch::Receiver<bool>) {
    // A few in flight at once, so one slow call (a paused node) does not stall the rest.
    const LANES: u64 = 4;
    let lanes: Vec<_> = (0..LANES)
        .map(|lane| {
            let (ops, clients, mut stop) = (ops.clone(), clients.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = Rng::new(seed.wrapping_add(lane + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
                let period = Duration::from_secs_f64(LANES as f64 / rate.max(0.1));
                let mut next = tokio::time::Instant::now();
                while !*stop.borrow() {
                    operation(&ops, &clients, &mut rng).await;
                    next += period;
                    tokio::select! {
                        _ = tokio::time::sleep_until(next) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                }
            })
        })
        .collect();
    for lane in lanes {
        let _ = lane.await;
    }
}

async fn operation(ops: &Ops, clients: &Clients, rng: &mut Rng) {
    let node = rng.below(ops.nodes() as u64) as usize;
    let group = format!("g{}", rng.below(GROUPS));
    let open = clients.open_now();
    let connection = (!open.is_empty()).then(|| open[rng.below(open.len() as u64) as usize].clone());
    let user = clients.user(rng.below(1000));
    match (rng.below(100), connection) {
        (0..10, _) => drop(ops.send(node, SendTarget::All).await),
        (10..30, _) => drop(ops.send(node, SendTarget::User(user)).await),
        (30..55, _) => drop(ops.send(node, SendTarget::Group(group)).await),
        (55..70, Some((id, _))) => drop(ops.send(node, SendTarget::Connection(id)).await),
        (70..85, Some((id, _))) => {
            let join = rng.below(3) < 2;
            ops.change(node, Member::Connection(id), &group, join, None).await;
        }
        _ => {
            let join = rng.below(3) < 2;
            let ttl = (rng.below(2) == 0).then_some(3600);
            ops.change(node, Member::User(user), &group, join, ttl).await;
        }
    }
}

/// Packets a lossy link loses, each way.
const LOSS_PERCENT: u32 = 30;

/// After a pause or a partition ends, the node's clients learn within this long whether their
/// connections survived it.
const NEWS_AFTER_ABSENCE: Duration = Duration::from_secs(5);

/// The history the checker reads. A life on a node that was killed or drained counts as
/// closed from the fault's start, not from when its client noticed; so does a life on a
/// paused or partitioned node that ended while it was away or soon after it came back (its
/// client could not hear of it earlier).
fn history(clients: &Clients, ops: &Ops, faults: &[Done]) -> History {
    let recording = lock(&clients.recording);
    let lives = recording
        .lives
        .iter()
        .map(|life| {
            // A paused or cut-off node cannot tell its clients anything until it is back;
            // one that was away past its lease closes them then (the cluster stopped routing
            // to it). A connection that survives the fault stays owed every send.
            let ended_by = |f: &Done| match f.fault {
                Fault::Pause | Fault::Partition | Fault::Lossy => {
                    life.closed_us.is_some_and(|closed| closed <= f.back_us + NEWS_AFTER_ABSENCE.as_micros() as u64)
                }
                // Clients stay connected while Redis is away: every connection stays owed.
                Fault::KillRedis => false,
                _ => true,
            };
            let fault = faults
                .iter()
                .filter(|f| f.node == life.node && f.at_us >= life.opened_us && ended_by(f))
                .map(|f| f.at_us)
                .min();
            let closed_us = match (life.closed_us, fault) {
                (Some(closed), Some(fault)) => Some(closed.min(fault)),
                (None, Some(fault)) => Some(fault),
                (closed, None) => closed,
            };
            let user = Some(life.user.clone());
            Life { id: life.id.clone(), user, opened_us: life.opened_us, closed_us, left: life.left }
        })
        .collect();
    History {
        lives,
        sends: lock(&ops.sends).clone(),
        groups: lock(&ops.groups).clone(),
        received: recording.received.clone(),
        invocations: recording.invocations.clone(),
        completions: recording.completions.clone(),
    }
}

/// How many connection lives each transport had (every transport takes part).
fn lives_by_transport(clients: &Clients) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for life in &lock(&clients.recording).lives {
        *counts.entry(format!("{:?}", life.transport)).or_default() += 1;
    }
    eprintln!("chaos: connection lives by transport: {counts:?}");
    counts
}

/// Once every client has left, every node must list no connection in any group.
async fn routes_purged(cluster: &Cluster, clients: &Clients) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + ROUTES_TIMEOUT;
    loop {
        let mut left = Vec::new();
        for node in 0..cluster.specs.len() {
            for group in 0..GROUPS {
                let path = format!("/api/hubs/{HUB}/groups/g{group}/connections?api-version=2024-12-01");
                match cluster.get(node, &path).await {
                    Some((200, body)) => {
                        let listed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let listed = listed["value"].as_array().cloned().unwrap_or_default();
                        if let Some(first) = listed.first() {
                            let (node, count) = (cluster.specs[node].id, listed.len());
                            let id = first["connectionId"].as_str().unwrap_or_default();
                            let life = lock(&clients.recording).lives.iter().find(|l| l.id == id).map(|l| {
                                format!(
                                    "{:?} on node {}, left at {:.3} s",
                                    l.transport,
                                    l.node + 1,
                                    l.closed_us.unwrap_or(0) as f64 / 1e6
                                )
                            });
                            let life = life.unwrap_or_else(|| "never opened".into());
                            left.push(format!("node {node} lists {count} in g{group}, first {id} ({life})"));
                        }
                    }
                    other => left.push(format!(
                        "node {} answered {:?} for g{group}",
                        cluster.specs[node].id,
                        other.map(|(status, _)| status)
                    )),
                }
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{} s after every client left: {}", ROUTES_TIMEOUT.as_secs(), left.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Once every client has left, each node's memory is back near where it was once the cluster
/// served: at most half again as much, or 32 MiB more (a restarted node starts afresh).
fn memory_returned(before: &[Option<u64>], after: &[Option<u64>]) -> Result<(), String> {
    let grown: Vec<String> = before
        .iter()
        .zip(after)
        .enumerate()
        .filter_map(|(node, pair)| match pair {
            (Some(before), Some(after)) if *after > (before + before / 2).max(before + (32 << 20)) => {
                Some(format!("node {}: {} MiB -> {} MiB", node + 1, before >> 20, after >> 20))
            }
            (_, None) => Some(format!("node {}: no answer", node + 1)),
            _ => None,
        })
        .collect();
    if grown.is_empty() { Ok(()) } else { Err(grown.join("; ")) }
}

/// Each node's resident memory in bytes (`None` when it does not answer).
async fn memory(cluster: &Cluster) -> Vec<Option<u64>> {
    let mut memory = Vec::new();
    for node in 0..cluster.specs.len() {
        memory.push(cluster.node_stats(node).await.and_then(|s| s["process"]["memory_bytes"].as_u64()));
    }
    memory
}

/// The report, and its summary on stderr: counts per category and the first violations.
fn report(
    args: &ChaosArgs,
    history: &History,
    verdict: &check::Verdict,
    faults: &[Done],
    routes: &Result<(), String>,
    (before, after): (&[Option<u64>], &[Option<u64>]),
) -> Value {
    let outcomes = |outcome: Outcome| history.sends.iter().filter(|s| s.outcome == outcome).count();
    let changes = |outcome: Outcome| history.groups.iter().filter(|g| g.outcome == outcome).count();
    eprintln!(
        "chaos: {} sends (2xx {}, unknown {}, refused {}), {} group changes (2xx {}, unknown {}, refused {})",
        history.sends.len(),
        outcomes(Outcome::Ok),
        outcomes(Outcome::Unknown),
        outcomes(Outcome::Refused),
        history.groups.len(),
        changes(Outcome::Ok),
        changes(Outcome::Unknown),
        changes(Outcome::Refused),
    );
    eprintln!(
        "chaos: {} deliveries and {} of {} invocations' completions checked over {} connection lives; {} faults",
        verdict.deliveries_checked,
        verdict.completions_checked,
        history.invocations.len(),
        history.lives.len(),
        faults.len()
    );
    let first: Vec<String> = verdict.violations.iter().take(200).map(|v| describe(history, v)).collect();
    for line in first.iter().take(10) {
        eprintln!("chaos: violation: {line}");
    }
    if let Err(why) = routes {
        eprintln!("chaos: routes not purged: {why}");
    }
    json!({
        "seed": args.seed,
        "voters": args.voters,
        "edges": args.edges,
        "fault_seconds": args.seconds,
        "faults": faults.iter().map(|f| json!({
            "fault": f.name, "node": (f.fault != Fault::KillRedis).then_some(f.node + 1),
            "at_s": f.at_us as f64 / 1e6, "back_s": f.back_us as f64 / 1e6,
        })).collect::<Vec<_>>(),
        "sends": { "ok": outcomes(Outcome::Ok), "unknown": outcomes(Outcome::Unknown), "refused": outcomes(Outcome::Refused) },
        "group_changes": { "ok": changes(Outcome::Ok), "unknown": changes(Outcome::Unknown), "refused": changes(Outcome::Refused) },
        "lives": history.lives.len(),
        "deliveries_checked": verdict.deliveries_checked,
        "invocations": history.invocations.len(),
        "completions_checked": verdict.completions_checked,
        "violations": check::counts(verdict),
        "first_violations": first,
        "routes_purged": routes.clone().err().unwrap_or_else(|| "yes".into()),
        "memory_bytes_before": before,
        "memory_bytes_after": after,
    })
}

/// A violation with the operations it involves.
fn describe(history: &History, violation: &Violation) -> String {
    let send = |message: &u64| {
        history.sends.iter().find(|s| s.message == *message).map_or_else(
            || format!("message {message} (never sent)"),
            |s| {
                format!(
                    "message {} to {:?} made through node {} at {:.3} s, answered {:?} at {:.3} s",
                    s.message,
                    s.target,
                    s.via + 1,
                    s.invoked_us as f64 / 1e6,
                    s.outcome,
                    s.completed_us as f64 / 1e6
                )
            },
        )
    };
    let life = |id: &str| {
        history.lives.iter().find(|l| l.id == id).map_or_else(
            || id.to_owned(),
            |l| {
                format!(
                    "connection {id} (user {:?}, open {:.3} s .. {})",
                    l.user,
                    l.opened_us as f64 / 1e6,
                    l.closed_us.map_or("the end".into(), |c| format!("{:.3} s", c as f64 / 1e6))
                )
            },
        )
    };
    match violation {
        Violation::Lost { message, connection } => {
            format!("lost: {} never reached {}", send(message), life(connection))
        }
        Violation::Duplicated { message, connection, times } => {
            format!("duplicated: {} reached {} {times} times", send(message), life(connection))
        }
        Violation::NotATarget { message, connection } => {
            format!("not a target: {} reached {}", send(message), life(connection))
        }
        Violation::OutOfOrder { connection, first, then } => {
            format!("out of order at {}: {} arrived after {}", life(connection), send(first), send(then))
        }
        Violation::Unanswered { invocation, connection } => {
            format!("unanswered: invocation {invocation} of {} got no completion", life(connection))
        }
        Violation::StrayCompletion { invocation, connection, times } => {
            format!("stray completion: invocation {invocation}'s completion reached {} {times} times", life(connection))
        }
        Violation::UnknownMessage { message, connection } => {
            format!("unknown message {message} at {}", life(connection))
        }
        Violation::Inconsistent { group, connection, first, then } => {
            let changes: Vec<String> = history
                .groups
                .iter()
                .filter(|c| c.group == *group)
                .filter(|c| match &c.member {
                    Member::Connection(id) => id == connection,
                    Member::User(user) => {
                        history.lives.iter().any(|l| l.id == *connection && l.user.as_ref() == Some(user))
                    }
                })
                .map(|c| {
                    let what = if c.join { "join" } else { "leave" };
                    let (made, answered) = (c.invoked_us as f64 / 1e6, c.completed_us as f64 / 1e6);
                    format!("{what} of {:?} at {made:.3} s answered {:?} at {answered:.3} s", c.member, c.outcome)
                })
                .collect();
            format!(
                "inconsistent membership of {} in {group}: {} and then {} saw it differently; its changes: [{}]",
                life(connection),
                send(first),
                send(then),
                changes.join("; ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_may_settle_higher_but_not_keep_what_the_run_added() {
        const MIB: u64 = 1 << 20;
        let before = [Some(50 * MIB), Some(200 * MIB), Some(50 * MIB)];
        assert!(memory_returned(&before, &[Some(80 * MIB), Some(290 * MIB), Some(20 * MIB)]).is_ok());
        let grown = memory_returned(&before, &[Some(83 * MIB), Some(310 * MIB), None]).unwrap_err();
        assert_eq!(grown, "node 1: 50 MiB -> 83 MiB; node 2: 200 MiB -> 310 MiB; node 3: no answer");
    }
}
