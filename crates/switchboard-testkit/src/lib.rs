//! What the integration tests share: [`WsClient`], a WebSocket client written byte by byte (so a
//! test sends exactly the frames it means, bad ones included) that also reads SignalR JSON
//! records; [`free_port`] and [`wait_for`]. Tests only: nothing here is hardened.

pub mod redis;
pub mod tls;

use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound of every wait of the client.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Data(Vec<u8>),
    Close(u16),
    Ping,
}

/// A client-side WebSocket. See the crate docs.
pub struct WsClient {
    pub stream: TcpStream,
    buffer: Vec<u8>,
    records: VecDeque<Value>,
    /// Set once the server sent a Close frame (its status code) or the socket ended (1006), as
    /// seen by [`WsClient::next_record`] and [`WsClient::wait_closed`].
    pub closed: Option<u16>,
}

impl WsClient {
    /// Opens a WebSocket to `/client/?{query}` on `addr`; the refusal status otherwise.
    pub async fn open(addr: SocketAddr, query: &str) -> Result<WsClient, u16> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /client/?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(WAIT, stream.read(&mut byte)).await.expect("an upgrade answer");
            if read.unwrap_or(0) == 0 {
                break;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let status: u16 = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
        match status {
            101 => Ok(WsClient { stream, buffer: Vec::new(), records: VecDeque::new(), closed: None }),
            refused => Err(refused),
        }
    }

    /// Sends one masked frame (mask key 0, which leaves the payload as is).
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        let _ = self.stream.write_all(&frame).await;
    }

    /// Sends one text frame.
    pub async fn send_text(&mut self, payload: &[u8]) {
        self.send(1, payload).await;
    }

    /// Reads the next server frame (server frames are unmasked); `Close(1006)` on EOF.
    pub async fn next_message(&mut self) -> Frame {
        tokio::time::timeout(WAIT, self.read_frame()).await.expect("a frame within the wait")
    }

    /// Reads frames until a data frame arrives (skipping pings).
    pub async fn next_data(&mut self) -> Vec<u8> {
        loop {
            match self.next_message().await {
                Frame::Data(data) => return data,
                Frame::Ping => continue,
                Frame::Close(code) => panic!("closed with {code} while waiting for data"),
            }
        }
    }

    /// The next SignalR JSON record that is not a ping.
    pub async fn next_record(&mut self) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                while let Some(record) = self.records.pop_front() {
                    if record["type"] != 6 {
                        return record;
                    }
                }
                assert!(self.closed.is_none(), "socket closed ({:?}) while waiting for a record", self.closed);
                match self.read_frame().await {
                    Frame::Data(data) => {
                        for record in data.split(|b| *b == 0x1e).filter(|r| !r.is_empty()) {
                            self.records.push_back(serde_json::from_slice(record).expect("a JSON record"));
                        }
                    }
                    Frame::Close(code) => self.closed = Some(code),
                    Frame::Ping => {}
                }
            }
        })
        .await
        .expect("a record within the wait")
    }

    /// Reads until the server closes the WebSocket; returns the close code.
    pub async fn wait_closed(&mut self) -> u16 {
        tokio::time::timeout(WAIT, async {
            while self.closed.is_none() {
                if let Frame::Close(code) = self.read_frame().await {
                    self.closed = Some(code);
                }
            }
        })
        .await
        .expect("a close within the wait");
        self.closed.unwrap_or(1006)
    }

    async fn read_frame(&mut self) -> Frame {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Frame::Close(1006),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Parses an unmasked, unfragmented server frame; returns it and the bytes used.
fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?;
    let frame = match opcode {
        8 => Frame::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])).unwrap_or(1005)),
        9 => Frame::Ping,
        _ => Frame::Data(payload.to_vec()),
    };
    Some((frame, at + len))
}

/// A loopback port nobody listens on right now, and no other call in this process returned.
///
/// Chosen below the kernel's ephemeral range: a port the kernel handed out (and took back)
/// would be handed out again as the source port of some outgoing connection, and a node started
/// a moment later (its peers already dialling each other) could then not bind it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    static STATE: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let seed = u64::from(std::process::id()) << 32
        | u64::from(std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.subsec_nanos()));
    let _ = STATE.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
    let mut taken = TAKEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..10_000 {
        // xorshift: a different sequence per process, no dependency.
        let mut x = STATE.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        STATE.store(x, Ordering::Relaxed);
        let port = low + (x % u64::from(high - low)) as u16;
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port;
        }
    }
    panic!("no free loopback port below {high}");
}

/// Polls `check` until it holds, failing the test after `limit`; returns how long it took.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = std::time::Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}
