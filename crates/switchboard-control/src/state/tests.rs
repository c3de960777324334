use super::*;
use switchboard_hub::{DEFAULT_TTL_SECS, MAX_TTL_LESS_GROUPS};

fn add(hub: &str, user: &str, group: &str, expires_at: Option<u64>, at: u64) -> Command {
    Command::AddUserToGroup { hub: hub.into(), user: user.into(), group: group.into(), expires_at, at }
}

fn register(node: u64, lease_until: u64) -> Command {
    Command::RegisterNode {
        node,
        roles: Roles { control: false, edge: true },
        advertise: format!("n{node}"),
        lease_until,
        http: String::new(),
    }
}

fn interest(node: u64, kind: InterestKind, name: &str, present: bool) -> Command {
    Command::Interest { node, changes: vec![InterestChange { hub: "h".into(), kind, name: name.into(), present }] }
}

fn sorted<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut items: Vec<&str> = items.collect();
    items.sort_unstable();
    items
}

#[test]
fn ttl_membership_expires_at_its_deadline() {
    let mut state = ControlState::default();
    assert_eq!(state.apply(add("h", "u", "g", Some(110), 100)), 1);
    assert!(state.is_member("h", "u", "g", 109));
    assert!(!state.is_member("h", "u", "g", 110));
    assert!(!state.is_member("other-hub", "u", "g", 100));
    assert_eq!(sorted(state.users_in("h", "g", 109)), ["u"]);
    assert_eq!(state.users_in("h", "g", 110).count(), 0);
    assert_eq!(sorted(state.groups_of("h", "u", 109)), ["g"]);
    assert_eq!(state.groups_of("h", "u", 110).count(), 0);
}

#[test]
fn ttl_less_membership_lasts_one_year_from_the_proposers_time() {
    let mut state = ControlState::default();
    state.apply(add("h", "u", "g", None, 1_000));
    let m = state.membership("h", "u", "g").expect("stored");
    assert!(m.ttl_less);
    assert_eq!(m.expires_at, 1_000 + DEFAULT_TTL_SECS);
    assert!(state.is_member("h", "u", "g", 1_000 + DEFAULT_TTL_SECS - 1));
    assert!(!state.is_member("h", "u", "g", 1_000 + DEFAULT_TTL_SECS));
}

#[test]
fn zero_ttl_is_not_stored() {
    let mut state = ControlState::default();
    assert_eq!(state.apply(add("h", "u", "g", Some(100), 100)), 0);
    assert!(state.membership("h", "u", "g").is_none());
    assert!(state.hubs.is_empty());
}

#[test]
fn re_adding_refreshes_and_can_switch_between_ttl_and_ttl_less() {
    let mut state = ControlState::default();
    state.apply(add("h", "u", "g", Some(50), 10));
    state.apply(add("h", "u", "g", None, 20));
    assert!(state.membership("h", "u", "g").is_some_and(|m| m.ttl_less && m.expires_at == 20 + DEFAULT_TTL_SECS));
    state.apply(add("h", "u", "g", Some(30), 25));
    assert!(state.membership("h", "u", "g").is_some_and(|m| !m.ttl_less && m.expires_at == 30));
}

#[test]
fn keeps_the_100_most_recently_updated_ttl_less_groups() {
    let mut state = ControlState::default();
    for i in 0..MAX_TTL_LESS_GROUPS {
        state.apply(add("h", "u", &format!("g{i}"), None, 0));
        if i == 0 {
            state.apply(add("h", "u", "with-ttl", Some(1_000), 0));
        }
    }
    assert_eq!(state.groups_of("h", "u", 1).count(), MAX_TTL_LESS_GROUPS + 1);

    // One more evicts the oldest TTL-less membership; memberships with a TTL do not count.
    state.apply(add("h", "u", "new", None, 0));
    assert!(!state.is_member("h", "u", "g0", 1));
    assert_eq!(state.users_in("h", "g0", 1).count(), 0, "the group index forgets the evicted member");
    assert!(state.is_member("h", "u", "g1", 1));
    assert!(state.is_member("h", "u", "with-ttl", 1));

    // Refreshing g1 makes g2 the oldest.
    state.apply(add("h", "u", "g1", None, 0));
    state.apply(add("h", "u", "newer", None, 0));
    assert!(state.is_member("h", "u", "g1", 1));
    assert!(!state.is_member("h", "u", "g2", 1));
    assert_eq!(state.groups_of("h", "u", 1).count(), MAX_TTL_LESS_GROUPS + 1);

    // The cap is per user.
    state.apply(add("h", "other", "g2", None, 0));
    assert!(state.is_member("h", "other", "g2", 1));
}

