//! The Redis engine (`switchboard serve --engine redis`): every Switchboard node is a stateless
//! edge node, and Redis holds what they share.
//!
//! * **Memberships** ([`MembershipStore`]): every write is appended to one Redis stream, the
//!   replicated log (`XADD`); each node applies the log in order to its in-memory copy (the
//!   [`LocalUserGroups`] its hubs read on every group send), with the rules of
//!   [`UserGroups`](switchboard_hub::UserGroups) and the entry's Redis time, so every node
//!   computes the same memberships. A write answers once every node applied it.
//! * **The node bus** ([`NodeBus`]): a call is published on one channel (a user's, a group's,
//!   the owner node's, or the all-nodes channel) and every node subscribed to it applies it and
//!   replies on the caller's node channel. `PUBLISH` says how many nodes received the call; the
//!   call resolves once that many replied. A node subscribes only to the users and groups it
//!   holds connections of (directly, or through a member user), and answers a join or a first
//!   connection only once Redis confirmed the subscription.
//! * **Liveness**: each node renews a lease in a sorted set scored by Redis's clock; a node
//!   whose lease ran out (5 s) is removed by the next heartbeat of any node.
//!
//! On a standalone Redis the engine uses classic pub/sub; on a Redis Cluster, sharded pub/sub
//! (`SSUBSCRIBE`/`SPUBLISH`), so a message only travels within the shard owning its channel.
//!
//! # Guarantees (the engine contract's, restated)
//! * **G3**: a membership write resolves once every node subscribed to the membership channel
//!   applied the log up to it; a group add or a first connection resolves once this node's
//!   subscription is confirmed. So every later send, through any node, sees it.
//! * **G4**: a call resolves only when every node that received it (by `PUBLISH`'s count) has
//!   applied it; sends resolved one after another reach a connection in that order, whichever
//!   nodes they entered by.
//! * **G6**: memberships are the log in Redis: they survive any restart of Switchboard nodes,
//!   and a restart of Redis as far as its persistence goes (AOF with `appendfsync everysec`
//!   loses at most a second of writes; `always` loses none).
//! * **G7**: a node that stops closes its Redis connection, which ends its subscriptions at
//!   once; its lease ends within 5 s. While Redis cannot be reached, calls fail with
//!   [`EngineError::Unavailable`] (a REST 503), never a success for a message that went nowhere.
//! * **At most once**: a node whose connection to Redis dropped misses what was published
//!   until it resubscribed; the publishers did not count it, and it reconnects with backoff,
//!   resubscribes and catches up on the log. A connection that looks healthy but stopped
//!   receiving is found by a probe it publishes to itself every few seconds. On a Redis
//!   Cluster, a subscription that Redis ends because its slot moved (a resharding) is made again
//!   at the new owner, and after a failover everything is subscribed once more when the cluster
//!   connection has settled.

mod aspnet;
mod bus;
mod interest;
mod link;
mod members;
mod names;
mod nodes;

pub use aspnet::{AspNetBridge, AspNetSettings, BridgeStats};
pub use link::Servers;
pub use names::{ChannelKind, Names};

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use switchboard_engine::{EngineError, MembershipStore, NodeBus};
use switchboard_hub::{InterestSink, LocalUserGroups, Registry};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How a node reaches its Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub servers: Servers,
    /// A password that is not in the URL (read from a file by the caller).
    pub password: Option<String>,
    /// For `rediss://`: the PEM certificates of the CAs to trust instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// The prefix of every key and channel (default `switchboard`).
    pub prefix: String,
    /// This node's id; `None` takes the next free one from Redis.
    pub node_id: Option<u64>,
    /// Where other nodes forward this node's client and REST requests.
    pub http_address: String,
    /// Membership log entries between two snapshots (the log is trimmed behind each).
    pub snapshot_every: u64,
}

