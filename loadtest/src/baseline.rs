//! The baseline: the least a server must do to broadcast over WebSockets. It accepts
//! upgrades without auth, routing or hub protocol, and `POST /broadcast` writes the request
//! body as one frame to every socket (one shared, pre-framed buffer; each socket's task
//! writes everything waiting in one write). Switchboard's numbers are stated as a ratio of
//! this floor measured in the same run on the same machine.
//!
//! For `connect --same-exchanges` it also answers what a SignalR client sends, with fixed
//! replies and nothing checked: a negotiate (`POST /client/negotiate`) and, on an upgrade to
//! `/client/`, the hub handshake. That floor costs the same round trips and TCP connections
//! as a real client's connect, so its ratio leaves out only what Switchboard does beyond them.

use crate::wire::Wire;
use base64::Engine;
use sha1::{Digest, Sha1};
use std::sync::Arc;
use switchboard_protocol::websocket::{OpCode, write_frame};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// Broadcasts a socket may fall behind by before it misses some (counted as lost).
const BACKLOG: usize = 4096;

/// The answer to every negotiate: the shape and size of a real one.
const NEGOTIATED: &str = r#"{"negotiateVersion":1,"connectionId":"floor","connectionToken":"floor","availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}]}"#;

/// The handshake answer, `{}` and the record separator, as one text frame.
const HANDSHAKE_ANSWER: [u8; 5] = [0x81, 3, b'{', b'}', 0x1e];

pub(crate) async fn serve(listener: TcpListener) {
    let (frames, _) = broadcast::channel::<Arc<Vec<u8>>>(BACKLOG);
    while let Ok((stream, _)) = listener.accept().await {
        let frames = frames.clone();
        tokio::spawn(async move {
            let _ = connection(Wire::new(stream), frames).await;
        });
    }
}

async fn connection(mut wire: Wire, frames: broadcast::Sender<Arc<Vec<u8>>>) -> anyhow::Result<()> {
    loop {
        let head = wire.inbox.read_head(&wire.stream).await?;
        if let Some(key) = head.header("sec-websocket-key") {
            // Subscribe before answering: every broadcast after the client sees 101 reaches it.
            let receiver = frames.subscribe();
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
            return websocket(wire, receiver).await;
        }
        let body = wire.inbox.read_body(&wire.stream, &head).await?;
        let (status, answer) = if head.line.starts_with("POST /broadcast ") {
            let opcode = if body.starts_with(b"{") { OpCode::Text } else { OpCode::Binary };
            let mut frame = Vec::new();
            write_frame(opcode, &body, &mut frame);
            let _ = frames.send(Arc::new(frame));
            ("202 Accepted", "")
        } else if head.line.starts_with("POST /client/negotiate") {
            ("200 OK", NEGOTIATED)
        } else {
            ("404 Not Found", "")
        };
        let response = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
        wire.send(response.as_bytes()).await?;
    }
}

async fn websocket(mut wire: Wire, mut frames: broadcast::Receiver<Arc<Vec<u8>>>) -> anyhow::Result<()> {
    let mut out = Vec::new();
    loop {
        tokio::select! {
            frame = frames.recv() => {
                match frame {
                    Ok(frame) => out.extend_from_slice(&frame),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
                while let Ok(frame) = frames.try_recv() {
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
