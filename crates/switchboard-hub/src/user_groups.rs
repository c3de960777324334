//! User-group membership with Azure's semantics (azure-serverless.md §4.3), the one home of
//! these rules: a TTL per membership (default one year), at most 100 TTL-less memberships per
//! user (the most recently updated are kept), lookups that ignore expired entries.
//!
//! Times are Unix seconds passed in by the caller, and the "most recently updated" order is a
//! number the caller passes too, so the rules are testable without a clock and a replicated
//! store applies them identically on every replica (the raft engine keeps one counter in its
//! state). Serialized as the user → group → membership map alone; the group index is rebuilt.

use crate::HashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Lifetime of a membership added without `ttl`: one year.
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
    /// The caller's update order when last added: the least recently updated TTL-less
    /// membership is evicted first.
    pub updated: u64,
}

/// The memberships of one hub. See the module docs.
#[derive(Debug, Default, Clone)]
pub struct UserGroups {
    /// user → group → membership: the data.
    by_user: HashMap<String, HashMap<String, Membership>>,
    /// group → user → expiry of its stored membership: an index over `by_user`, so walking
    /// a group's members needs no lookup per member.
    by_group: HashMap<String, HashMap<String, u64>>,
    /// Stored memberships, expired ones included (what the per-hub cap counts).
    len: usize,
}

impl UserGroups {
    /// Adds or refreshes `user` in `group` at `at`, as update number `order` (increasing).
    /// `expires_at: None` lasts [`DEFAULT_TTL_SECS`] and counts against the 100-group cap; an
    /// expiry at or before `at` (Azure's `ttl=0`) stores nothing. Returns whether it stored.
    pub fn add(&mut self, user: &str, group: &str, expires_at: Option<u64>, at: u64, order: u64) -> bool {
        let (expires_at, ttl_less) = match expires_at {
            None => (at.saturating_add(DEFAULT_TTL_SECS), true),
            Some(expires_at) => (expires_at, false),
        };
        if expires_at <= at {
            return false;
        }
        let membership = Membership { expires_at, ttl_less, updated: order };
        self.by_group.entry(group.to_owned()).or_default().insert(user.to_owned(), expires_at);
        let groups = self.by_user.entry(user.to_owned()).or_default();
        if groups.insert(group.to_owned(), membership).is_none() {
            self.len += 1;
        }
        if !ttl_less || groups.values().filter(|m| m.ttl_less).count() <= MAX_TTL_LESS_GROUPS {
            return true;
        }
        // `updated` values are unique, so the choice does not depend on map iteration order.
        let oldest = groups.iter().filter(|(_, m)| m.ttl_less).min_by_key(|(_, m)| m.updated).map(|(g, _)| g.clone());
        if let Some(oldest) = oldest {
            self.remove(user, &oldest);
        }
        true
    }

    /// Removes one membership; returns whether there was one.
    pub fn remove(&mut self, user: &str, group: &str) -> bool {
        let Some(groups) = self.by_user.get_mut(user) else { return false };
        if groups.remove(group).is_none() {
            return false;
        }
        self.len -= 1;
        if groups.is_empty() {
            self.by_user.remove(user);
        }
        unindex(&mut self.by_group, group, user);
        true
    }

    /// Removes every membership of `user`; returns whether there was any.
    pub fn remove_user(&mut self, user: &str) -> bool {
        let Some(groups) = self.by_user.remove(user) else { return false };
        self.len -= groups.len();
        for group in groups.keys() {
            unindex(&mut self.by_group, group, user);
        }
        true
    }

    /// The stored membership of `user` in `group`, expired or not.
    pub fn membership(&self, user: &str, group: &str) -> Option<Membership> {
        self.by_user.get(user)?.get(group).copied()
    }

    /// Whether `user` is an unexpired member of `group` at `now`.
    pub fn contains(&self, user: &str, group: &str, now: u64) -> bool {
        self.membership(user, group).is_some_and(|m| m.expires_at > now)
    }

    /// Stored memberships of every user, expired ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Users with a stored membership of `group`, expired ones included.
    pub fn member_count(&self, group: &str) -> usize {
        self.by_group.get(group).map_or(0, HashMap::len)
    }

    /// Unexpired members of `group` at `now`, in no particular order.
    pub fn users_in<'a>(&'a self, group: &str, now: u64) -> impl Iterator<Item = &'a str> + use<'a> {
        let users = self.by_group.get(group).into_iter().flatten();
        users.filter(move |(_, expires_at)| **expires_at > now).map(|(user, _)| user.as_str())
    }

    /// Groups `user` is an unexpired member of at `now`, in no particular order.
    pub fn groups_of<'a>(&'a self, user: &str, now: u64) -> impl Iterator<Item = &'a str> + use<'a> {
        let groups = self.by_user.get(user);
        groups.into_iter().flatten().filter(move |(_, m)| m.expires_at > now).map(|(g, _)| g.as_str())
    }

    /// Drops memberships expired at `now`; returns how many.
    pub fn purge_expired(&mut self, now: u64) -> usize {
        let expired: Vec<(String, String)> = self
            .by_user
            .iter()
            .flat_map(|(u, groups)| {
                groups.iter().filter(|(_, m)| m.expires_at <= now).map(move |(g, _)| (u.clone(), g.clone()))
            })
            .collect();
        for (user, group) in &expired {
            self.remove(user, group);
        }
        expired.len()
    }

    /// Whether nothing is stored (lets an empty hub be dropped).
    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

