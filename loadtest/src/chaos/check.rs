//! The checker of a chaos run's history, sans-io: what every client saw and what every REST
//! call was answered, checked against Switchboard's promises.
//!
//! - A send answered 202 reached every target connection that was open from before the send
//!   was made until after it was answered (G4), exactly once.
//! - Nothing reached a connection the send did not target.
//! - Per connection, a send answered before another was made arrives first (G4's order).
//! - A send to a group, made after a join of that connection (or of its user) was answered
//!   2xx and not possibly undone since, reaches it (G3; for user groups across restarts, G6).
//!   A connection's own leave undoes its own join only; a user's leave undoes both the user's
//!   join and the joins of that user's connections.
//! - A send answered 5xx or not at all may have been delivered or not, but to each target at
//!   most once.
//! - A membership change answered 5xx or not at all may have taken effect or not, but
//!   consistently: of two group sends answered 202 to a connection open throughout both, the
//!   later made after the earlier was answered, one reaching it and the other not needs a
//!   change of its membership that may have taken effect between them.
//!
//! Times are the harness's own monotonic clock (microseconds): nothing relies on wall time
//! across nodes.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Whom a send targeted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum SendTarget {
    All,
    User(String),
    Group(String),
    Connection(String),
}

/// How a REST call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Outcome {
    /// 2xx.
    Ok,
    /// An answer that says it was not done (4xx).
    Refused,
    /// 5xx, a timeout or a broken connection: it may have happened.
    Unknown,
}

/// One connection's life and identity.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Life {
    pub(crate) id: String,
    pub(crate) user: Option<String>,
    pub(crate) opened_us: u64,
    /// `None`: still open at the end.
    pub(crate) closed_us: Option<u64>,
    /// Its client left by choice, after its invocations were answered (not lost to a fault).
    pub(crate) left: bool,
}

/// One REST send, identified by the message it carries.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Send {
    pub(crate) message: u64,
    /// The node it was made through (its index), for reports.
    pub(crate) via: usize,
    pub(crate) target: SendTarget,
    pub(crate) excluded: Vec<String>,
    pub(crate) invoked_us: u64,
    pub(crate) completed_us: u64,
    pub(crate) outcome: Outcome,
}

/// Who joins or leaves a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub(crate) enum Member {
    Connection(String),
    User(String),
}

/// A group membership change.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GroupChange {
    pub(crate) member: Member,
    pub(crate) group: String,
    pub(crate) join: bool,
    pub(crate) invoked_us: u64,
    pub(crate) completed_us: u64,
    pub(crate) outcome: Outcome,
}

/// A client invocation (answered by the upstream) and the connection that made it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Invocation {
    pub(crate) connection: String,
    pub(crate) id: u64,
    pub(crate) invoked_us: u64,
}

/// What a run recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct History {
    pub(crate) lives: Vec<Life>,
    pub(crate) sends: Vec<Send>,
    pub(crate) groups: Vec<GroupChange>,
    /// connection id → the messages it received, in arrival order.
    pub(crate) received: HashMap<String, Vec<u64>>,
    pub(crate) invocations: Vec<Invocation>,
    /// connection id → the invocation ids of the completions it received.
    pub(crate) completions: HashMap<String, Vec<u64>>,
}

/// A broken promise, with what it involves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Violation {
    Lost {
        message: u64,
        connection: String,
    },
    Duplicated {
        message: u64,
        connection: String,
        times: usize,
    },
    NotATarget {
        message: u64,
        connection: String,
    },
    OutOfOrder {
        connection: String,
        first: u64,
        then: u64,
    },
    UnknownMessage {
        message: u64,
        connection: String,
    },
    /// An invocation of a connection that stayed got no completion.
    Unanswered {
        invocation: u64,
        connection: String,
    },
    /// A completion arrived twice, or on a connection that did not make the invocation.
    StrayCompletion {
        invocation: u64,
        connection: String,
        times: usize,
    },
    /// Of two sends to `group`, `first` answered before `then` was made, one reached the
    /// connection and the other did not, with no change of its membership in between that
    /// may explain it: a change of unknown outcome both took effect and did not.
    Inconsistent {
        group: String,
        connection: String,
        first: u64,
        then: u64,
    },
}

/// What the check found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Verdict {
    pub(crate) deliveries_checked: u64,
    pub(crate) sends_ok: u64,
    pub(crate) sends_unknown: u64,
    pub(crate) completions_checked: u64,
    pub(crate) violations: Vec<Violation>,
}

