//! An in-process node on a free port and a minimal raw WebSocket client, so tests can send
//! exactly the bytes they mean (including bad ones).

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;
use switchboard_auth::{mint_client_token, mint_server_token};
use switchboard_server::cli::ServeArgs;
use switchboard_server::local::LocalNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const KEY: &str = "test-access-key-0123456789";
pub const WAIT: Duration = Duration::from_secs(10);

/// A local node plus the request helpers below.
pub struct TestNode(LocalNode);

impl std::ops::Deref for TestNode {
    type Target = LocalNode;
    fn deref(&self) -> &LocalNode {
        &self.0
    }
}

pub async fn start_node(extra: impl FnOnce(&mut ServeArgs)) -> TestNode {
    TestNode(LocalNode::start(KEY, extra).await)
}

impl TestNode {
    pub fn client_token(&self, hub: &str, user: Option<&str>) -> String {
        mint_client_token(&format!("{}/client/?hub={hub}", self.endpoint), user, Duration::from_secs(60), KEY)
    }

    /// Sends a REST request with a valid server token; returns (status, headers, body).
    pub async fn rest(&self, method: &str, path_and_query: &str, body: &[u8]) -> (u16, String, String) {
        let path = path_and_query.split('?').next().unwrap();
        let token = mint_server_token(&format!("{}{path}", self.endpoint), Duration::from_secs(60), KEY);
        self.raw_http(method, path_and_query, &[("Authorization", &format!("Bearer {token}"))], body).await
    }

    /// Sends one HTTP/1.1 request and reads the whole response (Connection: close).
    pub async fn raw_http(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\nContent-Type: application/json\r\n\r\n", body.len()));
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    /// Opens a WebSocket to `/client/?{query}`; returns the client or the refusal status.
    pub async fn websocket(&self, query: &str) -> Result<WsClient, u16> {
        websocket_at(self.addr, query).await
    }

    pub async fn connect_json(&self, hub: &str, user: Option<&str>) -> WsClient {
        let token = self.client_token(hub, user);
        let mut ws = self.websocket(&format!("hub={hub}&access_token={token}")).await.expect("upgrade");
        ws.send(1, b"{\"protocol\":\"json\",\"version\":1}\x1e").await;
        assert_eq!(ws.next_message().await, Frame::Data(b"{}\x1e".to_vec()));
        ws
    }
}

/// Opens a WebSocket to `/client/?{query}` on `addr`; returns the client or the refusal status.
pub async fn websocket_at(addr: std::net::SocketAddr, query: &str) -> Result<WsClient, u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /client/?{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    if status == 101 { Ok(WsClient { stream, buffer: Vec::new() }) } else { Err(status) }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Data(Vec<u8>),
    Close(u16),
    Ping,
}

pub struct WsClient {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl WsClient {
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

    /// Reads the next server frame (server frames are unmasked); `Close(1006)` on EOF.
    pub async fn next_message(&mut self) -> Frame {
        tokio::time::timeout(WAIT, self.read_frame()).await.expect("a frame within the wait")
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
}

fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?;
    at += len;
    let frame = match opcode {
        8 => Frame::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])).unwrap_or(1005)),
        9 => Frame::Ping,
        _ => Frame::Data(payload.to_vec()),
    };
    Some((frame, at))
}

/// Spawns a `switchboard serve` process with stdout piped; the receiver gets its first stdout
/// line, the connection string it prints once it serves.
pub fn spawn_node(command: &mut std::process::Command) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = command.stdout(std::process::Stdio::piped()).spawn().expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (ready, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if std::io::BufReader::new(stdout).read_line(&mut line).is_ok() {
            let _ = ready.send(line);
        }
    });
    (child, ready_rx)
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
