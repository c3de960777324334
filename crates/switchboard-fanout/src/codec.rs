//! [`Call`]s on the wire: sends and target-wide closes ride the ordered `Deliver` stream as a
//! [`Delivery`]; every other call is one unary [`ConnectionRequest`]. Both directions live here,
//! so a call means the same after the trip ([`Hub::apply`](switchboard_hub::Hub::apply) runs it
//! on each side).

use bytes::Bytes;
use std::time::Duration;
use switchboard_engine::{Call, Target};
use switchboard_engine::{ClientInvocation, Invoked};
use switchboard_grpc::fanout::v1::connection_request::Action;
use switchboard_grpc::fanout::v1::delivery::Target as WireTarget;
use switchboard_grpc::fanout::v1::execute_command::Command as WireCommand;
use switchboard_grpc::fanout::v1::list_connections::Target as ListTarget;
use switchboard_grpc::fanout::v1::{
    Broadcast, Close, ConnectionRequest, Delivery, Exists, GroupChange, GroupExists, ListConnections, ListedConnection,
    RemoveFromAllGroups, UserExists, UserGroupChange,
};
use switchboard_grpc::fanout::v1::{
    ConnectionReply, Execute, ExecuteCommand, Invoke, Invoked as WireInvoked, SendFrames, StreamStep,
};
use switchboard_hub::{Command, Filter, Listed};
use switchboard_hub::{Frames, is_valid_group_name};
use switchboard_protocol::Protocol;

/// How a call travels.
pub enum Wire {
    /// On the ordered delivery stream of every target node.
    Delivery(Delivery),
    /// As a unary call to each asked node.
    Request(ConnectionRequest),
}

/// Encodes `call` on `hub` for the wire. A send carries the frame of every protocol the
/// message can be expressed in, so target nodes only copy bytes.
pub fn encode_call(hub: &str, call: Call) -> Wire {
    let request = |connection_id: String, action: Action| {
        Wire::Request(ConnectionRequest { hub: hub.to_owned(), connection_id, action: Some(action) })
    };
    let node_wide = |action: Action| request(String::new(), action);
    match call {
        Call::Send { target, excluded, frames } => {
            Wire::Delivery(crate::encode_delivery(hub, wire_target(target), excluded, &frames))
        }
        Call::Close { target: Target::Connection(id), reason, .. } => {
            request(id, Action::Close(Close { reason: reason.unwrap_or_default() }))
        }
        Call::Close { target, excluded, reason } => {
            Wire::Delivery(crate::encode_close(hub, wire_target(target), excluded, reason))
        }
        Call::Exists(Target::Connection(id)) => request(id, Action::Exists(Exists {})),
        Call::Exists(Target::User(user)) => node_wide(Action::UserExists(UserExists { user })),
        Call::Exists(Target::Group(group)) => node_wide(Action::GroupExists(GroupExists { group })),
        Call::Exists(Target::All) => node_wide(Action::HubHasConnections(Exists {})),
        Call::AddToGroup { connection, group } => request(connection, Action::AddToGroup(GroupChange { group })),
        Call::RemoveFromGroup { connection, group } => {
            request(connection, Action::RemoveFromGroup(GroupChange { group }))
        }
        Call::RemoveFromAllGroups { connection } => {
            request(connection, Action::RemoveFromAllGroups(RemoveFromAllGroups {}))
        }
        Call::UserJoinGroup { user, group } => node_wide(Action::UserJoinGroup(UserGroupChange { user, group })),
        Call::UserLeaveGroup { user, group } => node_wide(Action::UserLeaveGroup(UserGroupChange { user, group })),
        Call::UserLeaveAllGroups { user } => node_wide(Action::UserLeaveAllGroups(UserExists { user })),
        Call::Execute { filter, commands } => {
            let commands = commands.into_iter().map(encode_command).collect();
            node_wide(Action::Execute(Execute { filter: filter.text().to_owned(), commands }))
        }
        Call::Stream { connection, stream, item, end } => {
            let step = StreamStep {
                stream_id: stream,
                item: item.as_ref().map(send_frames),
                end: end.as_ref().map(send_frames),
            };
            request(connection, Action::Stream(step))
        }
    }
}

fn send_frames(frames: &Frames) -> SendFrames {
    SendFrames {
        json: frames.get(Protocol::Json).cloned().unwrap_or_default(),
        messagepack: frames.get(Protocol::MessagePack).cloned().unwrap_or_default(),
    }
}

fn decode_frames(frames: &SendFrames) -> Frames {
    Frames::prebuilt(non_empty(&frames.json), non_empty(&frames.messagepack))
}

fn wire_target(target: Target) -> WireTarget {
    match target {
        Target::All => WireTarget::All(Broadcast {}),
        Target::User(user) => WireTarget::User(user),
        Target::Group(group) => WireTarget::Group(group),
        Target::Connection(id) => WireTarget::ConnectionId(id),
    }
}

