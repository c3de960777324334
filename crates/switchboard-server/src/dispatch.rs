//! Sends and connection calls in a cluster: each message is serialized once per protocol here
//! and handed over the fan-out streams to the live edge nodes that need it (this one
//! included): every node for a broadcast, the nodes whose routing interest holds the user or
//! group otherwise (see `interest.rs`); a REST 202 waits for every target node's
//! acknowledgement (G4). Connection calls go to the owner encoded in the connection id.

use crate::control::ControlPlane;
use switchboard_api::{ConnectionAction, Dispatch, DispatchFuture, SendTarget, UserConnectionsChange};
use switchboard_fanout::{Action, ConnectionRequest, FanoutClient, Router, Target, encode_close, encode_delivery};
use switchboard_hub::Frames;

pub struct ClusterDispatch {
    pub fanout: FanoutClient,
    pub control: ControlPlane,
}

fn fanout_target(target: SendTarget) -> Target {
    match target {
        SendTarget::All => Target::All(Default::default()),
        SendTarget::User(user) => Target::User(user),
        SendTarget::Group(group) => Target::Group(group),
        SendTarget::Connection(id) => Target::ConnectionId(id),
    }
}

impl ClusterDispatch {
    /// Sends `request` to every node in `nodes` at once; whether any found what it asks about,
    /// or an error when a node could not answer. With `stop_at_found`, the first node that found
    /// it answers for all (the other calls are dropped).
    fn ask_each(
        &self,
        nodes: Vec<(u64, String)>,
        request: ConnectionRequest,
        stop_at_found: bool,
    ) -> impl std::future::Future<Output = Result<bool, String>> + Send + 'static {
        let mut calls = tokio::task::JoinSet::new();
        for (node, address) in nodes {
            let (fanout, request) = (self.fanout.clone(), request.clone());
            calls.spawn(async move { fanout.connection_call(node, &address, request).await });
        }
        async move {
            let (mut found, mut failure) = (false, None);
            while let Some(answer) = calls.join_next().await {
                match answer {
                    Ok(Ok(reply)) => found |= reply.found,
                    Ok(Err(error)) => failure = Some(error.to_string()),
                    Err(error) => failure = Some(error.to_string()),
                }
                if found && stop_at_found {
                    return Ok(true);
                }
            }
            failure.map_or(Ok(found), Err)
        }
    }

    /// Hands `delivery` to every live edge node that holds its targets.
    fn deliver(&self, hub: &str, target: Target, delivery: switchboard_fanout::Delivery) -> DispatchFuture<()> {
        let nodes = match &target {
            Target::User(user) => self.control.edge_nodes_for_user(hub, user),
            Target::Group(group) => self.control.edge_nodes_for_group(hub, group),
            _ => self.control.edge_nodes(),
        };
        let fanout = self.fanout.clone();
        Box::pin(async move {
            let routed: Vec<(u64, &str)> = Router::route(&target, &nodes);
            fanout.deliver_all(&routed, delivery).await.map_err(|e| e.to_string())
        })
    }
}

impl Dispatch for ClusterDispatch {
    fn send(&self, hub: &str, target: SendTarget, excluded: Vec<String>, frames: Frames) -> DispatchFuture<()> {
        let target = fanout_target(target);
        let delivery = encode_delivery(hub, target.clone(), excluded, &frames);
        self.deliver(hub, target, delivery)
    }

    fn close(
        &self,
        hub: &str,
        target: SendTarget,
        excluded: Vec<String>,
        reason: Option<String>,
    ) -> DispatchFuture<()> {
        let target = fanout_target(target);
        let delivery = encode_close(hub, target.clone(), excluded, reason);
        self.deliver(hub, target, delivery)
    }

    fn exists(&self, hub: &str, target: SendTarget) -> DispatchFuture<bool> {
        let action = match target {
            SendTarget::User(user) => Action::UserExists(switchboard_fanout::UserExists { user }),
            SendTarget::Group(group) => Action::GroupExists(switchboard_fanout::GroupExists { group }),
            SendTarget::Connection(id) => return self.connection(hub, &id, ConnectionAction::Exists),
            SendTarget::All => return Box::pin(std::future::ready(Ok(!self.control.edge_nodes().is_empty()))),
        };
        let request = ConnectionRequest { hub: hub.to_owned(), connection_id: String::new(), action: Some(action) };
        Box::pin(self.ask_each(self.control.edge_nodes(), request, true))
    }

    fn connection(&self, hub: &str, connection_id: &str, action: ConnectionAction) -> DispatchFuture<bool> {
        let nodes = self.control.edge_nodes();
        let Some((owner, address)) = Router::owner(connection_id, &nodes).map(|(n, a)| (n, a.to_owned())) else {
            return Box::pin(std::future::ready(Ok(false)));
        };
        let action = match action {
            ConnectionAction::Exists => Action::Exists(Default::default()),
            ConnectionAction::AddToGroup(group) => Action::AddToGroup(switchboard_fanout::GroupChange { group }),
            ConnectionAction::RemoveFromGroup(group) => {
                Action::RemoveFromGroup(switchboard_fanout::GroupChange { group })
            }
            ConnectionAction::RemoveFromAllGroups => Action::RemoveFromAllGroups(Default::default()),
            ConnectionAction::Close { reason } => {
                Action::Close(switchboard_fanout::Close { reason: reason.unwrap_or_default() })
            }
        };
        let request =
            ConnectionRequest { hub: hub.to_owned(), connection_id: connection_id.to_owned(), action: Some(action) };
        let fanout = self.fanout.clone();
        Box::pin(async move {
            let reply = fanout.connection_call(owner, &address, request).await.map_err(|e| e.to_string())?;
            Ok(reply.found)
        })
    }

    fn user_connections(&self, hub: &str, user: &str, change: UserConnectionsChange) -> DispatchFuture<()> {
        use switchboard_fanout::{UserExists, UserGroupChange};
        let action = match change {
            UserConnectionsChange::JoinGroup(group) => {
                Action::UserJoinGroup(UserGroupChange { user: user.into(), group })
            }
            UserConnectionsChange::LeaveGroup(group) => {
                Action::UserLeaveGroup(UserGroupChange { user: user.into(), group })
            }
            UserConnectionsChange::LeaveAllGroups => Action::UserLeaveAllGroups(UserExists { user: user.into() }),
        };
        let request = ConnectionRequest { hub: hub.to_owned(), connection_id: String::new(), action: Some(action) };
        let asked = self.ask_each(self.control.edge_nodes_for_user(hub, user), request, false);
        Box::pin(async move { asked.await.map(|_| ()) })
    }
}
