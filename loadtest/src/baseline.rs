//! The baseline: the least a server must do to deliver over WebSockets. It accepts upgrades
//! without auth, routing or hub protocol, and `POST /broadcast` writes the request body as one
//! frame to every socket (one shared, pre-framed buffer; each socket's task writes everything
//! waiting in one write). A socket opened as `GET /?user=NAME` also takes `POST /users/NAME`,
//! whose body goes to it alone the same way: the floor of a REST send to a user. Switchboard's
//! numbers are stated as a ratio of this floor measured in the same run on the same machine.
//!
//! For `connect --same-exchanges` it also answers what a SignalR client sends, with fixed
//! replies and nothing checked: a negotiate (`POST /client/negotiate`) and, on an upgrade to
//! `/client/`, the hub handshake. That floor costs the same round trips and TCP connections
//! as a real client's connect, so its ratio leaves out only what Switchboard does beyond them.

use crate::wire::Wire;
use base64::Engine;
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use switchboard_protocol::websocket::{OpCode, write_frame};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

/// Frames a socket may fall behind by before it misses some (counted as lost).
const BACKLOG: usize = 4096;

type Frame = Arc<Vec<u8>>;

/// Where sends go: every socket, or the sockets opened for a user.
struct Routes {
    everyone: broadcast::Sender<Frame>,
    users: Mutex<HashMap<String, mpsc::Sender<Frame>>>,
}

/// The answer to every negotiate: the shape and size of a real one.
const NEGOTIATED: &str = r#"{"negotiateVersion":1,"connectionId":"floor","connectionToken":"floor","availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}]}"#;

/// The handshake answer, `{}` and the record separator, as one text frame.
const HANDSHAKE_ANSWER: [u8; 5] = [0x81, 3, b'{', b'}', 0x1e];

pub(crate) async fn serve(listener: TcpListener) {
    let routes = Arc::new(Routes { everyone: broadcast::channel(BACKLOG).0, users: Mutex::default() });
    while let Ok((stream, _)) = listener.accept().await {
        let routes = routes.clone();
        tokio::spawn(async move {
            let _ = connection(Wire::new(stream), &routes).await;
        });
    }
}

async fn connection(mut wire: Wire, routes: &Routes) -> anyhow::Result<()> {
    loop {
        let head = wire.inbox.read_head(&wire.stream).await?;
        if let Some(key) = head.header("sec-websocket-key") {
            // Subscribe before answering: every send after the client sees 101 reaches it.
            let user = head.line.split_once("?user=").map(|(_, rest)| rest.split(' ').next().unwrap_or_default());
            let feed = match user {
                Some(user) => {
                    let (sender, receiver) = mpsc::channel(BACKLOG);
                    routes.users.lock().unwrap().insert(user.to_owned(), sender);
                    Feed::One(receiver)
                }
                None => Feed::Everyone(routes.everyone.subscribe()),
            };
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key)
            );
            wire.send(response.as_bytes()).await?;
            // A SignalR client sends its handshake first and waits for the answer.
            if head.line.starts_with("GET /client/") {
                wire.inbox.read_ws_frame(&wire.stream).await?;
                wire.send(&HANDSHAKE_ANSWER).await?;
            }
            let ended = websocket(wire, feed).await;
            if let Some(user) = user {
                let mut users = routes.users.lock().unwrap();
                if users.get(user).is_some_and(|socket| socket.is_closed()) {
                    users.remove(user);
                }
            }
            return ended;
        }
        let body = wire.inbox.read_body(&wire.stream, &head).await?;
        let frame = || {
            let opcode = if body.starts_with(b"{") { OpCode::Text } else { OpCode::Binary };
            let mut frame = Vec::new();
            write_frame(opcode, &body, &mut frame);
            Arc::new(frame)
        };
        let user = head.line.strip_prefix("POST /users/").and_then(|rest| rest.split(' ').next());
        let (status, answer) = if head.line.starts_with("POST /broadcast ") {
            let _ = routes.everyone.send(frame());
            ("202 Accepted", "")
        } else if let Some(user) = user {
            let socket = routes.users.lock().unwrap().get(user).cloned();
            match socket {
                // A full queue loses the frame, as a lagging broadcast socket does.
                Some(socket) => {
                    let _ = socket.try_send(frame());
                    ("202 Accepted", "")
                }
                None => ("404 Not Found", ""),
            }
        } else if head.line.starts_with("POST /client/negotiate") {
            ("200 OK", NEGOTIATED)
        } else {
            ("404 Not Found", "")
        };
        let response = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
        wire.send(response.as_bytes()).await?;
    }
}

/// What a socket is sent.
enum Feed {
    Everyone(broadcast::Receiver<Frame>),
    One(mpsc::Receiver<Frame>),
}

impl Feed {
    /// The next frame; `None` once no more can come.
    async fn next(&mut self) -> Option<Frame> {
        match self {
            Feed::Everyone(frames) => loop {
                match frames.recv().await {
                    Ok(frame) => return Some(frame),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
            Feed::One(frames) => frames.recv().await,
        }
    }

    /// A frame already waiting.
    fn waiting(&mut self) -> Option<Frame> {
        match self {
            Feed::Everyone(frames) => frames.try_recv().ok(),
            Feed::One(frames) => frames.try_recv().ok(),
        }
    }
}

async fn websocket(mut wire: Wire, mut feed: Feed) -> anyhow::Result<()> {
    let mut out = Vec::new();
    loop {
        tokio::select! {
            frame = feed.next() => {
                let Some(frame) = frame else { return Ok(()) };
                out.extend_from_slice(&frame);
                while let Some(frame) = feed.waiting() {
                    out.extend_from_slice(&frame);
                }
                wire.send(&out).await?;
                out.clear();
            }
            // Whatever the client sends (pings) is read and dropped; end of stream ends the socket.
            read = wire.inbox.fill(&wire.stream) => {
                read?;
                wire.inbox.take();
            }
        }
    }
}

/// `Sec-WebSocket-Accept` (RFC 6455 §4.2.2).
fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_accept_key_of_the_rfc_example() {
        assert_eq!(super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
