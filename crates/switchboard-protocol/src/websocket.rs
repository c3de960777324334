//! RFC 6455 framing for the server side of a WebSocket, without I/O.
//!
//! This replaces a WebSocket library on the hot path. A library typically keeps
//! a read buffer and a write buffer per socket for the connection's whole life;
//! with hundreds of thousands of mostly idle SignalR connections that memory
//! dominates. Here the I/O task reads into its own (reusable) buffer and hands
//! it to [`WsReader::feed`], which unmasks frames in place and lends their
//! payloads to a callback. The reader only copies when a frame is cut by the
//! end of the read, and releases that copy as soon as the frame is complete, so
//! an idle connection's reader owns no heap memory.
//!
//! Writing needs no state: server frames are never masked and never fragmented
//! (every outbound SignalR frame holds whole hub messages), so [`write_frame`]
//! is a pure function.

mod reader;

pub use reader::WsReader;

/// Normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// The server is going down or the client navigated away.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// The peer broke the framing rules.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// A text message was not valid UTF-8.
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// The peer violated a server policy (e.g. authentication expired).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// A message exceeded the configured maximum size.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// The server hit an unexpected condition.
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// Longest payload a control frame (close, ping, pong) may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The frame opcodes RFC 6455 defines; every other value is a protocol error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    /// Returns the 4-bit wire value.
    pub fn code(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xa,
        }
    }

    /// Maps a wire value back; reserved values (3–7, 11–15) give `None`.
    pub fn from_code(code: u8) -> Option<OpCode> {
        match code {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xa => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Returns true for close, ping and pong, which may interleave with fragments.
    pub fn is_control(self) -> bool {
        self.code() & 0x8 != 0
    }
}

/// One complete thing the client sent, borrowing from the fed buffer when possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsEvent<'a> {
    /// A whole (reassembled) data message. SignalR parses by the negotiated
    /// protocol, not by the opcode, but the flag is kept for logging and tests.
    Message { binary: bool, payload: &'a [u8] },
    /// The caller should answer with a Pong carrying the same payload.
    Ping(&'a [u8]),
    /// Unsolicited or answering pong; only proves liveness.
    Pong,
    /// The client is closing; the caller should echo a Close and end the socket.
    /// Nothing fed after this produces events.
    Close { code: Option<u16>, reason: &'a str },
}

/// Why the reader gave up; each maps to the close code to send before dropping the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A framing rule was broken (→ 1002).
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A message is larger than the configured maximum (→ 1009).
    #[error("websocket message is too big")]
    TooBig,
    /// A text message or close reason is not UTF-8 (→ 1007).
    #[error("websocket text is not valid utf-8")]
    InvalidUtf8,
}

impl WsError {
    /// Returns the close code to send to the client.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => CLOSE_PROTOCOL_ERROR,
            WsError::TooBig => CLOSE_TOO_BIG,
            WsError::InvalidUtf8 => CLOSE_INVALID_PAYLOAD,
        }
    }
}

/// The most bytes a server frame header takes.
pub const MAX_HEADER: usize = 10;

/// A server frame header and how many of its bytes are used (the length in the fewest
/// bytes, as RFC 6455 §5.2 requires).
fn frame_header(opcode: OpCode, payload_len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut header = [0; MAX_HEADER];
    header[0] = 0x80 | opcode.code();
    let len = if payload_len < 126 {
        header[1] = payload_len as u8;
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    };
    (header, len)
}

/// Starts a frame whose payload is appended piece by piece, its length known only at the
/// end: reserves header room and returns where the frame starts, for [`finish_frame`].
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; MAX_HEADER]);
    start
}

/// Writes the header of the frame [begun](begin_frame) at `start` for everything appended
/// since, and closes the header room it did not use.
pub fn finish_frame(opcode: OpCode, start: usize, out: &mut Vec<u8>) {
    let (header, len) = frame_header(opcode, out.len() - start - MAX_HEADER);
    let unused = MAX_HEADER - len;
    out[start + unused..start + MAX_HEADER].copy_from_slice(&header[..len]);
    out.drain(start..start + unused);
}

/// Appends a complete server frame: FIN set, unmasked.
pub fn write_frame(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!opcode.is_control() || payload.len() <= MAX_CONTROL_PAYLOAD);
    out.reserve(payload.len() + MAX_HEADER);
    let (header, len) = frame_header(opcode, payload.len());
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(payload);
}

/// Appends a Close frame; the reason is cut (on a character boundary) to fit 125 bytes.
pub fn write_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut reason_len = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(reason_len) {
        reason_len -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + reason_len].copy_from_slice(&reason.as_bytes()[..reason_len]);
    write_frame(OpCode::Close, &payload[..2 + reason_len], out);
}

#[cfg(test)]
mod tests;
