//! Sockets for the hand-written HTTP/1.1, Server-Sent Events and WebSocket code of the
//! harness (clients, REST sender, upstream and baseline servers).
//!
//! Reads go through `readable` + `try_read` into the thread's read buffer, never held across
//! an await, so an idle connection costs its task almost nothing; only bytes that do not yet
//! make a whole item wait in the [`Inbox`]. Reading and writing take `&TcpStream`, so one
//! task can read and write the same socket concurrently.

use anyhow::{Context, bail};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use tokio::io::Interest;
use tokio::net::{TcpSocket, TcpStream};

/// A socket and the bytes read from it that were not consumed yet.
pub(crate) struct Wire {
    pub(crate) stream: TcpStream,
    pub(crate) inbox: Inbox,
}

impl Wire {
    pub(crate) fn new(stream: TcpStream) -> Wire {
        let _ = stream.set_nodelay(true);
        Wire { stream, inbox: Inbox::default() }
    }

    /// Connects from `source` (one of many loopback addresses, so ports never run out).
    pub(crate) async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<Wire> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        Ok(Wire::new(socket.connect(addr).await?))
    }

    pub(crate) async fn send(&self, bytes: &[u8]) -> anyhow::Result<()> {
        write_all(&self.stream, bytes).await
    }

    /// Writes a request (`head` ends with the blank line) and reads the whole response.
    pub(crate) async fn request(&mut self, head: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        if body.is_empty() {
            self.send(head.as_bytes()).await?;
        } else {
            let mut request = Vec::with_capacity(head.len() + body.len());
            request.extend_from_slice(head.as_bytes());
            request.extend_from_slice(body);
            self.send(&request).await?;
        }
        let head = self.inbox.read_head(&self.stream).await?;
        let body = self.inbox.read_body(&self.stream, &head).await?;
        Ok((head.status(), body))
    }
}

