use super::*;
use crate::{Call, ConnectionInfo, Registry, Target};
use bytes::Bytes;
use switchboard_protocol::Protocol;

fn frames() -> Frames {
    Frames::invocation("T", serde_json::value::RawValue::from_string("[1]".into()).unwrap())
}

fn connect(hub: &Hub, id: &str, user: Option<&str>, protocol: Protocol) -> Arc<Connection> {
    let conn = Arc::new(Connection::new(id, user, protocol, ConnectionInfo::default()));
    hub.add_connection(conn.clone());
    conn
}

fn received(conn: &Connection) -> usize {
    let mut out = std::collections::VecDeque::<Bytes>::new();
    conn.drain(&mut out).0
}

#[test]
fn names() {
    assert!(is_valid_hub_name("chat"));
    assert!(is_valid_hub_name("a_b`,.[]9"));
    assert!(is_valid_hub_name(&"a".repeat(128)));
    for bad in ["", "1abc", "_a", "a-b", "a b", &"a".repeat(129)] {
        assert!(!is_valid_hub_name(bad), "{bad}");
    }
    assert!(is_valid_group_name("a/b c"));
    assert!(!is_valid_group_name("   "));
    assert!(!is_valid_group_name(""));
    assert!(!is_valid_group_name(&"g".repeat(1025)));
}

#[test]
fn broadcast_excludes_and_serves_both_protocols() {
    let registry = Registry::default();
    let hub = registry.get_or_create("h");
    let a = connect(&hub, "a", None, Protocol::Json);
    let b = connect(&hub, "b", None, Protocol::MessagePack);
    let c = connect(&hub, "c", None, Protocol::Json);
    assert_eq!(hub.broadcast(&frames(), &["c".to_string()]), 2);
    assert_eq!((received(&a), received(&b), received(&c)), (1, 1, 0));
    assert_eq!(Stats::get(&registry.stats().delivered), 2);
}

#[test]
fn users_and_connection_groups() {
    let hub = Registry::default().get_or_create("h");
    let a1 = connect(&hub, "a1", Some("alice"), Protocol::Json);
    let a2 = connect(&hub, "a2", Some("alice"), Protocol::Json);
    let b = connect(&hub, "b", Some("bob"), Protocol::Json);
    assert_eq!(hub.send_to_user("alice", &frames()), 2);
    assert!(hub.add_to_group("b", "g"));
    assert!(!hub.add_to_group("nobody", "g"));
    assert_eq!(hub.send_to_group("g", &frames(), &[]), 1);
    assert!(hub.group_exists("g"));
    hub.remove_connection("b");
    assert!(!hub.group_exists("g"), "connection groups die with the connection");
    assert!(!hub.user_exists("bob"));
    assert_eq!((received(&a1), received(&a2), received(&b)), (1, 1, 1));
}

fn with_store() -> (Arc<crate::LocalUserGroups>, Arc<Hub>) {
    let store = Arc::new(crate::LocalUserGroups::default());
    let registry = Registry::with_user_groups(crate::HubConfig::default(), store.clone());
    (store, registry.get_or_create("h"))
}

#[test]
fn user_groups_reach_later_connections() {
    let (store, hub) = with_store();
    store.add_now("h", "alice", "g", None);
    assert!(hub.user_in_group("alice", "g"));
    assert!(!hub.group_exists("g"), "no live connection yet");
    let a = connect(&hub, "a", Some("alice"), Protocol::Json);
    assert_eq!(hub.send_to_group("g", &frames(), &[]), 1);
    hub.add_to_group("a", "g");
    assert_eq!(hub.send_to_group("g", &frames(), &[]), 1, "no duplicate delivery");
    store.remove_now("h", "alice", "g");
    hub.remove_user_connections_from_group("alice", "g");
    assert_eq!(hub.send_to_group("g", &frames(), &[]), 0);
    assert_eq!(received(&a), 2);
}

/// A group with more members than the node has users is resolved from the node's users; one
/// with fewer from its members. Both reach exactly the connected members, once each.
#[test]
fn user_groups_resolve_from_the_smaller_side() {
    let (store, hub) = with_store();
    for i in 0..50 {
        store.add_now("h", &format!("u{i}"), "big", None);
    }
    store.add_now("h", "u1", "small", None);
    store.add_now("h", "u2", "small", None);
    // Four users here, two connections for u1; u1 and u3 are members of "big", x4 and u60 of nothing.
    let conns: Vec<_> = [("a", "u1"), ("b", "u1"), ("c", "u3"), ("d", "x4"), ("e", "u60")]
        .iter()
        .map(|(id, user)| connect(&hub, id, Some(user), Protocol::Json))
        .collect();
    hub.add_to_group("c", "big");
    assert_eq!(hub.send_to_group("big", &frames(), &["b".to_owned()]), 2, "a and c, c once, b excluded");
    assert_eq!(hub.send_to_group("small", &frames(), &[]), 2, "u1's two connections");
    let counts: Vec<usize> = conns.iter().map(|c| received(c)).collect();
    assert_eq!(counts, [2, 1, 1, 0, 0]);
    store.remove_now("h", "u3", "big");
    assert_eq!(hub.send_to_group("big", &frames(), &[]), 3, "a, b and c (c joined directly)");
}

