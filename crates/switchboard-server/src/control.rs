//! The embedded control plane of a single node: a one-voter raft log and state machine kept in
//! `<data dir>/raft`, so user-group memberships survive restarts (G6). Memberships are written
//! through raft and answered only once applied; reads go to the applied state.

use anyhow::Context;
use openraft::{BasicNode, Config};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use switchboard_control::network::NoPeers;
use switchboard_control::{Command, Raft, SharedState, open_store};
use switchboard_hub::{MembershipFuture, UserGroupReader, UserGroupWriter, unix_now};

/// The node id of the embedded single node.
const NODE_ID: u64 = 1;

/// A running raft group and its applied state.
#[derive(Clone)]
pub struct ControlPlane {
    raft: Raft,
    state: SharedState,
}

impl ControlPlane {
    /// Opens (or creates) the raft data under `data_dir` and waits until this node leads.
    pub async fn start_single(data_dir: &Path, advertise: &str) -> anyhow::Result<ControlPlane> {
        let config = Config {
            cluster_name: "switchboard".into(),
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            ..Default::default()
        }
        .validate()
        .context("invalid raft config")?;
        let (log_store, state_machine) = open_store(data_dir.join("raft"))
            .await
            .with_context(|| format!("cannot open the raft data in {}", data_dir.display()))?;
        let state = state_machine.state();
        let raft = Raft::new(NODE_ID, Arc::new(config), NoPeers, log_store, state_machine)
            .await
            .context("raft did not start")?;
        // Already initialized on a restart: the error is expected then.
        let _ = raft.initialize(BTreeMap::from([(NODE_ID, BasicNode::new(advertise))])).await;
        raft.wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.current_leader == Some(NODE_ID), "the node leads its raft group")
            .await
            .context("raft elected no leader")?;
        Ok(ControlPlane { raft, state })
    }

    /// Proposes a command; resolves once it is committed and applied.
    pub async fn write(&self, command: Command) -> Result<(), String> {
        self.raft.client_write(command).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Stops raft (the log is already durable).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    /// Drops expired memberships now and then, so the state does not grow without bound.
    pub async fn purge_expired_forever(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            if let Err(error) = self.write(Command::PurgeExpired { now: unix_now() }).await {
                tracing::warn!(%error, "purging expired memberships failed");
            }
        }
    }
}

impl UserGroupReader for ControlPlane {
    fn is_member(&self, hub: &str, user: &str, group: &str, now: u64) -> bool {
        self.state.read().is_member(hub, user, group, now)
    }

    fn for_each_user_in(&self, hub: &str, group: &str, now: u64, f: &mut dyn FnMut(&str)) {
        self.state.read().users_in(hub, group, now).for_each(f);
    }
}

impl UserGroupWriter for ControlPlane {
    fn add(&self, hub: &str, user: &str, group: &str, ttl_secs: Option<u64>) -> MembershipFuture {
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

    fn remove(&self, hub: &str, user: &str, group: &str) -> MembershipFuture {
        let command = Command::RemoveUserFromGroup { hub: hub.into(), user: user.into(), group: group.into() };
        let this = self.clone();
        Box::pin(async move { this.write(command).await })
    }

    fn remove_user(&self, hub: &str, user: &str) -> MembershipFuture {
        let command = Command::RemoveUserFromAllGroups { hub: hub.into(), user: user.into() };
        let this = self.clone();
        Box::pin(async move { this.write(command).await })
    }
}
