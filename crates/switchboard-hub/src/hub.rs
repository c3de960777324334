//! One hub's connections, users and groups, and delivery into their outboxes.
//!
//! All state sits behind one `RwLock`: sends take the read lock and push shared frames into
//! outboxes (which never block), membership changes take the write lock briefly. A broadcast
//! is appended once to the hub's [`BroadcastLog`], which every connection's outbox reads.

use crate::HashMap;
use crate::broadcast_log::{BroadcastLog, protocol_slot};
use crate::call::{Applied, Call, Command, Listed, Target};
use crate::connection::{Connection, ResultWaiter};
use crate::filter::{Filter, Subject};
use crate::frames::Frames;
use crate::interest::InterestKind;
use crate::membership::UserGroupReader;
use crate::metrics::Disconnect;
use crate::metrics::SendKind;
use crate::outbox::{CloseRequest, PushError};
use crate::registry::Shared;
#[cfg(test)]
use crate::registry::Stats;
use crate::trace::TraceEvent;
use crate::unix_now;
use parking_lot::RwLock;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use switchboard_protocol::Protocol;

/// `^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$`: the hub (and `application`) rule of the REST API.
pub fn is_valid_hub_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && name.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'`' | b',' | b'.' | b'[' | b']'))
}

/// Groups are 1 to 1024 characters and not whitespace only.
pub fn is_valid_group_name(name: &str) -> bool {
    !name.is_empty() && name.chars().count() <= 1024 && !name.chars().all(char::is_whitespace)
}

#[derive(Default)]
struct State {
    connections: HashMap<Arc<str>, Arc<Connection>>,
    users: HashMap<Arc<str>, Vec<Arc<Connection>>>,
    groups: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Connection>>>,
    /// Connections by protocol (JSON, MessagePack): a broadcast builds only the frames read.
    protocols: [u64; 2],
}

impl State {
    /// Calls `f` once for every live connection in `group`, whether it joined directly or
    /// through its user's membership.
    fn for_each_in_group(
        &self,
        hub: &str,
        user_groups: &dyn UserGroupReader,
        group: &str,
        mut f: impl FnMut(&Arc<Connection>),
    ) {
        let direct = self.groups.get(group);
        if let Some(members) = direct {
            members.values().for_each(&mut f);
        }
        if self.users.is_empty() {
            return;
        }
        let now = unix_now();
        let mut deliver_user = |connections: &Vec<Arc<Connection>>| {
            for conn in connections {
                if !direct.is_some_and(|d| d.contains_key(&conn.id)) {
                    f(conn);
                }
            }
        };
        // Walk whichever side is smaller: in a cluster most members of a big group are
        // connected to other nodes.
        if self.users.len() < user_groups.member_count(hub, group) {
            for (user, connections) in &self.users {
                if user_groups.is_member(hub, user, group, now) {
                    deliver_user(connections);
                }
            }
        } else {
            user_groups.for_each_user_in(hub, group, now, &mut |user| {
                if let Some(connections) = self.users.get(user) {
                    deliver_user(connections);
                }
            });
        }
    }
}

/// See the module docs.
pub struct Hub {
    name: Arc<str>,
    state: RwLock<State>,
    shared: Arc<Shared>,
    broadcasts: Arc<BroadcastLog>,
}

