//! The node-local half of Switchboard: who is connected here and what they should receive.
//!
//! ```text
//!  REST / fan-out ──► Registry ──► Hub (one per hub name, one RwLock)
//!                                   ├─ connections   id → Connection
//!                                   ├─ users         user → connections
//!                                   ├─ groups        group → connections   (dies with the connection)
//!                                   └─ user groups   read through a UserGroupReader (persistent,
//!                                                    replicated by the control plane)
//!  Frames: one message, serialized at most once per protocol, shared by every target
//!  Connection.outbox: bounded queue of shared frames; the transport task drains it in batches
//!  Hub broadcasts: one log per hub, read by every outbox with its own cursor
//! ```
//!
//! Nothing here touches a socket: transports (the edge crate) own the I/O and drain
//! [`Outbox`]es; REST handlers and the fan-out call [`Hub`] methods.

mod broadcast_log;
mod call;
mod connection;
mod filter;
mod frames;
mod hub;
mod interest;
mod membership;
pub mod metrics;
mod outbox;
mod registry;
mod trace;
mod user_groups;
mod wake;

/// The maps a send walks (connections, users, groups, memberships), hashed with foldhash instead
/// of SipHash, which was over a quarter of a cluster node's group-send walk (it looks up each
/// member among its own users). The keys come from tokens and calls the app signed, and the
/// hasher is randomly seeded per process.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use call::{Applied, Call, Command, Listed, Target};
pub use connection::{
    Connection, ConnectionInfo, MAX_OPEN_STREAMS, ResultWaiter, new_connection_id, new_invocation_id, owner_of,
};
pub use filter::{Filter, FilterError, MAX_FILTER_BYTES, Subject};
pub use frames::Frames;
pub use hub::{Hub, is_valid_group_name, is_valid_hub_name};
pub use interest::{BothSinks, InterestKind, InterestSink, Settled};
pub use membership::{LocalUserGroups, UserGroupReader};
pub use metrics::{ConnectFailure, Disconnect, SendKind, Transport};
pub use outbox::{CloseRequest, Outbox, PushError};
pub use registry::{DEFAULT_MAX_QUEUED_BYTES, HubConfig, Registry, Stats};
pub use trace::{TraceEvent, Tracer, Watch, Watched};
pub use user_groups::{DEFAULT_TTL_SECS, MAX_TTL_LESS_GROUPS, Membership, UserGroups};

/// Seconds since the Unix epoch; user-group TTLs are kept in wall-clock time so they can be
/// persisted and replicated.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
