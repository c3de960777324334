//! redb-backed storage for openraft: the [`LogStore`] and the [`StateMachineStore`], sharing
//! one database file.
//!
//! Tables:
//! * `log`: log index → MessagePack `Entry`;
//! * `meta`: `vote`, `committed`, `last_purged` → MessagePack values;
//! * `snapshot`: `meta` → MessagePack `SnapshotMeta`, `data` → the encoded `ControlState`,
//!   always written together in one transaction.
//!
//! Every call runs one short transaction on tokio's blocking pool (see the crate docs).

mod log_store;
mod state_machine;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub use log_store::LogStore;
pub use state_machine::{SnapshotBuilder, StateMachineStore};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "control.redb";

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_LAST_PURGED: &str = "last_purged";
pub(crate) const KEY_SNAPSHOT_META: &str = "meta";
pub(crate) const KEY_SNAPSHOT_DATA: &str = "data";

/// Opens (or creates) the control-plane database in `dir` and returns the two openraft storage
/// halves. The state machine starts from the stored snapshot, if any; openraft then re-applies
/// the committed log after it.
///
/// The database is locked while any handle lives: drop the `Raft` (after `shutdown`) and every
/// store handle before opening the same directory again in the same process. openraft's tasks
/// may release their handles a few milliseconds after `shutdown` returns; until then this fails
/// with `redb::Error::DatabaseAlreadyOpen` (retry).
pub async fn open_store(dir: impl AsRef<Path>) -> Result<(LogStore, StateMachineStore)> {
    let path = dir.as_ref().join(DB_FILE);
    let dir = dir.as_ref().to_owned();
    let db = run_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let db = create_when_free(&path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.open_table(SNAPSHOT)?;
        txn.commit()?;
        Ok(db)
    })
    .await?;
    let db = Arc::new(db);
    let state_machine = StateMachineStore::load(db.clone()).await?;
    Ok((LogStore::new(db), state_machine))
}

/// Opens the database file, waiting (bounded) while another handle in this process still holds
/// it: a node stopped in-process releases its storage a moment after raft stopped.
fn create_when_free(path: &Path) -> Result<Database> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Database::create(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return Ok(result?),
        }
    }
}

/// Runs a storage call on tokio's blocking pool, so fsyncs never stall the async workers.
pub(crate) async fn run_blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::Cancelled),
    }
}

/// Reads and decodes `key` from `table` in a fresh read transaction.
pub(crate) fn read_value<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>> {
    let txn = db.begin_read()?;
    let table = txn.open_table(table)?;
    let Some(value) = table.get(key)? else { return Ok(None) };
    Ok(Some(rmp_serde::from_slice(value.value())?))
}

/// Returns the decoded last entry of `table`, if any.
pub(crate) fn last_value<T: DeserializeOwned>(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<Option<T>> {
    let Some((_, value)) = table.last()? else { return Ok(None) };
    Ok(Some(rmp_serde::from_slice(value.value())?))
}
