//! The replicated commands: every change to [`ControlState`](crate::ControlState) is one of
//! these, proposed through raft and applied in log order on every replica.
//!
//! Versioning rule (MessagePack encodes structs as arrays and variants by name): add variants
//! freely; add fields only at the end of a variant, with `#[serde(default)]`; never reorder or
//! rename.

use serde::{Deserialize, Serialize};
use switchboard_hub::InterestKind;

/// A change to the replicated control state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Several commands in one log entry, applied in order. Callers batch proposals to pay one
    /// fsync and one replication round trip for many changes.
    Batch(Vec<Command>),
    /// Adds or refreshes a persistent user-group membership.
    AddUserToGroup {
        hub: String,
        user: String,
        group: String,
        /// Unix seconds. `None` is a TTL-less membership: it lasts [`DEFAULT_TTL_SECS`] from
        /// `at` and counts against the user's cap of [`MAX_TTL_LESS_GROUPS`]. A value at or
        /// before `at` (Azure's `ttl=0`) stores nothing.
        ///
        /// [`DEFAULT_TTL_SECS`]: crate::DEFAULT_TTL_SECS
        /// [`MAX_TTL_LESS_GROUPS`]: crate::MAX_TTL_LESS_GROUPS
        expires_at: Option<u64>,
        /// Unix seconds, chosen by the proposer so every replica applies the same time.
        at: u64,
    },
    /// Removes one user-group membership; absent memberships are fine.
    RemoveUserFromGroup { hub: String, user: String, group: String },
    /// Removes every membership of a user in a hub.
    RemoveUserFromAllGroups { hub: String, user: String },
    /// Drops memberships whose `expires_at` is at or before `now` (unix seconds). Queries already
    /// ignore expired entries; this only reclaims memory and snapshot space.
    PurgeExpired { now: u64 },
    /// Adds a node, or replaces its record (a restarted node re-registers).
    RegisterNode {
        node: u64,
        roles: Roles,
        /// Address peers use to reach the node (gRPC fan-out and raft).
        advertise: String,
        /// Unix milliseconds.
        lease_until: u64,
        /// Address of the node's client and REST endpoint (requests for its connections that
        /// land elsewhere are forwarded there).
        #[serde(default)]
        http: String,
    },
    /// Extends a registered node's lease; leases never move backwards. Unknown nodes are ignored.
    RenewLease { node: u64, lease_until: u64 },
    /// Forgets a node and purges all of its routing interest.
    RemoveNode { node: u64 },
    /// Routing interest changes reported by one node. Ignored if the node is not registered, so a
    /// late proposal from a removed node cannot resurrect routes to it.
    Interest { node: u64, changes: Vec<InterestChange> },
}

impl Command {
    /// Wraps commands into one proposal; a single command is proposed as itself.
    pub fn batch(mut commands: Vec<Command>) -> Command {
        if commands.len() == 1 {
            return commands.remove(0);
        }
        Command::Batch(commands)
    }
}

/// The roles a node was started with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// Raft voter.
    pub control: bool,
    /// Serves clients and REST, so it receives fan-out.
    pub edge: bool,
}

/// One node's interest in a user or group appearing (`present`) or disappearing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterestChange {
    pub hub: String,
    pub kind: InterestKind,
    pub name: String,
    pub present: bool,
}

/// The result of applying one log entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// How many leaf commands (a batch counts its members) changed the state. Idempotent
    /// repeats count zero.
    pub changed: u32,
}
