//! The engine's Redis keys and channels, all under one prefix so several deployments can share
//! a Redis. Keys carry the prefix as a hash tag (`{prefix}:…`): on a Redis Cluster they live in
//! one slot, so the scripts that touch several of them run there. Channels do not: on a Cluster
//! each is a sharded channel living on the shard its name hashes to.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `{p}:members:log` | stream | every membership write, in order (the replicated log) |
//! | `{p}:members:snapshot` | string | the memberships up to a log entry (the log is trimmed behind it) |
//! | `{p}:nodes` | sorted set | live nodes, scored by when their lease ends (Redis's clock) |
//! | `{p}:nodes:http` | hash | node id → the address its clients and REST calls are forwarded to |
//! | `{p}:node-ids` | counter | the next node id, for nodes started without one |
//! | `p:all` | channel | every node: a starting node's announcement |
//! | `p:hub:{hub}` | channel | calls for a hub's connections (broadcasts, hub-wide questions, `:execute`) |
//! | `p:members` | channel | "apply the membership log up to this entry" |
//! | `p:node:{id}` | channel | connection-scoped calls and replies for one node |
//! | `p:hub:{hub}:user:{user}` | channel | calls for a user's connections |
//! | `p:hub:{hub}:group:{group}` | channel | calls for a group's connections |
//!
//! Hub names cannot hold `:` (Azure's rule), so a user or group name that does cannot make two
//! channels collide: it is always the last part.

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Names { prefix: prefix.to_owned() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn log(&self) -> String {
        format!("{{{}}}:members:log", self.prefix)
    }

    pub fn snapshot(&self) -> String {
        format!("{{{}}}:members:snapshot", self.prefix)
    }

    pub fn nodes(&self) -> String {
        format!("{{{}}}:nodes", self.prefix)
    }

    pub fn addresses(&self) -> String {
        format!("{{{}}}:nodes:http", self.prefix)
    }

    pub fn node_ids(&self) -> String {
        format!("{{{}}}:node-ids", self.prefix)
    }

    pub fn all(&self) -> String {
        format!("{}:all", self.prefix)
    }

    pub fn members(&self) -> String {
        format!("{}:members", self.prefix)
    }

    pub fn node(&self, node: u64) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    pub fn hub(&self, hub: &str) -> String {
        format!("{}:hub:{hub}", self.prefix)
    }

    pub fn user(&self, hub: &str, user: &str) -> String {
        format!("{}:hub:{hub}:user:{user}", self.prefix)
    }

    pub fn group(&self, hub: &str, group: &str) -> String {
        format!("{}:hub:{hub}:group:{group}", self.prefix)
    }
}

/// What a channel carries, for metrics: the part after the prefix says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    All,
    Members,
    Node,
    Hub,
    User,
    Group,
}

impl ChannelKind {
    pub const EVERY: [ChannelKind; 6] = [
        ChannelKind::All,
        ChannelKind::Members,
        ChannelKind::Node,
        ChannelKind::Hub,
        ChannelKind::User,
        ChannelKind::Group,
    ];

    /// The kind of a channel named by [`Names`] (any prefix: prefixes hold no `:`).
    pub fn of(channel: &[u8]) -> Option<ChannelKind> {
        let (_, rest) = std::str::from_utf8(channel).ok()?.split_once(':')?;
        Some(match rest.split_once(':') {
            None if rest == "all" => ChannelKind::All,
            None if rest == "members" => ChannelKind::Members,
            Some(("node", _)) => ChannelKind::Node,
            Some(("hub", after_hub)) => match after_hub.split_once(':') {
                None => ChannelKind::Hub,
                Some((_, kind_and_name)) if kind_and_name.starts_with("user:") => ChannelKind::User,
                Some((_, kind_and_name)) if kind_and_name.starts_with("group:") => ChannelKind::Group,
                Some(_) => return None,
            },
            _ => return None,
        })
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ChannelKind::All => "all",
            ChannelKind::Members => "members",
            ChannelKind::Node => "node",
            ChannelKind::Hub => "hub",
            ChannelKind::User => "user",
            ChannelKind::Group => "group",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag_and_channels_do_not() {
        let names = Names::new("sb");
        for key in [names.log(), names.snapshot(), names.nodes(), names.addresses(), names.node_ids()] {
            assert!(key.starts_with("{sb}:"), "{key}");
        }
        assert_eq!(names.group("chat", "a:b"), "sb:hub:chat:group:a:b");
        assert_ne!(names.user("chat", "x"), names.group("chat", "x"));
        assert_eq!(names.node(7), "sb:node:7");
        assert_eq!(names.hub("chat"), "sb:hub:chat");
    }

    #[test]
    fn every_channel_names_its_kind() {
        let names = Names::new("sb");
        let kind = |channel: String| ChannelKind::of(channel.as_bytes());
        assert_eq!(kind(names.all()), Some(ChannelKind::All));
        assert_eq!(kind(names.members()), Some(ChannelKind::Members));
        assert_eq!(kind(names.node(3)), Some(ChannelKind::Node));
        assert_eq!(kind(names.hub("chat")), Some(ChannelKind::Hub));
        assert_eq!(kind(names.user("chat", "a:group:b")), Some(ChannelKind::User));
        assert_eq!(kind(names.group("chat", "user:x")), Some(ChannelKind::Group));
        assert_eq!(kind("elsewhere".into()), None);
    }
}
