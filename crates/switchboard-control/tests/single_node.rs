//! A one-voter raft over the redb store: writes become readable from `ControlState`, and after a
//! restart on the same directory memberships survive (G6) and the node leads again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config};
use switchboard_control::network::NoPeers;
use switchboard_control::{
    Command, Error, InterestChange, InterestKind, LogStore, Raft, Roles, SharedState, StateMachineStore, open_store,
};

const NODE: u64 = 1;
const NOW: u64 = 1_700_000_000;
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));

fn add(user: &str, group: &str, expires_at: Option<u64>) -> Command {
    Command::AddUserToGroup { hub: "chat".into(), user: user.into(), group: group.into(), expires_at, at: NOW }
}

/// Opens the store, retrying while the previous instance's last handles are still being dropped.
async fn open_retrying(dir: &Path) -> (LogStore, StateMachineStore) {
    for _ in 0..100 {
        match open_store(dir).await {
            Ok(stores) => return stores,
            Err(Error::Storage(redb::Error::DatabaseAlreadyOpen)) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("open store: {e}"),
        }
    }
    panic!("database still open after 2 s");
}

async fn start(dir: &Path) -> (Raft, SharedState) {
    let config = Config {
        cluster_name: "single-node-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    }
    .validate()
    .expect("valid config");
    let (log_store, state_machine) = open_retrying(dir).await;
    let state = state_machine.state();
    let raft = Raft::new(NODE, Arc::new(config), NoPeers, log_store, state_machine).await.expect("raft starts");
    (raft, state)
}

async fn wait_for_leadership(raft: &Raft) {
    raft.wait(TIMEOUT).metrics(|m| m.current_leader == Some(NODE), "node leads").await.expect("leader elected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_apply_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");

    // Phase 1: initialize, write a batch, read it back.
    let (raft, state) = start(dir.path()).await;
    raft.initialize(BTreeMap::from([(NODE, BasicNode::new("127.0.0.1:7000"))])).await.expect("initialize");
    wait_for_leadership(&raft).await;

    let batch = Command::Batch(vec![
        Command::RegisterNode {
            node: NODE,
            roles: Roles { control: true, edge: true },
            advertise: "127.0.0.1:7000".into(),
            lease_until: 5_000,
            http: String::new(),
        },
        add("alice", "devs", None),
        add("alice", "ops", Some(NOW + 60)),
        add("bob", "devs", None),
        Command::Interest {
            node: NODE,
            changes: vec![InterestChange {
                hub: "chat".into(),
                kind: InterestKind::User,
                name: "bob".into(),
                present: true,
            }],
        },
    ]);
    let written = raft.client_write(batch).await.expect("batch committed");
    assert_eq!(written.data.changed, 5);
    {
        let state = state.read();
        assert!(state.is_member("chat", "alice", "devs", NOW));
        assert!(state.is_member("chat", "alice", "ops", NOW + 59));
        assert!(!state.is_member("chat", "alice", "ops", NOW + 60));
        assert_eq!(state.nodes_for_group("chat", "devs", NOW).into_iter().collect::<Vec<_>>(), [NODE]);
    }

    // Phase 2: snapshot, then more writes that only the log holds.
    raft.trigger().snapshot().await.expect("trigger snapshot");
    let snapshot_index = written.log_id.index;
    raft.wait(TIMEOUT)
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= snapshot_index), "snapshot built")
        .await
        .expect("snapshot built");
    raft.client_write(add("carol", "devs", None)).await.expect("write after snapshot");
    let removed = raft
        .client_write(Command::RemoveUserFromGroup { hub: "chat".into(), user: "bob".into(), group: "devs".into() })
        .await
        .expect("remove committed");
    assert_eq!(removed.data.changed, 1);
    let last_index = removed.log_id.index;

    raft.shutdown().await.expect("shutdown");
    drop(raft);
    drop(state);

    // Phase 3: reopening loads the snapshot, which predates carol and bob's removal.
    let (log_store, state_machine) = open_retrying(dir.path()).await;
    {
        let state = state_machine.state();
        let state = state.read();
        let mut members: Vec<&str> = state.users_in("chat", "devs", NOW).collect();
        members.sort_unstable();
        assert_eq!(members, ["alice", "bob"], "state as of the snapshot");
    }
    drop((log_store, state_machine));

    // Phase 4: raft restarts, leads again and re-applies the log after the snapshot.
    let (raft, state) = start(dir.path()).await;
    wait_for_leadership(&raft).await;
    raft.wait(TIMEOUT).applied_index_at_least(Some(last_index), "log re-applied").await.expect("log re-applied");
    {
        let state = state.read();
        let mut members: Vec<&str> = state.users_in("chat", "devs", NOW).collect();
        members.sort_unstable();
        assert_eq!(members, ["alice", "carol"]);
        assert!(state.is_member("chat", "alice", "ops", NOW));
        assert_eq!(state.nodes()[&NODE].lease_until, 5_000);
        assert_eq!(state.nodes_for_user("chat", "bob").iter().copied().collect::<Vec<_>>(), [NODE]);
    }

    // The restarted node still accepts writes.
    let written = raft.client_write(add("dave", "ops", None)).await.expect("write after restart");
    assert!(written.log_id.index > last_index);
    assert!(state.read().is_member("chat", "dave", "ops", NOW));
    raft.shutdown().await.expect("shutdown");
}
