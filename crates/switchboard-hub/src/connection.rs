//! A client connection as the hub sees it: identity, protocol and outbox.

use crate::broadcast_log::Reader;
use crate::metrics::Transport;
use crate::outbox::{CloseRequest, Outbox};
use base64::Engine;
use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use switchboard_protocol::Protocol;

/// Creates a connection id that names its owner node: 22 random base64url characters, a
/// `.`, then the node id. Connection-scoped calls route on the suffix without a lookup.
pub fn new_connection_id(node_id: u64) -> String {
    format!("{}.{node_id}", new_invocation_id())
}

/// 128 random bits, base64url: an id no client or server made before (a client-result
/// invocation's, and the random part of a connection id).
pub fn new_invocation_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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
    /// Client results awaited from this client, by invocation id (usually none).
    results: Mutex<Vec<(String, ResultWaiter)>>,
    /// Server-to-client streams the client opened and that have not ended: (invocation id,
    /// target). At most [`MAX_OPEN_STREAMS`].
    streams: Mutex<Vec<(String, String)>>,
}

/// How many streams one client may have open at once.
pub const MAX_OPEN_STREAMS: usize = 100;

/// Called once with a client's Completion frame (framed in its protocol), or `None` when the
/// connection went away (or the invocation could not be written) first.
pub type ResultWaiter = Box<dyn FnOnce(Option<bytes::Bytes>) + Send>;

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
            results: Mutex::new(Vec::new()),
            streams: Mutex::new(Vec::new()),
        }
    }

    /// Moves every queued frame and unread broadcast to the end of `out`, in order, and
    /// reports a pending close request. Returns the number of frames moved.
    pub fn drain(&self, out: &mut VecDeque<Bytes>) -> (usize, Option<CloseRequest>) {
        self.drain_with(|frame| out.push_back(frame.clone()))
    }

    /// Hands every queued frame and unread broadcast to `visit`, in order, and reports a
    /// pending close request; returns how many it handed. A writer that copies the frames
    /// into its output here touches no broadcast frame's reference count.
    pub fn drain_with(&self, visit: impl FnMut(&Bytes)) -> (usize, Option<CloseRequest>) {
        self.outbox.drain_with(Reader { protocol: self.protocol, id: &self.id }, visit)
    }

    /// Waits for the client's Completion of `invocation_id` (a client-result invocation).
    pub fn expect_result(&self, invocation_id: &str, waiter: ResultWaiter) {
        self.results.lock().push((invocation_id.to_owned(), waiter));
    }

    /// Hands the client's Completion of `invocation_id` (`None`: it will not come) to its
    /// waiter; whether one was waiting.
    pub fn complete_result(&self, invocation_id: &str, frame: Option<bytes::Bytes>) -> bool {
        let waiter = {
            let mut results = self.results.lock();
            let Some(at) = results.iter().position(|(id, _)| id == invocation_id) else { return false };
            results.swap_remove(at).1
        };
        waiter(frame);
        true
    }

    /// Stops waiting for `invocation_id` (the caller gave up).
    pub fn forget_result(&self, invocation_id: &str) {
        self.results.lock().retain(|(id, _)| id != invocation_id);
    }

    /// The connection-level groups it is in.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.lock().iter().map(|g| g.to_string()).collect()
    }

    /// Opens the server-to-client stream `invocation_id` (the client's StreamInvocation of
    /// `target`); false when that id is already open or too many are.
    pub fn open_stream(&self, invocation_id: &str, target: &str) -> bool {
        let mut streams = self.streams.lock();
        if streams.len() >= MAX_OPEN_STREAMS || streams.iter().any(|(id, _)| id == invocation_id) {
            return false;
        }
        streams.push((invocation_id.to_owned(), target.to_owned()));
        true
    }

    /// Whether the stream `invocation_id` is open.
    pub fn stream_is_open(&self, invocation_id: &str) -> bool {
        self.streams.lock().iter().any(|(id, _)| id == invocation_id)
    }

    /// Ends the stream `invocation_id`; its target, when it was open.
    pub fn end_stream(&self, invocation_id: &str) -> Option<String> {
        let mut streams = self.streams.lock();
        let at = streams.iter().position(|(id, _)| id == invocation_id)?;
        Some(streams.swap_remove(at).1)
    }

    /// Tells every waiter that no result will come (the connection is gone).
    pub(crate) fn abandon_results(&self) {
        let waiters = std::mem::take(&mut *self.results.lock());
        for (_, waiter) in waiters {
            waiter(None);
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

    #[test]
    fn streams_open_once_up_to_the_cap_and_end_once() {
        let conn = Connection::new("c.1", None, Protocol::Json, ConnectionInfo::default());
        assert!(conn.open_stream("s", "count"));
        assert!(!conn.open_stream("s", "count"), "an id already open");
        for i in 1..MAX_OPEN_STREAMS {
            assert!(conn.open_stream(&i.to_string(), "count"));
        }
        assert!(!conn.open_stream("one-too-many", "count"));
        assert!(conn.stream_is_open("s"));
        assert_eq!(conn.end_stream("s").as_deref(), Some("count"));
        assert_eq!(conn.end_stream("s"), None, "ends once");
        assert!(!conn.stream_is_open("s"));
        assert!(conn.open_stream("one-too-many", "count"), "room again");
    }
}