impl Hub {
    pub(crate) fn new(name: Arc<str>, shared: Arc<Shared>) -> Self {
        let broadcasts = Arc::new(BroadcastLog::new(shared.config.max_queued_bytes));
        Self { name, state: RwLock::default(), shared, broadcasts }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    // ------------------------------------------------------------------------ calls

    /// Applies a REST call to this node's connections: the one applier behind the single
    /// node, the fan-out receiver and an engine's own node. Says whether anything the call
    /// names was live here (the connection, a connection of the user, a group member; for a
    /// send, a connection that got the message), or which limit refused it.
    pub fn apply(&self, call: &Call) -> Applied {
        let found = match call {
            Call::Send { target, excluded, frames } => match target {
                Target::All => self.broadcast(frames, excluded) > 0,
                Target::User(user) => self.send_to_user(user, frames) > 0,
                Target::Group(group) => self.send_to_group(group, frames, excluded) > 0,
                Target::Connection(id) => self.send_to_connection(id, frames),
            },
            Call::Close { target, excluded, reason } => {
                let request = CloseRequest { error: reason.clone(), allow_reconnect: false };
                match target {
                    Target::All => self.close_all(excluded, &request),
                    Target::User(user) => self.close_user(user, excluded, &request),
                    Target::Group(group) => self.close_group(group, excluded, &request),
                    Target::Connection(id) => return Applied::from(self.close_connection(id, request)),
                }
                true
            }
            Call::Exists(target) => match target {
                Target::All => self.connection_count() > 0,
                Target::User(user) => self.user_exists(user),
                Target::Group(group) => self.group_exists(group),
                Target::Connection(id) => self.connection(id).is_some_and(|c| is_live(&c)),
            },
            Call::AddToGroup { connection, group } => return self.try_add_to_group(connection, group),
            Call::RemoveFromGroup { connection, group } => self.remove_from_group(connection, group),
            Call::RemoveFromAllGroups { connection } => self.remove_from_all_groups(connection),
            Call::UserJoinGroup { user, group } => self.add_user_connections_to_group(user, group),
            Call::UserLeaveGroup { user, group } => self.remove_user_connections_from_group(user, group),
            Call::UserLeaveAllGroups { user } => self.remove_user_connections_from_all_groups(user),
            Call::Execute { filter, commands } => self.execute(filter, commands),
            Call::Stream { connection, stream, item, end } => {
                self.stream(connection, stream, item.as_ref(), end.as_ref())
            }
        };
        Applied::from(found)
    }

    /// `:execute`: the connections `filter` matches are chosen first, then every command runs on
    /// each of them in order. Returns whether any matched.
    fn execute(&self, filter: &Filter, commands: &[Command]) -> bool {
        let matching: Vec<Arc<Connection>> = {
            let state = self.state.read();
            state
                .connections
                .values()
                .filter(|conn| is_live(conn))
                .filter(|conn| {
                    let groups = conn.groups.lock();
                    let groups: Vec<&str> = groups.iter().map(|g| &**g).collect();
                    let subject =
                        Subject { connection_id: &conn.id, user_id: conn.user_id.as_deref(), groups: &groups };
                    filter.matches(&subject)
                })
                .cloned()
                .collect()
        };
        for command in commands {
            match command {
                Command::SendMessage(frames) => {
                    let delivered = matching.iter().filter(|conn| self.deliver(conn, frames)).count();
                    self.count(SendKind::Connection, delivered as u64);
                }
                Command::JoinGroup(group) => {
                    matching.iter().for_each(|conn| _ = self.try_add_to_group(&conn.id, group))
                }
                Command::LeaveGroup(group) => {
                    matching.iter().for_each(|conn| _ = self.remove_from_group(&conn.id, group))
                }
                Command::CloseConnection(reason) => matching
                    .iter()
                    .for_each(|conn| conn.outbox.close(CloseRequest { error: reason.clone(), allow_reconnect: false })),
            }
        }
        !matching.is_empty()
    }

    /// The live connections `target` names here (`All`: every one of the hub), each with its
    /// user, in no particular order. Closing connections are left out (see [`is_live`]).
    pub fn list(&self, target: &Target) -> Vec<Listed> {
        let listed = |conn: &Arc<Connection>| Listed {
            connection_id: conn.id.to_string(),
            user_id: conn.user_id.as_deref().map(str::to_owned),
        };
        let state = self.state.read();
        let mut out = Vec::new();
        match target {
            Target::All => out.extend(state.connections.values().filter(|c| is_live(c)).map(listed)),
            Target::User(user) => {
                out.extend(state.users.get(user.as_str()).into_iter().flatten().filter(|c| is_live(c)).map(listed))
            }
            Target::Group(group) => state.for_each_in_group(&self.name, &*self.shared.user_groups, group, |conn| {
                if is_live(conn) {
                    out.push(listed(conn));
                }
            }),
            Target::Connection(id) => out.extend(state.connections.get(id.as_str()).filter(|c| is_live(c)).map(listed)),
        }
        out
    }

    // ----------------------------------------------------------------- connections

    /// Registers a connected client. Returns whether the node's interest changed (the user's
    /// first connection here). Either way, [`crate::Registry::interest_settled`] then tells
    /// when every node routes the user here: a second connection of the user may arrive while
    /// the first one's interest is still on its way.
    pub fn add_connection(&self, conn: Arc<Connection>) -> bool {
        let mut state = self.state.write();
        let mut reported = false;
        if let Some(user) = &conn.user_id {
            if !state.users.contains_key(user) {
                reported = self.report(InterestKind::User, user, true);
            }
            state.users.entry(user.clone()).or_default().push(conn.clone());
        }
        if state.connections.is_empty() {
            reported |= self.report(InterestKind::Hub, "", true);
        }
        let (transport, protocol) = (conn.transport as usize, protocol_slot(conn.protocol));
        let detail = || {
            let user = conn.user_id.as_deref().map_or_else(String::new, |u| format!(", user {u}"));
            format!("{} {}{user}", conn.transport.label(), conn.protocol.name())
        };
        self.trace(&conn.id, "connected", detail);
        if self.shared.interest.as_ref().is_some_and(|sink| sink.wants_connections()) {
            reported |= self.report(InterestKind::Connection, &conn.id, true);
        }
        conn.outbox.subscribe(&self.broadcasts);
        match state.connections.insert(conn.id.clone(), conn.clone()) {
            None => {
                let stats = &self.shared.stats;
                stats.connections.fetch_add(1, Ordering::Relaxed);
                stats.open[transport].add(protocol, 1);
                stats.connects.add(transport, 1);
                state.protocols[protocol] += 1;
            }
            Some(old) if !Arc::ptr_eq(&old, &conn) => {
                old.outbox.unsubscribe();
                state.protocols[protocol_slot(old.protocol)] -= 1;
                state.protocols[protocol] += 1;
            }
            Some(_) => {}
        }
        reported
    }

    /// Counts (and traces) why connection `id` ended; `error` is what the client was told.
    pub fn connection_ended(&self, id: &str, reason: Disconnect, error: Option<&str>) {
        self.shared.stats.disconnected(reason);
        self.trace(id, "disconnected", || match error {
            Some(error) => format!("{}: {error}", reason.label()),
            None => reason.label().to_owned(),
        });
    }

    /// Forgets a connection and its connection-level groups.
    pub fn remove_connection(&self, id: &str) {
        let mut state = self.state.write();
        let Some(conn) = state.connections.remove(id) else { return };
        conn.outbox.unsubscribe();
        state.protocols[protocol_slot(conn.protocol)] -= 1;
        if self.shared.interest.as_ref().is_some_and(|sink| sink.wants_connections()) {
            self.report(InterestKind::Connection, id, false);
        }
        let stats = &self.shared.stats;
        stats.connections.fetch_sub(1, Ordering::Relaxed);
        stats.open[conn.transport as usize].sub(protocol_slot(conn.protocol), 1);
        if let Some(user) = &conn.user_id
            && let Some(list) = state.users.get_mut(user)
        {
            list.retain(|c| c.id != conn.id);
            if list.is_empty() {
                state.users.remove(user);
                self.report(InterestKind::User, user, false);
            }
        }
        for group in std::mem::take(&mut *conn.groups.lock()) {
            if let Some(members) = state.groups.get_mut(&group) {
                members.remove(id);
                if members.is_empty() {
                    state.groups.remove(&group);
                    self.report(InterestKind::Group, &group, false);
                }
            }
        }
        if state.connections.is_empty() {
            self.report(InterestKind::Hub, "", false);
        }
        drop(state);
        conn.abandon_results();
    }

    /// Writes a client-result invocation (`frames` carry `invocation_id`) to connection `id`
    /// and has `waiter` called with the client's Completion, or with `None` if the connection
    /// goes first. Returns `false`, without calling `waiter`, when the connection is not here.
    pub fn invoke(&self, id: &str, invocation_id: &str, frames: &Frames, waiter: ResultWaiter) -> bool {
        let state = self.state.read();
        let Some(conn) = state.connections.get(id).filter(|conn| is_live(conn)) else { return false };
        conn.expect_result(invocation_id, waiter);
        if self.deliver(conn, frames) {
            self.count(SendKind::Connection, 1);
        } else {
            conn.complete_result(invocation_id, None);
        }
        true
    }

    /// See [`Call::Stream`].
    fn stream(&self, id: &str, stream: &str, item: Option<&Frames>, end: Option<&Frames>) -> bool {
        let Some(conn) = self.connection(id).filter(|conn| is_live(conn)) else { return false };
        if !conn.stream_is_open(stream) {
            return false;
        }
        let mut delivered = 0;
        if let Some(item) = item {
            delivered += u64::from(self.deliver(&conn, item));
        }
        if let Some(end) = end
            && conn.end_stream(stream).is_some()
        {
            delivered += u64::from(self.deliver(&conn, end));
        }
        self.count(SendKind::Connection, delivered);
        true
    }

    /// Every connection here, at this moment (for operators' views, not hot paths).
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.state.read().connections.values().cloned().collect()
    }

