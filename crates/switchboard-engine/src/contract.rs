//! The contract suite: the guarantees of the crate docs as checks any engine runs, the way
//! openraft's storage `Suite` checks a log store.
//!
//! An engine's test starts a [`Deployment`] of at least three nodes (real processes' worth of
//! parts: each node its own [`Registry`], store and bus, talking over the engine's real
//! transport) and calls [`run`]. Clients are simulated at the hub: a check registers a
//! [`Connection`] on a node's registry exactly as a transport does (and waits for the interest to
//! settle, as the handshake does), then reads what reached its outbox. Each check uses a hub of
//! its own, so checks do not see each other's connections.
//!
//! A failed check panics naming the guarantee and the nodes involved.

use crate::{Call, EngineError, Listed, MembershipStore, NodeBus, Target};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use switchboard_hub::{Command, Filter};
use switchboard_hub::{Connection, ConnectionInfo, Frames, Registry, new_connection_id, unix_now};
use switchboard_protocol::Protocol;

/// Bound on any one engine call in the suite.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One node of a deployment under test.
#[derive(Clone)]
pub struct Member {
    /// The node id (connection ids made for this node name it).
    pub id: u64,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn MembershipStore>,
    pub bus: Arc<dyn NodeBus>,
}

/// An engine deployment the suite can drive.
pub trait Deployment {
    /// The running nodes, at least three.
    fn members(&self) -> Vec<Member>;
    /// Stops every node and starts them again on the same data (G6). Connections do not survive.
    fn restart(&mut self) -> impl Future<Output = ()>;
    /// Stops node `index` of [`Deployment::members`] for good, as an operator's stop does (G7).
    /// Called last, and only on deployments of distinct nodes.
    fn stop(&mut self, index: usize) -> impl Future<Output = ()>;
}

/// Runs every check in turn.
pub async fn run(deployment: &mut impl Deployment) {
    let members = deployment.members();
    assert!(members.len() >= 3, "the contract suite needs at least three nodes");
    sends_reach_exactly_their_targets(&members).await;
    membership_writes_are_seen_by_every_later_send(&members).await;
    group_adds_are_seen_by_every_later_send(&members).await;
    a_first_connection_is_routed_at_once(&members).await;
    sends_keep_their_order_across_entry_nodes(&members).await;
    existence_is_answered_cluster_wide(&members).await;
    user_connection_changes_reach_every_node(&members).await;
    closes_reach_every_node(&members).await;
    listings_are_cluster_wide(&members).await;
    execute_reaches_what_its_filter_matches(&members).await;
    user_group_rules_hold_everywhere(&members).await;
    memberships_survive_a_restart(deployment).await;
    let distinct: std::collections::BTreeSet<u64> = members.iter().map(|m| m.id).collect();
    if distinct.len() == members.len() {
        a_stopped_node_costs_only_its_own_clients(deployment).await;
    }
}

// ------------------------------------------------------------------------------ helpers

/// A simulated client connected to one node.
struct Client {
    conn: Arc<Connection>,
}

impl Client {
    /// Connects like a transport: registers, then waits until every node routes its user here.
    async fn connect(member: &Member, hub: &str, user: Option<&str>) -> Client {
        let id = new_connection_id(member.id);
        let conn = Arc::new(Connection::new(id, user, Protocol::Json, ConnectionInfo::default()));
        if member.registry.get_or_create(hub).add_connection(conn.clone()) {
            member.registry.interest_settled().await;
        }
        Client { conn }
    }

    fn id(&self) -> String {
        self.conn.id.to_string()
    }

    /// The numbers carried by the messages received since the last call, in order.
    fn received(&self) -> Vec<u64> {
        let mut frames = std::collections::VecDeque::<Bytes>::new();
        self.conn.drain(&mut frames);
        frames.iter().map(|frame| number_of(frame)).collect()
    }

    fn is_closing(&self) -> bool {
        self.conn.outbox.is_closing()
    }
}

/// A message carrying `n` as its one argument.
fn message(n: u64) -> Frames {
    let arguments = serde_json::value::RawValue::from_string(format!("[{n}]")).expect("valid JSON");
    Frames::invocation("contract", arguments)
}