/// Writes everything, waiting for the socket to take it.
pub(crate) async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> anyhow::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `try_read`, except that a read which leaves part of `buffer` empty (the socket was
/// drained) also clears the socket's readiness, as tokio's own `poll_read` does: the next
/// `readable()` then waits for new bytes instead of returning at once for a `recv` that finds
/// nothing (every read of the harness cost two `recv` calls before).
fn try_read_drained(stream: &TcpStream, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut read = 0;
    let outcome = stream.try_io(Interest::READABLE, || {
        read = stream.try_read(buffer)?;
        if 0 < read && read < buffer.len() { Err(ErrorKind::WouldBlock.into()) } else { Ok(()) }
    });
    match outcome {
        Err(e) if e.kind() == ErrorKind::WouldBlock && read > 0 => Ok(read),
        Err(e) => Err(e),
        Ok(()) => Ok(read),
    }
}

/// A request or response head.
pub(crate) struct Head {
    /// The request or status line.
    pub(crate) line: String,
    /// Names lower-cased, values as sent.
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    pub(crate) fn status(&self) -> u16 {
        self.line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

thread_local! {
    /// Every read lands here first: one buffer per thread, zeroed once (zeroing a fresh
    /// buffer for every read showed in the harness's profile).
    static READ_BUFFER: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; 16 * 1024].into_boxed_slice());
}

/// Bytes read but not consumed.
#[derive(Default)]
pub(crate) struct Inbox {
    buf: Vec<u8>,
}

impl Inbox {
    /// Reads whatever the socket has (at least one byte); fails at end of stream.
    pub(crate) async fn fill(&mut self, stream: &TcpStream) -> anyhow::Result<()> {
        self.read_into(stream, |_| Ok(0)).await
    }

    /// Reads whatever the socket has (at least one byte) and lets `take` consume a prefix of
    /// all the unconsumed bytes; the rest waits in the inbox. When nothing was waiting, `take`
    /// reads straight from the thread's read buffer, so most reads copy nothing.
    async fn read_into(
        &mut self,
        stream: &TcpStream,
        mut take: impl FnMut(&[u8]) -> anyhow::Result<usize>,
    ) -> anyhow::Result<()> {
        loop {
            stream.readable().await?;
            let read = READ_BUFFER.with_borrow_mut(|chunk| -> anyhow::Result<bool> {
                let n = match try_read_drained(stream, chunk) {
                    Ok(0) => bail!("connection closed"),
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e.into()),
                };
                if self.buf.is_empty() {
                    let used = take(&chunk[..n])?;
                    self.buf.extend_from_slice(&chunk[used..n]);
                } else {
                    self.buf.extend_from_slice(&chunk[..n]);
                    let used = take(&self.buf)?;
                    self.consume(used);
                }
                Ok(true)
            })?;
            if read {
                return Ok(());
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
        if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
    }

    pub(crate) async fn read_head(&mut self, stream: &TcpStream) -> anyhow::Result<Head> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.consume(end + 4);
                let mut lines = text.split("\r\n");
                let line = lines.next().unwrap_or_default().to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                return Ok(Head { line, headers });
            }
            if self.buf.len() > 64 * 1024 {
                bail!("HTTP head too large");
            }
            self.fill(stream).await?;
        }
    }

    /// Reads a body of `Content-Length` bytes, or a whole chunked body.
    pub(crate) async fn read_body(&mut self, stream: &TcpStream, head: &Head) -> anyhow::Result<Vec<u8>> {
        if head.chunked() {
            let mut body = Vec::new();
            while let Some(chunk) = self.read_chunk(stream).await? {
                body.extend_from_slice(&chunk);
            }
            return Ok(body);
        }
        let length: usize = head.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while self.buf.len() < length {
            self.fill(stream).await?;
        }
        let body = self.buf[..length].to_vec();
        self.consume(length);
        Ok(body)
    }

    /// The next chunk of a chunked body; `None` after the last.
    async fn read_chunk(&mut self, stream: &TcpStream) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            if let Some(line_end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let size_text = std::str::from_utf8(&self.buf[..line_end]).context("bad chunk size")?;
                let size_text = size_text.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
                let total = line_end + 2 + size + 2;
                if self.buf.len() >= total {
                    let chunk = self.buf[line_end + 2..line_end + 2 + size].to_vec();
                    self.consume(total);
                    return Ok((size > 0).then_some(chunk));
                }
            }
            self.fill(stream).await?;
        }
    }

    /// Reads at least one Server-Sent Event of a chunked stream and passes each event's data
    /// to `each`. Fails when the stream ends.
    pub(crate) async fn read_sse(
        &mut self,
        stream: &TcpStream,
        event: &mut Vec<u8>,
        each: &mut impl FnMut(&[u8]),
    ) -> anyhow::Result<()> {
        loop {
            let Some(chunk) = self.read_chunk(stream).await? else { bail!("event stream ended") };
            event.extend_from_slice(&chunk);
            let mut delivered = false;
            while let Some(end) = event.windows(4).position(|w| w == b"\r\n\r\n") {
                let mut data = Vec::new();
                for line in event[..end].split(|b| *b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if let Some(rest) = line.strip_prefix(b"data: ").or_else(|| line.strip_prefix(b"data:")) {
                        data.extend_from_slice(rest);
                    }
                }
                event.drain(..end + 4);
                each(&data);
                delivered = true;
            }
            if delivered {
                return Ok(());
            }
        }
    }

    /// Reads at least one server WebSocket frame and passes every whole data frame's payload
    /// to `each`. Fails on a Close frame.
    pub(crate) async fn read_ws(&mut self, stream: &TcpStream, each: &mut impl FnMut(&[u8])) -> anyhow::Result<()> {
        let (used, frames) = data_frames(&self.buf, each)?;
        self.consume(used);
        if frames > 0 {
            return Ok(());
        }
        loop {
            let mut frames = 0;
            self.read_into(stream, |bytes| {
                let (used, n) = data_frames(bytes, each)?;
                frames = n;
                Ok(used)
            })
            .await?;
            if frames > 0 {
                return Ok(());
            }
        }
    }

    /// Reads the next data frame alone, leaving what follows it buffered.
    pub(crate) async fn read_ws_frame(&mut self, stream: &TcpStream) -> anyhow::Result<Vec<u8>> {
        loop {
            if let Some((opcode, start, len)) = frame_header(&self.buf)
                && self.buf.len() >= start + len
            {
                let payload = self.buf[start..start + len].to_vec();
                self.consume(start + len);
                match opcode {
                    0x8 => bail!("closed by the server"),
                    0x1 | 0x2 => return Ok(payload),
                    _ => continue,
                }
            }
            self.fill(stream).await?;
        }
    }

    /// Takes everything buffered (what arrived with an upgrade response, say).
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Passes the payload of every whole data frame at the start of `bytes` to `each`; the bytes
/// and frames used. Fails on a Close frame.
fn data_frames(bytes: &[u8], each: &mut impl FnMut(&[u8])) -> anyhow::Result<(usize, usize)> {
    let (mut used, mut frames) = (0, 0);
    while let Some((opcode, start, len)) = frame_header(&bytes[used..])
        && bytes.len() - used >= start + len
    {
        let payload = &bytes[used + start..used + start + len];
        match opcode {
            0x8 => bail!("closed by the server"),
            0x1 | 0x2 => each(payload),
            _ => {}
        }
        used += start + len;
        frames += 1;
    }
    Ok((used, frames))
}

/// Opcode, header length and payload length of a frame at the start of `buf` (a client's
/// frame is masked: its header ends with the 4-byte key).
fn frame_header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let opcode = buf.first()? & 0x0f;
    let mask = if buf.get(1)? & 0x80 != 0 { 4 } else { 0 };
    match buf.get(1)? & 0x7f {
        126 => Some((opcode, 4 + mask, u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize)),
        127 => Some((opcode, 10 + mask, u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize)),
        n => Some((opcode, 2 + mask, n as usize)),
    }
}

/// A masked client frame (mask key 0, so the payload is written as is).
pub(crate) fn client_frame(payload: &[u8]) -> Vec<u8> {
    let binary = !payload.starts_with(b"{");
    let mut frame = vec![if binary { 0x82 } else { 0x81 }];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
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
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_of_every_length_form() {
        assert_eq!(frame_header(&[0x81, 5]), Some((1, 2, 5)));
        assert_eq!(frame_header(&[0x82, 126, 1, 0]), Some((2, 4, 256)));
        assert_eq!(frame_header(&[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]), Some((1, 10, 65536)));
        assert_eq!(frame_header(&[0x81, 126, 1]), None);
        let frame = client_frame(&[0u8; 300]);
        assert_eq!(&frame[..4], &[0x82, 0x80 | 126, 1, 44]);
        assert_eq!(frame_header(&frame), Some((2, 8, 300)), "a client frame's mask key is header");
        assert_eq!(frame_header(&client_frame(b"{}")), Some((1, 6, 2)));
    }
}