    pub fn connection(&self, id: &str) -> Option<Arc<Connection>> {
        self.state.read().connections.get(id).cloned()
    }

    /// Bytes waiting in this hub's outboxes (a scan: for metrics scrapes, not hot paths).
    pub fn queued_bytes(&self) -> u64 {
        self.state.read().connections.values().map(|c| c.outbox.queued_bytes() as u64).sum()
    }

    pub fn connection_count(&self) -> usize {
        self.state.read().connections.len()
    }

    /// Connections of the user on this node.
    pub fn user_connection_count(&self, user: &str) -> usize {
        self.state.read().users.get(user).map_or(0, Vec::len)
    }

    /// Whether the user has at least one live connection.
    pub fn user_exists(&self, user: &str) -> bool {
        self.state.read().users.get(user).is_some_and(|connections| connections.iter().any(|c| is_live(c)))
    }

    /// Whether at least one live connection is in the group.
    pub fn group_exists(&self, group: &str) -> bool {
        let state = self.state.read();
        let mut found = false;
        state.for_each_in_group(&self.name, &*self.shared.user_groups, group, |c| found |= is_live(c));
        found
    }

    // -------------------------------------------------------------------- delivery

    fn deliver(&self, conn: &Connection, frames: &Frames) -> bool {
        let Some(frame) = frames.get(conn.protocol) else { return false };
        self.trace_delivery(conn, frame);
        match conn.outbox.push(frame.clone(), self.shared.config.max_queued_bytes) {
            Ok(()) => true,
            Err(PushError::Overflow) => {
                self.shared.stats.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(PushError::Closed) => false,
        }
    }

    fn trace_delivery(&self, conn: &Connection, frame: &[u8]) {
        self.shared.tracer.emit(|| TraceEvent::new(&self.name, &conn.id, "message-out", "").bytes(frame.len()));
    }

    fn count(&self, route: SendKind, delivered: u64) -> u64 {
        self.shared.stats.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.shared.stats.messages_out.add(route as usize, delivered);
        delivered
    }

    /// Sends to every connection of the hub except `excluded` ids; returns deliveries (a
    /// connection already closing is counted: it is still subscribed to the broadcasts).
    pub fn broadcast(&self, frames: &Frames, excluded: &[String]) -> u64 {
        let state = self.state.read();
        let mut per_protocol = [None, None];
        let mut delivered = 0;
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            let slot = protocol_slot(protocol);
            if state.protocols[slot] > 0
                && let Some(frame) = frames.get(protocol)
            {
                per_protocol[slot] = Some(frame.clone());
                delivered += state.protocols[slot];
            }
        }
        for (at, id) in excluded.iter().enumerate() {
            if let Some(conn) = state.connections.get(id.as_str())
                && per_protocol[protocol_slot(conn.protocol)].is_some()
                && !excluded[..at].contains(id)
            {
                delivered -= 1;
            }
        }
        if delivered == 0 {
            return 0;
        }
        if self.shared.tracer.active() {
            for conn in state.connections.values().filter(|conn| !is_excluded(&conn.id, excluded)) {
                if let Some(frame) = &per_protocol[protocol_slot(conn.protocol)] {
                    self.trace_delivery(conn, frame);
                }
            }
        }
        let first = self.broadcasts.end() == 0;
        if self.broadcasts.append(per_protocol, excluded) {
            let closed = state.connections.values().filter(|conn| conn.outbox.close_if_behind()).count();
            self.shared.stats.slow_consumer_closes.fetch_add(closed as u64, Ordering::Relaxed);
        }
        if first {
            // Connections of a hub that had never broadcast wait without watching the log.
            state.connections.values().for_each(|conn| conn.outbox.wake());
        }
        self.count(SendKind::Broadcast, delivered)
    }