impl Verdict {
    pub(crate) fn pass(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks `history`; see the module docs. Linear in the deliveries and in the sends times the
/// connections open at once, so a long soak's history checks in seconds.
pub(crate) fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let index = Index::new(history);
    verdict.sends_ok = history.sends.iter().filter(|s| s.outcome == Outcome::Ok).count() as u64;
    verdict.sends_unknown = history.sends.iter().filter(|s| s.outcome == Outcome::Unknown).count() as u64;
    for life in &history.lives {
        let received = history.received.get(&life.id).map(Vec::as_slice).unwrap_or_default();
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for message in received {
            *counts.entry(*message).or_default() += 1;
        }
        for (&message, &times) in &counts {
            let Some(send) = index.sends.get(&message) else {
                verdict.violations.push(Violation::UnknownMessage { message, connection: life.id.clone() });
                continue;
            };
            if times > 1 {
                verdict.violations.push(Violation::Duplicated { message, connection: life.id.clone(), times });
            }
            if !index.may_target(send, life) {
                verdict.violations.push(Violation::NotATarget { message, connection: life.id.clone() });
            }
        }
        check_order(&index, life, received, &mut verdict);
        verdict.deliveries_checked += received.len() as u64;
    }
    check_completions(history, &mut verdict);
    // (life, group) → the group sends answered 202 while it was open, and whether each reached it.
    let mut seen: HashMap<(&str, &str), Vec<(&Send, bool)>> = HashMap::new();
    for send in history.sends.iter().filter(|s| s.outcome == Outcome::Ok) {
        for life in index.open_at(send.invoked_us) {
            let open_throughout =
                life.opened_us < send.invoked_us && life.closed_us.is_none_or(|closed| closed > send.completed_us);
            if !open_throughout || send.excluded.contains(&life.id) {
                continue;
            }
            let got = history.received.get(&life.id).is_some_and(|r| r.contains(&send.message));
            if !got && index.must_target(send, life) {
                verdict.violations.push(Violation::Lost { message: send.message, connection: life.id.clone() });
            }
            if let SendTarget::Group(group) = &send.target {
                seen.entry((life.id.as_str(), group.as_str())).or_default().push((send, got));
            }
        }
    }
    for ((connection, group), sends) in seen {
        check_consistency(&index, connection, group, sends, &mut verdict);
    }
    verdict
}

/// Membership seen consistently: for each send, the earlier send answered before it was made
/// that saw the opposite (reached or not) and was made last; it needs a change of the
/// connection's or its user's membership, made before the later send was answered, that may
/// have taken effect after the earlier one was made. (The latest-made such send is the one
/// hardest to explain: any change that explains it explains the others.)
fn check_consistency(
    index: &Index,
    connection: &str,
    group: &str,
    mut sends: Vec<(&Send, bool)>,
    verdict: &mut Verdict,
) {
    let Some(life) = index.lives.get(connection) else { return };
    let changes = index.changes_affecting(life, group);
    sends.sort_by_key(|(s, _)| s.invoked_us);
    let mut by_answer = sends.clone();
    by_answer.sort_by_key(|(s, _)| s.completed_us);
    let mut answered = by_answer.iter().peekable();
    // The latest-made send answered so far that reached the connection, and one that did not.
    let mut latest: [Option<&Send>; 2] = [None, None];
    for (later, got) in &sends {
        while let Some((earlier, earlier_got)) = answered.next_if(|(e, _)| e.completed_us < later.invoked_us) {
            let slot = &mut latest[*earlier_got as usize];
            if slot.is_none_or(|s| s.invoked_us < earlier.invoked_us) {
                *slot = Some(earlier);
            }
        }
        let Some(earlier) = latest[!*got as usize] else { continue };
        let explained = changes
            .iter()
            .any(|c| c.join == *got && c.invoked_us < later.completed_us && effective_until(c) > earlier.invoked_us);
        if !explained {
            verdict.violations.push(Violation::Inconsistent {
                group: group.to_owned(),
                connection: connection.to_owned(),
                first: earlier.message,
                then: later.message,
            });
        }
    }
}

/// Order on one connection: of two sends it got where one was answered before the other was
/// made, the first arrived first. Sends by the time they were made, against the latest
/// position among those answered before.
fn check_order(index: &Index, life: &Life, received: &[u64], verdict: &mut Verdict) {
    let mut position: HashMap<u64, usize> = HashMap::new();
    for (at, message) in received.iter().enumerate() {
        position.entry(*message).or_insert(at);
    }
    let mut got: Vec<&Send> = position.keys().filter_map(|m| index.sends.get(m).copied()).collect();
    let mut by_answer = got.clone();
    got.sort_by_key(|s| s.invoked_us);
    by_answer.sort_by_key(|s| s.completed_us);
    let mut answered = by_answer.iter().peekable();
    let mut latest: Option<(usize, u64)> = None;
    for later in got {
        while let Some(earlier) = answered.next_if(|e| e.completed_us < later.invoked_us) {
            let at = position[&earlier.message];
            if latest.is_none_or(|(max, _)| at > max) {
                latest = Some((at, earlier.message));
            }
        }
        if let Some((at, first)) = latest
            && at > position[&later.message]
        {
            verdict.violations.push(Violation::OutOfOrder { connection: life.id.clone(), first, then: later.message });
        }
    }
}

/// What the checks look up, built once.
struct Index<'a> {
    sends: HashMap<u64, &'a Send>,
    lives: HashMap<&'a str, &'a Life>,
    /// (group, member) → its changes.
    changes: HashMap<(String, Member), Vec<&'a GroupChange>>,
    /// The lives open during each second of the run (by their indexes).
    by_second: HashMap<u64, Vec<&'a Life>>,
    /// life → group → when the life is certainly in the group, and from when it may be.
    memberships: std::cell::RefCell<HashMap<&'a str, HashMap<String, std::rc::Rc<Membership>>>>,
}

