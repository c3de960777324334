//! [`RedisBus`]: the node bus over Redis pub/sub (see the crate docs), and the two tasks that
//! carry it: [`receive`] applies what arrives on this node's subscriptions, in arrival order;
//! [`send_replies`] publishes the replies, many per round trip.
//!
//! | call | channel |
//! |---|---|
//! | connection-scoped (send, close, exists, group changes) | the owner's node channel (named in the connection id) |
//! | send, close, existence of a user; a user's connections join or leave groups | the user's channel |
//! | send, close, existence of a group | the group's channel |
//! | broadcast, hub-wide existence, `:execute` | the hub's channel (nodes holding connections of the hub) |

use crate::Shared;
use crate::names::ChannelKind;
use bytes::Bytes;
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchboard_engine::{Call, ClientInvocation, EngineError, EngineFuture, Invoked, Listed, NodeBus, Target};
use switchboard_fanout::{Wire, apply_connection_request, apply_delivery, decode_invoked, decode_listed};
use switchboard_fanout::{encode_call, encode_invoke, encode_list};
use switchboard_grpc::fanout::v1::bus_message::Body;
use switchboard_grpc::fanout::v1::{BusMessage, ConnectionReply};
use switchboard_hub::owner_of;
use tokio::sync::{mpsc, oneshot};

/// How long a call waits for every receiving node's reply.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies published in one pipeline at most.
const REPLY_BATCH: usize = 512;

/// See the module docs.
pub(crate) struct RedisBus(pub(crate) Arc<Shared>);

/// What the replies to one call said, merged.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) found: bool,
    pub(crate) group_limit: bool,
    pub(crate) listed: Vec<Listed>,
    /// A client result's answer.
    pub(crate) invoked: Option<Invoked>,
}

/// A call waiting for its replies.
pub(crate) struct Pending {
    /// How many nodes received the call (`PUBLISH`'s answer), once known.
    expected: Option<usize>,
    answered: usize,
    outcome: Outcome,
    done: Option<oneshot::Sender<Outcome>>,
}

impl Pending {
    /// Resolves the call when every receiver answered.
    fn finish_if_complete(&mut self) {
        if self.expected.is_some_and(|expected| self.answered >= expected)
            && let Some(done) = self.done.take()
        {
            let _ = done.send(std::mem::take(&mut self.outcome));
        }
    }
}

/// The channel a call goes to; `None` when it names a connection whose id names no node.
pub(crate) fn channel_for(names: &crate::Names, hub: &str, call: &Call) -> Option<String> {
    if let Some(id) = call.connection() {
        return owner_of(id).map(|node| names.node(node));
    }
    Some(match call {
        Call::Send { target: Target::User(user), .. }
        | Call::Close { target: Target::User(user), .. }
        | Call::Exists(Target::User(user))
        | Call::UserJoinGroup { user, .. }
        | Call::UserLeaveGroup { user, .. }
        | Call::UserLeaveAllGroups { user } => names.user(hub, user),
        Call::Send { target: Target::Group(group), .. }
        | Call::Close { target: Target::Group(group), .. }
        | Call::Exists(Target::Group(group)) => names.group(hub, group),
        _ => names.hub(hub),
    })
}

fn channel_for_list(names: &crate::Names, hub: &str, target: &Target) -> Option<String> {
    match target {
        Target::All => Some(names.hub(hub)),
        Target::User(user) => Some(names.user(hub, user)),
        Target::Group(group) => Some(names.group(hub, group)),
        Target::Connection(id) => owner_of(id).map(|node| names.node(node)),
    }
}

impl Shared {
    /// Publishes `body` on `channel` and waits for a reply from every node that received it.
    pub(crate) async fn request(&self, channel: &str, body: Body) -> Result<Outcome, EngineError> {
        self.request_within(channel, body, CALL_TIMEOUT).await
    }

