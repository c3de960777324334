//! User-group membership with Azure's semantics (azure-serverless.md §4.3):
//! a TTL per membership (default one year), at most 100 TTL-less memberships per user (the
//! most recently updated are kept), lookups that ignore expired entries. Times are Unix
//! seconds passed in by the caller, so the rules are testable without a clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Lifetime of a membership added without `ttl`: one year.
pub const DEFAULT_TTL_SECS: u64 = 365 * 24 * 3600;
/// TTL-less memberships kept per user.
pub const MAX_TTL_LESS_GROUPS: usize = 100;

#[derive(Debug, Clone, Copy)]
struct Membership {
    expires_at: u64,
    ttl_less: bool,
    /// Order of the last update, to evict the least recently updated TTL-less membership.
    updated: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct UserGroups {
    by_user: HashMap<Arc<str>, HashMap<Arc<str>, Membership>>,
    by_group: HashMap<Arc<str>, HashSet<Arc<str>>>,
    updates: u64,
}

impl UserGroups {
    /// Adds or refreshes `user` in `group`. `ttl_secs: None` means the default year and counts
    /// against the 100-group cap.
    pub fn add(&mut self, user: &str, group: &str, ttl_secs: Option<u64>, now: u64) {
        self.updates += 1;
        let membership = Membership {
            expires_at: now.saturating_add(ttl_secs.unwrap_or(DEFAULT_TTL_SECS)),
            ttl_less: ttl_secs.is_none(),
            updated: self.updates,
        };
        let user: Arc<str> = Arc::from(user);
        let group: Arc<str> = Arc::from(group);
        let groups = self.by_user.entry(user.clone()).or_default();
        groups.insert(group.clone(), membership);
        self.by_group.entry(group).or_default().insert(user.clone());
        let ttl_less = groups.values().filter(|m| m.ttl_less).count();
        if ttl_less > MAX_TTL_LESS_GROUPS {
            let oldest =
                groups.iter().filter(|(_, m)| m.ttl_less).min_by_key(|(_, m)| m.updated).map(|(g, _)| g.clone());
            if let Some(oldest) = oldest {
                self.remove(&user, &oldest);
            }
        }
    }

    /// Removes one membership; absent memberships are fine.
    pub fn remove(&mut self, user: &str, group: &str) {
        if let Some(groups) = self.by_user.get_mut(user) {
            groups.remove(group);
            if groups.is_empty() {
                self.by_user.remove(user);
            }
        }
        if let Some(users) = self.by_group.get_mut(group) {
            users.remove(user);
            if users.is_empty() {
                self.by_group.remove(group);
            }
        }
    }

    /// Removes every membership of `user`.
    pub fn remove_user(&mut self, user: &str) {
        let Some(groups) = self.by_user.remove(user) else { return };
        for group in groups.keys() {
            if let Some(users) = self.by_group.get_mut(group) {
                users.remove(user);
                if users.is_empty() {
                    self.by_group.remove(group);
                }
            }
        }
    }

    /// Whether `user` is an unexpired member of `group`.
    pub fn contains(&self, user: &str, group: &str, now: u64) -> bool {
        self.by_user.get(user).and_then(|groups| groups.get(group)).is_some_and(|m| m.expires_at > now)
    }

    /// Users with a stored membership of `group`, expired or not.
    pub fn member_count(&self, group: &str) -> usize {
        self.by_group.get(group).map_or(0, HashSet::len)
    }

    /// Unexpired members of `group`.
    pub fn users_in(&self, group: &str, now: u64) -> impl Iterator<Item = &Arc<str>> {
        self.by_group.get(group).into_iter().flatten().filter(move |user| self.contains(user, group, now))
    }

    /// Drops expired memberships; returns how many.
    pub fn purge_expired(&mut self, now: u64) -> usize {
        let expired: Vec<(Arc<str>, Arc<str>)> = self
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_expires() {
        let mut ug = UserGroups::default();
        ug.add("u", "g", Some(10), 100);
        assert!(ug.contains("u", "g", 109));
        assert!(!ug.contains("u", "g", 110));
        assert_eq!(ug.users_in("g", 105).count(), 1);
        assert_eq!(ug.users_in("g", 200).count(), 0);
        assert_eq!(ug.purge_expired(200), 1);
        assert!(ug.is_empty());
    }

    #[test]
    fn default_ttl_is_a_year() {
        let mut ug = UserGroups::default();
        ug.add("u", "g", None, 0);
        assert!(ug.contains("u", "g", DEFAULT_TTL_SECS - 1));
        assert!(!ug.contains("u", "g", DEFAULT_TTL_SECS));
    }

    #[test]
    fn keeps_the_100_most_recently_updated_ttl_less_groups() {
        let mut ug = UserGroups::default();
        for i in 0..=MAX_TTL_LESS_GROUPS {
            ug.add("u", &format!("g{i}"), None, 0);
            if i == 0 {
                ug.add("u", "with-ttl", Some(1000), 0);
            }
        }
        assert!(!ug.contains("u", "g0", 1), "the oldest TTL-less membership is evicted");
        assert!(ug.contains("u", "g1", 1));
        assert!(ug.contains("u", "with-ttl", 1), "memberships with a TTL do not count");
        // Refreshing an old one moves it to the front.
        ug.add("u", "g1", None, 0);
        ug.add("u", "new", None, 0);
        assert!(ug.contains("u", "g1", 1));
        assert!(!ug.contains("u", "g2", 1));
    }

    #[test]
    fn removals_are_idempotent() {
        let mut ug = UserGroups::default();
        ug.remove("u", "g");
        ug.remove_user("u");
        ug.add("u", "g", None, 0);
        ug.add("u", "h", None, 0);
        ug.remove_user("u");
        assert!(ug.is_empty());
        assert_eq!(ug.users_in("g", 0).count(), 0);
    }
}