#[test]
fn ttl_zero_adds_only_current_connections() {
    let hub = Registry::default().get_or_create("h");
    let a = connect(&hub, "a", Some("alice"), Protocol::Json);
    hub.add_user_connections_to_group("alice", "g");
    let later = connect(&hub, "later", Some("alice"), Protocol::Json);
    assert_eq!(hub.send_to_group("g", &frames(), &[]), 1);
    assert_eq!((received(&a), received(&later)), (1, 0));
    hub.remove_user_connections_from_all_groups("alice");
    assert_eq!(hub.send_to_group("g", &frames(), &[]), 0);
}

#[test]
fn close_requests_reach_outboxes() {
    let hub = Registry::default().get_or_create("h");
    let a = connect(&hub, "a", Some("u"), Protocol::Json);
    let b = connect(&hub, "b", Some("u"), Protocol::Json);
    let request = CloseRequest { error: Some("bye".into()), allow_reconnect: false };
    hub.close_user("u", &["b".to_string()], &request);
    assert!(a.outbox.is_closing());
    assert!(!b.outbox.is_closing());
    assert!(!hub.close_connection("zzz", request));
    // What was sent before the close still goes out, nothing after it.
    let c = connect(&hub, "c", None, Protocol::Json);
    hub.broadcast(&frames(), &[]);
    assert!(hub.close_connection("c", CloseRequest { error: None, allow_reconnect: false }));
    hub.broadcast(&frames(), &[]);
    assert_eq!((received(&c), received(&b)), (1, 2));
}

#[test]
fn slow_consumers_are_closed_and_counted() {
    let registry = Registry::new(crate::HubConfig { max_queued_bytes: 200, ..Default::default() });
    let hub = registry.get_or_create("h");
    let a = connect(&hub, "a", None, Protocol::Json);
    let mut sent = 0;
    while hub.send_to_connection("a", &frames()) {
        sent += 1;
        assert!(sent < 100);
    }
    assert!(a.outbox.is_closing());
    assert_eq!(Stats::get(&registry.stats().slow_consumer_closes), 1);
}

/// With the default bound, a client that keeps up takes several messages as large as a REST
/// body may be (1 MiB) arriving before it writes anything, sent to it and broadcast.
#[test]
fn by_default_messages_of_the_largest_body_queue_back_to_back() {
    let registry = Registry::default();
    let hub = registry.get_or_create("h");
    let json = connect(&hub, "j", Some("u"), Protocol::Json);
    let messagepack = connect(&hub, "m", Some("u"), Protocol::MessagePack);
    let text = format!("[\"{}\"]", "x".repeat((1 << 20) - 40));
    let large = Frames::invocation("T", serde_json::value::RawValue::from_string(text).unwrap());
    for _ in 0..3 {
        assert_eq!(hub.send_to_user("u", &large), 2);
        assert_eq!(hub.broadcast(&large, &[]), 2);
    }
    assert!(!json.outbox.is_closing() && !messagepack.outbox.is_closing());
    assert_eq!((received(&json), received(&messagepack)), (6, 6));
    assert_eq!(Stats::get(&registry.stats().slow_consumer_closes), 0);
}

#[test]
fn a_connection_reads_the_broadcasts_made_while_it_was_in_the_hub() {
    let hub = Registry::default().get_or_create("h");
    let early = connect(&hub, "early", None, Protocol::Json);
    assert_eq!(hub.broadcast(&frames(), &[]), 1);
    let late = connect(&hub, "late", None, Protocol::MessagePack);
    assert_eq!(hub.broadcast(&frames(), &["nobody".to_string()]), 2);
    assert_eq!((received(&early), received(&late)), (2, 1));
    hub.remove_connection("late");
    assert_eq!(hub.broadcast(&frames(), &[]), 1);
    assert_eq!((received(&early), received(&late)), (1, 0));
    assert_eq!(hub.queued_bytes(), 0, "read broadcasts are not kept");
}

#[tokio::test]
async fn the_first_broadcast_of_a_hub_wakes_its_waiting_connections() {
    let hub = Registry::default().get_or_create("h");
    let conn = connect(&hub, "a", None, Protocol::Json);
    let waiter = {
        let conn = conn.clone();
        tokio::spawn(async move {
            conn.outbox.ready().await;
            received(&conn)
        })
    };
    tokio::task::yield_now().await;
    hub.broadcast(&frames(), &[]);
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await;
    assert_eq!(got.expect("woken").unwrap(), 1);
}

