//! Minimal protocol clients for load: a WebSocket client on a raw socket, and Server-Sent
//! Events and Long Polling over hand-written HTTP/1.1. Each counts the hub messages it
//! receives and samples end-to-end latency from the timestamp the sender put first in the
//! arguments, while costing the machine as little as possible (the server shares it).

use crate::report::Counters;
use crate::{Protocol, Transport};
use anyhow::{Context, bail};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// Where and as whom connections are made.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) hub: String,
    pub(crate) token: String,
    pub(crate) transport: Transport,
    pub(crate) protocol: Protocol,
}

/// Microseconds since the Unix epoch, the timestamp carried in payloads.
pub(crate) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// A client ping is sent this often so the server's client timeout never fires.
const CLIENT_PING: Duration = Duration::from_secs(10);

/// Opens one connection (through the handshake), then counts what it receives until `stop`.
pub(crate) async fn run(target: Arc<Target>, source: IpAddr, counters: Arc<Counters>, mut stop: watch::Receiver<bool>) {
    Counters::add(&counters.attempts, 1);
    let started = std::time::Instant::now();
    let opened = tokio::time::timeout(Duration::from_secs(30), open(&target, source)).await;
    let mut connection = match opened {
        Ok(Ok(connection)) => connection,
        _ => {
            Counters::add(&counters.failed, 1);
            return;
        }
    };
    Counters::record(&counters.connect_us, started.elapsed().as_micros() as u64);
    Counters::add(&counters.connected, 1);
    let mut ping = tokio::time::interval(CLIENT_PING);
    ping.tick().await;
    let mut sampler = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ping.tick() => {
                if connection.ping(&target).await.is_err() {
                    break;
                }
            }
            payload = connection.next_payload(&target) => match payload {
                Ok(payload) => count(&target, &payload, &counters, &mut sampler),
                Err(_) => break,
            }
        }
    }
}

/// Counts hub messages in `payload` (pings excluded) and samples latency from every 16th.
fn count(target: &Target, payload: &[u8], counters: &Counters, sampler: &mut u64) {
    Counters::add(&counters.bytes, payload.len() as u64);
    let mut messages = 0;
    match target.protocol {
        Protocol::Json => {
            for record in payload.split(|b| *b == 0x1e).filter(|r| !r.is_empty()) {
                if record.starts_with(b"{\"type\":1,") {
                    messages += 1;
                    *sampler += 1;
                    if *sampler % 16 == 1 {
                        sample_json(record, counters);
                    }
                }
            }
        }
        Protocol::Messagepack => {
            let mut rest = payload;
            while let Some((len, used)) = varint(rest) {
                let Some(body) = rest.get(used..used + len) else { break };
                if body.get(1) == Some(&1) {
                    messages += 1;
                    *sampler += 1;
                    if *sampler % 16 == 1 {
                        sample_msgpack(body, counters);
                    }
                }
                rest = &rest[used + len..];
            }
        }
    }
    Counters::add(&counters.received, messages);
}

fn sample_json(record: &[u8], counters: &Counters) {
    let text = String::from_utf8_lossy(record);
    let Some(start) = text.find("\"arguments\":[") else { return };
    let digits: String = text[start + 13..].chars().take_while(char::is_ascii_digit).collect();
    if let Ok(sent) = digits.parse::<u64>() {
        Counters::record(&counters.latency_us, now_us().saturating_sub(sent));
    }
}

/// `[1, {}, nil, target, [timestamp, ...], []]`: the timestamp is the first uint after the
/// arguments array marker.
fn sample_msgpack(body: &[u8], counters: &Counters) {
    let Some(pos) = body.iter().position(|b| (0x91..=0x9f).contains(b)) else { return };
    let sent = match body.get(pos + 1..) {
        Some([0xcf, rest @ ..]) if rest.len() >= 8 => u64::from_be_bytes(rest[..8].try_into().expect("8 bytes")),
        _ => return,
    };
    Counters::record(&counters.latency_us, now_us().saturating_sub(sent));
}