impl RedisSettings {
    /// Entries between snapshots by default.
    pub const SNAPSHOT_EVERY: u64 = members::SNAPSHOT_EVERY;
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings cannot work (a URL that is not a Redis URL).
    #[error("{0}")]
    Invalid(String),
    /// Redis did not answer.
    #[error("cannot reach Redis: {0}")]
    Unreachable(String),
}

/// Counters of the engine, for `/metrics`.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Messages published, by [`ChannelKind`] (replies included, on node channels).
    pub published: [AtomicU64; 6],
    /// Messages received on this node's subscriptions, by [`ChannelKind`].
    pub received: [AtomicU64; 6],
    /// Calls answered "unavailable" (REST 503) because Redis could not be reached.
    pub unavailable: AtomicU64,
    pub replies: AtomicU64,
    pub subscribes: AtomicU64,
    pub resubscribes: AtomicU64,
    pub log_entries_applied: AtomicU64,
    /// Connections of nodes whose lease ran out, closed by this node.
    pub reaped: AtomicU64,
    /// The last heartbeat's round trip, in microseconds.
    pub heartbeat_rtt_micros: AtomicU64,
}

/// What every part of a running engine shares.
pub(crate) struct Shared {
    pub(crate) node: u64,
    pub(crate) names: Names,
    pub(crate) link: link::Link,
    pub(crate) mirror: Arc<LocalUserGroups>,
    pub(crate) registry: OnceLock<Arc<Registry>>,
    pub(crate) pending: Mutex<HashMap<u64, bus::Pending>>,
    pub(crate) next_request: AtomicU64,
    pub(crate) subscriptions: mpsc::UnboundedSender<interest::Event>,
    pub(crate) syncs: mpsc::UnboundedSender<members::Sync>,
    pub(crate) replies: mpsc::UnboundedSender<(u64, Bytes)>,
    pub(crate) nodes: nodes::LiveNodes,
    pub(crate) stats: RedisStats,
    pub(crate) stopping: AtomicBool,
    pub(crate) snapshot_every: u64,
}

impl Shared {
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        self.registry.get().expect("the engine was started with a registry")
    }
}

/// Receivers that the engine's tasks take over when it starts.
struct Queues {
    pushes: mpsc::Receiver<link::Push>,
    ended: mpsc::Receiver<link::Ended>,
    subscriptions: mpsc::UnboundedReceiver<interest::Event>,
    syncs: mpsc::UnboundedReceiver<members::Sync>,
    replies: mpsc::UnboundedReceiver<(u64, Bytes)>,
}

/// A node's Redis engine. See the crate docs.
pub struct RedisEngine {
    shared: Arc<Shared>,
    queues: Mutex<Option<Queues>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RedisEngine {
    /// Connects to Redis and takes a node id; nothing is subscribed or read yet.
    pub async fn connect(settings: &RedisSettings) -> Result<RedisEngine, StartError> {
        let (link, pushes, ended) =
            link::Link::open(settings.servers.clone(), settings.password.clone(), settings.ca_pem.clone())
                .await
                .map_err(|error| match error.kind() {
                    redis::ErrorKind::InvalidClientConfig => StartError::Invalid(error.to_string()),
                    _ => StartError::Unreachable(error.to_string()),
                })?;
        let names = Names::new(&settings.prefix);
        let node = match settings.node_id {
            Some(node) => node,
            None => nodes::next_node_id(&link, &names).await.map_err(|e| StartError::Unreachable(e.to_string()))?,
        };
        let (subscriptions, subscription_queue) = mpsc::unbounded_channel();
        let (syncs, sync_queue) = mpsc::unbounded_channel();
        let (replies, reply_queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            node,
            names,
            link,
            mirror: Arc::new(LocalUserGroups::default()),
            registry: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            subscriptions,
            syncs,
            replies,
            nodes: nodes::LiveNodes::new(settings.http_address.clone()),
            stats: RedisStats::default(),
            stopping: AtomicBool::new(false),
            snapshot_every: settings.snapshot_every.max(1),
        });
        let queues =
            Queues { pushes, ended, subscriptions: subscription_queue, syncs: sync_queue, replies: reply_queue };
        Ok(RedisEngine { shared, queues: Mutex::new(Some(queues)), tasks: Mutex::new(Vec::new()) })
    }