/// A life's membership of one group: certainly in it for sends made after `.0` and answered
/// by `.1` (one pair per join that counts), and possibly in it for sends answered after
/// `may_from`.
struct Membership {
    certain: Vec<(u64, u64)>,
    may_from: u64,
}

impl<'a> Index<'a> {
    fn new(history: &'a History) -> Index<'a> {
        let mut changes: HashMap<(String, Member), Vec<&GroupChange>> = HashMap::new();
        for change in &history.groups {
            changes.entry((change.group.clone(), change.member.clone())).or_default().push(change);
        }
        let end = history.sends.iter().map(|s| s.completed_us).max().unwrap_or(0);
        let mut by_second: HashMap<u64, Vec<&Life>> = HashMap::new();
        for life in &history.lives {
            let until = life.closed_us.unwrap_or(end).max(life.opened_us);
            for second in life.opened_us / 1_000_000..=until / 1_000_000 {
                by_second.entry(second).or_default().push(life);
            }
        }
        Index {
            sends: history.sends.iter().map(|s| (s.message, s)).collect(),
            lives: history.lives.iter().map(|l| (l.id.as_str(), l)).collect(),
            changes,
            by_second,
            memberships: Default::default(),
        }
    }

    /// Every life that may be open at `at` (a superset: those open during that second).
    fn open_at(&self, at: u64) -> impl Iterator<Item = &'a Life> + '_ {
        self.by_second.get(&(at / 1_000_000)).into_iter().flatten().copied()
    }

    /// Whether `send` certainly targets `life`: for a group send, a join of the connection or
    /// its user answered 2xx before the send was made, and no leave that undoes it and may
    /// have taken effect after the join began before the send was answered.
    fn must_target(&self, send: &Send, life: &'a Life) -> bool {
        if send.excluded.contains(&life.id) {
            return false;
        }
        match &send.target {
            SendTarget::All => true,
            SendTarget::User(user) => life.user.as_deref() == Some(user.as_str()),
            SendTarget::Connection(id) => *id == life.id,
            SendTarget::Group(group) => {
                let membership = self.membership(life, group);
                membership.certain.iter().any(|(after, until)| *after < send.invoked_us && send.completed_us <= *until)
            }
        }
    }

    /// Whether `send` may have targeted `life`: a group send, if any join of the connection or
    /// its user (answered 2xx or not at all) was made before the send was answered.
    fn may_target(&self, send: &Send, life: &'a Life) -> bool {
        match &send.target {
            SendTarget::Group(group) if !send.excluded.contains(&life.id) => {
                self.membership(life, group).may_from < send.completed_us
            }
            _ => self.must_target(send, life),
        }
    }

    fn changes_of(&self, group: &str, member: &Member) -> &[&'a GroupChange] {
        self.changes.get(&(group.to_owned(), member.clone())).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every change, answered or not, of `life`'s own membership of `group` or its user's.
    fn changes_affecting(&self, life: &Life, group: &str) -> Vec<&'a GroupChange> {
        let own = self.changes_of(group, &Member::Connection(life.id.clone()));
        let users = life.user.clone().map(|user| self.changes_of(group, &Member::User(user))).unwrap_or_default();
        own.iter().chain(users).filter(|c| c.outcome != Outcome::Refused).copied().collect()
    }

    fn membership(&self, life: &'a Life, group: &str) -> std::rc::Rc<Membership> {
        if let Some(known) = self.memberships.borrow().get(life.id.as_str()).and_then(|groups| groups.get(group)) {
            return known.clone();
        }
        let connection = Member::Connection(life.id.clone());
        let user = life.user.clone().map(Member::User);
        let own = self.changes_of(group, &connection);
        let users = user.as_ref().map(|user| self.changes_of(group, user)).unwrap_or_default();
        let mut membership = Membership { certain: Vec::new(), may_from: u64::MAX };
        // A connection's join is undone by its own leaves and its user's; a user's by the user's.
        for (joins, undoing) in [(own, [own, users]), (users, [users, &[][..]])] {
            for join in joins.iter().filter(|j| j.join && j.outcome != Outcome::Refused) {
                membership.may_from = membership.may_from.min(join.invoked_us);
                if join.outcome != Outcome::Ok {
                    continue;
                }
                let until = undoing
                    .iter()
                    .flat_map(|changes| changes.iter())
                    .filter(|l| !l.join && l.outcome != Outcome::Refused && effective_until(l) > join.invoked_us)
                    .map(|l| l.invoked_us)
                    .min()
                    .unwrap_or(u64::MAX);
                membership.certain.push((join.completed_us, until));
            }
        }
        let membership = std::rc::Rc::new(membership);
        let mut memberships = self.memberships.borrow_mut();
        memberships.entry(life.id.as_str()).or_default().insert(group.to_owned(), membership.clone());
        membership
    }
}

/// Client results: each invocation is answered once, on the connection that made it; one
/// whose client left by choice (it waits for its answers first) is answered.
fn check_completions(history: &History, verdict: &mut Verdict) {
    let made: HashMap<u64, &Invocation> = history.invocations.iter().map(|i| (i.id, i)).collect();
    for (connection, ids) in &history.completions {
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for id in ids {
            *counts.entry(*id).or_default() += 1;
        }
        for (&invocation, &times) in &counts {
            let mine = made.get(&invocation).is_some_and(|i| i.connection == *connection);
            if times > 1 || !mine {
                verdict.violations.push(Violation::StrayCompletion {
                    invocation,
                    connection: connection.clone(),
                    times,
                });
            }
        }
        verdict.completions_checked += ids.len() as u64;
    }
    let left: std::collections::HashSet<&str> =
        history.lives.iter().filter(|l| l.left).map(|l| l.id.as_str()).collect();
    for invocation in &history.invocations {
        let answered = history.completions.get(&invocation.connection).is_some_and(|c| c.contains(&invocation.id));
        if left.contains(invocation.connection.as_str()) && !answered {
            verdict
                .violations
                .push(Violation::Unanswered { invocation: invocation.id, connection: invocation.connection.clone() });
        }
    }
}

/// Until when a change may still take effect: its answer, or never known for an unknown outcome.
fn effective_until(change: &GroupChange) -> u64 {
    match change.outcome {
        Outcome::Unknown => u64::MAX,
        _ => change.completed_us,
    }
}

/// The violations by kind, for a report.
pub(crate) fn counts(verdict: &Verdict) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for violation in &verdict.violations {
        let kind = match violation {
            Violation::Lost { .. } => "lost",
            Violation::Duplicated { .. } => "duplicated",
            Violation::NotATarget { .. } => "not_a_target",
            Violation::OutOfOrder { .. } => "out_of_order",
            Violation::UnknownMessage { .. } => "unknown_message",
            Violation::Unanswered { .. } => "unanswered_invocation",
            Violation::StrayCompletion { .. } => "stray_completion",
            Violation::Inconsistent { .. } => "inconsistent_membership",
        };
        *counts.entry(kind).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(id: &str, user: Option<&str>, opened: u64, closed: Option<u64>) -> Life {
        Life { id: id.into(), user: user.map(Into::into), opened_us: opened, closed_us: closed, left: false }
    }

    fn send(message: u64, target: SendTarget, invoked: u64, completed: u64, outcome: Outcome) -> Send {
        Send { message, via: 0, target, excluded: vec![], invoked_us: invoked, completed_us: completed, outcome }
    }

    fn history() -> History {
        History {
            lives: vec![life("a", Some("alice"), 0, None), life("b", None, 0, Some(500))],
            sends: vec![
                send(1, SendTarget::All, 100, 110, Outcome::Ok),
                send(2, SendTarget::User("alice".into()), 200, 210, Outcome::Ok),
                send(3, SendTarget::Group("g".into()), 400, 410, Outcome::Ok),
                send(4, SendTarget::All, 600, 650, Outcome::Unknown),
            ],
            groups: vec![GroupChange {
                member: Member::Connection("a".into()),
                group: "g".into(),
                join: true,
                invoked_us: 300,
                completed_us: 310,
                outcome: Outcome::Ok,
            }],
            received: HashMap::from([("a".into(), vec![1, 2, 3]), ("b".into(), vec![1])]),
            invocations: Vec::new(),
            completions: HashMap::new(),
        }
    }

    #[test]
    fn a_history_that_keeps_every_promise_passes() {
        let verdict = check(&history());
        assert!(verdict.pass(), "{:?}", verdict.violations);
        assert_eq!((verdict.sends_ok, verdict.sends_unknown, verdict.deliveries_checked), (3, 1, 4));
        // An unknown send may arrive, once.
        let mut maybe = history();
        maybe.received.get_mut("a").unwrap().push(4);
        assert!(check(&maybe).pass());
    }

    #[test]
    fn every_kind_of_broken_promise_is_found() {
        type Case = (&'static str, fn(&mut History), Violation);
        let cases: [Case; 5] = [
            (
                "a lost broadcast",
                |h| h.received.get_mut("b").unwrap().clear(),
                Violation::Lost { message: 1, connection: "b".into() },
            ),
            (
                "a duplicate",
                |h| h.received.get_mut("a").unwrap().push(2),
                Violation::Duplicated { message: 2, connection: "a".into(), times: 2 },
            ),
            (
                "a user send to another user",
                |h| h.received.get_mut("b").unwrap().push(2),
                Violation::NotATarget { message: 2, connection: "b".into() },
            ),
            (
                "out of order",
                |h| *h.received.get_mut("a").unwrap() = vec![2, 1, 3],
                Violation::OutOfOrder { connection: "a".into(), first: 1, then: 2 },
            ),
            (
                "a group send lost after an answered join",
                |h| {
                    h.received.get_mut("a").unwrap().pop();
                },
                Violation::Lost { message: 3, connection: "a".into() },
            ),
        ];
        for (what, breaks, expected) in cases {
            let mut broken = history();
            breaks(&mut broken);
            let verdict = check(&broken);
            assert!(verdict.violations.contains(&expected), "{what}: {:?}", verdict.violations);
        }
    }

    #[test]
    fn a_connection_that_was_not_open_throughout_a_send_owes_nothing() {
        let mut late = history();
        late.lives.push(life("c", None, 105, None));
        late.lives.push(life("d", None, 0, Some(105)));
        assert!(check(&late).pass(), "{:?}", check(&late).violations);
        // A join still in flight when the group send was made: the send may or may not reach it.
        let mut racing = history();
        racing.groups[0].completed_us = 405;
        assert!(check(&racing).pass());
        racing.received.get_mut("a").unwrap().pop();
        assert!(check(&racing).pass(), "not owed either");
    }

    #[test]
    fn user_groups_count_for_every_connection_of_the_user_and_a_rejoin_counts_again() {
        let change = |member: Member, join: bool, invoked: u64, completed: u64, outcome: Outcome| GroupChange {
            member,
            group: "h".into(),
            join,
            invoked_us: invoked,
            completed_us: completed,
            outcome,
        };
        let mut h = history();
        h.lives.push(life("c", Some("alice"), 0, None));
        h.groups.push(change(Member::User("alice".into()), true, 300, 310, Outcome::Ok));
        h.sends.push(send(5, SendTarget::Group("h".into()), 400, 410, Outcome::Ok));
        h.received.get_mut("a").unwrap().push(5);
        h.received.insert("c".into(), vec![1, 2]);
        let verdict = check(&h);
        assert_eq!(verdict.violations, vec![Violation::Lost { message: 5, connection: "c".into() }]);
        // Left and joined again before the send: still owed; a leave of unknown outcome
        // after the join: not owed any more.
        h.received.insert("c".into(), vec![1, 2, 5]);
        h.groups.push(change(Member::User("alice".into()), false, 320, 330, Outcome::Ok));
        h.groups.push(change(Member::User("alice".into()), true, 340, 350, Outcome::Ok));
        assert!(check(&h).pass(), "{:?}", check(&h).violations);
        h.received.insert("c".into(), vec![1, 2]);
        assert!(!check(&h).pass());
        h.groups.push(change(Member::User("alice".into()), false, 360, 9_999, Outcome::Unknown));
        assert!(check(&h).pass(), "{:?}", check(&h).violations);
    }

    #[test]
    fn a_user_leave_takes_the_users_connections_out_but_a_connection_leave_leaves_the_user_in() {
        let change = |member: Member, join: bool, invoked: u64| GroupChange {
            member,
            group: "g".into(),
            join,
            invoked_us: invoked,
            completed_us: invoked + 5,
            outcome: Outcome::Ok,
        };
        // "a" (alice) joined g itself at 300 (see `history`); alice leaves at 350: send 3
        // (at 400) is not owed to "a" any more.
        let mut h = history();
        h.received.get_mut("a").unwrap().pop();
        h.groups.push(change(Member::User("alice".into()), false, 350));
        assert!(check(&h).pass(), "{:?}", check(&h).violations);
        // alice joined at 320 and "a" left at 350: alice's membership still holds.
        let mut h = history();
        h.received.get_mut("a").unwrap().pop();
        h.groups.push(change(Member::User("alice".into()), true, 320));
        h.groups.push(change(Member::Connection("a".into()), false, 350));
        assert_eq!(check(&h).violations, vec![Violation::Lost { message: 3, connection: "a".into() }]);
    }

    #[test]
    fn a_change_of_unknown_outcome_may_take_effect_late_but_not_come_and_go() {
        let group_send = |message: u64, at: u64| send(message, SendTarget::Group("u".into()), at, at + 10, Outcome::Ok);
        let change = |join: bool, invoked: u64, outcome: Outcome| GroupChange {
            member: Member::Connection("a".into()),
            group: "u".into(),
            join,
            invoked_us: invoked,
            completed_us: invoked + 50,
            outcome,
        };
        // A join that timed out: not owed to "a", and it may take effect late, between sends.
        let mut h = history();
        h.groups.push(change(true, 1_000, Outcome::Unknown));
        h.sends.extend([group_send(10, 2_000), group_send(11, 3_000), group_send(12, 4_000)]);
        h.received.get_mut("a").unwrap().extend([11, 12]);
        assert!(check(&h).pass(), "{:?}", check(&h).violations);
        // Seen by 11, then not by 12 with nothing in between: it took effect and did not.
        h.received.get_mut("a").unwrap().pop();
        let inconsistent =
            |first, then| Violation::Inconsistent { group: "u".into(), connection: "a".into(), first, then };
        assert_eq!(check(&h).violations, vec![inconsistent(11, 12)]);
        // A leave made meanwhile explains it, even one that timed out too.
        h.groups.push(change(false, 3_500, Outcome::Unknown));
        assert!(check(&h).pass(), "{:?}", check(&h).violations);
        // A leave that timed out: 11 not reached and then 12 reached needs a join between.
        let mut h = history();
        h.groups.push(change(true, 1_000, Outcome::Ok));
        h.groups.push(change(false, 1_500, Outcome::Unknown));
        h.sends.extend([group_send(10, 2_000), group_send(11, 3_000), group_send(12, 4_000)]);
        h.received.get_mut("a").unwrap().extend([10, 12]);
        assert_eq!(check(&h).violations, vec![inconsistent(11, 12)]);
        // Sends that overlap owe each other nothing.
        h.sends[6].invoked_us = 3_005;
        assert!(check(&h).pass(), "{:?}", check(&h).violations);
    }

    #[test]
    fn every_invocation_of_a_client_that_left_is_answered_once_where_it_was_made() {
        let mut h = history();
        let call = |connection: &str, id: u64| Invocation { connection: connection.into(), id, invoked_us: 50 };
        h.invocations = vec![call("a", 7), call("b", 8)];
        h.completions = HashMap::from([("a".into(), vec![7])]);
        assert!(check(&h).pass(), "b was lost, not left: 8 is not owed");
        h.lives[1].left = true;
        assert_eq!(check(&h).violations, vec![Violation::Unanswered { invocation: 8, connection: "b".into() }]);
        h.completions.insert("b".into(), vec![8, 8, 7]);
        let violations = check(&h).violations;
        assert!(violations.contains(&Violation::StrayCompletion { invocation: 8, connection: "b".into(), times: 2 }));
        assert!(violations.contains(&Violation::StrayCompletion { invocation: 7, connection: "b".into(), times: 1 }));
    }
}
