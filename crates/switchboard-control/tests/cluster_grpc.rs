//! Three control-plane nodes in one process, each with its own redb directory and its own tonic
//! server on `127.0.0.1:0`, speaking raft over gRPC: a batch replicates to every
//! `ControlState`; when the leader stops, the other two elect a new one that accepts writes
//! (G7); a node with the wrong cluster secret is refused everywhere and cannot disturb the
//! cluster.
//!
//! Waits are bounded (openraft's `wait(..).metrics(..)`, or polling a condition under a
//! deadline); nothing sleeps and hopes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::{BasicNode, Config, ServerState};
use switchboard_control::grpc::{AdminService, LEADER_ADDRESS_HEADER, admin_server, raft_server};
use switchboard_control::network::grpc::GrpcNetwork;
use switchboard_control::{Command, NodeId, Raft, Roles, SharedState, open_store};
use switchboard_grpc::admin::v1::admin_client::AdminClient;
use switchboard_grpc::admin::v1::{Empty, JoinRequest, LeaveRequest, NodeState, Role};
use switchboard_grpc::raft::v1::RaftRequest;
use switchboard_grpc::raft::v1::raft_client::RaftClient;
use switchboard_grpc::{ClientAuth, ClusterSecret, PROTOCOL_VERSION, ServerAuth};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

const SECRET: &str = "cluster-grpc-test-secret";
const NOW: u64 = 1_700_000_000;
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(5));

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,openraft=error".parse().expect("filter"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// One node: raft on its own redb directory, serving raft and admin on its own port.
struct Node {
    id: NodeId,
    addr: SocketAddr,
    raft: Raft,
    state: SharedState,
    /// The server interceptor, to count the calls this node refused.
    auth: ServerAuth,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    _dir: TempDir,
}

impl Node {
    async fn start(id: NodeId, secret: &str) -> Node {
        let secret = ClusterSecret::new(secret).expect("valid secret");
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let config = Config {
            cluster_name: "cluster-grpc-test".into(),
            heartbeat_interval: 50,
            election_timeout_min: 250,
            election_timeout_max: 500,
            // Purge the log right after a snapshot, so a joining node must receive the snapshot.
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        }
        .validate()
        .expect("valid config");
        let (log_store, state_machine) = open_store(dir.path()).await.expect("open store");
        let state = state_machine.state();
        let network = GrpcNetwork::new(id, &secret);
        let raft = Raft::new(id, Arc::new(config), network, log_store, state_machine).await.expect("raft starts");

        let auth = secret.server();
        let admin = AdminService::new(id, raft.clone(), state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Server::builder()
            .add_service(raft_server(raft.clone(), auth.clone()))
            .add_service(admin_server(admin, auth.clone()));
        let server = tokio::spawn(router.serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = stopped.await;
        }));
        Node { id, addr, raft, state, auth, stop: Some(stop), server: Some(server), _dir: dir }
    }

    fn basic_node(&self) -> BasicNode {
        BasicNode::new(self.addr.to_string())
    }

    /// Stops serving (peers now get connection refused), then stops raft.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let served = tokio::time::timeout(Duration::from_secs(5), server).await.expect("server drains in 5 s");
            served.expect("server task").expect("server ran");
        }
        self.raft.shutdown().await.expect("raft shuts down");
    }
}

/// Starts nodes 1..=3, initializes them as one cluster and waits until all agree on a leader.
async fn start_cluster() -> (Vec<Node>, NodeId) {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Node::start(id, SECRET).await);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes.iter().map(|n| (n.id, n.basic_node())).collect();
    nodes[0].raft.initialize(members).await.expect("initialize");
    let metrics =
        nodes[0].raft.wait(TIMEOUT).metrics(|m| m.current_leader.is_some(), "a leader").await.expect("a leader");
    let leader = metrics.current_leader.expect("leader");
    for node in &nodes {
        node.raft.wait(TIMEOUT).current_leader(leader, "all agree on the leader").await.expect("agreement");
    }
    (nodes, leader)
}

fn node(nodes: &[Node], id: NodeId) -> &Node {
    nodes.iter().find(|n| n.id == id).expect("node exists")
}

fn add(user: &str, group: &str) -> Command {
    Command::AddUserToGroup { hub: "chat".into(), user: user.into(), group: group.into(), expires_at: None, at: NOW }
}

async fn channel_to(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect")
}

fn admin_client(channel: Channel) -> AdminClient<InterceptedService<Channel, ClientAuth>> {
    AdminClient::with_interceptor(channel, ClusterSecret::new(SECRET).expect("secret").client())
}

