//! [`GrpcNetwork`]: openraft's network over the peers' `switchboard.raft.v1.Raft` services.
//!
//! One tonic [`Channel`] per peer, created lazily on the first RPC and shared by every client
//! openraft makes for that peer (it makes a new one per election round and per replication
//! stream); the channel reconnects by itself after the peer restarts. Every call carries the
//! cluster secret and protocol version ([`ClientAuth`]) and a deadline: the `hard_ttl` openraft
//! passes in [`RPCOption`], sent as `grpc-timeout` and enforced locally.
//!
//! Errors are mapped the way openraft expects:
//!
//! | what happened | `RPCError` | openraft then |
//! |---|---|---|
//! | no connection (`UNAVAILABLE`), bad peer address | `Unreachable` | backs off before retrying |
//! | the peer refused us (`PERMISSION_DENIED`, `UNAUTHENTICATED`, `FAILED_PRECONDITION`) | `Unreachable`, plus a throttled `warn!` | backs off: retrying at heartbeat pace cannot fix a wrong secret |
//! | the deadline passed | `Timeout` | retries |
//! | the message was too large (`RESOURCE_EXHAUSTED` on append-entries) | `PayloadTooLarge` with half the entries | resends fewer entries |
//! | any other status, an undecodable reply | `Network` | retries at once |
//! | the peer's raft answered with an error | `RemoteError` | handles it (higher vote, ...) |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchboard_grpc::auth::WARN_INTERVAL;
use switchboard_grpc::raft::v1::raft_client::RaftClient;
use switchboard_grpc::raft::v1::raft_reply::Result as ReplyResult;
use switchboard_grpc::raft::v1::{RaftReply, RaftRequest};
use switchboard_grpc::{
    ClientAuth, ClusterSecret, ClusterTls, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, WarnThrottle, is_supported_version,
    peer_endpoint,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::grpc::{decode, encode};
use crate::{NodeId, TypeConfig};

/// Time allowed to open a TCP connection to a peer (the RPC deadline still applies on top).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on idle peer connections, so a silently dead peer is noticed.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is dropped.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

type Client = RaftClient<InterceptedService<Channel, ClientAuth>>;
type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// Raft network factory over gRPC. Cheap to clone; clones share the channel cache.
#[derive(Clone)]
pub struct GrpcNetwork {
    /// This node's id, for timeout errors.
    id: NodeId,
    auth: ClientAuth,
    tls: Option<ClusterTls>,
    /// Peer id → its channel, keyed by the address it was made for.
    peers: Arc<Mutex<HashMap<NodeId, PeerChannel>>>,
}

#[derive(Clone)]
struct PeerChannel {
    addr: String,
    channel: Channel,
    /// Shared by every client of this peer, so refusals are warned about once per interval.
    refusal_warnings: Arc<WarnThrottle>,
}

impl GrpcNetwork {
    /// The network of node `id`, authenticating with `secret`.
    pub fn new(id: NodeId, secret: &ClusterSecret) -> Self {
        GrpcNetwork { tls: secret.tls().cloned(), ..Self::with_auth(id, secret.client()) }
    }

    /// The network of node `id` with a prepared client interceptor (for example one claiming
    /// another protocol version, in tests).
    pub fn with_auth(id: NodeId, auth: ClientAuth) -> Self {
        GrpcNetwork { id, auth, tls: None, peers: Arc::default() }
    }

    /// Returns the cached channel for `target` at `addr`, creating it (without connecting) if
    /// there is none or the peer moved.
    fn channel(&self, target: NodeId, addr: &str) -> Result<PeerChannel, tonic::transport::Error> {
        let mut peers = self.peers.lock();
        if let Some(peer) = peers.get(&target).filter(|p| p.addr == addr) {
            return Ok(peer.clone());
        }
        let endpoint = peer_endpoint(addr, self.tls.as_ref())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
        let peer = PeerChannel {
            addr: addr.to_owned(),
            channel: endpoint.connect_lazy(),
            refusal_warnings: Arc::new(WarnThrottle::new(WARN_INTERVAL)),
        };
        peers.insert(target, peer.clone());
        Ok(peer)
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcPeer {
        let peer = self.channel(target, &node.addr).map(|peer| {
            let client = RaftClient::with_interceptor(peer.channel, self.auth.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            (client, peer.refusal_warnings)
        });
        let peer = peer.map_err(|e| {
            tracing::warn!(peer_id = target, addr = %node.addr, error = %e, "invalid raft peer address");
            e.to_string()
        });
        GrpcPeer { id: self.id, target, node: node.clone(), peer }
    }
}

/// openraft's client of one peer.
pub struct GrpcPeer {
    id: NodeId,
    target: NodeId,
    node: BasicNode,
    /// The client, or why there is none (an address that is not a URI).
    peer: Result<(Client, Arc<WarnThrottle>), String>,
}

impl GrpcPeer {
    /// Sends one encoded request and decodes the reply, mapping failures per the module docs.
    /// `entries` is the number of log entries carried (append-entries only), for a size hint.
    async fn call<Req, Resp, E>(
        &self,
        kind: RPCTypes,
        rpc: &Req,
        entries: u64,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let (client, warnings) = match &self.peer {
            Ok(peer) => peer,
            Err(reason) => return Err(unreachable(format!("node {}: {reason}", self.target))),
        };
        let payload = encode(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftRequest { protocol_version: PROTOCOL_VERSION, payload });
        let ttl = option.hard_ttl();
        request.set_timeout(ttl);
        let mut client = client.clone();
        let sent = async {
            match kind {
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let timeout = || RPCError::Timeout(Timeout { action: kind, id: self.id, target: self.target, timeout: ttl });
        let reply = match tokio::time::timeout(ttl, sent).await {
            Err(_elapsed) => return Err(timeout()),
            Ok(Err(status)) if status.code() == Code::DeadlineExceeded => return Err(timeout()),
            Ok(Err(status)) => return Err(self.status_error(kind, status, entries, warnings)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        self.decode_reply(reply)
    }

    #[allow(clippy::result_large_err, reason = "openraft's RaftNetwork fixes the error type; it is returned as is")]
    fn decode_reply<Resp, E>(&self, reply: RaftReply) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let network = |message: String| RPCError::Network(NetworkError::new(&std::io::Error::other(message)));
        if !is_supported_version(reply.protocol_version) {
            let message = format!("node {} replied with protocol version {}", self.target, reply.protocol_version);
            return Err(network(message));
        }
        match reply.result {
            Some(ReplyResult::Ok(bytes)) => {
                decode(&bytes).map_err(|e| network(format!("undecodable reply from node {}: {e}", self.target)))
            }
            Some(ReplyResult::Error(bytes)) => {
                let error: RaftError<NodeId, E> =
                    decode(&bytes).map_err(|e| network(format!("undecodable error from node {}: {e}", self.target)))?;
                Err(RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), error)))
            }
            None => Err(network(format!("empty reply from node {}", self.target))),
        }
    }

    fn status_error<E: std::error::Error>(
        &self,
        kind: RPCTypes,
        status: Status,
        entries: u64,
        warnings: &WarnThrottle,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        let (peer_id, addr) = (self.target, &self.node.addr);
        match status.code() {
            Code::PermissionDenied | Code::Unauthenticated | Code::FailedPrecondition => {
                if let Some(suppressed) = warnings.check() {
                    tracing::warn!(
                        peer_id,
                        %addr,
                        rpc = %kind,
                        code = ?status.code(),
                        reason = status.message(),
                        suppressed,
                        "a raft peer refused our call: check that every node has the same cluster secret and a compatible release"
                    );
                }
                RPCError::Unreachable(Unreachable::new(&status))
            }
            Code::Unavailable => {
                tracing::debug!(peer_id, %addr, rpc = %kind, reason = status.message(), "raft peer unavailable");
                RPCError::Unreachable(Unreachable::new(&status))
            }
            Code::ResourceExhausted if entries > 1 => {
                tracing::debug!(peer_id, entries, reason = status.message(), "append-entries too large, splitting");
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        }
    }
}

fn unreachable<E: std::error::Error>(message: String) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(message)))
}

impl RaftNetwork<TypeConfig> for GrpcPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        self.call(RPCTypes::AppendEntries, &rpc, entries, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(RPCTypes::InstallSnapshot, &rpc, 0, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, &rpc, 0, &option).await
    }
}
