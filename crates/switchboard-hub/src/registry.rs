//! Every hub on this node, plus the limits and counters they share.

use crate::hub::Hub;
use crate::interest::{InterestKind, InterestSink, Settled};
use crate::membership::{LocalUserGroups, UserGroupReader};
use crate::metrics::{ConnectFailure, Counters, Disconnect};
use crate::trace::Tracer;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The default of [`HubConfig::max_queued_bytes`]: room for three messages of the largest
/// REST body (1 MiB) as JSON frames, so a client that keeps up takes a few of them back to
/// back, and a slow one is still closed before it holds much. (A MessagePack frame of the
/// same body can be larger: a JSON number becomes a 9-byte float, up to ~2.25× the body.)
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 4 << 20;

/// Limits that apply to every connection of the node.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Bytes an outbox may hold before its connection is closed as a slow consumer.
    pub max_queued_bytes: usize,
    /// Groups one connection may be in (0: no cap).
    pub max_groups_per_connection: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self { max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES, max_groups_per_connection: 0 }
    }
}

/// Node-wide counters, read by metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames handed to outboxes.
    pub delivered: AtomicU64,
    /// Connections closed because their outbox overflowed.
    pub slow_consumer_closes: AtomicU64,
    /// Connections currently registered.
    pub connections: AtomicU64,
    /// Connections currently registered, by transport × protocol (JSON, MessagePack).
    pub open: [Counters<2>; 3],
    /// Connections established, by transport.
    pub connects: Counters<3>,
    /// Connections ended, by [`Disconnect`] reason.
    pub disconnects: Counters<4>,
    /// Connection attempts refused, by [`ConnectFailure`] reason.
    pub connect_failures: Counters<5>,
    /// Frames handed to outboxes, by [`SendKind`](crate::SendKind).
    pub messages_out: Counters<4>,
    /// Hub messages received from clients.
    pub messages_in: AtomicU64,
    /// Connections closed for sending more messages per second than allowed.
    pub rate_limited_closes: AtomicU64,
    /// Bytes read from clients (frames and bodies, after transport framing).
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
}

impl Stats {
    pub fn disconnected(&self, reason: Disconnect) {
        self.disconnects.add(reason as usize, 1);
    }

    pub fn connect_failed(&self, reason: ConnectFailure) {
        self.connect_failures.add(reason as usize, 1);
    }

    pub fn received(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

pub(crate) struct Shared {
    pub(crate) config: HubConfig,
    pub(crate) stats: Stats,
    pub(crate) user_groups: Arc<dyn UserGroupReader>,
    pub(crate) interest: Option<Arc<dyn InterestSink>>,
    pub(crate) tracer: Arc<Tracer>,
}

/// See the module docs.
pub struct Registry {
    hubs: RwLock<HashMap<Arc<str>, Arc<Hub>>>,
    shared: Arc<Shared>,
}

impl Registry {
    /// A registry whose user-group memberships live in this process only.
    pub fn new(config: HubConfig) -> Self {
        Self::with_user_groups(config, Arc::new(LocalUserGroups::default()))
    }

    /// A registry reading user-group memberships from `user_groups`.
    pub fn with_user_groups(config: HubConfig, user_groups: Arc<dyn UserGroupReader>) -> Self {
        let shared = Shared { config, stats: Stats::default(), user_groups, interest: None, tracer: Arc::default() };
        Self { hubs: RwLock::default(), shared: Arc::new(shared) }
    }

    /// Reports this node's interest in users and groups to `sink` (cluster mode). Call before
    /// any hub exists.
    pub fn reporting_interest(mut self, sink: Arc<dyn InterestSink>) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("interest is set before hubs are created");
        shared.interest = Some(sink);
        self
    }

    /// Resolves once every interest change reported so far is visible to every node's router
    /// (at once without a sink).
    pub fn interest_settled(&self) -> Settled {
        match &self.shared.interest {
            Some(sink) => sink.settled(),
            None => Box::pin(std::future::ready(true)),
        }
    }

    /// Every user and group this node holds connections of, by hub: what a node reports again
    /// after the cluster forgot it.
    pub fn interest_snapshot(&self) -> Vec<(String, InterestKind, String)> {
        self.hubs().iter().flat_map(|hub| hub.interest_snapshot()).collect()
    }

    /// The hub named `name` (already lower-cased), if anything ever used it.
    pub fn get(&self, name: &str) -> Option<Arc<Hub>> {
        self.hubs.read().get(name).cloned()
    }

    /// The hub named `name`, created on first use.
    pub fn get_or_create(&self, name: &str) -> Arc<Hub> {
        if let Some(hub) = self.get(name) {
            return hub;
        }
        let mut hubs = self.hubs.write();
        hubs.entry(Arc::from(name)).or_insert_with(|| Arc::new(Hub::new(Arc::from(name), self.shared.clone()))).clone()
    }

    /// Every hub, for node-wide sweeps.
    pub fn hubs(&self) -> Vec<Arc<Hub>> {
        self.hubs.read().values().cloned().collect()
    }

    /// Bytes waiting in every outbox of the node.
    pub fn queued_bytes(&self) -> u64 {
        self.hubs().iter().map(|hub| hub.queued_bytes()).sum()
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The node's live trace (what the console watches).
    pub fn tracer(&self) -> &Arc<Tracer> {
        &self.shared.tracer
    }

    /// The persistent user-group memberships every hub reads.
    pub fn user_groups(&self) -> &dyn UserGroupReader {
        &*self.shared.user_groups
    }

    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}