fn number_of(frame: &[u8]) -> u64 {
    let text = std::str::from_utf8(frame).expect("a JSON frame").trim_end_matches('\u{1e}');
    let value: serde_json::Value = serde_json::from_str(text).expect("a JSON frame");
    value["arguments"][0].as_u64().expect("a numbered message")
}

async fn bounded<T>(what: &str, future: impl Future<Output = Result<T, EngineError>>) -> T {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => panic!("{what}: the engine failed: {error}"),
        Err(_) => panic!("{what}: no answer within {CALL_TIMEOUT:?}"),
    }
}

async fn send(member: &Member, hub: &str, target: Target, n: u64) {
    let call = Call::Send { target: target.clone(), excluded: Vec::new(), frames: message(n) };
    bounded(&format!("send {n} to {target:?} through node {}", member.id), member.bus.call(hub, call)).await;
}

async fn ask(member: &Member, hub: &str, call: Call) -> bool {
    let what = format!("{call:?} through node {}", member.id);
    bounded(&what, member.bus.call(hub, call)).await
}

/// Node `i` of `members`, wrapping around.
fn nth(members: &[Member], i: usize) -> &Member {
    &members[i % members.len()]
}

// ------------------------------------------------------------------------------- checks

/// Broadcast, user, group and connection sends through every node reach exactly their targets,
/// once each; `excluded` is honoured.
pub async fn sends_reach_exactly_their_targets(members: &[Member]) {
    let hub = "contract_targets";
    let mut clients = Vec::new();
    for (i, member) in members.iter().enumerate() {
        clients.push(Client::connect(member, hub, Some(&format!("user{i}"))).await);
    }
    let in_group = &clients[1];
    ask(&members[0], hub, Call::AddToGroup { connection: in_group.id(), group: "g".into() }).await;
    for (i, entry) in members.iter().enumerate() {
        let base = 100 * i as u64;
        send(entry, hub, Target::All, base).await;
        send(entry, hub, Target::User("user2".into()), base + 1).await;
        send(entry, hub, Target::Group("g".into()), base + 2).await;
        send(entry, hub, Target::Connection(clients[0].id()), base + 3).await;
        let excluded = vec![clients[2].id()];
        let call = Call::Send { target: Target::All, excluded, frames: message(base + 4) };
        ask(entry, hub, call).await;
        for (k, client) in clients.iter().enumerate() {
            let mut expected = vec![base];
            match k {
                0 => expected.extend([base + 3, base + 4]),
                1 => expected.extend([base + 2, base + 4]),
                2 => expected.push(base + 1),
                _ => expected.push(base + 4),
            }
            assert_eq!(client.received(), expected, "client on node {} after sends through node {}", k, entry.id);
        }
    }
}

/// G3: a user-group membership written through one node is seen by a group send through another
/// at once, and so is its removal.
pub async fn membership_writes_are_seen_by_every_later_send(members: &[Member]) {
    let hub = "contract_g3_store";
    for round in 0..3 * members.len() {
        let (writer, sender, holder) = (nth(members, round), nth(members, round + 1), nth(members, round + 2));
        let (user, group) = (format!("u{round}"), format!("g{round}"));
        let client = Client::connect(holder, hub, Some(&user)).await;
        bounded("membership add", writer.store.add(hub, &user, &group, None)).await;
        send(sender, hub, Target::Group(group.clone()), 1).await;
        assert_eq!(
            client.received(),
            [1],
            "G3: added through node {}, sent through node {}, member on node {}",
            writer.id,
            sender.id,
            holder.id
        );
        for member in members {
            assert!(member.store.is_member(hub, &user, &group, unix_now()), "G3: node {} reads the add", member.id);
        }
        bounded("membership remove", writer.store.remove(hub, &user, &group)).await;
        send(sender, hub, Target::Group(group), 2).await;
        assert_eq!(client.received(), Vec::<u64>::new(), "G3: a removed membership is not seen by a later send");
    }
}