fn varint(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in buf.iter().take(5).enumerate() {
        value |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn handshake(protocol: Protocol) -> &'static [u8] {
    match protocol {
        Protocol::Json => b"{\"protocol\":\"json\",\"version\":1}\x1e",
        Protocol::Messagepack => b"{\"protocol\":\"messagepack\",\"version\":1}\x1e",
    }
}

fn ping_message(protocol: Protocol) -> &'static [u8] {
    match protocol {
        Protocol::Json => b"{\"type\":6}\x1e",
        Protocol::Messagepack => &[0x02, 0x91, 0x06],
    }
}

/// An open connection of any transport.
enum Connection {
    WebSocket(Wire),
    ServerSentEvents { events: Wire, sender: Wire, path: String },
    LongPolling { polls: Wire, path: String },
}

async fn open(target: &Target, source: IpAddr) -> anyhow::Result<Connection> {
    let base = format!("/client/?hub={}", target.hub);
    match target.transport {
        Transport::Websockets => {
            let mut wire = Wire::connect(target.addr, source).await?;
            let request = format!(
                "GET {base}&access_token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                target.token, target.addr
            );
            wire.stream.write_all(request.as_bytes()).await?;
            let (status, _) = wire.read_head().await?;
            if status != 101 {
                bail!("upgrade answered {status}");
            }
            wire.send_ws(handshake(target.protocol)).await?;
            let first = wire.read_ws().await?;
            if !first.starts_with(b"{}\x1e") {
                bail!("handshake refused");
            }
            Ok(Connection::WebSocket(wire))
        }
        Transport::Sse | Transport::LongPolling => {
            let id = negotiate(target, source).await?;
            let path = format!("{base}&id={id}");
            let mut first = Wire::connect(target.addr, source).await?;
            let sse = target.transport == Transport::Sse;
            let accept = if sse { "Accept: text/event-stream\r\n" } else { "" };
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\n{accept}Authorization: Bearer {}\r\n\r\n",
                target.addr, target.token
            );
            first.stream.write_all(request.as_bytes()).await?;
            let (status, headers) = first.read_head().await?;
            if status != 200 {
                bail!("transport request answered {status}");
            }
            if !sse {
                first.read_body(&headers).await?;
            }
            let mut sender = Wire::connect(target.addr, source).await?;
            sender.post(target, &path, handshake(target.protocol)).await?;
            Ok(if sse {
                Connection::ServerSentEvents { events: first, sender, path }
            } else {
                Connection::LongPolling { polls: first, path }
            })
        }
    }
}

/// Negotiates and returns the connection token.
async fn negotiate(target: &Target, source: IpAddr) -> anyhow::Result<String> {
    let mut wire = Wire::connect(target.addr, source).await?;
    let request = format!(
        "POST /client/negotiate?hub={}&negotiateVersion=1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
        target.hub, target.addr, target.token
    );
    wire.stream.write_all(request.as_bytes()).await?;
    let (status, headers) = wire.read_head().await?;
    let body = wire.read_body(&headers).await?;
    if status != 200 {
        bail!("negotiate answered {status}");
    }
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    answer["connectionToken"].as_str().map(str::to_owned).context("no connectionToken")
}

impl Connection {
    async fn ping(&mut self, target: &Target) -> anyhow::Result<()> {
        match self {
            Connection::WebSocket(wire) => wire.send_ws(ping_message(target.protocol)).await,
            Connection::ServerSentEvents { sender, path, .. } => {
                sender.post(target, path, ping_message(target.protocol)).await
            }
            // Long Polling needs no pings: each poll shows the client is alive.
            Connection::LongPolling { .. } => Ok(()),
        }
    }

