//! [`InterestReporter`]: reports this node's routing interest to the raft group, batched (the
//! raft engine's side of the hub's [`InterestSink`]).
//!
//! Hubs report changes (in order, never blocking) into a queue; one task proposes what queued
//! up as one `Interest` command through [`ControlPlane::write`], whose apply barrier means that
//! once it returns, every live node routes accordingly. [`InterestSink::settled`] waits for that
//! point, which is how a group add or a user's first connection here answers only once sends
//! from any node will find it.
//!
//! If the cluster forgot this node (its lease ran out while it was cut off), the task registers
//! it again and reports its whole interest anew.

use crate::plane::ControlPlane;
use crate::{Command, InterestChange};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchboard_hub::{InterestKind, InterestSink, Registry, Settled};
use tokio::sync::{mpsc, watch};

/// The longest [`InterestSink::settled`] waits: a partitioned cluster must not hang callers.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the task checks that the cluster still knows this node.
const REGISTRATION_CHECK: Duration = Duration::from_secs(2);
/// How often a node checks whether its lease lapsed (see [`close_clients_while_lapsed`]).
const LAPSE_CHECK: Duration = Duration::from_millis(250);

/// Closes every client of this node (telling it to reconnect) whenever the node's lease has
/// lapsed, until it renews: the cluster may have stopped routing to this node, and a client
/// left connected would silently miss sends that other nodes answered 202. Runs until the
/// node stops.
pub async fn close_clients_while_lapsed(control: ControlPlane, registry: Arc<Registry>) {
    let request = switchboard_hub::CloseRequest {
        error: Some("This node lost contact with the cluster; reconnect.".into()),
        allow_reconnect: true,
    };
    let mut lapsed = false;
    let mut check = tokio::time::interval(LAPSE_CHECK);
    loop {
        check.tick().await;
        let now = control.lease_lapsed();
        if now && !lapsed {
            tracing::warn!("this node's cluster lease lapsed; closing its clients until it renews");
        } else if lapsed && !now {
            tracing::info!("this node's cluster lease is renewed; accepting clients again");
        }
        lapsed = now;
        if lapsed {
            for hub in registry.hubs() {
                hub.close_all(&[], &request);
            }
        }
    }
}
/// Most changes in one proposal.
const MAX_CHANGES: usize = 4096;

type Change = (u64, String, InterestKind, String, bool);

/// See the module docs. Cheap to share.
pub struct InterestReporter {
    queue: mpsc::UnboundedSender<Change>,
    /// Sequence number of the last reported change.
    reported: AtomicU64,
    /// Sequence number up to which changes are applied everywhere.
    applied: watch::Sender<u64>,
}

impl InterestReporter {
    /// The reporter and the receiving end its task ([`InterestReporter::run`]) consumes.
    pub fn new() -> (Arc<InterestReporter>, mpsc::UnboundedReceiver<Change>) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let reporter = InterestReporter { queue, reported: AtomicU64::new(0), applied: watch::Sender::new(0) };
        (Arc::new(reporter), receiver)
    }

    /// Proposes queued changes until the node stops.
    pub async fn run(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<Change>,
        control: ControlPlane,
        registry: Arc<Registry>,
    ) {
        let mut batch = Vec::new();
        let mut check = tokio::time::interval(REGISTRATION_CHECK);
        loop {
            tokio::select! {
                received = queue.recv_many(&mut batch, MAX_CHANGES) => if received == 0 { return },
                _ = check.tick() => {
                    if control.register_again_if_forgotten().await {
                        self.report_everything(&registry);
                    }
                    continue;
                }
            }
            let last = batch.last().map_or(0, |change| change.0);
            let changes = coalesce(batch.drain(..));
            // Retry until it is in: dropping interest changes would misroute sends for good.
            let mut delay = Duration::from_millis(50);
            loop {
                let command = Command::Interest { node: control.node_id(), changes: changes.clone() };
                match control.write(command).await {
                    Ok(()) => break,
                    Err(switchboard_engine::EngineError::ShuttingDown) => return,
                    Err(error) => {
                        tracing::warn!(%error, "could not report routing interest; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            }
            self.applied.send_replace(last);
        }
    }

    /// Queues every current user and group of the node as present.
    fn report_everything(&self, registry: &Registry) {
        let snapshot = registry.interest_snapshot();
        tracing::info!(entries = snapshot.len(), "reporting the node's routing interest again");
        for (hub, kind, name) in snapshot.into_iter().filter(|(_, kind, _)| *kind != InterestKind::Hub) {
            self.report(&hub, kind, &name, true);
        }
    }
}

/// Keeps the last change of every (hub, kind, name), in first-seen order.
fn coalesce(changes: impl Iterator<Item = Change>) -> Vec<InterestChange> {
    let mut index: HashMap<(String, InterestKind, String), usize> = HashMap::new();
    let mut out: Vec<InterestChange> = Vec::new();
    for (_, hub, kind, name, present) in changes {
        match index.entry((hub, kind, name)) {
            Entry::Occupied(seen) => out[*seen.get()].present = present,
            Entry::Vacant(new) => {
                let (hub, kind, name) = new.key().clone();
                new.insert(out.len());
                out.push(InterestChange { hub, kind, name, present });
            }
        }
    }
    out
}

impl InterestSink for InterestReporter {
    fn report(&self, hub: &str, kind: InterestKind, name: &str, present: bool) {
        // Broadcasts go to every node: hub interest is not routed (nor written to the log).
        if kind == InterestKind::Hub {
            return;
        }
        let sequence = self.reported.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.queue.send((sequence, hub.to_owned(), kind, name.to_owned(), present));
    }

    fn settled(&self) -> Settled {
        let target = self.reported.load(Ordering::SeqCst);
        let mut applied = self.applied.subscribe();
        Box::pin(async move {
            let reached = tokio::time::timeout(SETTLE_TIMEOUT, applied.wait_for(|at| *at >= target)).await;
            let settled = matches!(reached, Ok(Ok(_)));
            if !settled {
                tracing::warn!("routing interest not applied everywhere within 5 s; refusing what waited on it");
            }
            settled
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_change_of_a_name_wins_in_first_seen_order() {
        let change =
            |n: u64, name: &str, present: bool| (n, "h".to_owned(), InterestKind::User, name.to_owned(), present);
        let group = (4, "h".to_owned(), InterestKind::Group, "a".to_owned(), true);
        let out = coalesce(
            [change(1, "a", true), change(2, "b", true), change(3, "a", false), group, change(5, "a", true)]
                .into_iter(),
        );
        let summary: Vec<(&str, bool)> = out.iter().map(|c| (c.name.as_str(), c.present)).collect();
        assert_eq!(summary, [("a", true), ("b", true), ("a", true)]);
        assert_eq!(out[2].kind, InterestKind::Group);
    }
}
