//! Message fan-out between the edge nodes of one cluster, the raft engine's node bus: a REST
//! call accepted by any node reaches the matching connections on every node (DESIGN §3.1).
//! [`ClusterBus`] implements the engine contract's `NodeBus` on top of the transport below,
//! routing with the engine's `Directory` (the raft routing table).
//!
//! # Data flow of a send
//! ```text
//!  entry node                                             target node
//!  REST send ─► Call::Send { target, excluded, frames }  ─► ClusterBus::call
//!           ─► Directory: the live nodes holding the target (routing interest)
//!           ─► encode: Delivery {json, messagepack} (serialized once per protocol)
//!           ─► FanoutClient::deliver_all(nodes, delivery)
//!                 own node: Hub::apply on the local Registry
//!                 peer:     queue ─► PeerTask ─► DeliveryBatch ═══ Deliver stream ═══► FanoutService
//!                                                                  (one per peer)      apply every delivery
//!                                                                                      (Hub::apply with
//!                                                                                      Frames::prebuilt: the
//!                                                                                      same bytes to every
//!                                                                                      local outbox)
//!                 resolves  ◄── DeliveryAck{batch_id} ◄──────────────────────────────── ack after the batch
//!  REST 202 once every target node acknowledged                                        is enqueued
//! ```
//! Connection-scoped calls (exists, add to / remove from group, remove from all groups, close)
//! go as one unary `ConnectionCall` to the owner node named in the connection id
//! ([`Router::owner`]) and answer `found`.
//!
//! # Guarantees
//! * **Acknowledged means enqueued.** [`FanoutClient::deliver`] resolves `Ok` only after the
//!   target node applied the batch carrying the delivery: the frames are in the outbox of every
//!   matching connection there (or the connection was closed as a slow consumer, G5). A REST
//!   202 after [`FanoutClient::deliver_all`] therefore means every target node enqueued (G4).
//! * **Order per peer.** Deliveries to one peer go through one FIFO queue onto one stream; the
//!   target applies batches, and the deliveries within them, in stream order and acks in that
//!   order. So deliveries submitted one after another to the same peer are applied in that
//!   order, even when not awaited in between.
//! * **Order per connection across entry nodes.** A caller that awaits a send before issuing the
//!   next one gets them in order on every connection, whichever nodes accepted them: the first is
//!   already in the outbox when the second is submitted.
//! * **At most once.** Nothing is retried. When a stream breaks or a batch stays unacknowledged
//!   for [`FanoutConfig::timeout`], every unacknowledged batch fails with a [`FanoutError`]
//!   (it may or may not have been applied) and the stream is dropped; the next delivery opens a
//!   new one. A batch still being applied from the old stream can then race one on the new
//!   stream; that only happens after a failure the caller was told about.
//! * **Bounded.** Every call is bounded by [`FanoutConfig::timeout`] (default 5 s); per peer at
//!   most [`FanoutConfig::window`] batches are in flight and [`FanoutConfig::queue`] deliveries
//!   queued. Errors name the node: [`FanoutError::Unreachable`], [`FanoutError::Refused`] (wrong
//!   cluster secret, incompatible release), [`FanoutError::Timeout`], [`FanoutError::Rejected`].
//!
//! # Batching
//! A per-peer task takes the first queued delivery plus everything already queued, up to
//! [`FanoutConfig::max_batch`] (64) deliveries or [`FanoutConfig::max_batch_bytes`] (1 MiB), as
//! one [`DeliveryBatch`](switchboard_grpc::fanout::v1::DeliveryBatch), and sends it without
//! waiting for earlier acks (up to [`FanoutConfig::window`] batches in flight). It never waits
//! for more deliveries to fill a batch: on an idle stream a delivery leaves at once, and under
//! load deliveries pile up while earlier batches are in flight, so batches fill by themselves.
//! A linger timer (wait up to 1 ms for a fuller batch) was measured and dropped: callers await
//! their acks, so a lingering batch mostly waits for callers that are themselves waiting (16
//! callers: 5 k deliveries/s with a 1 ms linger against 146 k/s without, `benches/throughput.rs`).

//! # Routing
//! [`ClusterBus`] asks the engine's `Directory` which live nodes hold a call's targets: every
//! node for a broadcast, the nodes whose routing interest (replicated by raft) holds the user or
//! group for user and group calls, and the owner named in the connection id ([`Router::owner`])
//! for connection-scoped calls. Nodes without matching connections are never asked.
//!
//! # Security
//! Every RPC carries the cluster secret and protocol version ([`switchboard_grpc::ClientAuth`]);
//! [`fanout_server`] wraps the service in [`switchboard_grpc::ServerAuth`], so an outsider is
//! refused before any handler runs.
//!
//! # Shutdown
//! `Deliver` streams are long-lived, so a graceful tonic shutdown would wait for them forever:
//! call [`FanoutService::shutdown`] first; it ends every stream with `UNAVAILABLE` after the
//! batch being applied. Senders take that answer (the node has drained its clients by then),
//! like a refused connection, as the node being down: a fan-out skips it. A stream opened on
//! a connection that closed before the call was written is opened once more, on a new
//! connection: nothing of it was applied, and the second attempt says whether the node is down.
//!
//! # Dependencies
//! The stream types come from `tokio-stream`, through tonic's public `codegen` re-export, so the
//! crate adds no dependency of its own to the workspace.

mod bus;
mod client;
mod codec;
mod error;
mod router;
mod service;

pub use bus::ClusterBus;
pub use client::{FanoutClient, FanoutConfig, FanoutStats, MAX_DELIVERY_BYTES};
pub use codec::{
    Wire, decode_invoked, decode_listed, encode_call, encode_close, encode_delivery, encode_invoke, encode_list,
};
pub use error::FanoutError;
pub use router::Router;
pub use service::{FanoutService, apply_connection_request, apply_delivery, fanout_server};
pub use switchboard_grpc::fanout::v1::delivery::Target as DeliveryTarget;
pub use switchboard_grpc::fanout::v1::{
    Broadcast, Close, ConnectionReply, ConnectionRequest, Delivery, Exists, GroupChange, GroupExists,
    RemoveFromAllGroups, UserExists, UserGroupChange, connection_request::Action,
};
