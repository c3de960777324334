//! [`ControlPlane`]: a node's handle on the raft group, and the raft engine's membership store
//! and directory. The raft log and state machine live in `<data dir>/raft`, so user-group
//! memberships survive restarts (G6).
//!
//! - Embedded single node: one voter, no network.
//! - Cluster: raft over authenticated gRPC (`--grpc-listen`), initial voters from `--voter`,
//!   other nodes join through `--join`. A write proposed on a follower is forwarded to the
//!   leader. Concurrent writes are batched into one raft entry. Once committed, a write waits
//!   until every live member node has applied it (an apply barrier through `WaitApplied`), so
//!   every later send on any node sees it (G3).
//! - Leases (G7): every node renews a 6 s lease every 2 s; the leader removes nodes whose lease
//!   ran out, with their routing interest, and drops expired edge-only learners from the raft
//!   membership.
//! - Drain (G9): a stopping leader hands leadership over before it leaves.

use crate::grpc::{AdminService, LEADER_ADDRESS_HEADER, admin_server, raft_server};
use crate::network::NoPeers;
use crate::network::grpc::GrpcNetwork;
use crate::{Command, ControlState, NodeId, Raft, Roles, SharedState, open_store};
use anyhow::Context;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use switchboard_engine::{Directory, EngineError, EngineFuture, MembershipStore};
use switchboard_grpc::admin::v1::admin_client::AdminClient;
use switchboard_grpc::admin::v1::{ClusterStatusReply, JoinRequest, ProposeRequest, Role, WaitAppliedRequest};
use switchboard_grpc::{ClusterSecret, ClusterTls, WarnThrottle, peer_endpoint};
use switchboard_hub::{UserGroupReader, unix_now};

/// How this node takes part in a cluster (absent: the embedded single node).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub grpc_listen: SocketAddr,
    pub advertise: String,
    /// Where other nodes forward this node's client connections; `None`: derived once listening.
    pub advertise_http: Option<String>,
    /// Initial voters, id → gRPC address.
    pub voters: BTreeMap<u64, String>,
    /// Nodes to join through, tried in turn (empty: start from the initial voters).
    pub join: Vec<String>,
    pub control: bool,
    pub edge: bool,
    pub secret: String,
    /// Mutual TLS between nodes (`--cluster-tls-cert`, `--cluster-tls-key`, `--cluster-ca`).
    pub tls: Option<ClusterTls>,
}

impl ClusterSettings {
    /// What this node calls peers and admits them with: the secret, and TLS when configured.
    pub fn credentials(&self) -> anyhow::Result<ClusterSecret> {
        let secret = ClusterSecret::new(&self.secret).map_err(|e| anyhow::anyhow!("--cluster-secret: {e}"))?;
        Ok(secret.with_tls(self.tls.clone()))
    }
}

