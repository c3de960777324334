//! Socket writes of the WebSocket task: hub bytes framed as WebSocket messages, writes that
//! rarely wait, and the linger after a close.

use std::cell::Cell;
use std::time::Duration;
use switchboard_protocol::Protocol;
use switchboard_protocol::websocket::{self, OpCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

thread_local! {
    /// This worker thread's spare output buffer. A connection woken to write takes it for the
    /// wake-up and gives it back after the write: no allocation, and no growing a fresh buffer
    /// frame by frame, per wake-up, while an idle connection still holds no buffer of its own.
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The largest buffer kept as a spare: what a rare burst grew is freed.
const SPARE_LIMIT: usize = 256 * 1024;

/// An empty buffer: this thread's spare, if it has one.
pub(super) fn take_buffer() -> Vec<u8> {
    SPARE.with(Cell::take)
}

/// Keeps `buffer`, emptied, as this thread's spare (the larger of it and the current one).
pub(super) fn give_back(mut buffer: Vec<u8>) {
    if buffer.capacity() == 0 || buffer.capacity() > SPARE_LIMIT {
        return;
    }
    buffer.clear();
    SPARE.with(|spare| {
        let current = spare.take();
        spare.set(if current.capacity() >= buffer.capacity() { current } else { buffer });
    });
}

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