    /// Sends to every connection of `user`.
    pub fn send_to_user(&self, user: &str, frames: &Frames) -> u64 {
        let state = self.state.read();
        let delivered = state.users.get(user).into_iter().flatten().filter(|c| self.deliver(c, frames)).count();
        self.count(SendKind::User, delivered as u64)
    }

    /// Sends to one connection; `false` when it is not here.
    pub fn send_to_connection(&self, id: &str, frames: &Frames) -> bool {
        let state = self.state.read();
        let delivered = state.connections.get(id).is_some_and(|c| self.deliver(c, frames));
        self.count(SendKind::Connection, delivered as u64);
        delivered
    }

    /// Sends to every connection in `group` except `excluded` ids.
    pub fn send_to_group(&self, group: &str, frames: &Frames, excluded: &[String]) -> u64 {
        let state = self.state.read();
        let mut delivered = 0;
        state.for_each_in_group(&self.name, &*self.shared.user_groups, group, |conn| {
            if !is_excluded(&conn.id, excluded) && self.deliver(conn, frames) {
                delivered += 1;
            }
        });
        self.count(SendKind::Group, delivered)
    }

    // ------------------------------------------------------------------ membership

    /// Adds a connection to a group; `false` when the connection is not here (or closing) or
    /// already in its maximum of groups.
    pub fn add_to_group(&self, id: &str, group: &str) -> bool {
        self.try_add_to_group(id, group).found()
    }

