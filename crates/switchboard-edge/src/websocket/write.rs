//! Socket writes of the WebSocket task: hub bytes framed as WebSocket messages, writes that
//! rarely wait, and the linger after a close.

use std::time::Duration;
use switchboard_protocol::Protocol;
use switchboard_protocol::websocket::{self, OpCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Writes `bytes`, almost always at once without waiting; a socket that is full falls back to
/// a bounded wait (boxed, so the rare slow path does not enlarge every connection's task).
pub(super) async fn write_out(stream: &TcpStream, bytes: &[u8], timeout: Duration) -> bool {
    let written = match stream.try_write(bytes) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    if written == bytes.len() {
        return true;
    }
    Box::pin(write_rest(stream, &bytes[written..], timeout)).await
}

async fn write_rest(stream: &TcpStream, mut rest: &[u8], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !rest.is_empty() {
        if tokio::time::timeout_at(deadline, stream.writable()).await.map_or(true, |r| r.is_err()) {
            return false;
        }
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
    true
}

/// Closes the socket. After a close we started, unread client bytes are drained for a moment
/// so the kernel does not answer them with a reset that would destroy our close frame.
pub(super) async fn linger(mut stream: TcpStream, lost: bool) {
    let _ = stream.shutdown().await;
    if lost {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buffer = [0u8; 1024];
        while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Writes hub bytes as one WebSocket message: Binary for MessagePack, Text otherwise.
pub(super) fn write_data(out: &mut Vec<u8>, protocol: Option<Protocol>, payload: &[u8]) {
    websocket::write_frame(opcode_for(protocol), payload, out);
}

pub(super) fn opcode_for(protocol: Option<Protocol>) -> OpCode {
    if protocol.is_some_and(Protocol::is_binary) { OpCode::Binary } else { OpCode::Text }
}
