//! [`ControlState`]: the applied control-plane state, pure data with query methods.
//!
//! Applying is deterministic: the result depends only on the commands and their order, never
//! on the replica's clock or hash-map iteration order (every choice is keyed by a counter).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::command::{Command, InterestChange, InterestKind, Roles};

/// Lifetime of a membership added without a TTL: one year, in seconds.
pub const DEFAULT_TTL_SECS: u64 = 365 * 24 * 3600;
/// TTL-less memberships kept per user; adding one more evicts the least recently updated.
pub const MAX_TTL_LESS_GROUPS: usize = 100;

/// One stored user-group membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Unix seconds; the membership is gone at this instant.
    pub expires_at: u64,
    /// Added without a TTL, so it counts against [`MAX_TTL_LESS_GROUPS`].
    pub ttl_less: bool,
    /// Value of the state's update counter when last added: orders TTL-less memberships for
    /// eviction identically on every replica.
    pub updated: u64,
}

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
    /// user → group → membership. The primary membership data.
    memberships: HashMap<String, HashMap<String, Membership>>,
    /// group → users with a stored membership. Index over `memberships`, rebuilt after decoding
    /// instead of being written into snapshots.
    #[serde(skip)]
    members: HashMap<String, HashSet<String>>,
    /// user → nodes holding live connections of the user.
    user_interest: HashMap<String, BTreeSet<u64>>,
    /// group → nodes holding live connections in the group.
    group_interest: HashMap<String, BTreeSet<u64>>,
}

impl HubState {
    fn is_empty(&self) -> bool {
        self.memberships.is_empty() && self.user_interest.is_empty() && self.group_interest.is_empty()
    }

    fn remove_membership(&mut self, user: &str, group: &str) -> bool {
        let Some(groups) = self.memberships.get_mut(user) else { return false };
        if groups.remove(group).is_none() {
            return false;
        }
        if groups.is_empty() {
            self.memberships.remove(user);
        }
        remove_from_index(&mut self.members, group, user);
        true
    }

    fn interest_map(&mut self, kind: InterestKind) -> &mut HashMap<String, BTreeSet<u64>> {
        match kind {
            InterestKind::User => &mut self.user_interest,
            InterestKind::Group => &mut self.group_interest,
        }
    }
}