/// Removes `value` from `index[key]`, dropping the map once empty.
fn unindex(index: &mut HashMap<String, HashMap<String, u64>>, key: &str, value: &str) {
    if let Some(values) = index.get_mut(key) {
        values.remove(value);
        if values.is_empty() {
            index.remove(key);
        }
    }
}

impl Serialize for UserGroups {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.by_user.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for UserGroups {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let by_user: HashMap<String, HashMap<String, Membership>> = HashMap::deserialize(deserializer)?;
        let mut by_group: HashMap<String, HashMap<String, u64>> = HashMap::default();
        let len = by_user.values().map(HashMap::len).sum();
        for (user, groups) in &by_user {
            for (group, membership) in groups {
                by_group.entry(group.clone()).or_default().insert(user.clone(), membership.expires_at);
            }
        }
        Ok(UserGroups { by_user, by_group, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds with the next update number (increasing across every test).
    fn add(ug: &mut UserGroups, user: &str, group: &str, ttl: Option<u64>, now: u64) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static ORDER: AtomicU64 = AtomicU64::new(1);
        ug.add(user, group, ttl.map(|t| now + t), now, ORDER.fetch_add(1, Ordering::Relaxed));
    }

    /// The stored count follows every change, evictions by the TTL-less cap included, and is
    /// rebuilt from a snapshot.
    #[test]
    fn len_counts_stored_memberships() {
        let mut ug = UserGroups::default();
        add(&mut ug, "a", "g1", None, 100);
        add(&mut ug, "a", "g1", Some(10), 100);
        add(&mut ug, "a", "g2", Some(10), 100);
        add(&mut ug, "b", "g1", None, 100);
        assert_eq!(ug.len(), 3);
        for i in 0..=MAX_TTL_LESS_GROUPS {
            add(&mut ug, "c", &format!("x{i}"), None, 100);
        }
        assert_eq!(ug.len(), 3 + MAX_TTL_LESS_GROUPS, "the oldest TTL-less one was evicted");
        assert!(ug.remove("a", "g2") && !ug.remove("a", "g2"));
        assert!(ug.remove_user("c"));
        assert_eq!(ug.len(), 2);
        let restored: UserGroups = serde_json::from_str(&serde_json::to_string(&ug).unwrap()).unwrap();
        assert_eq!(restored.len(), 2);
        assert_eq!(ug.purge_expired(100 + 11), 1);
        assert_eq!(ug.len(), 1);
    }

    #[test]
    fn ttl_expires() {
        let mut ug = UserGroups::default();
        add(&mut ug, "u", "g", Some(10), 100);
        assert!(ug.contains("u", "g", 109));
        assert!(!ug.contains("u", "g", 110));
        assert_eq!(ug.users_in("g", 105).count(), 1);
        assert_eq!(ug.users_in("g", 200).count(), 0);
        assert_eq!(ug.purge_expired(200), 1);
        assert!(ug.is_empty());
    }

    /// The group index carries each membership's expiry: a refresh moves it, and a snapshot
    /// rebuilds it.
    #[test]
    fn a_refreshed_membership_lives_on_in_the_group_index() {
        let mut ug = UserGroups::default();
        add(&mut ug, "u", "g", Some(10), 100);
        add(&mut ug, "u", "g", Some(100), 105);
        assert_eq!(ug.users_in("g", 150).collect::<Vec<_>>(), ["u"]);
        let copy: UserGroups = serde_json::from_str(&serde_json::to_string(&ug).unwrap()).unwrap();
        assert_eq!(copy.users_in("g", 150).collect::<Vec<_>>(), ["u"]);
        assert_eq!(copy.users_in("g", 205).count(), 0);
    }

    #[test]
    fn default_ttl_is_a_year() {
        let mut ug = UserGroups::default();
        add(&mut ug, "u", "g", None, 0);
        assert!(ug.contains("u", "g", DEFAULT_TTL_SECS - 1));
        assert!(!ug.contains("u", "g", DEFAULT_TTL_SECS));
    }

    #[test]
    fn keeps_the_100_most_recently_updated_ttl_less_groups() {
        let mut ug = UserGroups::default();
        for i in 0..=MAX_TTL_LESS_GROUPS {
            add(&mut ug, "u", &format!("g{i}"), None, 0);
            if i == 0 {
                add(&mut ug, "u", "with-ttl", Some(1000), 0);
            }
        }
        assert!(!ug.contains("u", "g0", 1), "the oldest TTL-less membership is evicted");
        assert!(ug.contains("u", "g1", 1));
        assert!(ug.contains("u", "with-ttl", 1), "memberships with a TTL do not count");
        // Refreshing an old one moves it to the front.
        add(&mut ug, "u", "g1", None, 0);
        add(&mut ug, "u", "new", None, 0);
        assert!(ug.contains("u", "g1", 1));
        assert!(!ug.contains("u", "g2", 1));
    }

    #[test]
    fn removals_are_idempotent() {
        let mut ug = UserGroups::default();
        assert!(!ug.remove("u", "g"));
        assert!(!ug.remove_user("u"));
        add(&mut ug, "u", "g", None, 0);
        add(&mut ug, "u", "h", None, 0);
        assert!(ug.remove_user("u"));
        assert!(ug.is_empty());
        assert_eq!(ug.users_in("g", 0).count(), 0);
    }

    #[test]
    fn an_expiry_at_or_before_now_stores_nothing() {
        let mut ug = UserGroups::default();
        assert!(!ug.add("u", "g", Some(5), 5, 1));
        assert!(ug.is_empty());
    }
}
