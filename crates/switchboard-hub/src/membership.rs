//! Persistent user-group membership as the hub sees it: read on every group send. An engine's
//! membership store implements [`UserGroupReader`] (and the writes, in the engine crate);
//! [`LocalUserGroups`] keeps memberships in memory for tests and tools.

use crate::unix_now;
use crate::user_groups::UserGroups;
use parking_lot::RwLock;
use std::collections::HashMap;

/// Reads of user-group membership. Calls must be cheap: they run under the hub's lock.
pub trait UserGroupReader: Send + Sync {
    /// Whether `user` is an unexpired member of `group` in `hub`.
    fn is_member(&self, hub: &str, user: &str, group: &str, now: u64) -> bool;
    /// Calls `f` for every unexpired member of `group` in `hub`.
    fn for_each_user_in(&self, hub: &str, group: &str, now: u64, f: &mut dyn FnMut(&str));
    /// How many users hold a stored membership of `group` (expired ones may count): lets a node
    /// holding fewer users than that check its own users instead of walking every member.
    fn member_count(&self, hub: &str, group: &str) -> usize;
    /// How many memberships `hub` stores (expired ones may count): what
    /// `--max-memberships-per-hub` caps.
    fn hub_membership_count(&self, hub: &str) -> usize;
}

/// In-memory memberships of one process.
#[derive(Default)]
pub struct LocalUserGroups {
    hubs: RwLock<HashMap<String, UserGroups>>,
    /// The update order of the TTL-less cap.
    updates: std::sync::atomic::AtomicU64,
}

impl UserGroupReader for LocalUserGroups {
    fn is_member(&self, hub: &str, user: &str, group: &str, now: u64) -> bool {
        self.hubs.read().get(hub).is_some_and(|ug| ug.contains(user, group, now))
    }

    fn for_each_user_in(&self, hub: &str, group: &str, now: u64, f: &mut dyn FnMut(&str)) {
        if let Some(ug) = self.hubs.read().get(hub) {
            ug.users_in(group, now).for_each(f);
        }
    }

    fn hub_membership_count(&self, hub: &str) -> usize {
        self.hubs.read().get(hub).map_or(0, UserGroups::len)
    }

    fn member_count(&self, hub: &str, group: &str) -> usize {
        self.hubs.read().get(hub).map_or(0, |ug| ug.member_count(group))
    }
}

impl LocalUserGroups {
    /// Adds or refreshes a membership (see `MembershipStore::add` in the engine crate).
    pub fn add_now(&self, hub: &str, user: &str, group: &str, ttl_secs: Option<u64>) {
        let order = self.updates.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.add_at(hub, user, group, ttl_secs, unix_now(), order);
    }

    /// Adds or refreshes a membership as of `at` (Unix seconds), as update number `order`: how a
    /// replica applies an entry of a shared, ordered log, identically on every node.
    pub fn add_at(&self, hub: &str, user: &str, group: &str, ttl_secs: Option<u64>, at: u64, order: u64) {
        let expires_at = ttl_secs.map(|ttl| at.saturating_add(ttl));
        self.hubs.write().entry(hub.to_owned()).or_default().add(user, group, expires_at, at, order);
    }

    /// The groups `user` is an unexpired member of in `hub`.
    pub fn groups_of(&self, hub: &str, user: &str, now: u64) -> Vec<String> {
        self.hubs.read().get(hub).map_or_else(Vec::new, |ug| ug.groups_of(user, now).map(str::to_owned).collect())
    }

    /// Drops expired memberships (reads ignore them already: this frees their memory);
    /// returns how many.
    pub fn purge_expired(&self, now: u64) -> usize {
        let mut hubs = self.hubs.write();
        let purged = hubs.values_mut().map(|ug| ug.purge_expired(now)).sum();
        hubs.retain(|_, ug| !ug.is_empty());
        purged
    }

    /// Every hub's memberships, for a snapshot.
    pub fn export(&self) -> HashMap<String, UserGroups> {
        self.hubs.read().clone()
    }

    /// Replaces every membership with a snapshot's.
    pub fn import(&self, hubs: HashMap<String, UserGroups>) {
        *self.hubs.write() = hubs;
    }

    pub fn remove_now(&self, hub: &str, user: &str, group: &str) {
        if let Some(ug) = self.hubs.write().get_mut(hub) {
            ug.remove(user, group);
        }
    }

    pub fn remove_user_now(&self, hub: &str, user: &str) {
        if let Some(ug) = self.hubs.write().get_mut(hub) {
            ug.remove_user(user);
        }
    }
}