    /// This node's id (connection ids made here name it).
    pub fn node_id(&self) -> u64 {
        self.shared.node
    }

    /// The memberships as this node's hubs read them.
    pub fn user_groups(&self) -> Arc<LocalUserGroups> {
        self.shared.mirror.clone()
    }

    /// Where the registry reports this node's users and groups (they become subscriptions).
    pub fn interest(&self) -> Arc<dyn InterestSink> {
        Arc::new(interest::Sink(self.shared.clone()))
    }

    pub fn bus(&self) -> Arc<dyn NodeBus> {
        Arc::new(bus::RedisBus(self.shared.clone()))
    }

    pub fn store(&self) -> Arc<dyn MembershipStore> {
        Arc::new(members::RedisStore(self.shared.clone()))
    }

    pub fn stats(&self) -> &RedisStats {
        &self.shared.stats
    }

    /// Pub/sub messages dropped because this node fell behind, and reconnections to Redis.
    pub fn losses(&self) -> (u64, u64) {
        let link = &self.shared.link;
        (link.dropped.load(Ordering::Relaxed), link.reconnects.load(Ordering::Relaxed))
    }

    /// Whether the last heartbeat reached Redis (readiness).
    pub fn is_connected(&self) -> bool {
        self.shared.nodes.is_fresh()
    }

    /// Starts serving `registry` (built with [`Self::user_groups`] and [`Self::interest`]):
    /// subscribes to this node's channels, loads the memberships and joins the live nodes.
    pub async fn start(&self, registry: Arc<Registry>) -> Result<(), EngineError> {
        let queues = self.queues.lock().take().expect("an engine starts once");
        let name = nodes::client_name(&self.shared.names, self.shared.node);
        self.shared.link.set_name(name).await.map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let _ = self.shared.registry.set(registry);
        let shared = &self.shared;
        let mut tasks = vec![
            tokio::spawn(bus::receive(shared.clone(), queues.pushes)),
            tokio::spawn(bus::send_replies(shared.clone(), queues.replies)),
            tokio::spawn(interest::run(shared.clone(), queues.subscriptions, queues.ended)),
            tokio::spawn(members::run(shared.clone(), queues.syncs)),
        ];
        interest::settled(shared).await;
        members::catch_up_now(shared).await?;
        nodes::heartbeat(shared).await.map_err(|e| EngineError::Unavailable(e.to_string()))?;
        nodes::announce(shared).await?;
        tasks.push(tokio::spawn(nodes::run(shared.clone())));
        tasks.push(tokio::spawn(supervise(shared.clone())));
        self.tasks.lock().extend(tasks);
        Ok(())
    }

    /// Leaves the live nodes and stops; the connection closes, ending every subscription.
    pub async fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        // Unsubscribed before anything else: from then on no publisher counts this node (a
        // dropped connection is closed a moment later, not at once).
        let (done, left) = tokio::sync::oneshot::channel();
        if self.shared.subscriptions.send(interest::Event::Leave(done)).is_ok() {
            let _ = left.await;
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), nodes::leave(&self.shared)).await;
        self.stop();
    }

    /// Ends the engine's tasks and closes its connection.
    fn stop(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        self.shared.link.close();
    }
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Rebuilds a dropped connection (or one the probe found deaf), then resubscribes everything
/// and catches up on the membership log.
async fn supervise(shared: Arc<Shared>) {
    loop {
        shared.link.disconnected.notified().await;
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        tracing::warn!("the connection to Redis dropped; reconnecting");
        shared.link.reconnect().await;
        let _ = shared.subscriptions.send(interest::Event::Resubscribe);
        let _ = shared.syncs.send(members::Sync::catch_up());
        tracing::info!("reconnected to Redis; subscriptions restored");
    }
}
