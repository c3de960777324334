//! [`AdminService`]: cluster status, join and leave over gRPC.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use switchboard_grpc::ServerAuth;
use switchboard_grpc::admin::v1::admin_server::{Admin, AdminServer};
use switchboard_grpc::admin::v1::{
    ClusterStatusReply, Empty, JoinReply, JoinRequest, LeaveReply, LeaveRequest, NodeState, NodeStatus, ProposeReply,
    ProposeRequest, Role, WaitAppliedReply, WaitAppliedRequest,
};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::{NodeId, Raft, SharedState};

/// Metadata key on a "not the leader" refusal naming the leader's advertised address, so a
/// caller can retry there.
pub const LEADER_ADDRESS_HEADER: &str = "x-switchboard-leader-address";

/// Serves the `Admin` service of one node from its raft handle and applied state.
#[derive(Clone)]
pub struct AdminService {
    id: NodeId,
    raft: Raft,
    state: SharedState,
    handing_off: Arc<AtomicBool>,
}

impl AdminService {
    /// The admin service of node `id`.
    pub fn new(id: NodeId, raft: Raft, state: SharedState) -> Self {
        AdminService { id, raft, state, handing_off: Arc::default() }
    }

    /// Refuses forwarded writes (`Propose`, UNAVAILABLE: the caller retries) while `flag` is set:
    /// a leader handing off leadership keeps its log still so its successor can catch up and win.
    pub fn refusing_writes_while(mut self, flag: Arc<AtomicBool>) -> Self {
        self.handing_off = flag;
        self
    }

    /// The cluster as this node sees it (leader, term, members, leases, applied indexes).
    pub fn status(&self) -> ClusterStatusReply {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let raft_nodes: BTreeMap<NodeId, BasicNode> = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let registered = self.state.read().nodes().clone();
        let ids: BTreeSet<NodeId> = raft_nodes.keys().chain(registered.keys()).copied().collect();
        let nodes = ids
            .into_iter()
            .map(|id| {
                let info = registered.get(&id);
                let state = if metrics.current_leader == Some(id) {
                    NodeState::Leader
                } else if voters.contains(&id) {
                    NodeState::Voter
                } else if raft_nodes.contains_key(&id) {
                    NodeState::Learner
                } else {
                    NodeState::NotMember
                };
                let mut roles = Vec::new();
                if info.is_some_and(|i| i.roles.control) {
                    roles.push(Role::Control as i32);
                }
                if info.is_some_and(|i| i.roles.edge) {
                    roles.push(Role::Edge as i32);
                }
                let applied_index = if id == self.id {
                    metrics.last_applied.map(|l| l.index)
                } else {
                    metrics.replication.as_ref().and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index)
                };
                NodeStatus {
                    id,
                    roles,
                    advertised_address: info
                        .map(|i| i.advertise.clone())
                        .or_else(|| raft_nodes.get(&id).map(|n| n.addr.clone()))
                        .unwrap_or_default(),
                    state: state as i32,
                    lease_expires_at_ms: info.map(|i| i.lease_until),
                    applied_index,
                    http_address: info.map(|i| i.http.clone()).unwrap_or_default(),
                }
            })
            .collect();
        ClusterStatusReply { leader: metrics.current_leader, term: metrics.current_term, nodes, answered_by: self.id }
    }
}

/// The admin service ready for `tonic::transport::Server::add_service`, every call checked by
/// `auth` first.
pub fn admin_server(
    service: AdminService,
    auth: ServerAuth,
) -> InterceptedService<AdminServer<AdminService>, ServerAuth> {
    AdminServer::with_interceptor(service, auth)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(&self, _request: Request<Empty>) -> Result<Response<ClusterStatusReply>, Status> {
        Ok(Response::new(self.status()))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let JoinRequest { node_id, advertised_address, roles } = request.into_inner();
        if advertised_address.is_empty() {
            return Err(Status::invalid_argument("advertised_address is required"));
        }
        let voter = roles.contains(&(Role::Control as i32));
        tracing::info!(node_id, %advertised_address, voter, "node joining the cluster");
        // Blocks until the learner has caught up, so promoting it cannot stall the quorum.
        let added =
            self.raft.add_learner(node_id, BasicNode::new(advertised_address), true).await.map_err(write_error)?;
        let mut log_index = added.log_id.index;
        if voter {
            let changes = ChangeMembers::AddVoterIds(BTreeSet::from([node_id]));
            let promoted = self.raft.change_membership(changes, false).await.map_err(write_error)?;
            log_index = promoted.log_id.index;
        }
        Ok(Response::new(JoinReply { log_index }))
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<LeaveReply>, Status> {
        let node_id = request.into_inner().node_id;
        tracing::info!(node_id, "node leaving the cluster");
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let mut log_index = membership.log_id().map_or(0, |l| l.index);
        if membership.membership().voter_ids().any(|id| id == node_id) {
            let changes = ChangeMembers::RemoveVoters(BTreeSet::from([node_id]));
            log_index = self.raft.change_membership(changes, false).await.map_err(write_error)?.log_id.index;
        }
        let still_a_member = self.raft.metrics().borrow().membership_config.membership().get_node(&node_id).is_some();
        if still_a_member {
            let changes = ChangeMembers::RemoveNodes(BTreeSet::from([node_id]));
            log_index = self.raft.change_membership(changes, false).await.map_err(write_error)?.log_id.index;
        }
        Ok(Response::new(LeaveReply { log_index }))
    }

    async fn propose(&self, request: Request<ProposeRequest>) -> Result<Response<ProposeReply>, Status> {
        if self.handing_off.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the leader is handing off leadership; retry"));
        }
        let command: crate::Command = rmp_serde::from_slice(&request.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        let written = self.raft.client_write(command).await.map_err(write_error)?;
        // Followers learn the commit now, not at the next heartbeat (the caller waits for them).
        let _ = self.raft.trigger().heartbeat().await;
        Ok(Response::new(ProposeReply { log_index: written.log_id.index }))
    }

    async fn elect(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::info!("starting an election to take over leadership");
        self.raft.trigger().elect().await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(Empty {}))
    }

    async fn wait_applied(&self, request: Request<WaitAppliedRequest>) -> Result<Response<WaitAppliedReply>, Status> {
        let WaitAppliedRequest { index, timeout_ms } = request.into_inner();
        let timeout = std::time::Duration::from_millis(u64::from(timeout_ms.clamp(1, 30_000)));
        let metrics = self
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "apply barrier")
            .await
            .map_err(|e| Status::deadline_exceeded(format!("index {index} not applied in time: {e}")))?;
        Ok(Response::new(WaitAppliedReply { applied_index: metrics.last_applied.map_or(0, |l| l.index) }))
    }
}

/// Maps a membership-change failure to a status; "not the leader" names the leader.
fn write_error(error: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Status {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            let leader =
                forward.leader_id.map_or_else(|| "unknown (election in progress)".to_owned(), |id| id.to_string());
            let addr = forward.leader_node.map(|n| n.addr).unwrap_or_default();
            let mut status =
                Status::failed_precondition(format!("not the leader: the leader is node {leader} at {addr:?}"));
            if let Ok(value) = MetadataValue::try_from(addr.as_str()) {
                status.metadata_mut().insert(LEADER_ADDRESS_HEADER, value);
            }
            status
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Status::failed_precondition(e.to_string()),
        RaftError::Fatal(fatal) => Status::unavailable(format!("raft stopped: {fatal}")),
    }
}