    /// [`Shared::request`], waiting up to `timeout` for the replies.
    async fn request_within(&self, channel: &str, body: Body, timeout: Duration) -> Result<Outcome, EngineError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (done, answered) = oneshot::channel();
        let pending = Pending { expected: None, answered: 0, outcome: Outcome::default(), done: Some(done) };
        self.pending.lock().insert(id, pending);
        let message = BusMessage { from_node: self.node, request_id: id, body: Some(body) }.encode_to_vec();
        let receivers = match self.link.publish(channel, &message).await {
            Ok(receivers) => receivers,
            Err(error) => {
                self.pending.lock().remove(&id);
                self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                return Err(EngineError::Unavailable(error.to_string()));
            }
        };
        if let Some(kind) = ChannelKind::of(channel.as_bytes()) {
            self.stats.published[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
        if receivers == 0 {
            self.pending.lock().remove(&id);
            return Ok(Outcome::default());
        }
        if let Some(pending) = self.pending.lock().get_mut(&id) {
            pending.expected = Some(receivers);
            pending.finish_if_complete();
        }
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => {
                let answered = self.pending.lock().remove(&id).map_or(0, |pending| pending.answered);
                let timeout_ms = timeout.as_millis() as u64;
                Err(EngineError::Incomplete { answered, expected: receivers, timeout_ms })
            }
        }
    }

    /// Queues a reply to `request` of `node`.
    pub(crate) fn reply(&self, node: u64, request: u64, reply: ConnectionReply) {
        let message = BusMessage { from_node: self.node, request_id: request, body: Some(Body::Reply(reply)) };
        let _ = self.replies.send((node, message.encode_to_vec().into()));
    }
}

impl NodeBus for RedisBus {
    fn call(&self, hub: &str, call: Call) -> EngineFuture<bool> {
        let shared = self.0.clone();
        let Some(channel) = channel_for(&shared.names, hub, &call) else {
            return Box::pin(std::future::ready(Ok(false)));
        };
        let body = match encode_call(hub, call) {
            Wire::Delivery(delivery) => Body::Delivery(delivery),
            Wire::Request(request) => Body::Request(request),
        };
        Box::pin(async move {
            let outcome = shared.request(&channel, body).await?;
            if outcome.group_limit {
                return Err(EngineError::GroupLimit);
            }
            Ok(outcome.found)
        })
    }

    fn list(&self, hub: &str, target: Target) -> EngineFuture<Vec<Listed>> {
        let shared = self.0.clone();
        let Some(channel) = channel_for_list(&shared.names, hub, &target) else {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        };
        let body = Body::Request(encode_list(hub, target));
        Box::pin(async move {
            let mut listed = shared.request(&channel, body).await?.listed;
            listed.sort();
            listed.dedup();
            Ok(listed)
        })
    }

    fn http_address(&self, node: u64) -> Option<String> {
        self.0.nodes.http_address(node)
    }

    fn invoke(&self, hub: &str, invocation: ClientInvocation) -> EngineFuture<Invoked> {
        let shared = self.0.clone();
        let Some(owner) = owner_of(&invocation.connection) else {
            return Box::pin(std::future::ready(Ok(Invoked::NotFound)));
        };
        let channel = shared.names.node(owner);
        let body = Body::Request(encode_invoke(hub, &invocation));
        let timeout = invocation.timeout;
        Box::pin(async move {
            // The owner answers within `timeout`; the call allows the trip on top of it.
            let outcome = shared.request_within(&channel, body, timeout + Duration::from_secs(5)).await?;
            // Nobody subscribed to the owner's channel: the node (and so the connection) is gone.
            Ok(outcome.invoked.unwrap_or(Invoked::NotFound))
        })
    }
}