/// G3: a connection added to a group through one node is reached by a group send through another
/// at once.
pub async fn group_adds_are_seen_by_every_later_send(members: &[Member]) {
    let hub = "contract_g3_groups";
    for round in 0..3 * members.len() {
        let (adder, sender, holder) = (nth(members, round), nth(members, round + 1), nth(members, round + 2));
        let group = format!("g{round}");
        let client = Client::connect(holder, hub, None).await;
        let added = ask(adder, hub, Call::AddToGroup { connection: client.id(), group: group.clone() }).await;
        assert!(added, "the owner on node {} found the connection", holder.id);
        send(sender, hub, Target::Group(group.clone()), 7).await;
        assert_eq!(client.received(), [7], "G3: added through node {}, sent through node {}", adder.id, sender.id);
        ask(adder, hub, Call::RemoveFromGroup { connection: client.id(), group: group.clone() }).await;
        send(sender, hub, Target::Group(group), 8).await;
        assert_eq!(client.received(), Vec::<u64>::new(), "a removed connection gets no group send");
    }
}

/// G3: a user's first connection on a node is reached by a user send through any node as soon
/// as it is registered.
pub async fn a_first_connection_is_routed_at_once(members: &[Member]) {
    let hub = "contract_g3_users";
    for round in 0..3 * members.len() {
        let (holder, sender) = (nth(members, round), nth(members, round + 1));
        let user = format!("fresh{round}");
        let client = Client::connect(holder, hub, Some(&user)).await;
        send(sender, hub, Target::User(user), 3).await;
        assert_eq!(client.received(), [3], "G3: user on node {}, sent through node {}", holder.id, sender.id);
    }
}

/// G4: sends answered one after another through different nodes reach a connection in that
/// order, once each.
pub async fn sends_keep_their_order_across_entry_nodes(members: &[Member]) {
    let hub = "contract_g4";
    let client = Client::connect(&members[0], hub, Some("ordered")).await;
    ask(&members[1], hub, Call::AddToGroup { connection: client.id(), group: "ordered".into() }).await;
    let targets =
        [Target::Connection(client.id()), Target::User("ordered".into()), Target::Group("ordered".into()), Target::All];
    let count = 60;
    for n in 0..count {
        send(nth(members, n as usize), hub, targets[n as usize % targets.len()].clone(), n).await;
    }
    assert_eq!(client.received(), (0..count).collect::<Vec<_>>(), "G4: in order, once each");
}

/// Existence questions are answered for the whole cluster through every node.
pub async fn existence_is_answered_cluster_wide(members: &[Member]) {
    let hub = "contract_exists";
    let client = Client::connect(&members[2], hub, Some("present")).await;
    ask(&members[0], hub, Call::AddToGroup { connection: client.id(), group: "here".into() }).await;
    let absent_connection = new_connection_id(members[1].id);
    for member in members {
        let yes = [Target::Connection(client.id()), Target::User("present".into()), Target::Group("here".into())];
        for target in yes {
            assert!(
                ask(member, hub, Call::Exists(target.clone())).await,
                "{target:?} exists, asked node {}",
                member.id
            );
        }
        let no = [
            Target::Connection(absent_connection.clone()),
            Target::User("absent".into()),
            Target::Group("empty".into()),
        ];
        for target in no {
            assert!(
                !ask(member, hub, Call::Exists(target.clone())).await,
                "{target:?} is absent, asked node {}",
                member.id
            );
        }
    }
}

/// `ttl=0` joins and the connection-level side of user-group removals reach the user's
/// connections on every node.
pub async fn user_connection_changes_reach_every_node(members: &[Member]) {
    let hub = "contract_user_connections";
    let first = Client::connect(&members[0], hub, Some("roaming")).await;
    let second = Client::connect(&members[1], hub, Some("roaming")).await;
    let user = || "roaming".to_owned();
    ask(&members[2], hub, Call::UserJoinGroup { user: user(), group: "now".into() }).await;
    send(&members[2], hub, Target::Group("now".into()), 1).await;
    assert_eq!((first.received(), second.received()), (vec![1], vec![1]), "a ttl=0 join reaches every node");
    ask(&members[1], hub, Call::UserLeaveGroup { user: user(), group: "now".into() }).await;
    send(&members[0], hub, Target::Group("now".into()), 2).await;
    assert_eq!((first.received(), second.received()), (vec![], vec![]), "the leave reaches every node");
    ask(&members[2], hub, Call::UserJoinGroup { user: user(), group: "again".into() }).await;
    ask(&members[0], hub, Call::UserLeaveAllGroups { user: user() }).await;
    send(&members[1], hub, Target::Group("again".into()), 3).await;
    assert_eq!((first.received(), second.received()), (vec![], vec![]), "leaving every group reaches every node");
}