/// G5 and W4 for broadcasts: a connection that fell the queue bound behind the others is
/// closed, counted and gone for REST at once; the others go on.
#[test]
fn a_connection_behind_on_broadcasts_is_closed_as_a_slow_consumer() {
    let registry = Registry::new(crate::HubConfig { max_queued_bytes: 200, ..Default::default() });
    let hub = registry.get_or_create("h");
    let slow = connect(&hub, "slow", None, Protocol::Json);
    let fast = connect(&hub, "fast", None, Protocol::Json);
    let mut sent = 0;
    while !slow.outbox.is_closing() {
        hub.broadcast(&frames(), &[]);
        assert_eq!(received(&fast), 1);
        sent += 1;
        assert!(sent < 100);
    }
    assert!(sent > 1, "the bound holds more than one broadcast");
    assert_eq!(Stats::get(&registry.stats().slow_consumer_closes), 1);
    assert!(!hub.apply(&Call::Exists(Target::Connection("slow".into()))).found());
    assert!(!fast.outbox.is_closing());
    assert_eq!(received(&slow), 0, "what it had queued is dropped");
    hub.broadcast(&frames(), &[]);
    assert_eq!(received(&fast), 1);
    assert_eq!(Stats::get(&registry.stats().slow_consumer_closes), 1);
}

/// W4: a slow consumer whose queue overflowed is gone for REST at once, though its transport
/// has not ended it yet.
#[test]
fn an_overflowed_connection_is_gone_for_rest_at_once() {
    let registry = Registry::new(crate::HubConfig { max_queued_bytes: 200, ..Default::default() });
    let hub = registry.get_or_create("h");
    let slow = connect(&hub, "slow", Some("u"), Protocol::Json);
    hub.add_to_group("slow", "g");
    let exists = |target: Target| hub.apply(&Call::Exists(target)).found();
    assert!(exists(Target::Connection("slow".into())) && exists(Target::User("u".into())));
    assert!(exists(Target::Group("g".into())));
    while hub.send_to_connection("slow", &frames()) {}
    assert!(slow.outbox.is_closing());
    assert!(!exists(Target::Connection("slow".into())), "HEAD connection: 404");
    assert!(!exists(Target::User("u".into())), "HEAD user: 404");
    assert!(!exists(Target::Group("g".into())), "HEAD group: 404");
    assert!(!hub.add_to_group("slow", "other"), "adding it to a group: 404");
}

#[test]
fn the_groups_of_a_connection_are_capped() {
    let registry = Registry::new(crate::HubConfig { max_groups_per_connection: 2, ..Default::default() });
    let hub = registry.get_or_create("h");
    connect(&hub, "a", Some("u"), Protocol::Json);
    let add = |group: &str| hub.apply(&Call::AddToGroup { connection: "a".into(), group: group.into() });
    assert_eq!((add("g1"), add("g2")), (crate::Applied::Found, crate::Applied::Found));
    assert_eq!(add("g3"), crate::Applied::GroupLimit);
    assert_eq!(add("g1"), crate::Applied::Found, "a group it is in is no new group");
    assert!(hub.remove_from_group("a", "g1"));
    assert_eq!(add("g3"), crate::Applied::Found, "room again after leaving one");
    hub.add_user_connections_to_group("u", "g4");
    assert_eq!(hub.send_to_group("g4", &frames(), &[]), 0, "ttl=0 joins respect the cap too");
}

/// Records what a hub reports to its interest sink.
#[derive(Default)]
struct Recorder(parking_lot::Mutex<Vec<(InterestKind, String, bool)>>);

impl crate::InterestSink for Recorder {
    fn report(&self, _hub: &str, kind: InterestKind, name: &str, present: bool) {
        self.0.lock().push((kind, name.to_owned(), present));
    }

    fn settled(&self) -> crate::Settled {
        Box::pin(std::future::ready(true))
    }
}

#[test]
fn interest_follows_the_first_and_last_connection_of_each_user_group_and_the_hub() {
    let recorder = Arc::new(Recorder::default());
    let registry = Registry::default().reporting_interest(recorder.clone());
    let hub = registry.get_or_create("h");
    let take = || std::mem::take(&mut *recorder.0.lock());
    let a = Arc::new(Connection::new("a", Some("u"), Protocol::Json, ConnectionInfo::default()));
    assert!(hub.add_connection(a.clone()), "a first connection waits for its interest to settle");
    assert_eq!(take(), [(InterestKind::User, "u".into(), true), (InterestKind::Hub, String::new(), true)]);
    let b = Arc::new(Connection::new("b", None, Protocol::Json, ConnectionInfo::default()));
    assert!(!hub.add_connection(b), "nothing new");
    assert_eq!(take(), []);
    hub.apply(&Call::AddToGroup { connection: "a".into(), group: "g".into() });
    assert_eq!(take(), [(InterestKind::Group, "g".into(), true)]);
    hub.remove_connection("b");
    assert_eq!(take(), []);
    hub.remove_connection("a");
    assert_eq!(
        take(),
        [
            (InterestKind::User, "u".into(), false),
            (InterestKind::Group, "g".into(), false),
            (InterestKind::Hub, String::new(), false)
        ]
    );
}