/// Removes `value` from `index[key]`, dropping the set once empty.
fn remove_from_index(index: &mut HashMap<String, HashSet<String>>, key: &str, value: &str) {
    if let Some(values) = index.get_mut(key) {
        values.remove(value);
        if values.is_empty() {
            index.remove(key);
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
        let mut state: ControlState = rmp_serde::from_slice(bytes)?;
        for hub in state.hubs.values_mut() {
            for (user, groups) in &hub.memberships {
                for group in groups.keys() {
                    hub.members.entry(group.clone()).or_default().insert(user.clone());
                }
            }
        }
        Ok(state)
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
        let (expires_at, ttl_less) = match expires_at {
            None => (at.saturating_add(DEFAULT_TTL_SECS), true),
            Some(expires_at) => (expires_at, false),
        };
        if expires_at <= at {
            return false;
        }
        self.updates += 1;
        let membership = Membership { expires_at, ttl_less, updated: self.updates };
        let hub_state = self.hubs.entry(hub).or_default();
        hub_state.members.entry(group.clone()).or_default().insert(user.clone());
        let groups = hub_state.memberships.entry(user.clone()).or_default();
        groups.insert(group, membership);
        if !ttl_less || groups.values().filter(|m| m.ttl_less).count() <= MAX_TTL_LESS_GROUPS {
            return true;
        }
        // `updated` values are unique, so the choice does not depend on map iteration order.
        let oldest = groups.iter().filter(|(_, m)| m.ttl_less).min_by_key(|(_, m)| m.updated).map(|(g, _)| g.clone());
        if let Some(oldest) = oldest {
            hub_state.remove_membership(&user, &oldest);
        }
        true
    }

    fn remove_user_from_group(&mut self, hub: &str, user: &str, group: &str) -> bool {
        let Some(hub_state) = self.hubs.get_mut(hub) else { return false };
        let removed = hub_state.remove_membership(user, group);
        self.drop_hub_if_empty(hub);
        removed
    }

    fn remove_user_from_all_groups(&mut self, hub: &str, user: &str) -> bool {
        let Some(hub_state) = self.hubs.get_mut(hub) else { return false };
        let Some(groups) = hub_state.memberships.remove(user) else { return false };
        for group in groups.keys() {
            remove_from_index(&mut hub_state.members, group, user);
        }
        self.drop_hub_if_empty(hub);
        true
    }

    fn purge_expired(&mut self, now: u64) -> bool {
        let mut removed = false;
        for hub_state in self.hubs.values_mut() {
            let expired: Vec<(String, String)> = hub_state
                .memberships
                .iter()
                .flat_map(|(user, groups)| {
                    groups.iter().filter(|(_, m)| m.expires_at <= now).map(move |(g, _)| (user.clone(), g.clone()))
                })
                .collect();
            for (user, group) in expired {
                removed |= hub_state.remove_membership(&user, &group);
            }
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
            if present {
                let interest = self.hubs.entry(hub).or_default().interest_map(kind);
                changed |= interest.entry(name).or_default().insert(node);
                continue;
            }
            let Some(hub_state) = self.hubs.get_mut(&hub) else { continue };
            let interest = hub_state.interest_map(kind);
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
        self.hubs.get(hub)?.memberships.get(user)?.get(group).copied()
    }

    /// Returns whether `user` is an unexpired member of `group` at `now` (unix seconds).
    pub fn is_member(&self, hub: &str, user: &str, group: &str, now: u64) -> bool {
        self.membership(hub, user, group).is_some_and(|m| m.expires_at > now)
    }

    /// Returns the unexpired members of `group` at `now` (unix seconds), in no particular order.
    pub fn users_in<'a>(&'a self, hub: &str, group: &str, now: u64) -> impl Iterator<Item = &'a str> + use<'a> {
        let found = self.hubs.get(hub).and_then(|h| h.members.get_key_value(group).map(|(g, users)| (h, g, users)));
        found.into_iter().flat_map(move |(h, group, users)| {
            users
                .iter()
                .filter(move |user| {
                    h.memberships.get(*user).and_then(|groups| groups.get(group)).is_some_and(|m| m.expires_at > now)
                })
                .map(String::as_str)
        })
    }

    /// Returns the groups `user` is an unexpired member of at `now`, in no particular order.
    pub fn groups_of<'a>(&'a self, hub: &str, user: &str, now: u64) -> impl Iterator<Item = &'a str> + use<'a> {
        let groups = self.hubs.get(hub).and_then(|h| h.memberships.get(user));
        groups.into_iter().flatten().filter(move |(_, m)| m.expires_at > now).map(|(g, _)| g.as_str())
    }

    /// Returns how many users hold a stored membership of `group`, expired ones included.
    pub fn member_count(&self, hub: &str, group: &str) -> usize {
        self.hubs.get(hub).and_then(|h| h.members.get(group)).map_or(0, HashSet::len)
    }

    /// Returns the nodes holding live connections of `user`.
    pub fn nodes_for_user(&self, hub: &str, user: &str) -> BTreeSet<u64> {
        self.hubs.get(hub).and_then(|h| h.user_interest.get(user)).cloned().unwrap_or_default()
    }

    /// Returns the nodes a send to `group` must reach: nodes with connections in the group, plus
    /// nodes with connections of any unexpired member user (those connections join the group).
    /// Costs one lookup per member user.
    pub fn nodes_for_group(&self, hub: &str, group: &str, now: u64) -> BTreeSet<u64> {
        let Some(hub_state) = self.hubs.get(hub) else { return BTreeSet::new() };
        let mut nodes = hub_state.group_interest.get(group).cloned().unwrap_or_default();
        for user in self.users_in(hub, group, now) {
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