    fn try_add_to_group(&self, id: &str, group: &str) -> Applied {
        let mut state = self.state.write();
        let Some(conn) = state.connections.get(id).filter(|c| is_live(c)).cloned() else { return Applied::NotFound };
        if !self.may_join(&conn, group) {
            return Applied::GroupLimit;
        }
        self.join(&mut state, &conn, group);
        Applied::Found
    }

    /// Whether `conn` may join `group` under `max_groups_per_connection` (one it is in, always).
    fn may_join(&self, conn: &Connection, group: &str) -> bool {
        let max = self.shared.config.max_groups_per_connection;
        let groups = conn.groups.lock();
        max == 0 || groups.len() < max || groups.iter().any(|g| &**g == group)
    }

    /// Removes a connection from a group (absent is fine); `false` when the connection is not here.
    pub fn remove_from_group(&self, id: &str, group: &str) -> bool {
        let mut state = self.state.write();
        let Some(conn) = state.connections.get(id).cloned() else { return false };
        self.leave(&mut state, &conn, group);
        true
    }

    /// Removes a connection from all its connection-level groups; `false` when it is not here.
    pub fn remove_from_all_groups(&self, id: &str) -> bool {
        let mut state = self.state.write();
        let Some(conn) = state.connections.get(id).cloned() else { return false };
        let groups = conn.groups.lock().clone();
        for group in groups {
            self.leave(&mut state, &conn, &group);
        }
        true
    }

    /// `PUT users/{user}/groups/{group}?ttl=0`: the user's current connections join the group
    /// (connection-level; persistent memberships go through a [`crate::UserGroupWriter`]).
    /// Returns whether the user has connections here.
    pub fn add_user_connections_to_group(&self, user: &str, group: &str) -> bool {
        let mut state = self.state.write();
        let connections = state.users.get(user).cloned().unwrap_or_default();
        for conn in connections.iter().filter(|conn| self.may_join(conn, group)) {
            self.join(&mut state, conn, group);
        }
        !connections.is_empty()
    }

    /// The user's current connections leave the group (after its membership was removed).
    pub fn remove_user_connections_from_group(&self, user: &str, group: &str) -> bool {
        let mut state = self.state.write();
        let connections = state.users.get(user).cloned().unwrap_or_default();
        for conn in &connections {
            self.leave(&mut state, conn, group);
        }
        !connections.is_empty()
    }

    /// The user's current connections leave every connection-level group.
    pub fn remove_user_connections_from_all_groups(&self, user: &str) -> bool {
        let mut state = self.state.write();
        let connections = state.users.get(user).cloned().unwrap_or_default();
        for conn in &connections {
            let groups = conn.groups.lock().clone();
            for group in groups {
                self.leave(&mut state, conn, &group);
            }
        }
        !connections.is_empty()
    }

