//! A node's routing interest: which users and groups it holds live connections of. In a
//! cluster, other nodes route user and group sends only to the nodes interested in them, so
//! the hub reports every change (a user's first connection here arrives, its last leaves; a
//! group gets its first connection here or loses its last; the hub gets its first connection
//! here or loses its last) to an [`InterestSink`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What an interest entry names. Replicated in the raft log by variant name: never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum InterestKind {
    /// The node holds at least one live connection of the user.
    User,
    /// The node holds at least one live connection in the group.
    Group,
    /// The node holds at least one live connection of the hub (the name is empty). Engines
    /// that route broadcasts per hub use it; the raft engine routes them to every node and
    /// ignores it (it never enters the raft log).
    Hub,
    /// The node holds this connection (the name is its id). Reported only to sinks that ask
    /// ([`InterestSink::wants_connections`]): the bridge to an ASP.NET backplane, which
    /// subscribes to a channel per connection.
    Connection,
}

/// Resolves once a state is reached; boxed so the trait stays object safe.
/// `true` once settled; `false` when it could not be within the sink's bound (the node is
/// then not reachable for what was reported: the caller refuses rather than answers).
pub type Settled = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Where a node's interest changes go (the control plane, in a cluster).
pub trait InterestSink: Send + Sync {
    /// Called under the hub's lock, so changes of one name arrive in the order they happened.
    /// Must not block.
    fn report(&self, hub: &str, kind: InterestKind, name: &str, present: bool);

    /// Resolves once every change reported before the call is visible to every node's router
    /// (or could not be made so within a bound).
    fn settled(&self) -> Settled;

    /// Whether connections are reported one by one too ([`InterestKind::Connection`]).
    fn wants_connections(&self) -> bool {
        false
    }
}

/// Reports to two sinks (the engine's and the backplane bridge's); settled once both are.
pub struct BothSinks(pub Arc<dyn InterestSink>, pub Arc<dyn InterestSink>);

impl InterestSink for BothSinks {
    fn report(&self, hub: &str, kind: InterestKind, name: &str, present: bool) {
        for sink in [&self.0, &self.1] {
            if kind != InterestKind::Connection || sink.wants_connections() {
                sink.report(hub, kind, name, present);
            }
        }
    }

    /// Waits for both; the answer is the first's (the engine's): the bridge's backplane being
    /// slow must not refuse the node's own clients.
    fn settled(&self) -> Settled {
        let (first, second) = (self.0.settled(), self.1.settled());
        Box::pin(async move {
            let settled = first.await;
            second.await;
            settled
        })
    }

    fn wants_connections(&self) -> bool {
        self.0.wants_connections() || self.1.wants_connections()
    }
}