/// Closes reach the targets on every node and spare the excluded.
pub async fn closes_reach_every_node(members: &[Member]) {
    let hub = "contract_close";
    let a = Client::connect(&members[0], hub, Some("closing")).await;
    let b = Client::connect(&members[1], hub, Some("closing")).await;
    let spared = Client::connect(&members[2], hub, Some("closing")).await;
    let other = Client::connect(&members[2], hub, Some("other")).await;
    let call = Call::Close { target: Target::User("closing".into()), excluded: vec![spared.id()], reason: None };
    ask(&members[2], hub, call).await;
    assert!(a.is_closing() && b.is_closing(), "the user's connections on nodes 1 and 2 are closing");
    assert!(!spared.is_closing() && !other.is_closing(), "the excluded connection and other users are untouched");
    let call = Call::Close { target: Target::Connection(other.id()), excluded: vec![], reason: Some("bye".into()) };
    assert!(ask(&members[0], hub, call).await, "the owner found the connection");
    assert!(other.is_closing());
}

/// A group's, a user's and a hub's connections are listed through every node, wherever they
/// are, sorted by id, each once, with its user.
pub async fn listings_are_cluster_wide(members: &[Member]) {
    let hub = "contract_list";
    let mut clients = Vec::new();
    for (i, member) in members.iter().enumerate() {
        let user = if i % 2 == 0 { "even".to_owned() } else { format!("odd{i}") };
        let client = Client::connect(member, hub, Some(&user)).await;
        ask(member, hub, Call::AddToGroup { connection: client.id(), group: "listed".into() }).await;
        clients.push((client.id(), user));
    }
    let anonymous = Client::connect(&members[0], hub, None).await;
    let mut everyone: Vec<Listed> =
        clients.iter().map(|(id, user)| Listed { connection_id: id.clone(), user_id: Some(user.clone()) }).collect();
    everyone.sort();
    let evens: Vec<Listed> = everyone.iter().filter(|l| l.user_id.as_deref() == Some("even")).cloned().collect();
    let mut whole_hub = everyone.clone();
    whole_hub.push(Listed { connection_id: anonymous.id(), user_id: None });
    whole_hub.sort();
    for member in members {
        let list = |target: Target| {
            let what = format!("list {target:?} through node {}", member.id);
            async move { bounded(&what, member.bus.list(hub, target)).await }
        };
        assert_eq!(list(Target::Group("listed".into())).await, everyone, "group, through node {}", member.id);
        assert_eq!(list(Target::User("even".into())).await, evens, "user, through node {}", member.id);
        assert_eq!(list(Target::All).await, whole_hub, "hub, through node {}", member.id);
        let one = list(Target::Connection(clients[1].0.clone())).await;
        assert_eq!(one.len(), 1, "one connection, through node {}", member.id);
        assert!(list(Target::Group("nobody".into())).await.is_empty());
    }
}

/// `:execute` runs its commands on the connections its filter matches, on every node, and
/// only on those; a group it joins them to is seen by the next group send (G3).
pub async fn execute_reaches_what_its_filter_matches(members: &[Member]) {
    let hub = "contract_execute";
    let (mut picked, mut others) = (Vec::new(), Vec::new());
    for (i, member) in members.iter().enumerate() {
        picked.push(Client::connect(member, hub, Some(&format!("x-{i}"))).await);
        others.push(Client::connect(member, hub, Some(&format!("y-{i}"))).await);
    }
    for (entry, sender) in [(0, 1), (2, 0)] {
        let filter = Filter::parse("startswith(userId, 'x-')").expect("a valid filter");
        let commands = vec![Command::JoinGroup("xs".into()), Command::SendMessage(message(1))];
        assert!(ask(&members[entry], hub, Call::Execute { filter, commands }).await, "some matched");
        send(&members[sender], hub, Target::Group("xs".into()), 2).await;
        for client in &picked {
            assert_eq!(client.received(), [1, 2], "matched: the message, then the group send");
        }
        for client in &others {
            assert_eq!(client.received(), Vec::<u64>::new(), "not matched: nothing");
        }
        let filter = Filter::parse("'xs' in groups").expect("a valid filter");
        ask(&members[sender], hub, Call::Execute { filter, commands: vec![Command::LeaveGroup("xs".into())] }).await;
    }
}

