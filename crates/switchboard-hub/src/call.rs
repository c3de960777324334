//! The one vocabulary of what a REST call asks of the connections of a hub, and the one place
//! it is applied to a node's hub ([`Hub::apply`](crate::Hub::apply)).
//!
//! A call travels unchanged from the REST API through an engine's node bus to every node that
//! holds its targets; each of those applies it to its own hub. The single node applies it to
//! its own hub directly. So a call means the same thing wherever it lands.

use crate::filter::Filter;
use crate::frames::Frames;

/// Whom a send or a close reaches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every connection of the hub.
    All,
    /// Every connection of a user.
    User(String),
    /// Every connection in a group, directly or through its user's membership.
    Group(String),
    /// One connection, by id (the id names its owner node).
    Connection(String),
}

/// A call on the connections of one hub.
#[derive(Debug)]
pub enum Call {
    /// Hands `frames` to every target connection's outbox, except `excluded` ids.
    Send { target: Target, excluded: Vec<String>, frames: Frames },
    /// Closes every target connection, except `excluded` ids, with `reason` as the Close error.
    Close { target: Target, excluded: Vec<String>, reason: Option<String> },
    /// Whether the target has a live connection (`All`: whether the hub has any).
    Exists(Target),
    /// Adds a connection to a group.
    AddToGroup { connection: String, group: String },
    /// Removes a connection from a group (absent is fine).
    RemoveFromGroup { connection: String, group: String },
    /// Removes a connection from every group it joined.
    RemoveFromAllGroups { connection: String },
    /// The user's current connections join a group (`ttl=0`).
    UserJoinGroup { user: String, group: String },
    /// The user's current connections leave a group (after its membership was removed).
    UserLeaveGroup { user: String, group: String },
    /// The user's current connections leave every group they joined.
    UserLeaveAllGroups { user: String },
    /// One step of a server-to-client stream the connection's client opened with a
    /// StreamInvocation (`…/streams/{stream}/:send`, `:complete`): writes `item`, then, with
    /// `end`, that Completion, which ends the stream. Found only while the stream is open.
    Stream { connection: String, stream: String, item: Option<Frames>, end: Option<Frames> },
    /// `:execute`: every command, in order, on every connection the filter matches (chosen once,
    /// before the first command).
    Execute { filter: Filter, commands: Vec<Command> },
}

/// One command of `:execute` (Azure's `SignalRCommand`).
#[derive(Debug)]
pub enum Command {
    SendMessage(Frames),
    JoinGroup(String),
    LeaveGroup(String),
    CloseConnection(Option<String>),
}

/// What applying a call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// What the call names was live here (the connection, a connection of the user, a member).
    Found,
    NotFound,
    /// The connection is already in `--max-groups-per-connection` groups; nothing changed.
    GroupLimit,
}

impl Applied {
    pub fn found(self) -> bool {
        self == Applied::Found
    }
}

impl From<bool> for Applied {
    fn from(found: bool) -> Self {
        if found { Applied::Found } else { Applied::NotFound }
    }
}

/// One live connection as a listing names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    pub connection_id: String,
    pub user_id: Option<String>,
}

impl Call {
    /// The connection a connection-scoped call is about; its owner node answers it alone.
    pub fn connection(&self) -> Option<&str> {
        match self {
            Call::Send { target: Target::Connection(id), .. }
            | Call::Close { target: Target::Connection(id), .. }
            | Call::Exists(Target::Connection(id))
            | Call::AddToGroup { connection: id, .. }
            | Call::RemoveFromGroup { connection: id, .. }
            | Call::RemoveFromAllGroups { connection: id }
            | Call::Stream { connection: id, .. } => Some(id),
            _ => None,
        }
    }

    /// Every group name the call carries (checked before anything is applied).
    pub fn groups(&self) -> Vec<&str> {
        match self {
            Call::Send { target: Target::Group(group), .. }
            | Call::Close { target: Target::Group(group), .. }
            | Call::Exists(Target::Group(group))
            | Call::AddToGroup { group, .. }
            | Call::RemoveFromGroup { group, .. }
            | Call::UserJoinGroup { group, .. }
            | Call::UserLeaveGroup { group, .. } => vec![group],
            Call::Execute { commands, .. } => commands
                .iter()
                .filter_map(|command| match command {
                    Command::JoinGroup(group) | Command::LeaveGroup(group) => Some(group.as_str()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether answering the call must wait until every node routes the group here: a group
    /// add answers only once a send from any node will find the new member (G3).
    pub fn adds_interest(&self) -> bool {
        matches!(self, Call::AddToGroup { .. } | Call::UserJoinGroup { .. })
            || matches!(self, Call::Execute { commands, .. } if commands.iter().any(|c| matches!(c, Command::JoinGroup(_))))
    }
}
