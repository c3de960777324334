//! [`ClusterBus`]: the raft engine's [`NodeBus`]. Routes each call with the engine's
//! [`Directory`] and carries it with a [`FanoutClient`]:
//!
//! | call | nodes | how |
//! |---|---|---|
//! | send, close of all / a user / a group | every live node / the nodes holding the user / the group | `Deliver` stream, acknowledged once enqueued (G4) |
//! | connection-scoped (exists, group changes, close) | the owner named in the connection id | `ConnectionCall` |
//! | user or group existence | every live node, the first "found" answers | `ConnectionCall` |
//! | a user's connections join or leave groups | the nodes holding the user | `ConnectionCall` |
//!
//! This node is among the nodes it routes to; the [`FanoutClient`] applies calls for it locally.

use crate::codec::{Wire, decode_invoked, decode_listed, encode_call, encode_invoke, encode_list};
use crate::{FanoutClient, FanoutError, Router};
use std::sync::Arc;
use std::time::Duration;
use switchboard_engine::{Call, Directory, EngineError, EngineFuture, Listed, NodeBus, Target};
use switchboard_engine::{ClientInvocation, Invoked};
use switchboard_grpc::fanout::v1::ConnectionRequest;

/// See the module docs.
pub struct ClusterBus {
    fanout: FanoutClient,
    directory: Arc<dyn Directory>,
}

impl ClusterBus {
    pub fn new(fanout: FanoutClient, directory: Arc<dyn Directory>) -> Self {
        ClusterBus { fanout, directory }
    }

    /// Asks every node of `nodes` at once; whether any found what it asks about. With
    /// `stop_at_found`, the first node that found it answers for all (the other calls are dropped).
    fn ask_each(
        &self,
        nodes: Vec<(u64, String)>,
        request: ConnectionRequest,
        stop_at_found: bool,
    ) -> EngineFuture<bool> {
        let mut calls = tokio::task::JoinSet::new();
        for (node, address) in nodes {
            let (fanout, request) = (self.fanout.clone(), request.clone());
            calls.spawn(async move { fanout.connection_call(node, &address, request).await });
        }
        Box::pin(async move {
            let (mut found, mut failure) = (false, None);
            while let Some(answer) = calls.join_next().await {
                match answer {
                    Ok(Ok(reply)) => found |= reply.found,
                    Ok(Err(error)) => failure = Some(error.into()),
                    Err(error) => failure = Some(EngineError::Invalid(error.to_string())),
                }
                if found && stop_at_found {
                    return Ok(true);
                }
            }
            failure.map_or(Ok(found), Err)
        })
    }
}

impl NodeBus for ClusterBus {
    fn call(&self, hub: &str, call: Call) -> EngineFuture<bool> {
        let connection = call.connection().map(str::to_owned);
        let nodes = match &call {
            _ if connection.is_some() => self.directory.live_nodes(),
            Call::Send { target: Target::User(user), .. } | Call::Close { target: Target::User(user), .. } => {
                self.directory.nodes_for_user(hub, user)
            }
            Call::Send { target: Target::Group(group), .. } | Call::Close { target: Target::Group(group), .. } => {
                self.directory.nodes_for_group(hub, group)
            }
            Call::UserJoinGroup { user, .. }
            | Call::UserLeaveGroup { user, .. }
            | Call::UserLeaveAllGroups { user } => self.directory.nodes_for_user(hub, user),
            _ => self.directory.live_nodes(),
        };
        tracing::debug!(hub, ?call, nodes = ?nodes.iter().map(|n| n.0).collect::<Vec<_>>(), "routing a call");
        let stop_at_found = matches!(call, Call::Exists(_));
        match (encode_call(hub, call), connection) {
            (Wire::Delivery(delivery), _) => {
                let fanout = self.fanout.clone();
                Box::pin(async move {
                    let target = delivery.target.clone().ok_or_else(|| EngineError::Invalid("no target".into()))?;
                    let routed = Router::route(&target, &nodes);
                    fanout.deliver_all(&routed, delivery).await?;
                    Ok(true)
                })
            }
            (Wire::Request(request), Some(id)) => {
                // A connection whose owner is not live is gone with its node.
                let Some((owner, address)) = Router::owner(&id, &nodes).map(|(n, a)| (n, a.to_owned())) else {
                    return Box::pin(std::future::ready(Ok(false)));
                };
                let fanout = self.fanout.clone();
                Box::pin(async move {
                    let reply = fanout.connection_call(owner, &address, request).await?;
                    if reply.group_limit {
                        return Err(EngineError::GroupLimit);
                    }
                    Ok(reply.found)
                })
            }
            (Wire::Request(request), None) => self.ask_each(nodes, request, stop_at_found),
        }
    }

    fn list(&self, hub: &str, target: Target) -> EngineFuture<Vec<Listed>> {
        let nodes = match &target {
            Target::All => self.directory.live_nodes(),
            Target::User(user) => self.directory.nodes_for_user(hub, user),
            Target::Group(group) => self.directory.nodes_for_group(hub, group),
            Target::Connection(id) => {
                let live = self.directory.live_nodes();
                Router::owner(id, &live).map(|(n, a)| vec![(n, a.to_owned())]).unwrap_or_default()
            }
        };
        let request = encode_list(hub, target);
        let mut calls = tokio::task::JoinSet::new();
        for (node, address) in nodes {
            let (fanout, request) = (self.fanout.clone(), request.clone());
            calls.spawn(async move { fanout.connection_call(node, &address, request).await });
        }
        Box::pin(async move {
            let mut listed = Vec::new();
            while let Some(answer) = calls.join_next().await {
                match answer {
                    Ok(Ok(reply)) => listed.extend(reply.listed.into_iter().map(decode_listed)),
                    Ok(Err(error)) => return Err(error.into()),
                    Err(error) => return Err(EngineError::Invalid(error.to_string())),
                }
            }
            listed.sort();
            listed.dedup();
            Ok(listed)
        })
    }

    fn http_address(&self, node: u64) -> Option<String> {
        self.directory.http_address(node)
    }

    fn invoke(&self, hub: &str, invocation: ClientInvocation) -> EngineFuture<Invoked> {
        let live = self.directory.live_nodes();
        let Some((owner, address)) = Router::owner(&invocation.connection, &live).map(|(n, a)| (n, a.to_owned()))
        else {
            return Box::pin(std::future::ready(Ok(Invoked::NotFound)));
        };
        let request = encode_invoke(hub, &invocation);
        let timeout = invocation.timeout;
        let fanout = self.fanout.clone();
        Box::pin(async move {
            // The owner answers within `timeout`; the call allows the trip on top of it.
            let reply =
                fanout.connection_call_within(owner, &address, request, timeout + Duration::from_secs(5)).await?;
            decode_invoked(reply)
                .ok_or_else(|| EngineError::Refused { node: owner, reason: "not an invoke reply".into() })
        })
    }
}

impl From<FanoutError> for EngineError {
    fn from(error: FanoutError) -> Self {
        match error {
            FanoutError::Unreachable { node, reason } | FanoutError::Down { node, reason } => {
                EngineError::Unreachable { node, reason }
            }
            FanoutError::Refused { node, reason } => EngineError::Refused { node, reason },
            FanoutError::Timeout { node, timeout } => {
                EngineError::NodeTimeout { node, timeout_ms: timeout.as_millis() as u64 }
            }
            FanoutError::Rejected { node, code, reason } => {
                EngineError::Refused { node, reason: format!("{code:?}: {reason}") }
            }
            FanoutError::Invalid(reason) => EngineError::Invalid(reason),
        }
    }
}