/// Azure's user-group rules, read on every node: TTLs, the 100 TTL-less groups per user
/// (the least recently updated goes), removing a user from every group.
pub async fn user_group_rules_hold_everywhere(members: &[Member]) {
    let hub = "contract_rules";
    let (writer, now) = (&members[0], unix_now());
    bounded("add with a ttl", writer.store.add(hub, "timed", "g", Some(60))).await;
    for member in members {
        assert!(member.store.is_member(hub, "timed", "g", now), "node {} sees the membership", member.id);
        assert!(!member.store.is_member(hub, "timed", "g", now + 120), "node {} sees it expire", member.id);
    }
    for i in 0..=100 {
        bounded("add a TTL-less group", nth(members, i).store.add(hub, "capped", &format!("g{i}"), None)).await;
    }
    for member in members {
        assert!(!member.store.is_member(hub, "capped", "g0", now), "node {}: the oldest of 101 is gone", member.id);
        assert!(member.store.is_member(hub, "capped", "g1", now), "node {}: the 100 newest stay", member.id);
        assert!(member.store.is_member(hub, "capped", "g100", now));
    }
    bounded("remove a user", members[1].store.remove_user(hub, "capped")).await;
    for member in members {
        assert!(!member.store.is_member(hub, "capped", "g50", now), "node {} sees the removal", member.id);
    }
}

/// G6: memberships survive a restart of every node.
pub async fn memberships_survive_a_restart(deployment: &mut impl Deployment) {
    let hub = "contract_g6";
    let members = deployment.members();
    for (i, member) in members.iter().enumerate() {
        bounded("membership add", member.store.add(hub, &format!("kept{i}"), "durable", None)).await;
    }
    deployment.restart().await;
    let members = deployment.members();
    let client = Client::connect(&members[1], hub, Some("kept0")).await;
    for member in &members {
        for i in 0..members.len() {
            let user = format!("kept{i}");
            assert!(member.store.is_member(hub, &user, "durable", unix_now()), "G6: node {} kept {user}", member.id);
        }
    }
    send(&members[2], hub, Target::Group("durable".into()), 9).await;
    assert_eq!(client.received(), [9], "G6: a group send after the restart reaches a member");
}

/// G7: once a node stopped, sends through the others still succeed and reach every client
/// left, and its connections are gone for existence questions (not an error).
pub async fn a_stopped_node_costs_only_its_own_clients(deployment: &mut impl Deployment) {
    let hub = "contract_g7";
    let members = deployment.members();
    let last = members.len() - 1;
    let mut clients = Vec::new();
    for (i, member) in members.iter().enumerate() {
        let client = Client::connect(member, hub, Some(&format!("stay{i}"))).await;
        ask(member, hub, Call::AddToGroup { connection: client.id(), group: "all".into() }).await;
        clients.push(client);
    }
    let gone = clients.pop().expect("a client on the last node").id();
    deployment.stop(last).await;
    let members = &members[..last];
    for (n, entry) in members.iter().enumerate() {
        let base = 10 * n as u64;
        send(entry, hub, Target::All, base).await;
        send(entry, hub, Target::Group("all".into()), base + 1).await;
        send(entry, hub, Target::User("stay0".into()), base + 2).await;
        assert!(!ask(entry, hub, Call::Exists(Target::Connection(gone.clone()))).await, "a stopped node's connection");
        for (k, client) in clients.iter().enumerate() {
            let expected = if k == 0 { vec![base, base + 1, base + 2] } else { vec![base, base + 1] };
            assert_eq!(client.received(), expected, "G7: client on node {k} after node {} stopped", last);
        }
    }
}