/// Why an operator's request to remove a node was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    #[error("a node cannot remove itself; ask another node")]
    Itself,
    #[error("node {0} is not in the cluster")]
    Unknown(NodeId),
    #[error("the leader did not remove the node: {0}")]
    Refused(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The node id of the embedded single node.
const NODE_ID: u64 = 1;

/// How long a lease lasts, and how often it is renewed.
const LEASE: Duration = Duration::from_secs(6);
const LEASE_RENEWAL: Duration = Duration::from_secs(2);
/// A leader removes a node this long after its lease ran out, and only once it has led for a
/// whole lease (renewals could not reach it before): by then a node that really lost contact
/// has closed its clients itself ([`ControlPlane::lease_lapsed`]), so no send answered 202
/// skips a node whose clients are still connected.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// Bound on the apply barrier per node.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// A running raft group and its applied state.
#[derive(Clone)]
pub struct ControlPlane {
    id: NodeId,
    raft: Raft,
    state: SharedState,
    /// Inter-node credentials; `None` on the embedded single node.
    secret: Option<ClusterSecret>,
    /// Where raft and this handle's own work run (proposals, apply barriers, the lease, admin
    /// channels to peers); see [`Self::open_cluster`].
    runtime: tokio::runtime::Handle,
    /// Admin channels to other nodes, by address (connected lazily, reconnecting by themselves).
    channels: Arc<parking_lot::Mutex<std::collections::HashMap<String, tonic::transport::Channel>>>,
    /// Commands waiting to be proposed; the batcher turns what queued up into one proposal.
    proposals: tokio::sync::mpsc::Sender<Proposal>,
    /// How long writes take from call to answer (commit and apply barrier included).
    proposal_latency: Arc<switchboard_hub::metrics::Histogram>,
    /// This node's registration, kept to register again if the cluster forgets the node.
    registration: Arc<parking_lot::Mutex<Option<Command>>>,
    /// An edge-only node's `--join` addresses and advertised address: the leader drops a
    /// forgotten learner from the raft membership, so such a node joins again before it
    /// registers again.
    rejoin: Arc<parking_lot::Mutex<Option<Rejoin>>>,
    /// When the last lease write that succeeded began (the lease it wrote runs from then).
    renewed: Arc<parking_lot::Mutex<Option<tokio::time::Instant>>>,
    /// Set while a stopping leader hands off leadership: no new entries, local or forwarded.
    handing_off: Arc<std::sync::atomic::AtomicBool>,
}

/// Where an edge-only node joins again: its `--join` addresses and its advertised address.
type Rejoin = (Vec<String>, String);

/// Raft progress of this node, for metrics.
pub struct RaftNumbers {
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    /// Known on the leader only: the highest index a quorum of voters has.
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
}

/// A command and who waits for its answer.
type Proposal = (Command, tokio::sync::oneshot::Sender<Result<(), EngineError>>);

/// Most commands in one raft entry.
const MAX_BATCH: usize = 512;

impl ControlPlane {
    /// Builds the handle and starts its proposal batcher on `runtime`.
    fn assemble(opened: OpenRaft, secret: Option<ClusterSecret>, runtime: tokio::runtime::Handle) -> ControlPlane {
        let OpenRaft { id, raft, state } = opened;
        let (proposals, queue) = tokio::sync::mpsc::channel(4 * MAX_BATCH);
        let plane = ControlPlane {
            id,
            raft,
            state,
            secret,
            runtime,
            channels: Arc::default(),
            proposals,
            proposal_latency: Arc::default(),
            registration: Arc::default(),
            rejoin: Arc::default(),
            renewed: Arc::default(),
            handing_off: Arc::default(),
        };
        plane.runtime.spawn(plane.clone().batch_proposals(queue));
        if plane.secret.is_some() {
            plane.runtime.spawn(plane.clone().log_leader_changes());
        }
        plane
    }

    /// Proposes whatever queued up as one raft entry (a `Command::Batch`), so concurrent
    /// membership calls share one log append and one apply barrier.
    async fn batch_proposals(self, mut queue: tokio::sync::mpsc::Receiver<Proposal>) {
        let mut batch = Vec::new();
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let (commands, waiters): (Vec<Command>, Vec<_>) = batch.drain(..).unzip();
            let result = self.propose(Command::batch(commands)).await;
            let plane = self.clone();
            tokio::spawn(async move {
                let result = match result {
                    Ok(index) => {
                        plane.apply_barrier(index).await;
                        Ok(())
                    }
                    Err(error) => Err(error),
                };
                for waiter in waiters {
                    let _ = waiter.send(result.clone());
                }
            });
        }
    }

    /// Opens (or creates) the raft data under `data_dir` and waits until this node leads.
    pub async fn start_single(data_dir: &Path, advertise: &str) -> anyhow::Result<ControlPlane> {
        let opened = open_raft(data_dir, NODE_ID, NoPeers, 300).await?;
        if !opened.raft.is_initialized().await? {
            opened.raft.initialize(BTreeMap::from([(NODE_ID, BasicNode::new(advertise))])).await?;
        }
        opened
            .raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.current_leader == Some(NODE_ID), "the node leads its raft group")
            .await
            .context("raft elected no leader")?;
        Ok(ControlPlane::assemble(opened, None, tokio::runtime::Handle::current()))
    }

    /// Opens the raft store and state of a cluster node (no network yet: see [`Self::join_cluster`]).
    ///
    /// Raft (its core, the replication to each peer, their gRPC clients) and this handle's own
    /// tasks run on `runtime`, which should not be the one serving client connections: there
    /// a heartbeat, a proposal and each step of an apply barrier wait behind every connection
    /// task already queued. Under broadcasts to 10,000 connections on 3 nodes, heartbeats
    /// missed their deadline and a membership write took a second.
    pub async fn open_cluster(
        data_dir: &Path,
        node_id: NodeId,
        cluster: &ClusterSettings,
        runtime: &tokio::runtime::Handle,
    ) -> anyhow::Result<ControlPlane> {
        let secret = cluster.credentials()?;
        let network = GrpcNetwork::new(node_id, &secret);
        let data_dir = data_dir.to_owned();
        let opened = runtime
            .spawn(async move { open_raft(&data_dir, node_id, network, 400).await })
            .await
            .context("raft did not start")??;
        Ok(ControlPlane::assemble(opened, Some(secret), runtime.clone()))
    }

    /// The gRPC services peers call on this node (raft and admin), each checking the cluster
    /// secret first; the caller serves them (with the fan-out service) on `--grpc-listen`
    /// before [`Self::join_cluster`].
    pub fn grpc_services(&self) -> tonic::service::Routes {
        let secret = self.secret.clone().expect("grpc_services is only called on a cluster node");
        let auth = secret.server();
        let admin = AdminService::new(self.id, self.raft.clone(), self.state.clone())
            .refusing_writes_while(self.handing_off.clone());
        tonic::service::Routes::new(raft_server(self.raft.clone(), auth.clone())).add_service(admin_server(admin, auth))
    }

    /// Initializes the initial voters (the lowest id does it) or joins through `--join`, waits
    /// for a leader, registers the node and keeps its lease. The node's gRPC services
    /// ([`Self::grpc_services`]) must be served already.
    pub async fn join_cluster(&self, cluster: &ClusterSettings, http: String) -> anyhow::Result<()> {
        let node_id = self.id;
        let plane = self.clone();
        let first_voter = cluster.voters.keys().next() == Some(&node_id);
        if first_voter {
            let members: BTreeMap<NodeId, BasicNode> =
                cluster.voters.iter().map(|(id, addr)| (*id, BasicNode::new(addr.clone()))).collect();
            if !plane.raft.is_initialized().await? {
                plane.raft.initialize(members).await?;
            }
        }
        if !cluster.join.is_empty() {
            plane.join(&cluster.join, &cluster.advertise, cluster.control).await?;
            if !cluster.control {
                *plane.rejoin.lock() = Some((cluster.join.clone(), cluster.advertise.clone()));
            }
        }
        plane
            .raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .context("no raft leader was elected within 60 s (are the other voters up?)")?;
        let roles = Roles { control: cluster.control, edge: cluster.edge };
        let register = Command::RegisterNode {
            node: node_id,
            roles,
            advertise: cluster.advertise.clone(),
            lease_until: lease_until(),
            http,
        };
        *plane.registration.lock() = Some(register.clone());
        let started = tokio::time::Instant::now();
        plane.write(register).await.context("cannot register the node")?;
        *plane.renewed.lock() = Some(started);
        let leader = plane.raft.metrics().borrow().current_leader;
        self.runtime.spawn(plane.keep_lease());
        tracing::info!(node_id, ?leader, "joined the cluster");
        Ok(())
    }

    /// Logs every change of raft leader this node sees, while the raft runs.
    async fn log_leader_changes(self) {
        let mut metrics = self.raft.metrics();
        let mut leader = metrics.borrow().current_leader;
        while metrics.changed().await.is_ok() {
            let now = metrics.borrow().current_leader;
            if now != leader {
                let term = metrics.borrow().current_term;
                match now {
                    Some(node) => tracing::info!(leader = node, term, "raft leader changed"),
                    None => tracing::warn!(term, "no raft leader known"),
                }
                leader = now;
            }
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// Registers the node again when the routing table lost it (the leader expired its lease
    /// while it was cut off); returns whether it did, so its interest can be reported anew.
    ///
    /// Forgotten means: gone from the routing table as this node applied it, or its lease
    /// expired there; the latter also catches an edge node that no longer receives the log
    /// (the leader dropped it from the raft membership while it was cut off, so it never
    /// applied its own removal). An edge-only node joins the raft membership again first.
    pub async fn register_again_if_forgotten(&self) -> bool {
        let Some(Command::RegisterNode { node, roles, advertise, http, .. }) = self.registration.lock().clone() else {
            return false;
        };
        let now = now_ms();
        if self.state.read().nodes().get(&node).is_some_and(|info| info.lease_until > now) {
            return false;
        }
        tracing::warn!("the cluster forgot this node (lease expired); registering again");
        let rejoin = self.rejoin.lock().clone();
        if let Some((addresses, advertise)) = rejoin
            && let Err(error) = self.join(&addresses, &advertise, false).await
        {
            tracing::warn!(%error, "cannot join the cluster again");
            return false;
        }
        let started = tokio::time::Instant::now();
        let until = lease_until();
        let register = Command::RegisterNode { node, roles, advertise, http, lease_until: until };
        let registered = self.write(register).await.is_ok();
        if registered && self.state.read().nodes().get(&node).is_some_and(|n| n.lease_until >= until) {
            *self.renewed.lock() = Some(started);
        }
        registered
    }

    /// Whether this node's lease has run out without a renewal: the leader may have removed
    /// it from the routing table, so sends answered elsewhere no longer reach its clients.
    /// The node then closes its clients (they reconnect through other nodes) until it renews.
    pub fn lease_lapsed(&self) -> bool {
        self.secret.is_some() && self.renewed.lock().is_some_and(|started| started.elapsed() > LEASE)
    }

    /// Live edge nodes that hold connections of `user` in `hub`.
    pub fn edge_nodes_for_user(&self, hub: &str, user: &str) -> Vec<(NodeId, String)> {
        let state = self.state.read();
        live_edges_among(&state, state.nodes_for_user(hub, user))
    }

    /// Live edge nodes that hold connections in `group` of `hub`, directly or through a member user.
    pub fn edge_nodes_for_group(&self, hub: &str, group: &str) -> Vec<(NodeId, String)> {
        let state = self.state.read();
        live_edges_among(&state, &state.nodes_for_group(hub, group, unix_now()))
    }

    /// The client and REST address of a live node, if it registered one.
    pub fn http_address(&self, node: NodeId) -> Option<String> {
        let now = now_ms();
        let state = self.state.read();
        state
            .nodes()
            .get(&node)
            .filter(|info| routable(info.lease_until, now) && !info.http.is_empty())
            .map(|info| info.http.clone())
    }

    /// Live edge nodes and their gRPC addresses (leases not expired), this node included.
    pub fn edge_nodes(&self) -> Vec<(NodeId, String)> {
        let state = self.state.read();
        live_edges_among(&state, state.nodes().keys())
    }

    /// Asks the cluster (through one of `addresses`, tried in turn, redirected to the leader)
    /// to add this node.
    async fn join(&self, addresses: &[String], advertise: &str, voter: bool) -> anyhow::Result<()> {
        let mut roles = vec![Role::Edge as i32];
        if voter {
            roles.push(Role::Control as i32);
        }
        let request = JoinRequest { node_id: self.id, advertised_address: advertise.to_owned(), roles };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut candidates = addresses.iter().cycle();
        let mut target = candidates.next().cloned().context("no address to join through")?;
        let warnings = WarnThrottle::new(Duration::from_secs(10));
        let mut last_error = String::new();
        loop {
            match self.admin(&target).await.map_err(tonic::Status::unavailable) {
                Ok(mut client) => match client.join(request.clone()).await {
                    Ok(_) => return Ok(()),
                    Err(status) => {
                        if let Some(leader) = status.metadata().get(LEADER_ADDRESS_HEADER).and_then(|v| v.to_str().ok())
                        {
                            target = leader.to_owned();
                        } else if status.code() == tonic::Code::PermissionDenied {
                            anyhow::bail!("the cluster refused this node: {}", status.message());
                        } else {
                            // Say why (a TLS failure names the certificate problem), once in a while.
                            last_error = error_chain(&status);
                            if warnings.check().is_some() {
                                tracing::warn!(through = %target, error = %last_error, "cannot join the cluster yet");
                            }
                            target = candidates.next().cloned().unwrap_or(target);
                        }
                    }
                },
                Err(_) => target = candidates.next().cloned().unwrap_or(target),
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "could not join the cluster through {} within 60 s (last error: {last_error})",
                    addresses.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn admin(
        &self,
        address: &str,
    ) -> Result<
        AdminClient<
            tonic::service::interceptor::InterceptedService<tonic::transport::Channel, switchboard_grpc::ClientAuth>,
        >,
        String,
    > {
        let secret = self.secret.as_ref().ok_or("not in a cluster")?;
        let channel = {
            let mut channels = self.channels.lock();
            match channels.get(address) {
                Some(channel) => channel.clone(),
                None => {
                    // Entered, the runtime gets the channel's connection task.
                    let _runtime = self.runtime.enter();
                    let channel = peer_endpoint(address, secret.tls())
                        .map_err(|e| e.to_string())?
                        .connect_timeout(Duration::from_secs(2))
                        .timeout(BARRIER_TIMEOUT)
                        .connect_lazy();
                    channels.insert(address.to_owned(), channel.clone());
                    channel
                }
            }
        };
        Ok(AdminClient::with_interceptor(channel, secret.client()))
    }

    async fn keep_lease(self) {
        let mut tick = tokio::time::interval(LEASE_RENEWAL);
        let mut leading_since: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            let started = tokio::time::Instant::now();
            match self.renew_lease().await {
                Err(EngineError::ShuttingDown) => return,
                Err(error) => tracing::warn!(%error, "lease renewal failed"),
                Ok(()) => *self.renewed.lock() = Some(started),
            }
            if self.raft.metrics().borrow().current_leader != Some(self.id) {
                leading_since = None;
                continue;
            }
            let since = *leading_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= LEASE {
                let expired =
                    self.state.read().expired_nodes(now_ms().saturating_sub(EXPIRY_MARGIN.as_millis() as u64));
                for node in expired {
                    tracing::warn!(node, "node lease expired; removing its routes");
                    let _ = self.write(Command::RemoveNode { node }).await;
                    self.forget_learner(node).await;
                }
            }
        }
    }

    /// Renews this node's lease: committed, and applied here (this node's view is then current
    /// up to it). Not through [`Self::write`]: a lease waits for no other node's apply, so a
    /// dead node holding up the apply barrier cannot make the live ones' leases run out.
    async fn renew_lease(&self) -> Result<(), EngineError> {
        let until = lease_until();
        let index = self.propose(Command::RenewLease { node: self.id, lease_until: until }).await?;
        let applied = self.raft.wait(Some(BARRIER_TIMEOUT)).applied_index_at_least(Some(index), "lease applied").await;
        match applied {
            Ok(_) if self.state.read().nodes().get(&self.id).is_some_and(|n| n.lease_until >= until) => Ok(()),
            Ok(_) => Err(EngineError::NoQuorum("the renewed lease is not in the applied state".into())),
            Err(error) => Err(EngineError::NoQuorum(format!("the renewal was not applied here: {error}"))),
        }
    }

    /// Drops a dead edge-only node from the raft membership, so nodes that come and go (pods
    /// with fresh ids) do not pile up as learners the leader keeps replicating to. Voters stay:
    /// changing them is an operator's decision.
    async fn forget_learner(&self, node: NodeId) {
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        let is_learner = membership.learner_ids().any(|id| id == node);
        if is_learner {
            let changes = openraft::ChangeMembers::RemoveNodes(std::collections::BTreeSet::from([node]));
            if let Err(error) = self.raft.change_membership(changes, false).await {
                tracing::warn!(node, %error, "could not remove an expired learner from the raft membership");
            }
        }
    }

    /// Removes a node from the cluster for good (operators, after stopping it): out of the raft
    /// membership (a voter stops counting toward the quorum) and out of the routing table. The
    /// request goes to the leader wherever it is asked.
    pub async fn remove_member(&self, node: NodeId) -> Result<(), RemoveError> {
        if node == self.id {
            return Err(RemoveError::Itself);
        }
        let known = self.raft.metrics().borrow().membership_config.membership().get_node(&node).is_some()
            || self.state.read().nodes().contains_key(&node);
        if !known {
            return Err(RemoveError::Unknown(node));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let leader = {
                let metrics = self.raft.metrics().borrow().clone();
                let leader = metrics.current_leader;
                leader.and_then(|id| metrics.membership_config.membership().get_node(&id).map(|n| n.addr.clone()))
            };
            let attempt = match leader {
                None => Err("no leader is known right now".to_owned()),
                Some(address) => match self.admin(&address).await {
                    Ok(mut client) => client
                        .leave(switchboard_grpc::admin::v1::LeaveRequest { node_id: node })
                        .await
                        .map(|_| ())
                        .map_err(|status| status.message().to_owned()),
                    Err(error) => Err(error),
                },
            };
            match attempt {
                Ok(()) => break,
                Err(error) if tokio::time::Instant::now() > deadline => return Err(RemoveError::Refused(error)),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        tracing::info!(node, "node removed from the cluster");
        Ok(self.write(Command::RemoveNode { node }).await?)
    }

    /// The cluster as this node sees it.
    pub fn status(&self) -> ClusterStatusReply {
        AdminService::new(self.id, self.raft.clone(), self.state.clone()).status()
    }

    /// Proposes a command (forwarded to the leader from a follower) and, in a cluster, waits
    /// until every member node has applied it.
    pub async fn write(&self, command: Command) -> Result<(), EngineError> {
        let started = std::time::Instant::now();
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.proposals.send((command, answer)).await.map_err(|_| EngineError::ShuttingDown)?;
        let result = answered.await.map_err(|_| EngineError::ShuttingDown)?;
        self.proposal_latency.observe(started.elapsed());
        result
    }

    pub fn proposal_latency(&self) -> &switchboard_hub::metrics::Histogram {
        &self.proposal_latency
    }

    /// Term, leader and indexes as raft reports them now.
    pub fn raft_numbers(&self) -> RaftNumbers {
        let metrics = self.raft.metrics().borrow().clone();
        let commit_index = metrics.replication.as_ref().map(|replication| {
            let membership = metrics.membership_config.membership();
            let mut matched: Vec<u64> = membership
                .voter_ids()
                .map(|id| match id == self.id {
                    true => metrics.last_log_index.unwrap_or(0),
                    false => replication.get(&id).copied().flatten().map_or(0, |l| l.index),
                })
                .collect();
            matched.sort_unstable_by(|a, b| b.cmp(a));
            matched.get(matched.len() / 2).copied().unwrap_or(0)
        });
        RaftNumbers {
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index,
            commit_index,
            applied_index: metrics.last_applied.map(|l| l.index),
        }
    }

    /// Proposes one raft entry here or, from a follower, on the leader; returns its index.
    ///
    /// A follower's idea of the leader may be stale (it was cut off while leadership moved):
    /// the node it forwards to then names the leader it knows, and the proposal goes there.
    async fn propose(&self, command: Command) -> Result<u64, EngineError> {
        // A node that just joined may know who leads before it knows where: retry briefly.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut named_leader: Option<String> = None;
        let index = loop {
            if let Some(address) = named_leader.take() {
                match self.propose_on(&address, &command).await {
                    Ok(index) => break index,
                    Err((error, _)) if tokio::time::Instant::now() > deadline => {
                        return Err(EngineError::NoQuorum(error));
                    }
                    Err((_, next)) => named_leader = next.filter(|next| *next != address),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let leading = self.raft.metrics().borrow().current_leader == Some(self.id);
            if leading && self.handing_off.load(std::sync::atomic::Ordering::SeqCst) {
                // Our own log stays still while leadership moves; retry once someone else leads.
                if tokio::time::Instant::now() > deadline {
                    return Err(EngineError::NoQuorum("leadership is being handed off".to_owned()));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            match self.raft.client_write(command.clone()).await {
                Ok(written) => {
                    // Followers learn the new commit index now rather than at the next heartbeat,
                    // which keeps the apply barrier short.
                    let _ = self.raft.trigger().heartbeat().await;
                    break written.log_id.index;
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    let forwarded = match forward.leader_node {
                        Some(leader) => self.propose_on(&leader.addr, &command).await,
                        None => Err(("no leader is known right now".to_owned(), None)),
                    };
                    match forwarded {
                        Ok(index) => break index,
                        Err((error, _)) if tokio::time::Instant::now() > deadline => {
                            return Err(EngineError::NoQuorum(error));
                        }
                        Err((_, next)) => named_leader = next,
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(RaftError::Fatal(_)) => return Err(EngineError::ShuttingDown),
                Err(error) => return Err(EngineError::NoQuorum(error.to_string())),
            }
        };
        Ok(index)
    }

    /// Proposes `command` on the leader at `address`; returns its log index, or why not and
    /// the leader that node named when it is not the leader.
    async fn propose_on(&self, address: &str, command: &Command) -> Result<u64, (String, Option<String>)> {
        let bytes = rmp_serde::to_vec(command).map_err(|e| (e.to_string(), None))?;
        let mut client = self.admin(address).await.map_err(|e| (e, None))?;
        let reply = client.propose(ProposeRequest { command: bytes.into() }).await.map_err(|status| {
            let leader = status.metadata().get(LEADER_ADDRESS_HEADER).and_then(|v| v.to_str().ok());
            (status.message().to_owned(), leader.filter(|l| !l.is_empty()).map(str::to_owned))
        })?;
        Ok(reply.into_inner().log_index)
    }

    /// Waits until every member node (voters and learners) has applied `index`; a node that
    /// does not answer in time is reported and skipped (its lease will expire).
    async fn apply_barrier(&self, index: u64) {
        let _ = self.raft.wait(Some(BARRIER_TIMEOUT)).applied_index_at_least(Some(index), "local apply").await;
        if self.secret.is_none() {
            return;
        }
        // Only registered nodes with a live lease route sends and answer requests. A node whose
        // lease expired is dead to routing already (waiting on it would stall every write behind
        // a partitioned node); one that left (drain) or has not registered yet will apply the
        // entry before it serves again.
        let members: Vec<(NodeId, String)> = {
            let (now, state) = (now_ms(), self.state.read());
            let metrics = self.raft.metrics().borrow().clone();
            metrics
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .filter(|(id, _)| state.nodes().get(*id).is_some_and(|info| routable(info.lease_until, now)))
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect()
        };
        let mut waits = tokio::task::JoinSet::new();
        for (id, addr) in members {
            let plane = self.clone();
            waits.spawn(async move {
                let request = WaitAppliedRequest { index, timeout_ms: BARRIER_TIMEOUT.as_millis() as u32 };
                let result = match plane.admin(&addr).await {
                    Ok(mut client) => {
                        client.wait_applied(request).await.map(|_| ()).map_err(|s| s.message().to_owned())
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    tracing::warn!(node = id, %error, index, "a node did not confirm applying a membership change");
                }
            });
        }
        while waits.join_next().await.is_some() {}
    }

    /// Stops raft (the log is already durable). A cluster node first leaves the routing table,
    /// so other nodes stop sending to it at once instead of when its lease runs out.
    pub async fn shutdown(&self) {
        self.hand_off_leadership().await;
        if self.secret.is_some() {
            let leave = self.write(Command::RemoveNode { node: self.id });
            if tokio::time::timeout(Duration::from_secs(3), leave).await.is_err() {
                tracing::warn!("could not leave the routing table before stopping");
            }
        }
        let _ = self.raft.shutdown().await;
    }

    /// A leader about to stop hands leadership over (G9): it stops adding entries (forwarded
    /// writes are refused and retried by their senders) and stops campaigning, waits until the
    /// other voters hold its whole log, then falls silent, so the followers' election timers run
    /// out and one of them takes over. Asking one to elect would not be faster: voters refuse
    /// votes while the leader's lease lasts, and the old leader stepping down early restarts
    /// those leases. Bounded to about 4 s.
    async fn hand_off_leadership(&self) {
        use std::sync::atomic::Ordering;
        let metrics = self.raft.metrics().borrow().clone();
        if self.secret.is_none() || metrics.current_leader != Some(self.id) {
            return;
        }
        let others: Vec<NodeId> =
            metrics.membership_config.membership().voter_ids().filter(|id| *id != self.id).collect();
        if others.is_empty() {
            return;
        }
        self.handing_off.store(true, Ordering::SeqCst);
        // It must not win again: it holds the longest log, so it would.
        self.raft.runtime_config().elect(false);
        let caught_up = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
            let matched = |id: &NodeId| m.replication.as_ref().and_then(|r| r.get(id).copied().flatten());
            m.last_log_index.is_some_and(|last| others.iter().all(|id| matched(id).is_some_and(|l| l.index >= last)))
        };
        if self.raft.wait(Some(Duration::from_secs(1))).metrics(caught_up, "the voters caught up").await.is_err() {
            tracing::warn!("the other voters did not catch up in time; handing off anyway");
        }
        self.raft.runtime_config().heartbeat(false);
        let handed = self
            .raft
            .wait(Some(Duration::from_secs(3)))
            .metrics(|m| m.current_leader.is_some_and(|leader| leader != self.id), "another node leads")
            .await;
        match handed {
            Ok(metrics) => tracing::info!(successor = metrics.current_leader, "leadership handed off"),
            Err(_) => {
                tracing::warn!("no other node took over in time; the others will elect after a timeout");
                self.raft.runtime_config().heartbeat(true);
                self.handing_off.store(false, Ordering::SeqCst);
            }
        }
    }

    /// Drops expired memberships now and then, so the state does not grow without bound.
    pub async fn purge_expired_forever(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            match self.write(Command::PurgeExpired { now: unix_now() }).await {
                Err(EngineError::ShuttingDown) => return,
                Err(error) => tracing::warn!(%error, "purging expired memberships failed"),
                Ok(()) => {}
            }
        }
    }
}

/// Opens the raft log and state machine in `<data dir>/raft` and starts raft over `network`;
/// elections time out after `election_ms` to twice that, heartbeats go every 100 ms.
/// A started raft node and its state.
struct OpenRaft {
    id: NodeId,
    raft: Raft,
    state: SharedState,
}

async fn open_raft<N>(data_dir: &Path, id: NodeId, network: N, election_ms: u64) -> anyhow::Result<OpenRaft>
where
    N: openraft::RaftNetworkFactory<crate::TypeConfig>,
{
    let config = Config {
        cluster_name: "switchboard".into(),
        heartbeat_interval: 100,
        election_timeout_min: election_ms,
        election_timeout_max: 2 * election_ms,
        ..Default::default()
    }
    .validate()
    .context("invalid raft config")?;
    let (log_store, state_machine) = open_store(data_dir.join("raft"))
        .await
        .with_context(|| format!("cannot open the raft data in {}", data_dir.display()))?;
    let state = state_machine.state();
    let raft =
        Raft::new(id, Arc::new(config), network, log_store, state_machine).await.context("raft did not start")?;
    Ok(OpenRaft { id, raft, state })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The live edge nodes among `ids`, with their gRPC addresses, in the order of `ids`. Only
/// their addresses are copied: this runs for every send.
fn live_edges_among<'a>(state: &ControlState, ids: impl IntoIterator<Item = &'a NodeId>) -> Vec<(NodeId, String)> {
    let now = now_ms();
    ids.into_iter()
        .filter_map(|id| {
            let info = state.nodes().get(id)?;
            (info.roles.edge && routable(info.lease_until, now)).then(|| (*id, info.advertise.clone()))
        })
        .collect()
}

/// Whether a node whose lease runs until `lease_until` is still routed to at `now`: until the
/// margin past its deadline, by when a node that lost contact has closed its clients itself
/// (it checks every 250 ms from its own deadline on), so no send skips a node whose clients are
/// still connected.
fn routable(lease_until: u64, now: u64) -> bool {
    lease_until.saturating_add(EXPIRY_MARGIN.as_millis() as u64) > now
}

fn lease_until() -> u64 {
    now_ms() + LEASE.as_millis() as u64
}

impl UserGroupReader for ControlPlane {
    fn is_member(&self, hub: &str, user: &str, group: &str, now: u64) -> bool {
        self.state.read().is_member(hub, user, group, now)
    }

    fn for_each_user_in(&self, hub: &str, group: &str, now: u64, f: &mut dyn FnMut(&str)) {
        self.state.read().users_in(hub, group, now).for_each(f);
    }

    fn member_count(&self, hub: &str, group: &str) -> usize {
        self.state.read().member_count(hub, group)
    }

    fn hub_membership_count(&self, hub: &str) -> usize {
        self.state.read().hub_membership_count(hub)
    }
}

impl MembershipStore for ControlPlane {
    fn add(&self, hub: &str, user: &str, group: &str, ttl_secs: Option<u64>) -> EngineFuture<()> {
        let at = unix_now();
        let command = Command::AddUserToGroup {
            hub: hub.into(),
            user: user.into(),
            group: group.into(),
            expires_at: ttl_secs.map(|ttl| at.saturating_add(ttl)),
            at,
        };
        let this = self.clone();
        Box::pin(async move { this.write(command).await })
    }

    fn remove(&self, hub: &str, user: &str, group: &str) -> EngineFuture<()> {
        let command = Command::RemoveUserFromGroup { hub: hub.into(), user: user.into(), group: group.into() };
        let this = self.clone();
        Box::pin(async move { this.write(command).await })
    }

    fn remove_user(&self, hub: &str, user: &str) -> EngineFuture<()> {
        let command = Command::RemoveUserFromAllGroups { hub: hub.into(), user: user.into() };
        let this = self.clone();
        Box::pin(async move { this.write(command).await })
    }
}

/// The routing table as the fan-out bus reads it: live edge nodes (leases not expired) and
/// their routing interest.
impl Directory for ControlPlane {
    fn live_nodes(&self) -> Vec<(u64, String)> {
        self.edge_nodes()
    }

    fn nodes_for_user(&self, hub: &str, user: &str) -> Vec<(u64, String)> {
        self.edge_nodes_for_user(hub, user)
    }

    fn nodes_for_group(&self, hub: &str, group: &str) -> Vec<(u64, String)> {
        self.edge_nodes_for_group(hub, group)
    }

    fn http_address(&self, node: u64) -> Option<String> {
        ControlPlane::http_address(self, node)
    }
}

/// An error and its causes, `: `-separated (a gRPC transport error hides its cause, such as a
/// refused certificate, in its sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
