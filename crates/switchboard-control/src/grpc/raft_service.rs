//! [`RaftService`]: the server side of the raft RPCs.

use serde::Serialize;
use serde::de::DeserializeOwned;
use switchboard_grpc::raft::v1::raft_reply::Result as ReplyResult;
use switchboard_grpc::raft::v1::raft_server::{Raft as RaftRpc, RaftServer};
use switchboard_grpc::raft::v1::{RaftReply, RaftRequest};
use switchboard_grpc::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ServerAuth, is_supported_version};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::Raft;
use crate::grpc::{decode, encode};

/// Serves this node's raft to its peers: decodes each request, calls the local [`Raft`] handle
/// and encodes its answer. Errors of the local raft (a higher vote, a stopped node) travel back
/// in the reply for the caller's raft to handle; only undecodable or unsupported payloads are
/// refused with a gRPC status.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    /// Serves `raft`.
    pub fn new(raft: Raft) -> Self {
        RaftService { raft }
    }
}

/// The raft service ready for `tonic::transport::Server::add_service`: message limits raised to
/// [`MAX_MESSAGE_BYTES`] and every call checked by `auth` first.
pub fn raft_server(raft: Raft, auth: ServerAuth) -> InterceptedService<RaftServer<RaftService>, ServerAuth> {
    let server = RaftServer::new(RaftService::new(raft))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    InterceptedService::new(server, auth)
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = decode_request(request)?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = decode_request(request)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = decode_request(request)?;
        reply(self.raft.install_snapshot(rpc).await)
    }
}

fn decode_request<T: DeserializeOwned>(request: Request<RaftRequest>) -> Result<T, Status> {
    let peer = request.remote_addr();
    let request = request.into_inner();
    if !is_supported_version(request.protocol_version) {
        let version = request.protocol_version;
        tracing::warn!(?peer, version, "refused a raft payload of an unsupported protocol version");
        return Err(Status::failed_precondition(format!(
            "raft payload protocol version {version} is not supported: this node speaks {PROTOCOL_VERSION}"
        )));
    }
    decode(&request.payload).map_err(|e| {
        tracing::warn!(?peer, error = %e, "refused an undecodable raft payload");
        Status::invalid_argument(format!("undecodable raft payload: {e}"))
    })
}

fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<RaftReply>, Status> {
    let encoded = match &result {
        Ok(response) => encode(response).map(ReplyResult::Ok),
        Err(error) => encode(error).map(ReplyResult::Error),
    };
    let result = encoded.map_err(|e| Status::internal(format!("encoding the raft reply: {e}")))?;
    Ok(Response::new(RaftReply { protocol_version: PROTOCOL_VERSION, result: Some(result) }))
}