/// Builds the delivery of one message for `hub` with the frames at hand
/// ([`Frames::for_other_nodes`]): a protocol left empty is built by each target node that has a
/// client speaking it. `hub` is the name as the [`Registry`](switchboard_hub::Registry) keys it
/// (already lower-cased): target nodes look it up verbatim.
pub fn encode_delivery(hub: &str, target: WireTarget, excluded: Vec<String>, frames: &Frames) -> Delivery {
    let (json, messagepack) = frames.for_other_nodes();
    Delivery {
        hub: hub.to_owned(),
        target: Some(target),
        excluded,
        json: json.unwrap_or_default(),
        messagepack: messagepack.unwrap_or_default(),
        ..Delivery::default()
    }
}

/// A delivery that closes the targets instead of sending to them.
pub fn encode_close(hub: &str, target: WireTarget, excluded: Vec<String>, reason: Option<String>) -> Delivery {
    Delivery {
        hub: hub.to_owned(),
        target: Some(target),
        excluded,
        close: true,
        close_reason: reason.unwrap_or_default(),
        ..Delivery::default()
    }
}

/// Why `delivery` cannot be applied, if it cannot.
pub(crate) fn check_delivery(delivery: &Delivery) -> Result<(), &'static str> {
    match &delivery.target {
        None => Err("no target"),
        Some(WireTarget::Group(group)) if !is_valid_group_name(group) => Err("invalid group name"),
        Some(_) => Ok(()),
    }
}

/// The call a delivery carries (`None` without a target). An empty protocol field is absent:
/// [`Frames`] converts it from the other protocol for connections of that protocol, exactly as
/// a local send of prebuilt frames would.
pub(crate) fn decode_delivery(delivery: &Delivery) -> Option<Call> {
    let target = match delivery.target.as_ref()? {
        WireTarget::All(_) => Target::All,
        WireTarget::User(user) => Target::User(user.clone()),
        WireTarget::Group(group) => Target::Group(group.clone()),
        WireTarget::ConnectionId(id) => Target::Connection(id.clone()),
    };
    let excluded = delivery.excluded.clone();
    if delivery.close {
        let reason = (!delivery.close_reason.is_empty()).then(|| delivery.close_reason.clone());
        return Some(Call::Close { target, excluded, reason });
    }
    let frames = Frames::prebuilt(non_empty(&delivery.json), non_empty(&delivery.messagepack));
    Some(Call::Send { target, excluded, frames })
}

fn non_empty(bytes: &Bytes) -> Option<Bytes> {
    (!bytes.is_empty()).then(|| bytes.clone())
}

/// The call a connection request carries; a request without an action, or with an invalid
/// group name, is refused.
pub(crate) fn decode_request(request: &ConnectionRequest) -> Result<Call, &'static str> {
    let id = || request.connection_id.clone();
    let call = match request.action.as_ref().ok_or("connection call without an action")? {
        Action::Exists(_) => Call::Exists(Target::Connection(id())),
        Action::AddToGroup(change) => Call::AddToGroup { connection: id(), group: change.group.clone() },
        Action::RemoveFromGroup(change) => Call::RemoveFromGroup { connection: id(), group: change.group.clone() },
        Action::RemoveFromAllGroups(_) => Call::RemoveFromAllGroups { connection: id() },
        Action::Close(close) => {
            let reason = (!close.reason.is_empty()).then(|| close.reason.clone());
            Call::Close { target: Target::Connection(id()), excluded: Vec::new(), reason }
        }
        Action::UserExists(question) => Call::Exists(Target::User(question.user.clone())),
        Action::GroupExists(question) => Call::Exists(Target::Group(question.group.clone())),
        Action::HubHasConnections(_) => Call::Exists(Target::All),
        Action::UserJoinGroup(change) => Call::UserJoinGroup { user: change.user.clone(), group: change.group.clone() },
        Action::UserLeaveGroup(change) => {
            Call::UserLeaveGroup { user: change.user.clone(), group: change.group.clone() }
        }
        Action::UserLeaveAllGroups(question) => Call::UserLeaveAllGroups { user: question.user.clone() },
        Action::ListConnections(_) => return Err("a listing is not a call"),
        Action::Invoke(_) => return Err("a client result is not a call"),
        Action::Execute(execute) => {
            let filter = Filter::parse(&execute.filter).map_err(|_| "an invalid filter")?;
            let commands = execute.commands.iter().map(decode_command).collect::<Result<_, _>>()?;
            Call::Execute { filter, commands }
        }
        Action::Stream(step) => Call::Stream {
            connection: id(),
            stream: step.stream_id.clone(),
            item: step.item.as_ref().map(decode_frames),
            end: step.end.as_ref().map(decode_frames),
        },
    };
    if call.groups().iter().any(|group| !is_valid_group_name(group)) {
        return Err("invalid group name");
    }
    Ok(call)
}