/// Applies every message that arrives on this node's subscriptions. Deliveries are applied
/// here, in arrival order (G4); calls that may wait (a group add waits for its subscription)
/// run on their own task and reply when done.
pub(crate) async fn receive(shared: Arc<Shared>, mut pushes: mpsc::Receiver<crate::link::Push>) {
    while let Some((channel, payload)) = pushes.recv().await {
        let Some(kind) = ChannelKind::of(&channel) else { continue };
        shared.stats.received[kind.index()].fetch_add(1, Ordering::Relaxed);
        let Ok(message) = BusMessage::decode(payload) else {
            tracing::warn!("a message on a Switchboard channel is not a bus message; ignored");
            continue;
        };
        let (from, request) = (message.from_node, message.request_id);
        match message.body {
            Some(Body::Delivery(delivery)) => {
                let found = apply_delivery(shared.registry(), &delivery);
                if request != 0 {
                    shared.reply(from, request, ConnectionReply { found, ..ConnectionReply::default() });
                }
            }
            Some(Body::Request(call)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let reply = apply_connection_request(shared.registry(), &call).await.unwrap_or_default();
                    shared.reply(from, request, reply);
                });
            }
            Some(Body::Reply(reply)) => {
                let invoked = (reply.invoked != 0).then(|| decode_invoked(reply.clone())).flatten();
                let mut pending = shared.pending.lock();
                if let Some(waiting) = pending.get_mut(&request) {
                    waiting.answered += 1;
                    waiting.outcome.invoked = waiting.outcome.invoked.take().or(invoked);
                    waiting.outcome.found |= reply.found;
                    waiting.outcome.group_limit |= reply.group_limit;
                    waiting.outcome.listed.extend(reply.listed.into_iter().map(decode_listed));
                    waiting.finish_if_complete();
                }
            }
            // The log is read to its end, which includes the entry the notice names.
            Some(Body::MembershipSync(_entry)) => {
                let _ = shared.syncs.send(crate::members::Sync::reply_to(from, request));
            }
            Some(Body::Probe(_)) => shared.nodes.probe_seen(request),
            Some(Body::Joined(joined)) => {
                shared.nodes.joined(joined.node, joined.http_address);
                shared.reply(from, request, ConnectionReply::default());
            }
            None => {}
        }
    }
}

/// Publishes queued replies, up to [`REPLY_BATCH`] per pipeline. On a Redis Cluster a pipeline
/// only carries replies to one node: its channel lives on one shard, and a pipeline must not
/// span shards.
pub(crate) async fn send_replies(shared: Arc<Shared>, mut replies: mpsc::UnboundedReceiver<(u64, Bytes)>) {
    let mut batch = Vec::with_capacity(REPLY_BATCH);
    let cluster = shared.link.is_cluster();
    let command = if cluster { "SPUBLISH" } else { "PUBLISH" };
    while replies.recv_many(&mut batch, REPLY_BATCH).await > 0 {
        // Pipelines by destination on a Cluster; one pipeline otherwise.
        let mut pipes: Vec<(u64, redis::Pipeline)> = Vec::new();
        for (node, reply) in batch.drain(..) {
            let key = if cluster { node } else { 0 };
            let index = pipes.iter().position(|(k, _)| *k == key).unwrap_or_else(|| {
                pipes.push((key, redis::pipe()));
                pipes.len() - 1
            });
            pipes[index].1.cmd(command).arg(shared.names.node(node)).arg(reply.as_ref()).ignore();
        }
        for (_, pipe) in pipes {
            let replies = pipe.cmd_iter().count() as u64;
            match shared.link.pipe::<()>(&pipe).await {
                Ok(()) => {
                    shared.stats.published[ChannelKind::Node.index()].fetch_add(replies, Ordering::Relaxed);
                }
                Err(error) => tracing::warn!(%error, "replies not published; their callers will time out"),
            }
            shared.stats.replies.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Names;
    use switchboard_hub::{Frames, new_connection_id};

    #[test]
    fn calls_go_to_the_channel_of_what_they_name() {
        let names = Names::new("p");
        let frames = || Frames::prebuilt(None, None);
        let send = |target| Call::Send { target, excluded: vec![], frames: frames() };
        let id = new_connection_id(7);
        assert_eq!(channel_for(&names, "h", &send(Target::Connection(id.clone()))), Some("p:node:7".into()));
        assert_eq!(channel_for(&names, "h", &send(Target::Connection("x".into()))), None);
        assert_eq!(channel_for(&names, "h", &send(Target::User("u".into()))), Some("p:hub:h:user:u".into()));
        assert_eq!(channel_for(&names, "h", &send(Target::Group("g".into()))), Some("p:hub:h:group:g".into()));
        assert_eq!(channel_for(&names, "h", &send(Target::All)), Some("p:hub:h".into()));
        let join = Call::UserJoinGroup { user: "u".into(), group: "g".into() };
        assert_eq!(channel_for(&names, "h", &join), Some("p:hub:h:user:u".into()));
        let add = Call::AddToGroup { connection: id, group: "g".into() };
        assert_eq!(channel_for(&names, "h", &add), Some("p:node:7".into()));
        assert_eq!(channel_for(&names, "h", &Call::Exists(Target::Group("g".into()))), Some("p:hub:h:group:g".into()));
    }
}
