//! Channel names. The prefix is StackExchange.Redis's `ChannelPrefix`, written in front of the
//! name with no separator, exactly as the application configured it; the hub is the .NET hub
//! type's full name (`Chat.Hubs.ChatHub`, nested types with `+`). Names are appended as they are:
//! a group called `*` is a literal channel (the backplane never pattern-subscribes).

/// The channels of one hub. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// `prefix + hub type name`.
    base: String,
    /// The prefix alone: a client result's return channel travels without it.
    prefix_len: usize,
}

impl Channels {
    pub fn new(prefix: &str, hub_type: &str) -> Self {
        Channels { base: format!("{prefix}{hub_type}"), prefix_len: prefix.len() }
    }

    pub fn all(&self) -> String {
        format!("{}:all", self.base)
    }

    pub fn group(&self, group: &str) -> String {
        format!("{}:group:{group}", self.base)
    }

    pub fn user(&self, user: &str) -> String {
        format!("{}:user:{user}", self.base)
    }

    pub fn connection(&self, connection_id: &str) -> String {
        format!("{}:connection:{connection_id}", self.base)
    }

    pub fn group_commands(&self) -> String {
        format!("{}:internal:groups", self.base)
    }

    pub fn acks(&self, server: &str) -> String {
        format!("{}:internal:ack:{server}", self.base)
    }

    pub fn returns(&self, server: &str) -> String {
        format!("{}:internal:return:{server}", self.base)
    }

    /// A server's return channel as a client-result invocation carries it: without the
    /// prefix (the publishing client library adds it).
    pub fn returns_unprefixed(&self, server: &str) -> String {
        self.returns(server)[self.prefix_len..].to_owned()
    }

    /// The channel a return-channel name from an invocation is published on.
    pub fn prefixed(&self, unprefixed: &str) -> String {
        format!("{}{unprefixed}", &self.base[..self.prefix_len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_backplane() {
        let channels = Channels::new("MyApp", "Chat.Hubs.ChatHub");
        let server = "web01_02db60e5fab243b890a847fa5c4dcb29";
        assert_eq!(channels.all(), "MyAppChat.Hubs.ChatHub:all");
        assert_eq!(channels.group("room1"), "MyAppChat.Hubs.ChatHub:group:room1");
        assert_eq!(channels.user("alice"), "MyAppChat.Hubs.ChatHub:user:alice");
        assert_eq!(channels.connection("oX3k"), "MyAppChat.Hubs.ChatHub:connection:oX3k");
        assert_eq!(channels.group_commands(), "MyAppChat.Hubs.ChatHub:internal:groups");
        assert_eq!(channels.acks(server), format!("MyAppChat.Hubs.ChatHub:internal:ack:{server}"));
        assert_eq!(channels.returns(server), format!("MyAppChat.Hubs.ChatHub:internal:return:{server}"));
        let unprefixed = channels.returns_unprefixed(server);
        assert_eq!(unprefixed, format!("Chat.Hubs.ChatHub:internal:return:{server}"));
        assert_eq!(channels.prefixed(&unprefixed), channels.returns(server));
        // No prefix (the default), a nested hub type, a group named like a pattern.
        let plain = Channels::new("", "Ns.Outer+MyHub");
        assert_eq!(plain.group("*"), "Ns.Outer+MyHub:group:*");
        assert_eq!(plain.returns_unprefixed("s"), plain.returns("s"));
    }
}
