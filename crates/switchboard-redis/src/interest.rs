//! This node's subscriptions, kept equal to what it holds: a hub's channel while it holds a
//! connection of the hub; a user's channel while it holds a connection of the user; a group's
//! channel while it holds a connection in the group, or a connection of a user who is a member
//! of it. The registry reports users and groups through
//! [`Sink`]; the membership log reports the groups whose members changed. One task owns the
//! subscriptions and applies changes in batches, each batch's `SUBSCRIBE` awaited before the
//! waits reported in it (a join's, a first connection's) resolve (G3).

use crate::Shared;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchboard_hub::{InterestKind, InterestSink, Settled, UserGroupReader, unix_now};
use tokio::sync::{mpsc, oneshot};

/// Changes applied together at most.
const BATCH: usize = 1024;
/// How long a subscription change may take before the waits it holds resolve anyway.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often every group subscription is checked again (memberships expire without an event).
const SWEEP: Duration = Duration::from_secs(30);
/// How soon a failed subscription change is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// On a Redis Cluster, how long after a resubscribe everything is subscribed once more: the
/// library repairs its node connections in the background after a failover, and a
/// subscription made on a connection it then replaces is lost without a word.
const CLUSTER_SETTLE: Duration = Duration::from_secs(3);

/// A change for the subscription task.
pub(crate) enum Event {
    /// The registry's report: this node gained (`present`) or lost its last connection of a
    /// user or in a group.
    Interest { hub: String, kind: InterestKind, name: String, present: bool },
    /// The members of a group changed (the membership log).
    Members { hub: String, group: String },
    /// Resolve once every change before it is subscribed.
    /// Answered with whether the subscriptions are all in place.
    Settle(oneshot::Sender<bool>),
    /// The connection was rebuilt: subscribe to everything again.
    Resubscribe,
    /// Every membership may have changed (a snapshot was loaded): check every group.
    Recheck,
    /// The node stops: unsubscribe from everything (confirmed), then end.
    Leave(oneshot::Sender<()>),
}

/// The registry's interest, turned into subscriptions.
pub(crate) struct Sink(pub(crate) Arc<Shared>);

impl InterestSink for Sink {
    fn report(&self, hub: &str, kind: InterestKind, name: &str, present: bool) {
        let event = Event::Interest { hub: hub.to_owned(), kind, name: name.to_owned(), present };
        let _ = self.0.subscriptions.send(event);
    }

    fn settled(&self) -> Settled {
        let shared = self.0.clone();
        Box::pin(async move { settled(&shared).await })
    }
}

/// Resolves once every subscription change reported so far is confirmed by Redis (`true`),
/// or could not be within the bound (`false`).
pub(crate) async fn settled(shared: &Shared) -> bool {
    let (done, settled) = oneshot::channel();
    if shared.subscriptions.send(Event::Settle(done)).is_err() {
        return false;
    }
    matches!(tokio::time::timeout(SUBSCRIBE_TIMEOUT * 2, settled).await, Ok(Ok(true)))
}

/// What the node holds, and what it is subscribed to.
#[derive(Default)]
struct State {
    /// hub → users with a connection here.
    users: HashMap<String, HashSet<String>>,
    /// (hub, group) with a connection here directly.
    groups: HashSet<(String, String)>,
    /// Hubs with a connection here.
    hubs: HashSet<String>,
    /// Channel → the (hub, group) it is for; subscribed group channels.
    group_channels: HashMap<String, (String, String)>,
    /// Every channel subscribed to, the fixed ones included.
    subscribed: HashSet<String>,
}

