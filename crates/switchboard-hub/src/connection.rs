//! A client connection as the hub sees it: identity, protocol and outbox.

use crate::metrics::Transport;
use crate::outbox::Outbox;
use base64::Engine;
use parking_lot::Mutex;
use rand::Rng;
use std::sync::Arc;
use switchboard_protocol::Protocol;

/// Creates a connection id that names its owner node: 22 random base64url characters, a
/// `.`, then the node id. Connection-scoped calls route on the suffix without a lookup.
pub fn new_connection_id(node_id: u64) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    let random = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!("{random}.{node_id}")
}

/// The node that owns `connection_id`, or `None` when the id was not made by [`new_connection_id`].
pub fn owner_of(connection_id: &str) -> Option<u64> {
    connection_id.rsplit_once('.')?.1.parse().ok()
}

/// What the node remembers about a connection beyond routing, for upstream calls and logs.
/// Boxed behind the connection so routing-only paths stay small.
#[derive(Debug, Default, Clone)]
pub struct ConnectionInfo {
    /// Claims of the access token, `(type, value)`.
    pub claims: Vec<(String, String)>,
    /// The query string the client connected with, access token removed.
    pub query: String,
}

/// See the module docs. Shared between the hub (routing) and the transport task (I/O).
pub struct Connection {
    pub id: Arc<str>,
    pub user_id: Option<Arc<str>>,
    pub protocol: Protocol,
    pub transport: Transport,
    pub outbox: Outbox,
    pub info: Box<ConnectionInfo>,
    /// Connection-level groups, so leaving every group on disconnect needs no scan.
    pub(crate) groups: Mutex<Vec<Arc<str>>>,
}

impl Connection {
    pub fn new(id: impl Into<Arc<str>>, user_id: Option<&str>, protocol: Protocol, info: ConnectionInfo) -> Self {
        Self {
            id: id.into(),
            user_id: user_id.map(Arc::from),
            protocol,
            transport: Transport::WebSockets,
            outbox: Outbox::default(),
            info: Box::new(info),
            groups: Mutex::new(Vec::new()),
        }
    }
}

impl Connection {
    /// The connection, over `transport` (WebSockets when not set).
    pub fn over(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_owner() {
        let id = new_connection_id(42);
        assert_eq!(owner_of(&id), Some(42));
        assert_eq!(id.len(), 22 + 3);
        assert_ne!(new_connection_id(1), new_connection_id(1));
        assert_eq!(owner_of("plain"), None);
    }
}
