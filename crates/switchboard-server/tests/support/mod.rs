//! An in-process node on a free port, request helpers, and the shared test kit's raw WebSocket
//! client, so tests can send exactly the bytes they mean (including bad ones).

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;
use switchboard_auth::{mint_client_token, mint_server_token};
use switchboard_server::cli::ServeArgs;
use switchboard_server::local::LocalNode;
#[allow(unused_imports)] // each test file uses a part
pub use switchboard_testkit::{Frame, WsClient, free_port, wait_for};
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

    /// A TCP connection to the node from the loopback address `source` (each 127.x.y.z counts
    /// as its own client address).
    pub async fn socket_from(&self, source: &str) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(self.addr).await.unwrap()
    }

    /// Opens a WebSocket to `/client/?{query}`; returns the client or the refusal status.
    pub async fn websocket(&self, query: &str) -> Result<WsClient, u16> {
        WsClient::open(self.addr, query).await
    }

    pub async fn connect_json(&self, hub: &str, user: Option<&str>) -> WsClient {
        let token = self.client_token(hub, user);
        let mut ws = self.websocket(&format!("hub={hub}&access_token={token}")).await.expect("upgrade");
        ws.send(1, b"{\"protocol\":\"json\",\"version\":1}\x1e").await;
        assert_eq!(ws.next_message().await, Frame::Data(b"{}\x1e".to_vec()));
        ws
    }
}

/// Everything `stream` receives until the other side closes it (bounded by [`WAIT`]).
pub async fn read_to_close(mut stream: TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    String::from_utf8(answer).unwrap()
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
        // A node that exits before serving prints nothing: the receiver then sees the sender gone.
        if std::io::BufReader::new(stdout).read_line(&mut line).is_ok_and(|read| read > 0) {
            let _ = ready.send(line);
        }
    });
    (child, ready_rx)
}