/// Owns the subscriptions. See the module docs. `ended`: sharded channels whose subscription
/// Redis ended (a slot moved); the ones still wanted are subscribed again.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<Event>,
    mut ended: mpsc::Receiver<crate::link::Ended>,
) {
    let mut state = State::default();
    let fixed = [shared.names.all(), shared.names.members(), shared.names.node(shared.node)];
    let mut batch = Vec::with_capacity(BATCH);
    let mut ended_batch = Vec::new();
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    // Set when subscribing failed: everything is subscribed again at the next retry tick.
    let mut failed = false;
    // When everything is subscribed once more after a resubscribe (a Cluster only).
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        let mut groups = HashSet::new();
        let mut users = HashSet::new();
        let mut resubscribe = first;
        let mut settling = false;
        tokio::select! {
            received = events.recv_many(&mut batch, BATCH) => if received == 0 { return },
            // The link keeps a sender: this queue closes only with the engine.
            received = ended.recv_many(&mut ended_batch, BATCH) => if received == 0 { return },
            _ = sweep.tick() => groups.extend(state.group_channels.values().cloned()),
            _ = retry.tick(), if failed => resubscribe = true,
            () = tokio::time::sleep_until(settle.unwrap_or_else(tokio::time::Instant::now)), if settle.is_some() => {
                (resubscribe, settling, settle) = (true, true, None);
            }
        }
        let mut waiting = Vec::new();
        let mut hubs = HashSet::new();
        for event in batch.drain(..) {
            match event {
                Event::Interest { hub, kind: InterestKind::User, name, present } => {
                    mark(state.users.entry(hub.clone()).or_default(), name.clone(), present);
                    for group in shared.mirror.groups_of(&hub, &name, unix_now()) {
                        groups.insert((hub.clone(), group));
                    }
                    users.insert((hub, name));
                }
                Event::Interest { hub, kind: InterestKind::Hub, present, .. } => {
                    mark(&mut state.hubs, hub.clone(), present);
                    hubs.insert(hub);
                }
                Event::Interest { hub, kind: InterestKind::Group, name, present } => {
                    mark(&mut state.groups, (hub.clone(), name.clone()), present);
                    groups.insert((hub, name));
                }
                // The engine routes connection calls to the owner node's channel.
                Event::Interest { kind: InterestKind::Connection, .. } => {}
                Event::Members { hub, group } => {
                    groups.insert((hub, group));
                }
                Event::Settle(done) => waiting.push(done),
                Event::Resubscribe => resubscribe = true,
                Event::Recheck => {
                    groups.extend(state.groups.iter().cloned());
                    groups.extend(state.group_channels.values().cloned());
                    for (hub, users) in &state.users {
                        for user in users {
                            let held = shared.mirror.groups_of(hub, user, unix_now());
                            groups.extend(held.into_iter().map(|group| (hub.clone(), group)));
                        }
                    }
                }
                Event::Leave(done) => {
                    let all: Vec<String> = state.subscribed.drain().collect();
                    let _ = tokio::time::timeout(SUBSCRIBE_TIMEOUT, shared.link.unsubscribe(&all)).await;
                    let _ = done.send(());
                    return;
                }
            }
        }
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for hub in hubs {
            let wanted = state.hubs.contains(&hub);
            change(&mut state, shared.names.hub(&hub), wanted, &mut add, &mut remove);
        }
        for (hub, user) in users {
            let wanted = state.users.get(&hub).is_some_and(|held| held.contains(&user));
            change(&mut state, shared.names.user(&hub, &user), wanted, &mut add, &mut remove);
        }
        for (hub, group) in groups {
            let wanted =
                state.groups.contains(&(hub.clone(), group.clone())) || has_member_here(&shared, &state, &hub, &group);
            let channel = shared.names.group(&hub, &group);
            if wanted {
                state.group_channels.insert(channel.clone(), (hub, group));
            } else {
                state.group_channels.remove(&channel);
            }
            change(&mut state, channel, wanted, &mut add, &mut remove);
        }
        if resubscribe {
            state.subscribed.extend(fixed.iter().cloned());
            add = state.subscribed.iter().cloned().collect();
        } else if !ended_batch.is_empty() {
            // Mostly the confirmations of this node's own unsubscribes: those are not wanted.
            let again: HashSet<String> = (ended_batch.iter())
                .filter_map(|channel| std::str::from_utf8(channel).ok())
                .filter(|channel| state.subscribed.contains(*channel) && !add.iter().any(|added| added == channel))
                .map(str::to_owned)
                .collect();
            if !again.is_empty() {
                tracing::info!(
                    channels = again.len(),
                    "Redis ended subscriptions (their slot moved); subscribing again"
                );
                add.extend(again);
            }
        }
        ended_batch.clear();
        let link = &shared.link;
        if !add.is_empty() {
            shared.stats.subscribes.fetch_add(add.len() as u64, Ordering::Relaxed);
            let subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, link.subscribe(&add)).await;
            // Only a full resubscribe that succeeded clears an earlier failure: a later batch of
            // new channels says nothing about the channels that failed before.
            match subscribed {
                Ok(Ok(())) if resubscribe => failed = false,
                Ok(Ok(())) => {}
                _ => failed = true,
            }
            match subscribed {
                Ok(Ok(())) if resubscribe && !first => {
                    shared.stats.resubscribes.fetch_add(1, Ordering::Relaxed);
                    if link.is_cluster() && !settling {
                        settle = Some(tokio::time::Instant::now() + CLUSTER_SETTLE);
                    }
                }
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, channels = add.len(), "subscribing failed; retrying"),
                Err(_) => tracing::warn!(channels = add.len(), "subscribing timed out; retrying"),
            }
        }
        if !remove.is_empty()
            && !matches!(tokio::time::timeout(SUBSCRIBE_TIMEOUT, link.unsubscribe(&remove)).await, Ok(Ok(())))
        {
            tracing::debug!(channels = remove.len(), "unsubscribing failed (a stray message is ignored)");
        }
        first = false;
        for done in waiting {
            let _ = done.send(!failed);
        }
    }
}

/// Adds `item` to `set` when `present`, removes it otherwise.
fn mark<T: Eq + std::hash::Hash>(set: &mut HashSet<T>, item: T, present: bool) {
    if present {
        set.insert(item);
    } else {
        set.remove(&item);
    }
}

/// Whether a user with a connection here is a member of `group`.
fn has_member_here(shared: &Shared, state: &State, hub: &str, group: &str) -> bool {
    let Some(held) = state.users.get(hub).filter(|held| !held.is_empty()) else { return false };
    let mut found = false;
    shared.mirror.for_each_user_in(hub, group, unix_now(), &mut |user| found |= held.contains(user));
    found
}

/// Records that `channel` should (not) be subscribed, and what to send Redis for it.
fn change(state: &mut State, channel: String, wanted: bool, add: &mut Vec<String>, remove: &mut Vec<String>) {
    if wanted && state.subscribed.insert(channel.clone()) {
        add.push(channel);
    } else if !wanted && state.subscribed.remove(&channel) {
        remove.push(channel);
    }
}
