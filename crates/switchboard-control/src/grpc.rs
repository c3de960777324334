//! The control plane over gRPC: the services a node serves to its peers, and the one codec for
//! the raft payloads they carry.
//!
//! * [`RaftService`] answers `switchboard.raft.v1.Raft` by calling the local [`Raft`](crate::Raft)
//!   handle; [`raft_server`] wraps it with the cluster-secret interceptor.
//! * [`AdminService`] answers `switchboard.admin.v1.Admin` (status, join, leave);
//!   [`admin_server`] wraps it the same way.
//! * The client side is [`GrpcNetwork`](crate::network::grpc::GrpcNetwork).
//!
//! # Wire format
//! A raft RPC is a `RaftRequest { protocol_version, payload }` whose payload is the openraft
//! request itself, MessagePack-encoded with rmp-serde (structs as arrays, like the on-disk log).
//! The reply carries either the encoded openraft response (`ok`) or the encoded `RaftError` the
//! peer's raft returned (`error`), which the caller hands to openraft as a remote error. Keeping
//! the openraft types opaque means openraft upgrades touch this codec and the protocol version,
//! not the `.proto` files. Snapshot chunks travel the same way; their `Vec<u8>` data encodes as
//! a MessagePack array (one byte per byte below 0x80, two above), a cost worth paying for one
//! code path since snapshots are rare and the state they hold is mostly ASCII.
//!
//! Both sides refuse a payload whose `protocol_version` they cannot read with
//! `FAILED_PRECONDITION`, just as the interceptor does for the metadata version: the field keeps
//! a payload self-describing even if it is ever stored or relayed.

mod admin_service;
mod raft_service;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use admin_service::{AdminService, LEADER_ADDRESS_HEADER, admin_server};
pub use raft_service::{RaftService, raft_server};

/// Encodes an openraft request, response or error for the wire.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Bytes, rmp_serde::encode::Error> {
    rmp_serde::to_vec(value).map(Bytes::from)
}

/// Decodes what [`encode`] produced.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}