    /// The next chunk of hub bytes from the server.
    async fn next_payload(&mut self, target: &Target) -> anyhow::Result<Vec<u8>> {
        match self {
            Connection::WebSocket(wire) => wire.read_ws().await,
            Connection::ServerSentEvents { events, .. } => events.read_sse_event().await,
            Connection::LongPolling { polls, path, .. } => {
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
                    target.addr, target.token
                );
                polls.stream.write_all(request.as_bytes()).await?;
                let (status, headers) = polls.read_head().await?;
                if status != 200 {
                    bail!("poll answered {status}");
                }
                polls.read_body(&headers).await
            }
        }
    }
}

/// A socket with a read buffer for whatever arrived beyond the current item.
struct Wire {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Wire {
    /// Connects from `source` (one of many loopback addresses, so ports never run out).
    async fn connect(addr: SocketAddr, source: IpAddr) -> anyhow::Result<Wire> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Wire { stream, buffer: Vec::new() })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads a response head; returns the status and the lower-cased header block.
    async fn read_head(&mut self) -> anyhow::Result<(u16, String)> {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).to_ascii_lowercase();
                self.buffer.drain(..end + 4);
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("bad status line")?;
                return Ok((status, head));
            }
            self.fill().await?;
        }
    }

    async fn read_body(&mut self, head: &str) -> anyhow::Result<Vec<u8>> {
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while self.buffer.len() < length {
            self.fill().await?;
        }
        Ok(self.buffer.drain(..length).collect())
    }

    async fn post(&mut self, target: &Target, path: &str, body: &[u8]) -> anyhow::Result<()> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
            target.addr,
            target.token,
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body).await?;
        let (status, headers) = self.read_head().await?;
        self.read_body(&headers).await?;
        if status != 200 {
            bail!("send answered {status}");
        }
        Ok(())
    }

    /// Sends one masked WebSocket frame (mask key 0: the payload stays as it is).
    async fn send_ws(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Reads the next data frame's payload (server frames are unmasked and whole).
    async fn read_ws(&mut self) -> anyhow::Result<Vec<u8>> {
        loop {
            if self.buffer.len() >= 2 {
                let opcode = self.buffer[0] & 0x0f;
                let (len, start) = match self.buffer[1] & 0x7f {
                    126 if self.buffer.len() >= 4 => (u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize, 4),
                    127 if self.buffer.len() >= 10 => {
                        (u64::from_be_bytes(self.buffer[2..10].try_into().expect("8 bytes")) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buffer.len() >= start + len {
                    let payload: Vec<u8> = self.buffer[start..start + len].to_vec();
                    self.buffer.drain(..start + len);
                    match opcode {
                        0x8 => bail!("closed by the server"),
                        0x1 | 0x2 => return Ok(payload),
                        _ => continue,
                    }
                }
            }
            self.fill().await?;
        }
    }

    /// Reads the next SSE event of a chunked response and returns its data.
    async fn read_sse_event(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut decoded = Vec::new();
        loop {
            // Chunked transfer: `<hex size>\r\n<bytes>\r\n`.
            if let Some(line_end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let size_text = String::from_utf8_lossy(&self.buffer[..line_end]).to_string();
                let size = usize::from_str_radix(size_text.trim(), 16).context("bad chunk size")?;
                if size == 0 {
                    bail!("stream ended");
                }
                if self.buffer.len() >= line_end + 2 + size + 2 {
                    decoded.extend_from_slice(&self.buffer[line_end + 2..line_end + 2 + size]);
                    self.buffer.drain(..line_end + 2 + size + 2);
                    if decoded.ends_with(b"\r\n\r\n") {
                        let mut data = Vec::new();
                        for line in decoded.split(|b| *b == b'\n') {
                            if let Some(rest) = line.strip_prefix(b"data: ") {
                                data.extend_from_slice(rest.strip_suffix(b"\r").unwrap_or(rest));
                            }
                        }
                        return Ok(data);
                    }
                    continue;
                }
            }
            self.fill().await?;
        }
    }
}
