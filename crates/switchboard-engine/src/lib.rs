//! The engine contract: what an edge node needs from the cluster it belongs to.
//!
//! An edge node (transports, REST, its own hubs) asks two things of its engine:
//!
//! * a [`MembershipStore`]: persistent user-group memberships with Azure's rules (TTLs, the
//!   100 TTL-less groups per user), read on every group send through
//!   [`UserGroupReader`](switchboard_hub::UserGroupReader);
//! * a [`NodeBus`]: runs a [`Call`] on every node that holds its targets (a send, a close, a
//!   group change, an existence question) and answers once each of them applied it.
//!
//! The raft engine (`switchboard-control` for the store and the routing table,
//! `switchboard-fanout` for the bus over gRPC) is the default; the embedded single node is the
//! raft engine with one member and the [`LocalBus`]. Every engine keeps the guarantees below,
//! and proves it by passing the [`contract`] suite.
//!
//! # The contract
//!
//! * **G3, linearizable membership.** Once a store write (`add`, `remove`, `remove_user`)
//!   resolved `Ok`, every later read on any node sees it, and so does every send accepted
//!   afterwards on any node. Once a bus call that adds to a group ([`Call::AddToGroup`],
//!   [`Call::UserJoinGroup`]) resolved, a group send through any node reaches the new members.
//!   Once a user's first connection on a node was registered and the registry's interest
//!   settled ([`Registry::interest_settled`](switchboard_hub::Registry::interest_settled)), a
//!   user send through any node reaches it.
//! * **G4, ordered delivery.** [`NodeBus::call`] with a send resolves `Ok` only once every node
//!   holding targets has the frames in the target connections' outboxes. So sends that resolved
//!   one after another, through any nodes, reach a connection in that order, each once.
//! * **G6, durable membership.** Memberships survive a restart of every node (the store's own
//!   durability: raft's log on disk).
//! * **G7, faults.** A node that stopped or cannot be reached has no live clients: sends skip it
//!   and its routes are dropped within its lease (10 s at most). A store that cannot commit
//!   answers [`EngineError::NoQuorum`] or [`EngineError::Timeout`], never `Ok`.
//! * **Errors are typed** ([`EngineError`]); the REST API maps them to status codes in one place.
//!
//! # Why a call and not a method per operation
//! One [`Call`] vocabulary (defined next to the hub that applies it) travels unchanged from the
//! REST handler through the bus to [`Hub::apply`](switchboard_hub::Hub::apply) on each target
//! node, so a call means the same on a single node, on the entry node and on a remote node.

pub mod contract;
mod local;

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use switchboard_hub::{Frames, Registry};
use switchboard_protocol::Protocol;

pub use local::LocalBus;
pub use switchboard_hub::{Applied, Call, Listed, Target, UserGroupReader};

/// A call into an engine completes asynchronously (it may wait for consensus or for other nodes).
pub type EngineFuture<T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + Send>>;

/// Why an engine could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The store could not commit the change (no leader, no quorum). Nothing was stored; the
    /// caller may retry.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The store did not confirm the change in time: it may or may not be stored.
    #[error("not confirmed in time: {0}")]
    Timeout(String),
    /// This node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A node holding targets could not be reached, or stopped answering: the call may have
    /// been applied on some nodes and not on others.
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: u64, reason: String },
    /// A node holding targets did not acknowledge in time (it may have applied the call).
    #[error("node {node} did not answer within {timeout_ms} ms")]
    NodeTimeout { node: u64, timeout_ms: u64 },
    /// A node refused the call (another cluster secret, an incompatible release, a malformed request).
    #[error("node {node} refused the call: {reason}")]
    Refused { node: u64, reason: String },
    /// The call cannot be carried as given (too large, an invalid name); nothing was sent.
    #[error("invalid call: {0}")]
    Invalid(String),
    /// The connection is already in its maximum of groups; nothing changed.
    #[error("the connection is in its maximum of groups")]
    GroupLimit,
    /// The service the engine keeps its state in (Redis) cannot be reached: nothing was done;
    /// the caller may retry.
    #[error("the engine's store is unavailable: {0}")]
    Unavailable(String),
    /// Some of the nodes that received the call did not answer in time: it may have been
    /// applied on some and not on others.
    #[error("{answered} of {expected} receiving nodes answered within {timeout_ms} ms")]
    Incomplete { answered: usize, expected: usize, timeout_ms: u64 },
}

