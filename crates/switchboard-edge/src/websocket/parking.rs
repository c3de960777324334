//! Stateful reconnect's parking: a socket lost without a close leaves its connection parked (in
//! the hub, its outbox filling) until the client comes back with the same id or the reconnect
//! window passes.

use crate::EdgeState;
use crate::session::Session;
use crate::stateful::ReplayBuffer;
use std::sync::Arc;
use std::time::Duration;
use switchboard_hub::{Connection, Disconnect, Hub};
use switchboard_upstream::UpstreamQueue;
use tokio::time::Instant;

/// A stateful connection whose socket was lost, waiting for the client to come back.
pub(crate) struct Parked {
    pub(super) session: Session,
    pub(super) replay: ReplayBuffer,
    pub(super) conn: Arc<Connection>,
    pub(super) upstream: Option<UpstreamQueue>,
    pub(super) hub: Arc<Hub>,
    pub(super) user_id: Option<String>,
    pub(super) token_expiry: u64,
    pub(super) generation: u64,
}

impl EdgeState {
    /// Keeps a lost stateful connection until it resumes or the reconnect window passes.
    pub(super) fn park(self: &Arc<Self>, mut parked: Parked) {
        let id = parked.conn.id.clone();
        parked.generation = self.park_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let generation = parked.generation;
        self.parked.lock().insert(id.clone(), parked);
        let state = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(state.config.reconnect_window).await;
            let expired = {
                let mut parked = state.parked.lock();
                match parked.get(&id) {
                    Some(p) if p.generation == generation => parked.remove(&id),
                    _ => None,
                }
            };
            if let Some(parked) = expired {
                parked.hub.remove_connection(&id);
                parked.hub.connection_ended(&id, Disconnect::Lost, Some("did not reconnect in time"));
                if let Some(upstream) = parked.upstream {
                    upstream.disconnected(Some("The connection was lost and did not reconnect in time.".into()));
                }
                state.remember_ended(id.clone(), parked.token_expiry);
                tracing::debug!(connection_id = %id, "stateful connection not resumed in time");
            }
        });
    }

    /// Takes a parked connection. A client may come back before its old socket's loss is
    /// noticed here, so a connection that is still live gets a short grace to park.
    pub(super) async fn take_parked_soon(&self, connection_id: &str, hub: &str) -> Option<Parked> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(parked) = self.parked.lock().remove(connection_id) {
                return Some(parked);
            }
            let live = self.registry.get(hub).is_some_and(|h| h.connection(connection_id).is_some())
                && !self.http_connections.lock().contains_key(connection_id);
            if !live || Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
