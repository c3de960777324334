//! [`ControlState`]: the applied control-plane state, pure data with query methods.
//!
//! Applying is deterministic: the result depends only on the commands and their order, never
//! on the replica's clock or hash-map iteration order (every choice is keyed by a counter).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::command::{Command, InterestChange, Roles};
use switchboard_hub::{InterestKind, Membership, UserGroups};

/// A registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub roles: Roles,
    /// Address peers use to reach the node.
    pub advertise: String,
    /// Unix milliseconds; past it the leader may remove the node.
    pub lease_until: u64,
    /// Address of the node's client and REST endpoint.
    #[serde(default)]
    pub http: String,
}

/// Everything replicated about one hub.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct HubState {
    /// User-group memberships, with Azure's rules (`switchboard_hub::UserGroups`).
    memberships: UserGroups,
    /// user → nodes holding live connections of the user.
    user_interest: HashMap<String, BTreeSet<u64>>,
    /// group → nodes holding live connections in the group.
    group_interest: HashMap<String, BTreeSet<u64>>,
}

impl HubState {
    fn is_empty(&self) -> bool {
        self.memberships.is_empty() && self.user_interest.is_empty() && self.group_interest.is_empty()
    }

    /// The routing table of a kind; `None` for hub interest, which the raft engine never routes.
    fn interest_map(&mut self, kind: InterestKind) -> Option<&mut HashMap<String, BTreeSet<u64>>> {
        match kind {
            InterestKind::User => Some(&mut self.user_interest),
            InterestKind::Group => Some(&mut self.group_interest),
            InterestKind::Hub | InterestKind::Connection => None,
        }
    }
}

/// The applied control-plane state: user-group memberships, nodes with leases, and routing
/// interest. See the crate docs for what each part is for.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ControlState {
    hubs: HashMap<String, HubState>,
    nodes: BTreeMap<u64, NodeInfo>,
    /// Counts membership additions; the "most recently updated" order of the TTL-less cap.
    updates: u64,
}