/// Persistent user-group memberships (`PUT/DELETE …/users/{user}/groups/{group}`) with Azure's
/// rules, shared by every node. Reads (through [`UserGroupReader`]) are cheap and local: they run
/// under a hub's lock on every group send. See the crate docs for the guarantees (G3, G6).
pub trait MembershipStore: UserGroupReader {
    /// Adds or refreshes a membership. `ttl_secs: None` is the default year and counts against
    /// the user's 100 TTL-less groups; `Some(0)` never reaches a store (it is connection-level,
    /// [`Call::UserJoinGroup`]).
    fn add(&self, hub: &str, user: &str, group: &str, ttl_secs: Option<u64>) -> EngineFuture<()>;
    /// Removes one membership (absent is fine).
    fn remove(&self, hub: &str, user: &str, group: &str) -> EngineFuture<()>;
    /// Removes every membership of a user in a hub.
    fn remove_user(&self, hub: &str, user: &str) -> EngineFuture<()>;
}

/// Carries calls to the nodes that hold their targets. See the crate docs for the guarantees
/// (G3, G4, G7).
pub trait NodeBus: Send + Sync {
    /// Applies `call` to the hub `hub` (as the registry keys it) on every node that may hold its
    /// targets: the owner named in a connection id for connection-scoped calls, the nodes
    /// holding the user or group for user and group calls, every node otherwise. Resolves once
    /// each of them applied it (a group add: once the group routes there) with whether any
    /// found what the call names ([`Hub::apply`](switchboard_hub::Hub::apply)).
    fn call(&self, hub: &str, call: Call) -> EngineFuture<bool>;

    /// The live connections `target` names in `hub` on every node that may hold them (a group's
    /// through its member users too), sorted by connection id. Presence and group listings.
    fn list(&self, hub: &str, target: Target) -> EngineFuture<Vec<Listed>>;

    /// The client and REST address of `node`, where transport requests for its connections are
    /// forwarded (`None`: unknown, dead, or this is the only node).
    fn http_address(&self, node: u64) -> Option<String>;

    /// A client result (`:invoke`): writes the invocation to its connection on the owner node
    /// and resolves with the client's Completion, or why there is none, within its timeout.
    fn invoke(&self, hub: &str, invocation: ClientInvocation) -> EngineFuture<Invoked>;
}

/// A client-result invocation (`:invoke`) of one connection.
pub struct ClientInvocation {
    pub connection: String,
    pub invocation_id: String,
    /// The invocation in each protocol, carrying `invocation_id`.
    pub frames: Frames,
    /// How long the owner waits for the client.
    pub timeout: Duration,
}

/// What a client-result invocation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invoked {
    /// The client answered: its Completion, framed in its protocol.
    Completed { protocol: Protocol, frame: Bytes },
    /// No such connection.
    NotFound,
    /// The connection went away before answering.
    Disconnected,
    /// No answer in time.
    TimedOut,
}

/// Runs a client-result invocation on this node's own connection (the owner's side of
/// [`NodeBus::invoke`], shared by every engine).
pub async fn invoke_here(registry: &Registry, hub: &str, invocation: &ClientInvocation) -> Invoked {
    let ClientInvocation { connection, invocation_id, frames, timeout } = invocation;
    let Some(hub) = registry.get(hub) else { return Invoked::NotFound };
    let Some(conn) = hub.connection(connection) else { return Invoked::NotFound };
    let (done, answered) = tokio::sync::oneshot::channel();
    let waiter = Box::new(move |frame: Option<Bytes>| {
        let _ = done.send(frame);
    });
    if !hub.invoke(connection, invocation_id, frames, waiter) {
        return Invoked::NotFound;
    }
    match tokio::time::timeout(*timeout, answered).await {
        Ok(Ok(Some(frame))) => Invoked::Completed { protocol: conn.protocol, frame },
        Ok(_) => Invoked::Disconnected,
        Err(_) => {
            conn.forget_result(invocation_id);
            Invoked::TimedOut
        }
    }
}

/// Where the other nodes are, as a bus that addresses nodes needs it: liveness and routing
/// interest (which nodes hold live connections of a user or a group). Nodes are
/// `(node id, bus address)`, this node included when it qualifies.
pub trait Directory: Send + Sync {
    /// Every live edge node.
    fn live_nodes(&self) -> Vec<(u64, String)>;
    /// Live edge nodes holding connections of `user` in `hub`.
    fn nodes_for_user(&self, hub: &str, user: &str) -> Vec<(u64, String)>;
    /// Live edge nodes holding connections in `group` of `hub`, directly or through a member user.
    fn nodes_for_group(&self, hub: &str, group: &str) -> Vec<(u64, String)>;
    /// The client and REST address of a live node.
    fn http_address(&self, node: u64) -> Option<String>;
}