#[test]
fn eviction_is_identical_on_replicas_and_after_a_snapshot() {
    let commands: Vec<Command> =
        (0..MAX_TTL_LESS_GROUPS + 20).map(|i| add("h", "u", &format!("g{}", (i * 37) % 150), None, i as u64)).collect();
    let mut a = ControlState::default();
    a.apply(Command::Batch(commands[..60].to_vec()));
    let mut b = ControlState::decode(&a.encode().expect("encode")).expect("decode");
    for state in [&mut a, &mut b] {
        state.apply(Command::Batch(commands[60..].to_vec()));
    }
    assert_eq!(sorted(a.groups_of("h", "u", 0)), sorted(b.groups_of("h", "u", 0)));
    assert_eq!(a.groups_of("h", "u", 0).count(), MAX_TTL_LESS_GROUPS);
}

#[test]
fn removals_are_idempotent() {
    let mut state = ControlState::default();
    assert_eq!(state.apply(Command::RemoveUserFromGroup { hub: "h".into(), user: "u".into(), group: "g".into() }), 0);
    assert_eq!(state.apply(Command::RemoveUserFromAllGroups { hub: "h".into(), user: "u".into() }), 0);
    state.apply(Command::Batch(vec![
        add("h", "u", "g", None, 0),
        add("h", "u", "k", None, 0),
        add("h", "v", "g", None, 0),
    ]));

    let remove_one = Command::RemoveUserFromGroup { hub: "h".into(), user: "u".into(), group: "g".into() };
    assert_eq!(state.apply(remove_one.clone()), 1);
    assert_eq!(state.apply(remove_one), 0);
    assert_eq!(sorted(state.users_in("h", "g", 0)), ["v"]);

    let remove_all = Command::RemoveUserFromAllGroups { hub: "h".into(), user: "u".into() };
    assert_eq!(state.apply(remove_all.clone()), 1);
    assert_eq!(state.apply(remove_all), 0);
    assert_eq!(state.groups_of("h", "u", 0).count(), 0);
    assert_eq!(sorted(state.users_in("h", "g", 0)), ["v"]);
}

#[test]
fn purge_expired_drops_only_expired_memberships() {
    let mut state = ControlState::default();
    state.apply(Command::Batch(vec![add("h", "u", "g", Some(10), 0), add("h", "u", "k", Some(20), 0)]));
    assert_eq!(state.apply(Command::PurgeExpired { now: 10 }), 1);
    assert!(state.membership("h", "u", "g").is_none());
    assert!(state.membership("h", "u", "k").is_some());
    assert_eq!(state.apply(Command::PurgeExpired { now: 10 }), 0);
    state.apply(Command::PurgeExpired { now: 20 });
    assert!(state.hubs.is_empty(), "an empty hub is dropped");
}

#[test]
fn batch_counts_changed_leaf_commands() {
    let mut state = ControlState::default();
    let batch = Command::Batch(vec![
        add("h", "u", "g", None, 0),
        Command::Batch(vec![add("h", "u", "k", None, 0), Command::RemoveNode { node: 9 }]),
        Command::RemoveUserFromGroup { hub: "h".into(), user: "x".into(), group: "g".into() },
    ]);
    assert_eq!(state.apply(batch), 2);
    assert_eq!(Command::batch(vec![register(1, 5)]), register(1, 5));
}

