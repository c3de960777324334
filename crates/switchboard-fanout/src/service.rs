//! [`FanoutService`]: the target side. Applies incoming batches to the local [`Registry`] and
//! answers connection-scoped calls against the local hubs.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_hub::{CloseRequest, Frames, Registry, is_valid_group_name};
use switchboard_proto::fanout::v1::connection_request::Action;
use switchboard_proto::fanout::v1::delivery::Target;
use switchboard_proto::fanout::v1::fanout_server::{Fanout, FanoutServer};
use switchboard_proto::fanout::v1::{ConnectionReply, ConnectionRequest, Delivery, DeliveryAck, DeliveryBatch};
use switchboard_proto::{MAX_MESSAGE_BYTES, ServerAuth};
use tokio::sync::{mpsc, watch};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

/// Acks buffered per stream before the stream stops reading batches (back-pressure on a sender
/// that does not read its acks).
const ACK_BUFFER: usize = 64;

/// Serves `switchboard.fanout.v1.Fanout` for one node. Cheap to clone; clones share the
/// shutdown switch.
///
/// * `Deliver`: one task per incoming stream reads batches in order, checks every delivery of a
///   batch, applies them all to the local [`Registry`] (frames wrapped with
///   [`Frames::prebuilt`], so this node serializes nothing when the sender filled both
///   protocols), then sends the batch's [`DeliveryAck`]. An invalid batch ends the stream with
///   `INVALID_ARGUMENT` before any of it is applied.
/// * `ConnectionCall`: runs the action against the local hub and answers `found`.
///
/// Hubs are looked up, never created: a hub this node never saw has no connections here.
#[derive(Clone)]
pub struct FanoutService {
    registry: Arc<Registry>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl FanoutService {
    /// Serves `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        FanoutService { registry, shutdown: Arc::new(watch::Sender::new(false)) }
    }

    /// Ends every open `Deliver` stream (after the batch being applied) with `UNAVAILABLE`, and
    /// refuses new ones. Call it before a graceful server shutdown: the streams are long-lived
    /// and would otherwise hold the shutdown open until their senders go away. Senders fail the
    /// unacknowledged batches with [`FanoutError::Unreachable`](crate::FanoutError::Unreachable).
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// The fan-out service ready for `tonic::transport::Server::add_service`: message limits raised to
/// [`MAX_MESSAGE_BYTES`] and every call checked by `auth` first.
pub fn fanout_server(
    service: FanoutService,
    auth: ServerAuth,
) -> InterceptedService<FanoutServer<FanoutService>, ServerAuth> {
    let server = FanoutServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    InterceptedService::new(server, auth)
}

#[tonic::async_trait]
impl Fanout for FanoutService {
    type DeliverStream = ReceiverStream<Result<DeliveryAck, Status>>;

    async fn deliver(
        &self,
        request: Request<Streaming<DeliveryBatch>>,
    ) -> Result<Response<Self::DeliverStream>, Status> {
        if self.is_shut_down() {
            return Err(shutting_down());
        }
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        let (acks, rx) = mpsc::channel(ACK_BUFFER);
        let registry = self.registry.clone();
        let shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            let reason = serve_stream(&registry, inbound, &acks, shutdown).await;
            tracing::debug!(?peer, reason, "fan-out stream ended");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn connection_call(&self, request: Request<ConnectionRequest>) -> Result<Response<ConnectionReply>, Status> {
        apply_connection_request(&self.registry, &request.into_inner()).await.map(Response::new)
    }
}

fn shutting_down() -> Status {
    Status::unavailable("node is shutting down")
}

/// Applies batches from one stream in order, acking each; returns why the stream ended.
async fn serve_stream(
    registry: &Registry,
    mut inbound: Streaming<DeliveryBatch>,
    acks: &mpsc::Sender<Result<DeliveryAck, Status>>,
    mut shutdown: watch::Receiver<bool>,
) -> &'static str {
    loop {
        let batch = tokio::select! {
            biased;
            // The `Ref` is dropped inside the block: it must not live across the send below.
            () = async { drop(shutdown.wait_for(|stop| *stop).await) } => {
                let _ = acks.send(Err(shutting_down())).await;
                return "shutdown";
            }
            () = acks.closed() => return "sender went away",
            message = inbound.message() => match message {
                Ok(Some(batch)) => batch,
                Ok(None) => return "sender closed the stream",
                Err(_) => return "stream broke",
            },
        };
        let reply = apply_batch(registry, &batch).map(|()| DeliveryAck { batch_id: batch.batch_id });
        let failed = reply.is_err();
        if acks.send(reply).await.is_err() {
            return "sender went away";
        }
        if failed {
            return "invalid batch";
        }
    }
}

/// Checks every delivery of `batch`, then applies them in order. Nothing is applied when one is
/// invalid.
fn apply_batch(registry: &Registry, batch: &DeliveryBatch) -> Result<(), Status> {
    for (index, delivery) in batch.deliveries.iter().enumerate() {
        check_delivery(delivery).map_err(|reason| {
            Status::invalid_argument(format!("batch {}, delivery {index}: {reason}", batch.batch_id))
        })?;
    }
    for delivery in &batch.deliveries {
        apply_delivery(registry, delivery);
    }
    Ok(())
}

/// Why `delivery` cannot be applied, if it cannot.
pub(crate) fn check_delivery(delivery: &Delivery) -> Result<(), &'static str> {
    match &delivery.target {
        None => Err("no target"),
        Some(Target::Group(group)) if !is_valid_group_name(group) => Err("invalid group name"),
        Some(_) => Ok(()),
    }
}

