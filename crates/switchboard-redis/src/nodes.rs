//! Node liveness in Redis: each node renews a lease (a sorted set scored by when it ends, by
//! Redis's clock, so node clocks do not matter) and its forwarding address every second; each
//! renewal also removes the nodes whose lease ran out and returns the live ones. A probe the
//! node publishes to its own channel checks that its subscriptions still receive.

use crate::Shared;
use crate::link::Link;
use crate::names::Names;
use parking_lot::RwLock;
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard_grpc::fanout::v1::bus_message::Body;
use switchboard_grpc::fanout::v1::{Broadcast, BusMessage, NodeJoined};

/// How often a node renews its lease.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a lease lasts: a node silent this long is removed.
const LEASE: Duration = Duration::from_secs(5);
/// Probes a node may miss before it rebuilds its connection.
const MISSED_PROBES: u64 = 3;

/// Renews `KEYS[1]` (leases) and `KEYS[2]` (addresses) for node `ARGV[1]` at `ARGV[2]` for
/// `ARGV[3]` ms (no node: only reads), drops expired nodes, returns the live addresses (a flat
/// list) and the nodes it dropped.
const HEARTBEAT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(dead) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return {redis.call('HGETALL', KEYS[2]), dead}
";

/// The live nodes as of the last heartbeat.
pub(crate) struct LiveNodes {
    own_address: String,
    /// Live node → its forwarding address, and when this node learned it.
    addresses: RwLock<HashMap<u64, (String, Instant)>>,
    last_heartbeat: RwLock<Option<Instant>>,
    probes_sent: AtomicU64,
    probes_seen: AtomicU64,
}

impl LiveNodes {
    pub(crate) fn new(own_address: String) -> Self {
        LiveNodes {
            own_address,
            addresses: RwLock::default(),
            last_heartbeat: RwLock::default(),
            probes_sent: AtomicU64::new(0),
            probes_seen: AtomicU64::new(0),
        }
    }

    pub(crate) fn http_address(&self, node: u64) -> Option<String> {
        self.addresses.read().get(&node).map(|(address, _)| address.clone())
    }

    /// Whether `node` has the lowest id of the live nodes (it writes the snapshots).
    pub(crate) fn is_lowest(&self, node: u64) -> bool {
        self.addresses.read().keys().min().is_none_or(|lowest| *lowest >= node)
    }

    /// Whether a heartbeat reached Redis within the lease.
    pub(crate) fn is_fresh(&self) -> bool {
        self.last_heartbeat.read().is_some_and(|at| at.elapsed() < LEASE)
    }

    /// The live nodes as a heartbeat that started at `started` saw them. A node that announced
    /// itself since is kept: the heartbeat's script ran before that node's lease existed.
    fn replace(&self, mut live: HashMap<u64, (String, Instant)>, started: Instant) {
        let mut addresses = self.addresses.write();
        for (node, (address, learned)) in addresses.drain() {
            if learned > started {
                live.entry(node).or_insert((address, learned));
            }
        }
        *addresses = live;
    }

    /// A node announced itself (see [`announce`]).
    pub(crate) fn joined(&self, node: u64, address: String) {
        self.addresses.write().insert(node, (address, Instant::now()));
    }

    pub(crate) fn probe_seen(&self, number: u64) {
        self.probes_seen.fetch_max(number, Ordering::Relaxed);
    }
}

/// A node id no other node of the deployment took.
pub(crate) async fn next_node_id(link: &Link, names: &Names) -> redis::RedisResult<u64> {
    link.query(redis::cmd("INCR").arg(names.node_ids())).await
}

