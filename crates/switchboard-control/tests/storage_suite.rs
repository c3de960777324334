//! openraft's storage conformance suite against the redb store, one temp directory per case.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use switchboard_control::{LogStore, NodeId, StateMachineStore, TypeConfig, open_store};
use tempfile::TempDir;

/// Builds a store in a fresh temp directory; the directory is the guard, removed on drop.
struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = TempDir::new().expect("temp dir");
        let (log_store, state_machine) = open_store(dir.path()).await.expect("open store");
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn redb_store_passes_the_openraft_suite() {
    // The suite sleeps 1 s after each of its 8 purge cases, so this takes about 8-10 s.
    if let Err(e) = Suite::test_all(RedbBuilder) {
        panic!("storage suite failed: {e}");
    }
}
