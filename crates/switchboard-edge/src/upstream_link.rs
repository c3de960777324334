//! The edge's use of upstream, shared by every transport: open a connection's queue after the
//! handshake, route its invocations, report its end.

use crate::EdgeState;
use std::sync::Arc;
use switchboard_hub::Connection;
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

/// Hands a client invocation to upstream. Returns the error completion to write at once when
/// it cannot be queued (no upstream, or too many waiting); a non-blocking send gets nothing.
pub(crate) fn invoke(
    queue: Option<&UpstreamQueue>,
    protocol: Protocol,
    invocation_id: Option<String>,
    target: String,
    body: Vec<u8>,
) -> Option<Vec<u8>> {
    let error = match queue {
        Some(queue) => match queue.invoke(invocation_id.clone(), target, body) {
            Ok(()) => return None,
            Err(error) => error,
        },
        None => format!("No upstream is configured to handle '{target}'."),
    };
    let id = invocation_id?;
    let mut reply = Vec::new();
    protocol.encode_completion_error(&id, &error, &mut reply);
    Some(reply)
}
