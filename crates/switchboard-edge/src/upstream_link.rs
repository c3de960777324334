//! The edge's use of upstream, shared by every transport: open a connection's queue after the
//! handshake, route its invocations, report its end.

use crate::EdgeState;
use std::sync::Arc;
use switchboard_hub::{Connection, MAX_OPEN_STREAMS};
use switchboard_protocol::Protocol;
use switchboard_upstream::{ConnectionContext, UpstreamQueue};

/// Opens the upstream queue of a newly connected client (announcing `connected`), when
/// upstream is configured.
pub(crate) fn open(state: &EdgeState, hub: &str, conn: &Arc<Connection>) -> Option<UpstreamQueue> {
    if !state.upstream.is_enabled() {
        return None;
    }
    let context = ConnectionContext {
        connection_id: conn.id.clone(),
        hub: hub.to_owned(),
        user_id: conn.user_id.as_deref().map(str::to_owned),
        claims: conn.info.claims.clone(),
        query: conn.info.query.clone(),
        protocol: conn.protocol,
    };
    Some(state.upstream.open(context, conn.clone()))
}

/// Hands a client invocation to upstream (a streaming one opens its stream on `conn` first).
/// Returns the error completion to write at once when it cannot be queued (no upstream, too
/// many waiting, a stream id already open); a non-blocking send gets nothing.
pub(crate) fn invoke(
    queue: Option<&UpstreamQueue>,
    conn: Option<&Connection>,
    protocol: Protocol,
    invocation_id: Option<String>,
    target: String,
    body: Vec<u8>,
    streaming: bool,
) -> Option<Vec<u8>> {
    let error = match (queue, conn) {
        (None, _) | (_, None) => format!("No upstream is configured to handle '{target}'."),
        (Some(queue), Some(conn)) if streaming => {
            let id = invocation_id.clone()?;
            if !conn.open_stream(&id, &target) {
                format!("Stream '{id}' is already open, or {MAX_OPEN_STREAMS} streams are.")
            } else {
                match queue.stream(id.clone(), target, body) {
                    Ok(()) => return None,
                    Err(error) => {
                        conn.end_stream(&id);
                        error
                    }
                }
            }
        }
        (Some(queue), Some(_)) => match queue.invoke(invocation_id.clone(), target, body) {
            Ok(()) => return None,
            Err(error) => error,
        },
    };
    let id = invocation_id?;
    let mut reply = Vec::new();
    protocol.encode_completion_error(&id, &error, &mut reply);
    Some(reply)
}

/// The client cancelled a stream: it ends here, and upstream is told (the CancelInvocation
/// `body` goes where the stream's invocation went) so the app stops feeding it.
pub(crate) fn cancel(queue: Option<&UpstreamQueue>, conn: Option<&Connection>, invocation_id: &str, body: Vec<u8>) {
    let Some(target) = conn.and_then(|conn| conn.end_stream(invocation_id)) else { return };
    if let Some(queue) = queue {
        let _ = queue.invoke(None, target, body);
    }
}
