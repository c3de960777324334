//! Persistent user-group membership as the hub sees it: read on every group send, written by
//! the REST API. The durable, replicated store (the control plane) implements these traits;
//! [`LocalUserGroups`] keeps memberships in memory for tests and tools.

use crate::unix_now;
use crate::user_groups::UserGroups;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

/// A membership change completes asynchronously (it may wait for consensus).
pub type MembershipFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Reads of user-group membership. Calls must be cheap: they run under the hub's lock.
pub trait UserGroupReader: Send + Sync {
    /// Whether `user` is an unexpired member of `group` in `hub`.
    fn is_member(&self, hub: &str, user: &str, group: &str, now: u64) -> bool;
    /// Calls `f` for every unexpired member of `group` in `hub`.
    fn for_each_user_in(&self, hub: &str, group: &str, now: u64, f: &mut dyn FnMut(&str));
    /// How many users hold a stored membership of `group` (expired ones may count): lets a node
    /// holding fewer users than that check its own users instead of walking every member.
    fn member_count(&self, hub: &str, group: &str) -> usize;
}

/// Writes of user-group membership. A returned future that resolved `Ok` means every later
/// read (on any node) sees the change.
pub trait UserGroupWriter: Send + Sync {
    /// Adds or refreshes a membership; `ttl_secs: None` is the default year (and counts
    /// against the 100-group cap). `ttl = 0` never reaches here: it is connection-level.
    fn add(&self, hub: &str, user: &str, group: &str, ttl_secs: Option<u64>) -> MembershipFuture;
    fn remove(&self, hub: &str, user: &str, group: &str) -> MembershipFuture;
    fn remove_user(&self, hub: &str, user: &str) -> MembershipFuture;
}

/// In-memory memberships of one process.
#[derive(Default)]
pub struct LocalUserGroups {
    hubs: RwLock<HashMap<String, UserGroups>>,
}

impl UserGroupReader for LocalUserGroups {
    fn is_member(&self, hub: &str, user: &str, group: &str, now: u64) -> bool {
        self.hubs.read().get(hub).is_some_and(|ug| ug.contains(user, group, now))
    }

    fn for_each_user_in(&self, hub: &str, group: &str, now: u64, f: &mut dyn FnMut(&str)) {
        if let Some(ug) = self.hubs.read().get(hub) {
            ug.users_in(group, now).for_each(|user| f(user));
        }
    }

    fn member_count(&self, hub: &str, group: &str) -> usize {
        self.hubs.read().get(hub).map_or(0, |ug| ug.member_count(group))
    }
}

impl UserGroupWriter for LocalUserGroups {
    fn add(&self, hub: &str, user: &str, group: &str, ttl_secs: Option<u64>) -> MembershipFuture {
        self.hubs.write().entry(hub.to_owned()).or_default().add(user, group, ttl_secs, unix_now());
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove(&self, hub: &str, user: &str, group: &str) -> MembershipFuture {
        if let Some(ug) = self.hubs.write().get_mut(hub) {
            ug.remove(user, group);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove_user(&self, hub: &str, user: &str) -> MembershipFuture {
        if let Some(ug) = self.hubs.write().get_mut(hub) {
            ug.remove_user(user);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}
