//! Where REST sends and connection calls go: [`LocalDispatch`] applies them to this node's hub;
//! a cluster implements [`Dispatch`] with fan-out to the nodes that hold the targets.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use switchboard_hub::{CloseRequest, Frames, Registry};

/// The targets of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendTarget {
    All,
    User(String),
    Group(String),
    Connection(String),
}

/// A connection-scoped call, answered by the connection's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionAction {
    Exists,
    AddToGroup(String),
    RemoveFromGroup(String),
    RemoveFromAllGroups,
    Close { reason: Option<String> },
}

/// A change to the group memberships of a user's current connections, wherever they are
/// (`ttl=0` user-group calls, and the connection-level side of removing user groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserConnectionsChange {
    JoinGroup(String),
    LeaveGroup(String),
    LeaveAllGroups,
}

/// The result of a dispatch: an error text when some node could not be reached.
pub type DispatchFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// Delivery and connection calls, wherever the targets live.
pub trait Dispatch: Send + Sync {
    /// Resolves once every node that may hold a target has enqueued the message (G4).
    fn send(&self, hub: &str, target: SendTarget, excluded: Vec<String>, frames: Frames) -> DispatchFuture<()>;
    /// Closes the targets wherever they are (`:closeConnections`), `reason` as the Close error.
    fn close(&self, hub: &str, target: SendTarget, excluded: Vec<String>, reason: Option<String>)
    -> DispatchFuture<()>;
    /// Whether a user (or group, by `SendTarget::User`/`Group`) has a live connection anywhere.
    fn exists(&self, hub: &str, target: SendTarget) -> DispatchFuture<bool>;
    /// Runs `action` on the connection's owner; `true` when the connection exists there.
    fn connection(&self, hub: &str, connection_id: &str, action: ConnectionAction) -> DispatchFuture<bool>;
    /// Applies `change` to the user's current connections on every node holding them; resolves
    /// once every such node applied it (and, for a join, routes the group there).
    fn user_connections(&self, hub: &str, user: &str, change: UserConnectionsChange) -> DispatchFuture<()>;
}

/// Everything on this node (the embedded single node).
pub struct LocalDispatch {
    pub registry: Arc<Registry>,
}

impl Dispatch for LocalDispatch {
    fn send(&self, hub: &str, target: SendTarget, excluded: Vec<String>, frames: Frames) -> DispatchFuture<()> {
        if let Some(hub) = self.registry.get(hub) {
            match &target {
                SendTarget::All => _ = hub.broadcast(&frames, &excluded),
                SendTarget::User(user) => _ = hub.send_to_user(user, &frames),
                SendTarget::Group(group) => _ = hub.send_to_group(group, &frames, &excluded),
                SendTarget::Connection(id) => _ = hub.send_to_connection(id, &frames),
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn close(
        &self,
        hub: &str,
        target: SendTarget,
        excluded: Vec<String>,
        reason: Option<String>,
    ) -> DispatchFuture<()> {
        if let Some(hub) = self.registry.get(hub) {
            let request = CloseRequest { error: reason, allow_reconnect: false };
            match target {
                SendTarget::All => hub.close_all(&excluded, &request),
                SendTarget::User(user) => hub.close_user(&user, &excluded, &request),
                SendTarget::Group(group) => hub.close_group(&group, &excluded, &request),
                SendTarget::Connection(id) => _ = hub.close_connection(&id, request),
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn exists(&self, hub: &str, target: SendTarget) -> DispatchFuture<bool> {
        let found = self.registry.get(hub).is_some_and(|hub| match &target {
            SendTarget::User(user) => hub.user_exists(user),
            SendTarget::Group(group) => hub.group_exists(group),
            SendTarget::All => hub.connection_count() > 0,
            SendTarget::Connection(id) => hub.connection(id).is_some(),
        });
        Box::pin(std::future::ready(Ok(found)))
    }

    fn connection(&self, hub: &str, connection_id: &str, action: ConnectionAction) -> DispatchFuture<bool> {
        let found = match self.registry.get(hub) {
            None => false,
            Some(hub) => match action {
                ConnectionAction::Exists => hub.connection(connection_id).is_some(),
                ConnectionAction::AddToGroup(group) => hub.add_to_group(connection_id, &group),
                ConnectionAction::RemoveFromGroup(group) => {
                    hub.remove_from_group(connection_id, &group);
                    true
                }
                ConnectionAction::RemoveFromAllGroups => {
                    hub.remove_from_all_groups(connection_id);
                    true
                }
                ConnectionAction::Close { reason } => {
                    hub.close_connection(connection_id, CloseRequest { error: reason, allow_reconnect: false })
                }
            },
        };
        Box::pin(std::future::ready(Ok(found)))
    }

    fn user_connections(&self, hub: &str, user: &str, change: UserConnectionsChange) -> DispatchFuture<()> {
        if let Some(hub) = self.registry.get(hub) {
            apply_user_connections_change(&hub, user, &change);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Applies a [`UserConnectionsChange`] to one node's hub.
pub fn apply_user_connections_change(hub: &switchboard_hub::Hub, user: &str, change: &UserConnectionsChange) {
    match change {
        UserConnectionsChange::JoinGroup(group) => hub.add_user_connections_to_group(user, group),
        UserConnectionsChange::LeaveGroup(group) => hub.remove_user_connections_from_group(user, group),
        UserConnectionsChange::LeaveAllGroups => hub.remove_user_connections_from_all_groups(user),
    }
}
