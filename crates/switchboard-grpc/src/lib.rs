//! The gRPC contracts between Switchboard nodes, generated from `/proto/switchboard/**` by
//! tonic-prost-build, and the inter-node authentication every service uses.
//!
//! | package | service | carries |
//! |---|---|---|
//! | [`raft::v1`] | `Raft` | openraft RPCs between control-plane nodes |
//! | [`fanout::v1`] | `Fanout` | batches of encoded frames to other edge nodes, connection-scoped calls |
//! | [`admin::v1`] | `Admin` | cluster status, join, leave |
//!
//! Packages are versioned (`switchboard.raft.v1`, ...): a breaking change gets a new package
//! next to the old one, so nodes of two releases can run side by side during a rolling upgrade.
//!
//! # Wire format choices
//! * **Raft payloads are opaque bytes.** openraft's request and response types are serialized
//!   with MessagePack (rmp-serde) by `switchboard-control` and travel in a `bytes payload`
//!   field next to a `protocol_version`. openraft's types change between releases; one codec in
//!   one place beats a hand-kept protobuf mirror of each type plus its conversions.
//! * **Fan-out frames are pre-encoded.** A delivery carries the finished SignalR frame once per
//!   hub protocol (JSON, MessagePack), so the target node never re-serializes; `bytes` fields
//!   are generated as [`bytes::Bytes`](prost::bytes::Bytes), so one received frame is shared by all
//!   local connections without a copy.
//! * **Auth and version travel as metadata** ([`auth`]): every call carries the cluster secret
//!   and the sender's protocol version in headers, checked by one server interceptor for all
//!   three services before any handler runs. With [`tls`], nodes also authenticate each other
//!   by certificate and the traffic is encrypted.
//!
//! # Build
//! `build.rs` runs the protoc bundled by `protoc-bin-vendored` (or `$PROTOC`), so a fresh clone
//! needs no system protoc. The generated code is not checked in.
//!
//! This crate depends on no other Switchboard crate; it knows nothing about raft or SignalR
//! beyond the message shapes.

#![forbid(unsafe_code)]

pub mod auth;
pub mod tls;

pub use auth::{
    CLUSTER_SECRET_HEADER, ClientAuth, ClusterSecret, InvalidSecret, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
    PROTOCOL_VERSION_HEADER, ServerAuth, WarnThrottle, is_supported_version,
};
pub use tls::{ClusterTls, peer_endpoint};

/// Raft RPCs between control-plane nodes (`switchboard.raft.v1`).
pub mod raft {
    /// Version 1 of the raft package.
    pub mod v1 {
        #![allow(missing_docs, unreachable_pub, clippy::all)]
        tonic::include_proto!("switchboard.raft.v1");
    }
}

/// Fan-out between edge nodes (`switchboard.fanout.v1`).
pub mod fanout {
    /// Version 1 of the fan-out package.
    pub mod v1 {
        #![allow(missing_docs, unreachable_pub, clippy::all)]
        tonic::include_proto!("switchboard.fanout.v1");
    }
}

/// Cluster administration (`switchboard.admin.v1`).
pub mod admin {
    /// Version 1 of the admin package.
    pub mod v1 {
        #![allow(missing_docs, unreachable_pub, clippy::all)]
        tonic::include_proto!("switchboard.admin.v1");
    }
}

/// Largest gRPC message a node encodes or decodes: 64 MiB. tonic's default of 4 MiB is below
/// openraft's default snapshot chunk (3 MiB before MessagePack overhead) plus a full
/// append-entries batch of large commands.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