/// Renews this node's lease once.
pub(crate) async fn heartbeat(shared: &Shared) -> redis::RedisResult<()> {
    let started = Instant::now();
    let mut command = redis::cmd("EVAL");
    command.arg(HEARTBEAT_SCRIPT).arg(2).arg(shared.names.nodes()).arg(shared.names.addresses());
    command.arg(shared.node).arg(&shared.nodes.own_address).arg(LEASE.as_millis() as u64);
    let (live, dead): (Vec<String>, Vec<u64>) = shared.link.query(&command).await?;
    let live: HashMap<u64, (String, Instant)> =
        live.chunks_exact(2).filter_map(|pair| Some((pair[0].parse().ok()?, (pair[1].clone(), started)))).collect();
    shared.nodes.replace(live, started);
    for node in dead {
        reap(shared, node).await;
    }
    *shared.nodes.last_heartbeat.write() = Some(Instant::now());
    shared.stats.heartbeat_rtt_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    Ok(())
}

/// Tells every node where this node's clients are forwarded; resolves once each of them
/// knows (so a client negotiated here may make its next request to any node at once).
pub(crate) async fn announce(shared: &Shared) -> Result<(), switchboard_engine::EngineError> {
    let joined = NodeJoined { node: shared.node, http_address: shared.nodes.own_address.clone() };
    shared.request(&shared.names.all(), Body::Joined(joined)).await.map(|_| ())
}

/// The name of a node's connection to a standalone Redis (`CLIENT SETNAME`), by which a dead
/// node's connection is found.
pub(crate) fn client_name(names: &Names, node: u64) -> String {
    format!("{}-node-{node}", names.prefix())
}

/// Closes the Redis connections of a node whose lease ran out. A node that hangs without
/// closing its connection (stopped, not dead) stays subscribed: every call to a channel it
/// holds would wait for its reply until the call's timeout. Killing its connection ends its
/// subscriptions; if it resumes, it reconnects, resubscribes and renews its lease. On a Redis
/// Cluster the connections are not named, and a hung node is not reaped.
async fn reap(shared: &Shared, node: u64) {
    if shared.link.is_cluster() || node == shared.node {
        return;
    }
    let name = client_name(&shared.names, node);
    let Ok(clients) = shared.link.query::<String>(redis::cmd("CLIENT").arg("LIST")).await else { return };
    for line in clients.lines() {
        let field = |key: &str| line.split(' ').find_map(|part| part.strip_prefix(key));
        if field("name=") == Some(name.as_str())
            && let Some(id) = field("id=")
        {
            tracing::warn!(
                node,
                "the lease of a node ran out while it was still connected to Redis; closing its connection"
            );
            if shared.link.query::<u64>(redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id)).await.is_ok() {
                shared.stats.reaped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Removes this node's lease (a graceful stop).
pub(crate) async fn leave(shared: &Shared) {
    let mut pipe = redis::pipe();
    pipe.cmd("ZREM").arg(shared.names.nodes()).arg(shared.node).ignore();
    pipe.cmd("HDEL").arg(shared.names.addresses()).arg(shared.node).ignore();
    let _ = shared.link.pipe::<()>(&pipe).await;
}

/// Heartbeats and probes, every [`HEARTBEAT`].
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = heartbeat(&shared).await {
            tracing::warn!(%error, "cannot renew this node's lease in Redis");
        }
        probe(&shared).await;
    }
}

/// Publishes a numbered probe to this node's own channel; when the last few never came back,
/// the subscriptions are deaf and the connection is rebuilt.
async fn probe(shared: &Shared) {
    let nodes = &shared.nodes;
    let sent = nodes.probes_sent.load(Ordering::Relaxed);
    if sent >= nodes.probes_seen.load(Ordering::Relaxed) + MISSED_PROBES {
        tracing::warn!(missed = MISSED_PROBES, "this node's subscriptions stopped receiving; reconnecting");
        nodes.probes_seen.store(sent, Ordering::Relaxed);
        shared.link.disconnected.notify_one();
        return;
    }
    let number = sent + 1;
    let probe = BusMessage { from_node: shared.node, request_id: number, body: Some(Body::Probe(Broadcast {})) };
    if shared.link.publish(&shared.names.node(shared.node), &probe.encode_to_vec()).await.is_ok() {
        nodes.probes_sent.store(number, Ordering::Relaxed);
    }
}