/// Applies one delivery to the local hubs and returns how many connections it was enqueued to.
///
/// The frames are the delivery's bytes, shared by every target connection
/// ([`Frames::prebuilt`]). An empty protocol field is treated as absent, so [`Frames`] converts
/// it from the other protocol for connections of that protocol, exactly as a local send of
/// prebuilt frames would; senders that fill both (see [`crate::encode_delivery`]) leave nothing
/// to convert. A delivery without a target reaches nobody.
pub fn apply_delivery(registry: &Registry, delivery: &Delivery) -> u64 {
    let Some(target) = &delivery.target else { return 0 };
    let Some(hub) = registry.get(&delivery.hub) else { return 0 };
    if delivery.close {
        let reason = (!delivery.close_reason.is_empty()).then(|| delivery.close_reason.clone());
        let request = CloseRequest { error: reason, allow_reconnect: false };
        match target {
            Target::All(_) => hub.close_all(&delivery.excluded, &request),
            Target::User(user) => hub.close_user(user, &delivery.excluded, &request),
            Target::Group(group) => hub.close_group(group, &delivery.excluded, &request),
            Target::ConnectionId(id) => _ = hub.close_connection(id, request),
        }
        return 0;
    }
    let frames = Frames::prebuilt(non_empty(&delivery.json), non_empty(&delivery.messagepack));
    match target {
        Target::All(_) => hub.broadcast(&frames, &delivery.excluded),
        Target::User(user) => hub.send_to_user(user, &frames),
        Target::Group(group) => hub.send_to_group(group, &frames, &delivery.excluded),
        Target::ConnectionId(id) => u64::from(hub.send_to_connection(id, &frames)),
    }
}

fn non_empty(bytes: &Bytes) -> Option<Bytes> {
    (!bytes.is_empty()).then(|| bytes.clone())
}

/// Runs one connection-scoped call against the local hubs. `found` is whether the connection was
/// live here; a request without an action, or with an invalid group name, is `INVALID_ARGUMENT`.
/// A group add answers once every node routes the group here (G3 under interest routing).
pub async fn apply_connection_request(
    registry: &Registry,
    request: &ConnectionRequest,
) -> Result<ConnectionReply, Status> {
    let reply = apply_connection_request_now(registry, request)?;
    if matches!(request.action, Some(Action::AddToGroup(_) | Action::UserJoinGroup(_))) && reply.found {
        registry.interest_settled().await;
    }
    Ok(reply)
}

fn apply_connection_request_now(registry: &Registry, request: &ConnectionRequest) -> Result<ConnectionReply, Status> {
    let Some(action) = &request.action else {
        return Err(Status::invalid_argument("connection call without an action"));
    };
    let group = match action {
        Action::AddToGroup(change) | Action::RemoveFromGroup(change) => Some(&change.group),
        Action::UserJoinGroup(change) | Action::UserLeaveGroup(change) => Some(&change.group),
        _ => None,
    };
    if group.is_some_and(|group| !is_valid_group_name(group)) {
        return Err(Status::invalid_argument("invalid group name"));
    }
    let Some(hub) = registry.get(&request.hub) else { return Ok(ConnectionReply { found: false }) };
    let id = request.connection_id.as_str();
    let found = match action {
        Action::Exists(_) => hub.connection(id).is_some(),
        Action::AddToGroup(change) => hub.add_to_group(id, &change.group),
        Action::RemoveFromGroup(change) => {
            let found = hub.connection(id).is_some();
            hub.remove_from_group(id, &change.group);
            found
        }
        Action::RemoveFromAllGroups(_) => {
            let found = hub.connection(id).is_some();
            hub.remove_from_all_groups(id);
            found
        }
        Action::Close(close) => {
            let error = (!close.reason.is_empty()).then(|| close.reason.clone());
            hub.close_connection(id, CloseRequest { error, allow_reconnect: false })
        }
        Action::UserExists(question) => hub.user_exists(&question.user),
        Action::GroupExists(question) => hub.group_exists(&question.group),
        Action::UserJoinGroup(change) => {
            hub.add_user_connections_to_group(&change.user, &change.group);
            true
        }
        Action::UserLeaveGroup(change) => {
            hub.remove_user_connections_from_group(&change.user, &change.group);
            true
        }
        Action::UserLeaveAllGroups(question) => {
            hub.remove_user_connections_from_all_groups(&question.user);
            true
        }
    };
    Ok(ConnectionReply { found })
}
