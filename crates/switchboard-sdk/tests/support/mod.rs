//! An in-process Switchboard node on a free port, and a minimal SignalR-over-WebSocket client
//! that connects the way a browser does after following a negotiate answer.

#![allow(dead_code, unreachable_pub)]

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use switchboard_sdk::NegotiateResponse;
use switchboard_server::local::LocalNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const KEY: &str = "sdk-test-access-key-0123456789";
/// Upper bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A local node of the service.
pub struct TestNode(LocalNode);

impl std::ops::Deref for TestNode {
    type Target = LocalNode;
    fn deref(&self) -> &LocalNode {
        &self.0
    }
}

pub async fn start_node() -> TestNode {
    TestNode(LocalNode::start(KEY, |_| {}).await)
}

/// What the service's own negotiate endpoint answered.
pub struct Negotiated {
    pub connection_id: String,
    pub connection_token: String,
}

/// Follows a negotiate answer like the SignalR JS client: `POST {url-without-query}/negotiate?{query}&negotiateVersion=1`
/// with the access token as bearer. Returns the status and the parsed body.
pub async fn service_negotiate(answer: &NegotiateResponse) -> (u16, Value) {
    let (base, query) = answer.url.split_once('?').unwrap_or((&answer.url, ""));
    let base = if base.ends_with('/') { base.to_owned() } else { format!("{base}/") };
    let url = format!("{base}negotiate?{query}&negotiateVersion=1");
    let response =
        tokio::time::timeout(WAIT, reqwest::Client::new().post(url).bearer_auth(&answer.access_token).send())
            .await
            .expect("negotiate answers within the wait")
            .expect("negotiate request");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// Negotiates with the service and opens a JSON-protocol WebSocket; returns the client and its connection id.
pub async fn connect(node: &TestNode, answer: &NegotiateResponse) -> (WsClient, String) {
    let (status, body) = service_negotiate(answer).await;
    assert_eq!(status, 200, "service negotiate: {body}");
    let negotiated = Negotiated {
        connection_id: body["connectionId"].as_str().expect("connectionId").to_owned(),
        connection_token: body["connectionToken"].as_str().expect("connectionToken").to_owned(),
    };
    let hub = answer.url.split("hub=").nth(1).expect("hub in url");
    let query =
        format!("hub={hub}&id={}&access_token={}", encode(&negotiated.connection_token), encode(&answer.access_token));
    let mut ws = WsClient::open(node.addr, &query).await;
    ws.send_text(b"{\"protocol\":\"json\",\"version\":1}\x1e").await;
    assert_eq!(ws.next_record().await, serde_json::json!({}), "handshake answer");
    (ws, negotiated.connection_id)
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

/// A client-side WebSocket reading SignalR JSON records.
pub struct WsClient {
    stream: TcpStream,
    buffer: Vec<u8>,
    records: VecDeque<Value>,
    /// Set once the server sent a Close frame (its status code) or the socket ended (1006).
    pub closed: Option<u16>,
}

impl WsClient {
    async fn open(addr: SocketAddr, query: &str) -> WsClient {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /client/?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(WAIT, stream.read(&mut byte)).await.expect("upgrade answer").unwrap();
            assert!(read > 0, "socket closed during the upgrade: {}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        WsClient { stream, buffer: Vec::new(), records: VecDeque::new(), closed: None }
    }

    /// Sends one masked text frame (mask key 0 leaves the payload as is).
    pub async fn send_text(&mut self, payload: &[u8]) {
        assert!(payload.len() < 126, "short frames only");
        let mut frame = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Returns the next SignalR record that is not a ping, waiting at most [`WAIT`].
    pub async fn next_record(&mut self) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                while let Some(record) = self.records.pop_front() {
                    if record["type"] != 6 {
                        return record;
                    }
                }
                assert!(self.closed.is_none(), "socket closed ({:?}) while waiting for a record", self.closed);
                self.read_frame().await;
            }
        })
        .await
        .expect("a record within the wait")
    }

    /// Reads until the server closes the WebSocket; returns the close code.
    pub async fn wait_closed(&mut self) -> u16 {
        tokio::time::timeout(WAIT, async {
            while self.closed.is_none() {
                self.read_frame().await;
            }
        })
        .await
        .expect("close within the wait");
        self.closed.unwrap()
    }

    /// Reads one server frame into `records` or `closed`.
    async fn read_frame(&mut self) {
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&self.buffer) {
                self.buffer.drain(..used);
                match opcode {
                    8 => {
                        let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])).unwrap_or(1005);
                        self.closed = Some(code);
                    }
                    1 | 2 => {
                        for record in payload.split(|b| *b == 0x1e).filter(|r| !r.is_empty()) {
                            self.records.push_back(serde_json::from_slice(record).expect("JSON record"));
                        }
                    }
                    _ => {}
                }
                return;
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    self.closed = Some(1006);
                    return;
                }
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Parses an unmasked, unfragmented server frame: (opcode, payload, bytes used).
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((opcode, payload, at + len))
}
