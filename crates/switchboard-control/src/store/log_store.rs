//! [`LogStore`]: the raft log, vote, committed id and last purged id in redb.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase};
use serde::Serialize;

use super::{KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, LOG, META, last_value, read_value, run_blocking};
use crate::error::Result;
use crate::{NodeId, TypeConfig};

/// The raft log storage. Cloning is cheap (a database handle); clones serve as log readers for
/// openraft's replication tasks, which read concurrently with writes (redb is MVCC).
///
/// Writes are serialized by openraft (`&mut self`, one call at a time) and each call returns only
/// after its transaction committed, so vote and log IO never reorder.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }

    /// Encodes and writes `meta[key]` in one transaction with the given durability.
    async fn write_meta<T>(&self, key: &'static str, value: &T, durability: Durability) -> Result<()>
    where
        T: Serialize + ?Sized,
    {
        let bytes = rmp_serde::to_vec(value)?;
        let db = self.db.clone();
        run_blocking(move || {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn read_meta<T>(&self, key: &'static str) -> Result<Option<T>>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let db = self.db.clone();
        run_blocking(move || read_value(&db, META, key)).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let bounds: (Bound<u64>, Bound<u64>) = (range.start_bound().cloned(), range.end_bound().cloned());
        let db = self.db.clone();
        let entries = run_blocking(move || {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOG)?;
            let mut entries = Vec::new();
            for item in table.range::<u64>(bounds)? {
                let (_, value) = item?;
                entries.push(rmp_serde::from_slice(value.value())?);
            }
            Ok(entries)
        })
        .await;
        entries.map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let db = self.db.clone();
        let state = run_blocking(move || {
            let txn = db.begin_read()?;
            let last: Option<Entry<TypeConfig>> = last_value(&txn.open_table(LOG)?)?;
            let last_purged: Option<LogId<NodeId>> = match txn.open_table(META)?.get(KEY_LAST_PURGED)? {
                Some(value) => Some(rmp_serde::from_slice(value.value())?),
                None => None,
            };
            Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.map(|e| e.log_id).or(last_purged) })
        })
        .await;
        state.map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_VOTE, vote, Durability::Immediate).await.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(KEY_VOTE).await.map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// Not fsynced: it becomes durable with the next append, and a stale value after a crash
    /// only means re-applying fewer entries at start (the leader re-sends the commit index).
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_COMMITTED, &committed, Durability::None).await.map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed: Option<Option<LogId<NodeId>>> =
            self.read_meta(KEY_COMMITTED).await.map_err(|e| StorageIOError::read(&e))?;
        Ok(committed.flatten())
    }

    /// Writes the entries in one durable transaction, then reports them flushed.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let db = self.db.clone();
        let written = run_blocking(move || {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOG)?;
                for entry in &entries {
                    table.insert(entry.log_id.index, rmp_serde::to_vec(entry)?.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await;
        written.map_err(|e| StorageIOError::write_logs(&e))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    /// Deletes entries with index ≥ `log_id.index`.
    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let db = self.db.clone();
        let truncated = run_blocking(move || {
            let txn = db.begin_write()?;
            txn.open_table(LOG)?.retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await;
        truncated.map_err(|e| StorageIOError::write_logs(&e).into())
    }

    /// Records `log_id` as last purged and deletes entries with index ≤ `log_id.index`, in one
    /// transaction.
    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let db = self.db.clone();
        let purged = run_blocking(move || {
            let bytes = rmp_serde::to_vec(&log_id)?;
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(KEY_LAST_PURGED, bytes.as_slice())?;
            txn.open_table(LOG)?.retain_in(..=log_id.index, |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await;
        purged.map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
