//! [`StateMachineStore`]: applies committed entries to the shared in-memory [`ControlState`] and
//! keeps the current snapshot in redb.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use redb::{Database, ReadableDatabase};

use super::{KEY_SNAPSHOT_DATA, KEY_SNAPSHOT_META, SNAPSHOT, run_blocking};
use crate::error::{Error, Result};
use crate::{ControlState, NodeId, Response, SharedState, TypeConfig};

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// The raft state machine. Applying only touches memory; durability comes from the log plus
/// snapshots (see the crate docs).
#[derive(Debug)]
pub struct StateMachineStore {
    db: Arc<Database>,
    /// The applied state, shared with readers.
    state: SharedState,
    /// Last applied log id; openraft re-applies the committed log after it on start.
    last_applied: Option<LogId<NodeId>>,
    /// Last applied raft membership config.
    membership: StoredMembership<NodeId, BasicNode>,
}

impl StateMachineStore {
    /// Starts from the snapshot stored in `db`, or from an empty state.
    pub(crate) async fn load(db: Arc<Database>) -> Result<Self> {
        let reader = db.clone();
        let snapshot = run_blocking(move || read_snapshot(&reader)).await?;
        let mut store = StateMachineStore {
            db,
            state: SharedState::default(),
            last_applied: None,
            membership: StoredMembership::default(),
        };
        if let Some((meta, data)) = snapshot {
            *store.state.write() = ControlState::decode(&data)?;
            store.last_applied = meta.last_log_id;
            store.membership = meta.last_membership;
        }
        Ok(store)
    }

    /// Returns the handle readers use to query the applied state.
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }
}

/// Reads the stored snapshot's meta and state bytes.
fn read_snapshot(db: &Database) -> Result<Option<(Meta, Vec<u8>)>> {
    let txn = db.begin_read()?;
    let table = txn.open_table(SNAPSHOT)?;
    let Some(meta) = table.get(KEY_SNAPSHOT_META)? else { return Ok(None) };
    let meta: Meta = rmp_serde::from_slice(meta.value())?;
    let data = table.get(KEY_SNAPSHOT_DATA)?.map(|v| v.value().to_vec()).unwrap_or_default();
    Ok(Some((meta, data)))
}

/// Replaces the stored snapshot durably (meta and data in one transaction).
fn write_snapshot(db: &Database, meta: &Meta, data: &[u8]) -> Result<()> {
    let meta = rmp_serde::to_vec(meta)?;
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(SNAPSHOT)?;
        table.insert(KEY_SNAPSHOT_META, meta.as_slice())?;
        table.insert(KEY_SNAPSHOT_DATA, data)?;
    }
    txn.commit()?;
    Ok(())
}

/// Builds a snapshot from state bytes captured when openraft asked for the builder, so the
/// snapshot matches `last_applied` even though applying carries on meanwhile.
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: Arc<Database>,
    meta: Meta,
    data: Result<Vec<u8>, Error>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data =
            std::mem::replace(&mut self.data, Ok(Vec::new())).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let (db, meta) = (self.db.clone(), self.meta.clone());
        let data = run_blocking(move || write_snapshot(&db, &meta, &data).map(|()| data))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(self.meta.signature()), &e))?;
        Ok(Snapshot { meta: self.meta.clone(), snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut state = self.state.write();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(command) => Response { changed: state.apply(command) },
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::default()
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Encoding is O(state), so it runs on the blocking pool; awaiting it here keeps apply
        // (same task) from moving the state on meanwhile.
        let state = self.state.clone();
        let data = run_blocking(move || Ok(state.read().encode()?)).await;
        let index = self.last_applied.map_or(0, |id| id.index);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{index}-{nanos:x}"),
        };
        SnapshotBuilder { db: self.db.clone(), meta, data }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Decodes, stores durably, then swaps the in-memory state.
    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let (db, stored_meta) = (self.db.clone(), meta.clone());
        let state = run_blocking(move || {
            let state = ControlState::decode(&data)?;
            write_snapshot(&db, &stored_meta, &data)?;
            Ok(state)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *self.state.write() = state;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let db = self.db.clone();
        let snapshot =
            run_blocking(move || read_snapshot(&db)).await.map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(snapshot.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