    /// Whether the user belongs to the group, persistently or through a live connection.
    pub fn user_in_group(&self, user: &str, group: &str) -> bool {
        let state = self.state.read();
        self.shared.user_groups.is_member(&self.name, user, group, unix_now())
            || state.groups.get(group).is_some_and(|m| m.values().any(|c| c.user_id.as_deref() == Some(user)))
    }

    // -------------------------------------------------------------------- interest

    /// Tells the interest sink, if any; called with the state lock held (see [`InterestSink`]).
    fn report(&self, kind: InterestKind, name: &str, present: bool) -> bool {
        let Some(sink) = &self.shared.interest else { return false };
        sink.report(&self.name, kind, name, present);
        true
    }

    /// `(hub, kind, name)` of every user and group with a live connection here, and the hub's
    /// own entry when it has any.
    pub(crate) fn interest_snapshot(&self) -> Vec<(String, InterestKind, String)> {
        let state = self.state.read();
        let users = state.users.keys().map(|u| (self.name.to_string(), InterestKind::User, u.to_string()));
        let groups = state.groups.keys().map(|g| (self.name.to_string(), InterestKind::Group, g.to_string()));
        let hub = (!state.connections.is_empty()).then(|| (self.name.to_string(), InterestKind::Hub, String::new()));
        users.chain(groups).chain(hub).collect()
    }

    /// Returns whether the group gained its first member here (an interest change was reported).
    fn join(&self, state: &mut State, conn: &Arc<Connection>, group: &str) -> bool {
        let mut reported = false;
        if !state.groups.contains_key(group) {
            reported = self.report(InterestKind::Group, group, true);
        }
        let members = state.groups.entry(Arc::from(group)).or_default();
        if members.insert(conn.id.clone(), conn.clone()).is_none() {
            let key = state.groups.get_key_value(group).map(|(k, _)| k.clone()).expect("just inserted");
            conn.groups.lock().push(key);
            self.trace(&conn.id, "group-join", || group.to_owned());
        }
        reported
    }

    /// A trace event about connection `id` of this hub, built only while someone watches.
    fn trace(&self, id: &str, kind: &'static str, detail: impl FnOnce() -> String) {
        self.shared.tracer.emit(|| TraceEvent::new(&self.name, id, kind, detail()));
    }

    fn leave(&self, state: &mut State, conn: &Connection, group: &str) {
        if let Some(members) = state.groups.get_mut(group) {
            if members.remove(&conn.id).is_some() {
                conn.groups.lock().retain(|g| &**g != group);
                self.trace(&conn.id, "group-leave", || group.to_owned());
            }
            if members.is_empty() {
                state.groups.remove(group);
                self.report(InterestKind::Group, group, false);
            }
        }
    }

    // ---------------------------------------------------------------------- closing

    /// Asks one connection to close with `reason`; `false` when it is not here.
    pub fn close_connection(&self, id: &str, request: CloseRequest) -> bool {
        let conn = self.connection(id);
        conn.map(|c| c.outbox.close(request)).is_some()
    }

    /// Closes every connection except `excluded`.
    pub fn close_all(&self, excluded: &[String], request: &CloseRequest) {
        let state = self.state.read();
        for conn in state.connections.values().filter(|c| !is_excluded(&c.id, excluded)) {
            conn.outbox.close(request.clone());
        }
    }

    /// Closes every connection of the group except `excluded`.
    pub fn close_group(&self, group: &str, excluded: &[String], request: &CloseRequest) {
        let state = self.state.read();
        state.for_each_in_group(&self.name, &*self.shared.user_groups, group, |conn| {
            if !is_excluded(&conn.id, excluded) {
                conn.outbox.close(request.clone());
            }
        });
    }

    /// Closes every connection of the user except `excluded`.
    pub fn close_user(&self, user: &str, excluded: &[String], request: &CloseRequest) {
        let state = self.state.read();
        for conn in state.users.get(user).into_iter().flatten().filter(|c| !is_excluded(&c.id, excluded)) {
            conn.outbox.close(request.clone());
        }
    }
}

/// A connection that is closing (asked to, or a slow consumer whose queue overflowed) is gone
/// for REST at once, though its transport may take until its write times out to end it.
fn is_live(conn: &Connection) -> bool {
    !conn.outbox.is_closing()
}

fn is_excluded(id: &str, excluded: &[String]) -> bool {
    excluded.iter().any(|e| e == id)
}

#[cfg(test)]
mod tests;