/// Polls `condition` until it holds, failing after 5 s.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_elect_a_new_leader_when_the_leader_stops() {
    init_tracing();
    let (mut nodes, leader) = start_cluster().await;

    tracing::info!("phase 1: a batch of membership commands reaches all three states");
    let mut commands: Vec<Command> = nodes
        .iter()
        .map(|n| Command::RegisterNode {
            node: n.id,
            roles: Roles { control: true, edge: true },
            advertise: n.addr.to_string(),
            lease_until: 10_000,
            http: String::new(),
        })
        .collect();
    commands.extend([add("alice", "devs"), add("bob", "devs"), add("alice", "ops")]);
    let written = node(&nodes, leader).raft.client_write(Command::Batch(commands)).await.expect("batch committed");
    assert_eq!(written.data.changed, 6);
    for n in &nodes {
        n.raft
            .wait(TIMEOUT)
            .applied_index_at_least(Some(written.log_id.index), "batch applied")
            .await
            .expect("applied");
        let state = n.state.read();
        let mut devs: Vec<&str> = state.users_in("chat", "devs", NOW).collect();
        devs.sort_unstable();
        assert_eq!(devs, ["alice", "bob"], "node {}", n.id);
        assert!(state.is_member("chat", "alice", "ops", NOW));
        assert_eq!(state.nodes().len(), 3);
    }

    tracing::info!("phase 2: the leader stops; the other two elect a new leader");
    let stopped_at = Instant::now();
    let position = nodes.iter().position(|n| n.id == leader).expect("leader");
    let mut old = nodes.remove(position);
    old.stop().await;
    let stop_took = stopped_at.elapsed();
    let metrics = nodes[0]
        .raft
        .wait(TIMEOUT)
        .metrics(|m| m.current_leader.is_some_and(|l| l != leader), "a new leader")
        .await
        .expect("a new leader within 5 s");
    let new_leader = metrics.current_leader.expect("leader");
    node(&nodes, new_leader).raft.wait(TIMEOUT).state(ServerState::Leader, "new leader leads").await.expect("leads");
    let election = stopped_at.elapsed();
    eprintln!("leader {leader} stopped in {stop_took:?}; node {new_leader} leads {election:?} after the stop began");

    tracing::info!("phase 3: the new leader accepts writes and replicates them");
    let written = node(&nodes, new_leader).raft.client_write(add("carol", "devs")).await.expect("write after failover");
    let write_done = stopped_at.elapsed();
    eprintln!("first write after the leader stopped committed after {write_done:?}");
    for n in &nodes {
        n.raft
            .wait(TIMEOUT)
            .applied_index_at_least(Some(written.log_id.index), "write applied")
            .await
            .expect("applied");
        assert!(n.state.read().is_member("chat", "carol", "devs", NOW), "node {}", n.id);
    }

    tracing::info!("phase 4: cluster status names the new leader and the stopped node");
    let mut admin = admin_client(channel_to(node(&nodes, new_leader).addr).await);
    let status = admin.cluster_status(Empty {}).await.expect("cluster status").into_inner();
    assert_eq!(status.leader, Some(new_leader));
    assert_eq!(status.answered_by, new_leader);
    assert_eq!(status.nodes.len(), 3);
    let me = status.nodes.iter().find(|n| n.id == new_leader).expect("leader listed");
    assert_eq!(me.state(), NodeState::Leader);
    assert_eq!(me.roles().collect::<Vec<_>>(), [Role::Control, Role::Edge]);
    assert!(me.applied_index >= Some(written.log_id.index));
    let gone = status.nodes.iter().find(|n| n.id == leader).expect("old leader listed");
    assert_eq!(gone.state(), NodeState::Voter);
    assert_eq!(gone.lease_expires_at_ms, Some(10_000));

    for n in &mut nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_is_refused() {
    init_tracing();
    let (mut nodes, leader) = start_cluster().await;
    let term = node(&nodes, leader).raft.metrics().borrow().current_term;
    let mut rogue = Node::start(4, "not-the-cluster-secret").await;
    let leader_channel = channel_to(node(&nodes, leader).addr).await;
    let secret = ClusterSecret::new(SECRET).expect("secret");

    tracing::info!("phase 1: its calls are refused with clear statuses");
    let join =
        JoinRequest { node_id: 4, advertised_address: rogue.addr.to_string(), roles: vec![Role::Control as i32] };
    let rogue_secret = ClusterSecret::new("not-the-cluster-secret").expect("secret");
    let mut admin = AdminClient::with_interceptor(leader_channel.clone(), rogue_secret.client());
    let status = admin.join(join.clone()).await.expect_err("join refused");
    assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "wrong cluster secret"));
    let status = AdminClient::new(leader_channel.clone()).join(join).await.expect_err("join without secret refused");
    assert_eq!(status.code(), Code::PermissionDenied);

    let vote = RaftRequest { protocol_version: PROTOCOL_VERSION, payload: Bytes::new() };
    let future = secret.client().with_protocol_version(PROTOCOL_VERSION + 1);
    let status =
        RaftClient::with_interceptor(leader_channel.clone(), future).vote(vote.clone()).await.expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let mut raft_client = RaftClient::with_interceptor(leader_channel.clone(), secret.client());
    let future_payload = RaftRequest { protocol_version: PROTOCOL_VERSION + 1, ..vote.clone() };
    let status = raft_client.vote(future_payload).await.expect_err("future payload refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let garbage = RaftRequest { payload: Bytes::from_static(b"\xc1"), ..vote };
    assert_eq!(raft_client.vote(garbage).await.expect_err("garbage refused").code(), Code::InvalidArgument);

    tracing::info!("phase 2: it campaigns for a membership naming the cluster; its votes are refused");
    let before: Vec<u64> = nodes.iter().map(|n| n.auth.refused()).collect();
    let mut members: BTreeMap<NodeId, BasicNode> = nodes.iter().map(|n| (n.id, n.basic_node())).collect();
    members.insert(rogue.id, rogue.basic_node());
    rogue.raft.initialize(members).await.expect("rogue initializes itself");
    wait_until("every member refused the rogue's votes", || {
        nodes.iter().zip(&before).all(|(n, before)| n.auth.refused() > *before)
    })
    .await;

    tracing::info!("phase 3: the leader adds it as a learner; the rogue refuses the leader's appends");
    node(&nodes, leader).raft.add_learner(rogue.id, rogue.basic_node(), false).await.expect("learner added");
    wait_until("the rogue refused the leader's appends", || rogue.auth.refused() > 0).await;
    let written = node(&nodes, leader).raft.client_write(add("dave", "ops")).await.expect("cluster still writes");
    for n in &nodes {
        n.raft.wait(TIMEOUT).applied_index_at_least(Some(written.log_id.index), "applied").await.expect("applied");
    }

    let metrics = node(&nodes, leader).raft.metrics().borrow().clone();
    assert_eq!(metrics.current_term, term, "the rogue's campaign did not disturb the term");
    assert_eq!(metrics.current_leader, Some(leader));
    let replication = metrics.replication.expect("leader replicates");
    assert_eq!(replication.get(&rogue.id), Some(&None), "nothing was replicated to the rogue");
    assert_eq!(rogue.raft.metrics().borrow().last_applied, None);
    assert!(!rogue.state.read().is_member("chat", "dave", "ops", NOW));

    rogue.stop().await;
    for n in &mut nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_through_admin_from_a_snapshot_and_leaves() {
    init_tracing();
    let (mut nodes, leader) = start_cluster().await;
    let leader_raft = node(&nodes, leader).raft.clone();

    tracing::info!("phase 1: write, snapshot and purge the log on the leader");
    let written = leader_raft.client_write(Command::Batch(vec![add("erin", "devs"), add("frank", "ops")])).await;
    let index = written.expect("batch committed").log_id.index;
    leader_raft.trigger().snapshot().await.expect("trigger snapshot");
    leader_raft
        .wait(TIMEOUT)
        .metrics(|m| m.purged.is_some_and(|p| p.index >= index), "log purged after the snapshot")
        .await
        .expect("purged");

    tracing::info!("phase 2: a follower refuses Join and names the leader");
    let mut newcomer = Node::start(4, SECRET).await;
    let join = JoinRequest {
        node_id: newcomer.id,
        advertised_address: newcomer.addr.to_string(),
        roles: vec![Role::Control as i32, Role::Edge as i32],
    };
    let follower = nodes.iter().find(|n| n.id != leader).expect("a follower");
    let status = admin_client(channel_to(follower.addr).await).join(join.clone()).await.expect_err("not the leader");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let hint = status.metadata().get(LEADER_ADDRESS_HEADER).expect("leader address").to_str().expect("ascii");
    assert_eq!(hint, node(&nodes, leader).addr.to_string());

    tracing::info!("phase 3: the leader admits it; it catches up through InstallSnapshot");
    let mut admin = admin_client(channel_to(node(&nodes, leader).addr).await);
    let joined = admin.join(join).await.expect("join").into_inner();
    newcomer
        .raft
        .wait(TIMEOUT)
        .applied_index_at_least(Some(joined.log_index), "newcomer caught up")
        .await
        .expect("caught up");
    assert!(newcomer.raft.metrics().borrow().snapshot.is_some_and(|s| s.index >= index), "installed a snapshot");
    assert!(newcomer.state.read().is_member("chat", "erin", "devs", NOW));
    assert!(newcomer.state.read().is_member("chat", "frank", "ops", NOW));
    let status = admin.cluster_status(Empty {}).await.expect("status").into_inner();
    let listed = status.nodes.iter().find(|n| n.id == newcomer.id).expect("newcomer listed");
    assert_eq!(listed.state(), NodeState::Voter);
    assert_eq!(listed.advertised_address, newcomer.addr.to_string());

    tracing::info!("phase 4: it leaves");
    let left = admin.leave(LeaveRequest { node_id: newcomer.id }).await.expect("leave").into_inner();
    leader_raft.wait(TIMEOUT).applied_index_at_least(Some(left.log_index), "leave applied").await.expect("applied");
    let status = admin.cluster_status(Empty {}).await.expect("status").into_inner();
    assert!(status.nodes.iter().all(|n| n.id != newcomer.id), "{status:?}");

    newcomer.stop().await;
    for n in &mut nodes {
        n.stop().await;
    }
}