/// A listing of what `target` names on `hub`, as a node-wide connection request.
pub fn encode_list(hub: &str, target: Target) -> ConnectionRequest {
    let target = match target {
        Target::All => ListTarget::All(Broadcast {}),
        Target::User(user) => ListTarget::User(user),
        Target::Group(group) => ListTarget::Group(group),
        Target::Connection(id) => ListTarget::ConnectionId(id),
    };
    let list = ListConnections { target: Some(target) };
    ConnectionRequest { hub: hub.to_owned(), connection_id: String::new(), action: Some(Action::ListConnections(list)) }
}

/// What a listing request names; refused without a target or with an invalid group name.
pub(crate) fn decode_list(list: &ListConnections) -> Result<Target, &'static str> {
    let target = match list.target.as_ref().ok_or("a listing without a target")? {
        ListTarget::All(_) => Target::All,
        ListTarget::User(user) => Target::User(user.clone()),
        ListTarget::Group(group) if !is_valid_group_name(group) => return Err("invalid group name"),
        ListTarget::Group(group) => Target::Group(group.clone()),
        ListTarget::ConnectionId(id) => Target::Connection(id.clone()),
    };
    Ok(target)
}

pub(crate) fn encode_listed(listed: Listed) -> ListedConnection {
    ListedConnection { connection_id: listed.connection_id, user_id: listed.user_id.unwrap_or_default() }
}

pub fn decode_listed(listed: ListedConnection) -> Listed {
    Listed { connection_id: listed.connection_id, user_id: (!listed.user_id.is_empty()).then_some(listed.user_id) }
}

fn encode_command(command: Command) -> ExecuteCommand {
    let command = match command {
        Command::SendMessage(frames) => WireCommand::Send(send_frames(&frames)),
        Command::JoinGroup(group) => WireCommand::JoinGroup(group),
        Command::LeaveGroup(group) => WireCommand::LeaveGroup(group),
        Command::CloseConnection(reason) => WireCommand::Close(Close { reason: reason.unwrap_or_default() }),
    };
    ExecuteCommand { command: Some(command) }
}

fn decode_command(command: &ExecuteCommand) -> Result<Command, &'static str> {
    Ok(match command.command.as_ref().ok_or("an execute command without a kind")? {
        WireCommand::Send(frames) => Command::SendMessage(decode_frames(frames)),
        WireCommand::JoinGroup(group) => Command::JoinGroup(group.clone()),
        WireCommand::LeaveGroup(group) => Command::LeaveGroup(group.clone()),
        WireCommand::Close(close) => Command::CloseConnection((!close.reason.is_empty()).then(|| close.reason.clone())),
    })
}

/// A client-result invocation as a connection request to the owner: the frames (both
/// protocols, carrying the invocation id) and how long the owner waits for the client.
pub fn encode_invoke(hub: &str, invocation: &ClientInvocation) -> ConnectionRequest {
    let frames = &invocation.frames;
    let invoke = Invoke {
        invocation_id: invocation.invocation_id.clone(),
        json: frames.get(Protocol::Json).cloned().unwrap_or_default(),
        messagepack: frames.get(Protocol::MessagePack).cloned().unwrap_or_default(),
        timeout_ms: u32::try_from(invocation.timeout.as_millis()).unwrap_or(u32::MAX),
    };
    let connection_id = invocation.connection.clone();
    ConnectionRequest { hub: hub.to_owned(), connection_id, action: Some(Action::Invoke(invoke)) }
}

/// The invocation an invoke request for `connection` carries.
pub(crate) fn decode_invoke(connection: &str, invoke: &Invoke) -> ClientInvocation {
    ClientInvocation {
        connection: connection.to_owned(),
        invocation_id: invoke.invocation_id.clone(),
        frames: Frames::prebuilt(non_empty(&invoke.json), non_empty(&invoke.messagepack)),
        timeout: Duration::from_millis(u64::from(invoke.timeout_ms)),
    }
}

pub(crate) fn encode_invoked(invoked: Invoked) -> ConnectionReply {
    let (outcome, completion, protocol) = match invoked {
        Invoked::Completed { protocol, frame } => (WireInvoked::Completed, frame, protocol.name().to_owned()),
        Invoked::NotFound => (WireInvoked::NotFound, Bytes::new(), String::new()),
        Invoked::Disconnected => (WireInvoked::Disconnected, Bytes::new(), String::new()),
        Invoked::TimedOut => (WireInvoked::TimedOut, Bytes::new(), String::new()),
    };
    let found = !matches!(outcome, WireInvoked::NotFound);
    ConnectionReply { found, invoked: outcome as i32, completion, protocol, ..ConnectionReply::default() }
}

/// What an invoke reply says; `None` when it is not one (a node of another release).
pub fn decode_invoked(reply: ConnectionReply) -> Option<Invoked> {
    Some(match WireInvoked::try_from(reply.invoked).ok()? {
        WireInvoked::Completed => {
            Invoked::Completed { protocol: Protocol::from_name(&reply.protocol)?, frame: reply.completion }
        }
        WireInvoked::NotFound => Invoked::NotFound,
        WireInvoked::Disconnected => Invoked::Disconnected,
        WireInvoked::TimedOut => Invoked::TimedOut,
        WireInvoked::Unspecified => return None,
    })
}