#[test]
fn node_leases_register_renew_and_expire() {
    let mut state = ControlState::default();
    assert_eq!(state.apply(register(1, 1_000)), 1);
    assert_eq!(state.apply(register(1, 1_000)), 0, "identical re-registration changes nothing");
    state.apply(register(2, 5_000));
    assert_eq!(state.apply(Command::RenewLease { node: 1, lease_until: 2_000 }), 1);
    assert_eq!(state.apply(Command::RenewLease { node: 1, lease_until: 1_500 }), 0, "leases never move back");
    assert_eq!(state.apply(Command::RenewLease { node: 7, lease_until: 9_000 }), 0, "unknown node");
    assert_eq!(state.nodes()[&1].lease_until, 2_000);
    assert_eq!(state.nodes()[&1].advertise, "n1");
    assert!(state.nodes()[&1].roles.edge);
    assert_eq!(state.expired_nodes(1_999), Vec::<u64>::new());
    assert_eq!(state.expired_nodes(2_000), [1]);
    assert_eq!(state.expired_nodes(5_000), [1, 2]);
}

#[test]
fn interest_add_remove_and_group_routing_through_members() {
    let mut state = ControlState::default();
    state.apply(Command::Batch(vec![register(1, 0), register(2, 0), register(3, 0)]));
    assert_eq!(state.apply(interest(1, InterestKind::User, "alice", true)), 1);
    assert_eq!(state.apply(interest(1, InterestKind::User, "alice", true)), 0);
    state.apply(interest(2, InterestKind::User, "alice", true));
    state.apply(interest(3, InterestKind::Group, "g", true));
    state.apply(interest(2, InterestKind::User, "bob", true));
    assert_eq!(*state.nodes_for_user("h", "alice"), BTreeSet::from([1, 2]));
    assert_eq!(state.nodes_for_group("h", "g", 0), BTreeSet::from([3]));

    // alice's connections join g wherever they are, so their nodes care about g.
    state.apply(add("h", "alice", "g", Some(100), 0));
    assert_eq!(state.nodes_for_group("h", "g", 99), BTreeSet::from([1, 2, 3]));
    assert_eq!(state.nodes_for_group("h", "g", 100), BTreeSet::from([3]), "expired members do not route");

    assert_eq!(state.apply(interest(1, InterestKind::User, "alice", false)), 1);
    assert_eq!(state.apply(interest(1, InterestKind::User, "alice", false)), 0);
    assert_eq!(*state.nodes_for_user("h", "alice"), BTreeSet::from([2]));
    assert_eq!(state.apply(interest(1, InterestKind::Group, "nope", false)), 0);
    assert!(state.nodes_for_user("other", "alice").is_empty());
}

#[test]
fn remove_node_purges_its_interest_and_ignores_late_interest() {
    let mut state = ControlState::default();
    state.apply(Command::Batch(vec![register(1, 0), register(2, 0)]));
    state.apply(interest(1, InterestKind::User, "alice", true));
    state.apply(interest(1, InterestKind::Group, "g", true));
    state.apply(interest(2, InterestKind::Group, "g", true));

    assert_eq!(state.apply(Command::RemoveNode { node: 1 }), 1);
    assert!(!state.nodes().contains_key(&1));
    assert!(state.nodes_for_user("h", "alice").is_empty());
    assert_eq!(state.nodes_for_group("h", "g", 0), BTreeSet::from([2]));
    assert_eq!(state.apply(Command::RemoveNode { node: 1 }), 0);

    // A proposal from the removed node that was still in flight must not resurrect its routes.
    assert_eq!(state.apply(interest(1, InterestKind::User, "alice", true)), 0);
    assert!(state.nodes_for_user("h", "alice").is_empty());

    state.apply(Command::RemoveNode { node: 2 });
    assert!(state.hubs.is_empty());
}

#[test]
fn snapshot_round_trip_rebuilds_the_group_index() {
    let mut state = ControlState::default();
    state.apply(Command::Batch(vec![
        register(1, 10),
        add("h", "u", "g", None, 0),
        add("h", "v", "g", Some(50), 0),
        interest(1, InterestKind::User, "u", true),
    ]));
    let decoded = ControlState::decode(&state.encode().expect("encode")).expect("decode");
    assert_eq!(sorted(decoded.users_in("h", "g", 0)), ["u", "v"]);
    assert_eq!(decoded.nodes_for_group("h", "g", 0), BTreeSet::from([1]));
    assert_eq!(decoded.nodes(), state.nodes());
    assert_eq!(decoded.updates, state.updates);
}
