//! The raft engine's membership store and routing table: the raft-replicated control plane of a
//! Switchboard cluster. [`ControlPlane`] implements the engine contract's `MembershipStore`
//! (user-group memberships) and `Directory` (live nodes and their routing interest, read by the
//! fan-out bus); [`InterestReporter`] feeds the routing interest from the node's hubs.
//!
//! Every node applies the same log of [`Command`]s to an in-memory [`ControlState`]; the rest of
//! the node reads that state to decide membership and routing. This crate holds the openraft type
//! configuration, the commands, the state they build, the redb-backed storage openraft needs and
//! the gRPC network between nodes.
//! It knows nothing about HTTP or SignalR transports; it depends on the engine contract, the hub
//! (for the interest it reports) and `switchboard-grpc` (the gRPC contracts).
//!
//! ```text
//!   REST / edge code ──(batched Command)──> Raft::client_write ──> leader log
//!                                                                   │ replicated, committed
//!   LogStore (redb: log, vote, committed, last purged) <────────────┤
//!   StateMachineStore ──apply──> Arc<RwLock<ControlState>> ──> readers (router, API)
//!                     ──snapshot──> redb (state bytes + meta), loaded on start
//! ```
//!
//! # What is replicated
//! * **User-group membership** (`PUT .../users/{u}/groups/{g}?ttl=`): Azure's rules
//!   (`azure-serverless.md` §4.3). A TTL-less membership lasts one year from the proposer's
//!   timestamp; only a user's 100 most recently updated TTL-less memberships are kept. The order
//!   comes from an apply counter stored in the state, so eviction is identical on every replica.
//!   `ttl=0` is not a membership at all (current connections only) and is never proposed.
//! * **Nodes and leases**: roles, advertised address, a lease deadline renewed by heartbeat. The
//!   leader expires dead nodes with [`Command::RemoveNode`], which also purges their interest (G7),
//!   a margin after the deadline and only once it has led for a whole lease; a node whose own
//!   lease lapsed closes its clients first ([`close_clients_while_lapsed`]).
//! * **Routing interest**: which nodes hold live connections of which users and groups, so a send
//!   to a user or group goes only to nodes that care.
//!
//! Time never comes from the applying replica's clock: commands carry `at`/`now`/`lease_until`
//! chosen by the proposer, and queries take `now` as an argument. That keeps apply deterministic
//! and the rules testable without a clock.
//!
//! # Batching
//! Callers collect many small changes (interest flips, membership calls) into one
//! [`Command::Batch`] and propose it with one `client_write`: one log entry, one fsync, one
//! replication round trip for the whole batch. [`Response::changed`] counts the leaf commands that
//! changed state.
//!
//! # Storage and durability
//! One redb file (`control.redb`) in the node's data directory holds three tables: the log
//! (index → entry), metadata (vote, committed, last purged) and the current snapshot (meta + state
//! bytes). redb is pure Rust and builds in seconds; rocksdb costs 13+ minutes of C++ build on
//! our 2-core machines (`specs/deps.md` §4) and a sled release is years old.
//!
//! Durability points (redb's default `Durability::Immediate`: checksummed 1-phase commit plus
//! one fsync before `commit` returns):
//! * `append` reports the entries flushed to openraft only after their write transaction
//!   committed durably;
//! * `save_vote`, `truncate`, `purge`, snapshot build and install commit durably;
//! * `save_committed` commits with `Durability::None`: it is an optimisation (fewer entries to
//!   re-apply after a restart), it becomes durable with the next append, and losing it is safe.
//!
//! The state machine itself lives in memory. A restart loads the last snapshot and openraft
//! re-applies the committed log after it, so memberships survive restarts (G6). Snapshot bytes
//! are serialized under the read lock when openraft asks for a builder, so the snapshot matches
//! `last_applied` exactly even though openraft writes it from another task.
//!
//! Every redb call runs on tokio's blocking pool (`spawn_blocking`): an fsync can take
//! milliseconds and must not stall the async workers. Each storage call is one short transaction.
//!
//! # Between nodes
//! Raft RPCs travel over gRPC (`switchboard.raft.v1`, generated in `switchboard-grpc`):
//! [`network::grpc::GrpcNetwork`] is openraft's client side, [`grpc::RaftService`] the server
//! side, [`grpc::AdminService`] answers cluster status, join and leave. The openraft messages
//! are MessagePack bytes inside the protobuf envelope (see [`grpc`] for why), and every call
//! carries the cluster secret and protocol version, checked by `switchboard_grpc::ServerAuth`
//! before any handler runs. A single-node cluster uses [`network::NoPeers`] and needs no server.
//!
//! # Encoding
//! Log entries, vote and snapshots are MessagePack through `rmp-serde`: compact (structs as
//! arrays, enum variants by name) and several times faster than JSON to encode and decode. Keep
//! [`Command`] versionable: add new variants freely, add fields only at the end of a variant
//! with `#[serde(default)]`, never reorder or rename.

#![forbid(unsafe_code)]

mod command;
mod error;
pub mod grpc;
mod interest;
pub mod network;
mod plane;
mod state;
pub mod store;

use std::sync::Arc;

pub use command::{Command, InterestChange, Response, Roles};
pub use error::{Error, Result};
pub use interest::{InterestReporter, close_clients_while_lapsed};
pub use plane::{ClusterSettings, ControlPlane, RaftNumbers, RemoveError};
pub use state::{ControlState, NodeInfo};
pub use store::{LogStore, StateMachineStore, open_store};
pub use switchboard_hub::{DEFAULT_TTL_SECS, InterestKind, MAX_TTL_LESS_GROUPS, Membership};

/// Raft node ids (one per Switchboard node).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft type configuration of the control plane.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        // Spelled out: the macro's default names `Cursor` unqualified.
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// The control plane's raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// Handle to the applied state, shared between the state machine (writer) and readers.
///
/// Readers take the read lock briefly and never across an `.await`.
pub type SharedState = Arc<parking_lot::RwLock<ControlState>>;
