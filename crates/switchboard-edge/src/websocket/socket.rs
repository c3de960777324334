//! The socket a WebSocket task owns: plain TCP, or TCP carrying TLS (a node serving `https`).
//!
//! Both are driven the same readiness-based way: wait until the TCP socket is readable, then
//! read what is there without waiting; write without waiting and fall back to a bounded wait.
//! An idle connection holds no read buffer. For TLS the rustls connection is driven sans-io
//! over the same non-blocking reads and writes, and a read drains every complete record, so no
//! decrypted byte is left behind in rustls while the task waits on the TCP socket.

use super::write::{linger, write_out};
use std::io::{self, Read, Write};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls::ServerConnection;

/// The most one read takes from the socket.
const READ_SIZE: usize = 4096;

pub(super) enum Socket {
    Plain(TcpStream),
    Tls(TcpStream, Box<ServerConnection>),
}

impl Socket {
    fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(tcp) | Socket::Tls(tcp, _) => tcp,
        }
    }

    /// Waits until reading may make progress.
    pub(super) async fn readable(&self) -> io::Result<()> {
        self.tcp().readable().await
    }

    /// Reads what arrived, without waiting, handing it to `on_data`; `Ok(false)` at the end of
    /// the stream (or a TLS close_notify).
    pub(super) fn read_available(&mut self, mut on_data: impl FnMut(&mut [u8])) -> io::Result<bool> {
        match self {
            // Into uninitialised capacity: zeroing a buffer for every read cost more than the
            // allocation.
            Socket::Plain(tcp) => {
                let mut buffer = bytes::BytesMut::with_capacity(READ_SIZE);
                match try_read_drained(tcp, &mut buffer) {
                    Ok(0) => Ok(false),
                    Ok(_) => {
                        on_data(&mut buffer);
                        Ok(true)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
                    Err(e) => Err(e),
                }
            }
            Socket::Tls(tcp, tls) => {
                let mut buffer = [0u8; READ_SIZE];
                loop {
                    loop {
                        match tls.reader().read(&mut buffer) {
                            Ok(0) => return Ok(false),
                            Ok(n) => on_data(&mut buffer[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                    match tls.read_tls(&mut NonBlocking(tcp)) {
                        Ok(0) => return Ok(false),
                        Ok(_) => {
                            tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Writes `bytes` within `timeout`; false when the socket is gone or stays full.
    pub(super) async fn write(&mut self, bytes: &[u8], timeout: Duration) -> bool {
        match self {
            Socket::Plain(tcp) => write_out(tcp, bytes, timeout).await,
            Socket::Tls(tcp, tls) => Box::pin(write_tls(tcp, tls, bytes, timeout)).await,
        }
    }

    /// Closes the socket (a TLS close_notify first); see [`linger`].
    pub(super) async fn close(self, lost: bool) {
        let tcp = match self {
            Socket::Plain(tcp) => tcp,
            Socket::Tls(tcp, mut tls) => {
                if !lost {
                    tls.send_close_notify();
                    write_tls(&tcp, &mut tls, &[], Duration::from_secs(1)).await;
                }
                tcp
            }
        };
        linger(tcp, lost).await;
    }
}

/// `try_read_buf`, except that a read which leaves part of `buffer`'s room empty (the socket
/// was drained) also clears the socket's readiness, as tokio's own `poll_read` does: the next
/// `readable()` then waits for new bytes instead of returning at once for a read that finds
/// nothing (which cost a `recv` and a buffer per message received).
fn try_read_drained(tcp: &TcpStream, buffer: &mut bytes::BytesMut) -> io::Result<usize> {
    let room = buffer.capacity() - buffer.len();
    let mut read = 0;
    let outcome = tcp.try_io(Interest::READABLE, || {
        read = tcp.try_read_buf(buffer)?;
        if 0 < read && read < room { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(()) }
    });
    match outcome {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && read > 0 => Ok(read),
        Err(e) => Err(e),
        Ok(()) => Ok(read),
    }
}

/// Encrypts `bytes` and writes the records, waiting (bounded) only when the socket is full.
async fn write_tls(tcp: &TcpStream, tls: &mut ServerConnection, mut bytes: &[u8], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !bytes.is_empty() {
            match tls.writer().write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(_) => return false,
            }
        }
        while tls.wants_write() {
            match tls.write_tls(&mut NonBlocking(tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if tokio::time::timeout_at(deadline, tcp.writable()).await.map_or(true, |r| r.is_err()) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        if bytes.is_empty() {
            return true;
        }
    }
}

/// `Read` and `Write` over a tokio socket that never wait: `WouldBlock` instead.
struct NonBlocking<'a>(&'a TcpStream);

impl Read for NonBlocking<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buffer)
    }
}

impl Write for NonBlocking<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.try_write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
