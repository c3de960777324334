//! [`FanoutService`]: the target side. Applies incoming batches to the local [`Registry`] and
//! answers connection-scoped calls against the local hubs.

use std::sync::Arc;

use crate::codec::{check_delivery, decode_delivery, decode_list, decode_request, encode_listed};
use switchboard_grpc::fanout::v1::connection_request::Action;
use switchboard_grpc::fanout::v1::fanout_server::{Fanout, FanoutServer};
use switchboard_grpc::fanout::v1::{ConnectionReply, ConnectionRequest, Delivery, DeliveryAck, DeliveryBatch};
use switchboard_grpc::{MAX_MESSAGE_BYTES, ServerAuth};
use switchboard_hub::{Applied, Registry};
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
    /// refuses new ones. Call it once the node's clients have been told to leave, before the
    /// gRPC server stops: the streams are long-lived and would otherwise hold the shutdown open
    /// until their senders go away. Senders treat the node as
    /// [`FanoutError::Down`](crate::FanoutError::Down): a fan-out skips it.
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
    Status::unavailable(crate::error::SHUTTING_DOWN)
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

/// Applies one delivery to the local hubs; returns whether any target connection was here. A
/// delivery without a target reaches nobody.
///
/// The frames are the delivery's bytes, shared by every target connection
/// ([`Frames::prebuilt`](switchboard_hub::Frames::prebuilt)), so this node serializes nothing
/// when the sender filled both protocols (see [`crate::encode_delivery`]).
pub fn apply_delivery(registry: &Registry, delivery: &Delivery) -> bool {
    let Some(hub) = registry.get(&delivery.hub) else { return false };
    decode_delivery(delivery).is_some_and(|call| hub.apply(&call).found())
}

/// Runs one connection-scoped or node-wide call against the local hubs. `found` is whether what
/// it names was live here; a request without an action, or with an invalid group name, is
/// `INVALID_ARGUMENT`. A group add answers once every node routes the group here (G3 under
/// interest routing).
pub async fn apply_connection_request(
    registry: &Registry,
    request: &ConnectionRequest,
) -> Result<ConnectionReply, Status> {
    if let Some(Action::ListConnections(list)) = &request.action {
        let target = decode_list(list).map_err(Status::invalid_argument)?;
        let listed = registry.get(&request.hub).map(|hub| hub.list(&target)).unwrap_or_default();
        let listed: Vec<_> = listed.into_iter().map(encode_listed).collect();
        return Ok(ConnectionReply { found: !listed.is_empty(), listed, ..ConnectionReply::default() });
    }
    if let Some(Action::Invoke(invoke)) = &request.action {
        let invocation = crate::codec::decode_invoke(&request.connection_id, invoke);
        let invoked = switchboard_engine::invoke_here(registry, &request.hub, &invocation).await;
        return Ok(crate::codec::encode_invoked(invoked));
    }
    let call = decode_request(request).map_err(Status::invalid_argument)?;
    let Some(hub) = registry.get(&request.hub) else { return Ok(ConnectionReply::default()) };
    let applied = hub.apply(&call);
    if applied.found() && call.adds_interest() && !registry.interest_settled().await {
        return Err(Status::unavailable("routing to the connection was not updated everywhere in time"));
    }
    Ok(ConnectionReply {
        found: applied.found(),
        group_limit: applied == Applied::GroupLimit,
        ..ConnectionReply::default()
    })
}