impl ControlState {
    /// Encodes the state for a snapshot (indexes are left out and rebuilt by [`Self::decode`]).
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec(self)
    }

    /// Decodes a snapshot made by [`Self::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }

    /// Applies one command; returns how many leaf commands changed the state.
    pub fn apply(&mut self, command: Command) -> u32 {
        let changed = match command {
            Command::Batch(commands) => return commands.into_iter().map(|c| self.apply(c)).sum(),
            Command::AddUserToGroup { hub, user, group, expires_at, at } => {
                self.add_user_to_group(hub, user, group, expires_at, at)
            }
            Command::RemoveUserFromGroup { hub, user, group } => self.remove_user_from_group(&hub, &user, &group),
            Command::RemoveUserFromAllGroups { hub, user } => self.remove_user_from_all_groups(&hub, &user),
            Command::PurgeExpired { now } => self.purge_expired(now),
            Command::RegisterNode { node, roles, advertise, lease_until, http } => {
                let info = NodeInfo { roles, advertise, lease_until, http };
                self.nodes.insert(node, info.clone()) != Some(info)
            }
            Command::RenewLease { node, lease_until } => match self.nodes.get_mut(&node) {
                Some(info) if info.lease_until < lease_until => {
                    info.lease_until = lease_until;
                    true
                }
                _ => false,
            },
            Command::RemoveNode { node } => self.remove_node(node),
            Command::Interest { node, changes } => self.apply_interest(node, changes),
        };
        u32::from(changed)
    }

    fn add_user_to_group(
        &mut self,
        hub: String,
        user: String,
        group: String,
        expires_at: Option<u64>,
        at: u64,
    ) -> bool {
        let hub_state = self.hubs.entry(hub.clone()).or_default();
        let stored = hub_state.memberships.add(&user, &group, expires_at, at, self.updates + 1);
        if stored {
            self.updates += 1;
        }
        self.drop_hub_if_empty(&hub);
        stored
    }

    fn remove_user_from_group(&mut self, hub: &str, user: &str, group: &str) -> bool {
        let Some(hub_state) = self.hubs.get_mut(hub) else { return false };
        let removed = hub_state.memberships.remove(user, group);
        self.drop_hub_if_empty(hub);
        removed
    }

    fn remove_user_from_all_groups(&mut self, hub: &str, user: &str) -> bool {
        let Some(hub_state) = self.hubs.get_mut(hub) else { return false };
        let removed = hub_state.memberships.remove_user(user);
        self.drop_hub_if_empty(hub);
        removed
    }

    fn purge_expired(&mut self, now: u64) -> bool {
        let mut removed = false;
        for hub_state in self.hubs.values_mut() {
            removed |= hub_state.memberships.purge_expired(now) > 0;
        }
        self.hubs.retain(|_, hub_state| !hub_state.is_empty());
        removed
    }

    /// Forgets the node and scans every hub for its interest (removal is rare; no reverse index).
    fn remove_node(&mut self, node: u64) -> bool {
        let mut changed = self.nodes.remove(&node).is_some();
        for hub_state in self.hubs.values_mut() {
            for interest in [&mut hub_state.user_interest, &mut hub_state.group_interest] {
                interest.retain(|_, nodes| {
                    changed |= nodes.remove(&node);
                    !nodes.is_empty()
                });
            }
        }
        self.hubs.retain(|_, hub_state| !hub_state.is_empty());
        changed
    }

    fn apply_interest(&mut self, node: u64, changes: Vec<InterestChange>) -> bool {
        if !self.nodes.contains_key(&node) {
            return false;
        }
        let mut changed = false;
        for InterestChange { hub, kind, name, present } in changes {
            if kind == InterestKind::Hub {
                continue;
            }
            if present {
                let Some(interest) = self.hubs.entry(hub).or_default().interest_map(kind) else { continue };
                changed |= interest.entry(name).or_default().insert(node);
                continue;
            }
            let Some(hub_state) = self.hubs.get_mut(&hub) else { continue };
            let Some(interest) = hub_state.interest_map(kind) else { continue };
            if let Some(nodes) = interest.get_mut(&name) {
                changed |= nodes.remove(&node);
                if nodes.is_empty() {
                    interest.remove(&name);
                }
            }
            self.drop_hub_if_empty(&hub);
        }
        changed
    }

    fn drop_hub_if_empty(&mut self, hub: &str) {
        if self.hubs.get(hub).is_some_and(HubState::is_empty) {
            self.hubs.remove(hub);
        }
    }

    /// Returns the stored membership of `user` in `group`, expired or not.
    pub fn membership(&self, hub: &str, user: &str, group: &str) -> Option<Membership> {
        self.hubs.get(hub)?.memberships.membership(user, group)
    }

    /// Returns whether `user` is an unexpired member of `group` at `now` (unix seconds).
    pub fn is_member(&self, hub: &str, user: &str, group: &str, now: u64) -> bool {
        self.hubs.get(hub).is_some_and(|h| h.memberships.contains(user, group, now))
    }

    /// Returns the unexpired members of `group` at `now` (unix seconds), in no particular order.
    pub fn users_in<'a>(&'a self, hub: &str, group: &str, now: u64) -> impl Iterator<Item = &'a str> + use<'a> {
        self.hubs.get(hub).map(|h| h.memberships.users_in(group, now)).into_iter().flatten()
    }

    /// Returns the groups `user` is an unexpired member of at `now`, in no particular order.
    pub fn groups_of<'a>(&'a self, hub: &str, user: &str, now: u64) -> impl Iterator<Item = &'a str> + use<'a> {
        self.hubs.get(hub).map(|h| h.memberships.groups_of(user, now)).into_iter().flatten()
    }

    /// Returns how many users hold a stored membership of `group`, expired ones included.
    pub fn member_count(&self, hub: &str, group: &str) -> usize {
        self.hubs.get(hub).map_or(0, |h| h.memberships.member_count(group))
    }

    /// Stored memberships of `hub`.
    pub fn hub_membership_count(&self, hub: &str) -> usize {
        self.hubs.get(hub).map_or(0, |h| h.memberships.len())
    }

    /// Returns the nodes holding live connections of `user`.
    pub fn nodes_for_user(&self, hub: &str, user: &str) -> &BTreeSet<u64> {
        static NONE: BTreeSet<u64> = BTreeSet::new();
        self.hubs.get(hub).and_then(|h| h.user_interest.get(user)).unwrap_or(&NONE)
    }

    /// Returns the nodes a send to `group` must reach: nodes with connections in the group, plus
    /// nodes with connections of any unexpired member user (those connections join the group).
    /// Costs one lookup per member user until every registered node is in.
    pub fn nodes_for_group(&self, hub: &str, group: &str, now: u64) -> BTreeSet<u64> {
        let Some(hub_state) = self.hubs.get(hub) else { return BTreeSet::new() };
        let mut nodes = hub_state.group_interest.get(group).cloned().unwrap_or_default();
        for user in self.users_in(hub, group, now) {
            if nodes.len() >= self.nodes.len() {
                break;
            }
            if let Some(user_nodes) = hub_state.user_interest.get(user) {
                nodes.extend(user_nodes);
            }
        }
        nodes
    }

    /// Returns the registered nodes with their roles, addresses and leases.
    pub fn nodes(&self) -> &BTreeMap<u64, NodeInfo> {
        &self.nodes
    }

    /// Returns the nodes whose lease ended at or before `now_ms` (unix milliseconds).
    pub fn expired_nodes(&self, now_ms: u64) -> Vec<u64> {
        self.nodes.iter().filter(|(_, info)| info.lease_until <= now_ms).map(|(id, _)| *id).collect()
    }
}

#[cfg(test)]
mod tests;
