//! [`EdgeConfig`]: the client endpoint's settings and their defaults.

use std::time::Duration;

/// Client-endpoint settings. Defaults are those of ASP.NET Core SignalR and Azure.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// This node's id, encoded in every connection id it creates.
    pub node_id: u64,
    /// Connections one user may hold on this node; another is refused with 429 (0: no cap).
    pub max_connections_per_user: usize,
    /// Hub messages a connection may send per second (bursts up to as many); past it the
    /// connection is closed with an error saying so (0: no cap).
    pub max_messages_per_second: u32,
    /// Send a Ping when nothing was sent for this long.
    pub keep_alive: Duration,
    /// Close a connection that sent nothing for this long.
    pub client_timeout: Duration,
    /// Close a connection that has not completed the handshake after this long.
    pub handshake_timeout: Duration,
    /// Largest message a client may send (WebSocket message or hub record).
    pub max_message_size: usize,
    /// How long a negotiated connection token may be used to open its connection.
    pub connect_window: Duration,
    /// Browser origins allowed to call the client endpoint; `None` allows every origin.
    pub allowed_origins: Option<Vec<String>>,
    /// Whether clients that ask for stateful reconnect get it.
    pub stateful_reconnect: bool,
    /// Bytes of unacknowledged messages kept per stateful connection.
    pub replay_buffer_bytes: usize,
    /// How long a stateful connection whose socket was lost waits for the client to return.
    pub reconnect_window: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            max_connections_per_user: 0,
            max_messages_per_second: 0,
            node_id: 1,
            keep_alive: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            max_message_size: 1 << 20,
            connect_window: Duration::from_secs(120),
            allowed_origins: None,
            stateful_reconnect: true,
            replay_buffer_bytes: crate::stateful::DEFAULT_BUFFER_BYTES,
            reconnect_window: Duration::from_secs(30),
        }
    }
}

impl EdgeConfig {
    /// Whether a browser page at `origin` may use the endpoint.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        match &self.allowed_origins {
            None => true,
            Some(list) => list.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)),
        }
    }
}
