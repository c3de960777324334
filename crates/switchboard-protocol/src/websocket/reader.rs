//! The inbound half of the framing: client frames → [`WsEvent`]s.
//!
//! Every frame header is validated (and the message size checked against the
//! limit) as soon as its header bytes are known, before any payload is
//! buffered, so a client cannot make the server hold more than the limit.

use super::{MAX_CONTROL_PAYLOAD, OpCode, WsError, WsEvent};

/// Longest frame header a client can send: 2 + 8 (64-bit length) + 4 (mask).
const MAX_HEADER_LEN: usize = 14;

/// Turns bytes read from a client socket into events; one per connection.
///
/// After an error the reader's state is unspecified: close the connection.
#[derive(Debug)]
pub struct WsReader {
    /// Largest data message (after reassembly) accepted, in bytes.
    max_message_size: usize,
    /// One frame cut by the end of a read: header and whatever payload arrived.
    /// Empty (unallocated) unless such a frame is pending.
    partial: Vec<u8>,
    /// Unmasked payload of a fragmented message awaiting its final frame.
    fragments: Vec<u8>,
    /// `Some(binary)` while a fragmented message is being reassembled.
    fragmented: Option<bool>,
    /// Set once a Close frame was delivered; later input is ignored.
    closed: bool,
}

/// The parsed fixed part of one frame.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

impl FrameHeader {
    fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

impl WsReader {
    /// Creates a reader refusing data messages longer than `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        WsReader { max_message_size, partial: Vec::new(), fragments: Vec::new(), fragmented: None, closed: false }
    }

    /// Feeds newly read bytes (unmasked in place, hence &mut), invoking `on_event` for each complete event in order. Partial frames are kept internally until the next call.
    ///
    /// An error from `on_event` stops processing and is returned as is.
    pub fn feed(
        &mut self,
        input: &mut [u8],
        on_event: &mut dyn FnMut(WsEvent<'_>) -> Result<(), WsError>,
    ) -> Result<(), WsError> {
        let mut position = 0;
        if !self.partial.is_empty() && !self.closed {
            position = self.finish_partial_frame(input, on_event)?;
        }
        while position < input.len() && !self.closed {
            let rest = &mut input[position..];
            let Some(header) = parse_header(rest)? else {
                self.partial = rest.to_vec();
                break;
            };
            self.check_sequence(&header)?;
            if rest.len() < header.frame_len() {
                self.partial = rest.to_vec();
                break;
            }
            let payload = &mut rest[header.header_len..header.frame_len()];
            unmask(payload, header.mask);
            self.deliver(&header, payload, on_event)?;
            position += header.frame_len();
        }
        Ok(())
    }

    /// Returns true when it holds no partial data (no partial frame, no fragments).
    pub fn is_idle(&self) -> bool {
        self.partial.is_empty() && self.fragments.is_empty() && self.fragmented.is_none()
    }

    /// Returns true once a Close frame has been delivered.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Completes the pending partial frame from the front of `input`, delivering
    /// it if it is now whole. Returns how many bytes of `input` were used.
    fn finish_partial_frame(
        &mut self,
        input: &[u8],
        on_event: &mut dyn FnMut(WsEvent<'_>) -> Result<(), WsError>,
    ) -> Result<usize, WsError> {
        let mut frame = std::mem::take(&mut self.partial);
        let mut used = 0;
        let header = loop {
            if let Some(header) = parse_header(&frame)? {
                break header;
            }
            // The header itself was cut; it is at most 14 bytes, so go byte by byte.
            let Some(&byte) = input.get(used) else {
                self.partial = frame;
                return Ok(used);
            };
            frame.push(byte);
            used += 1;
        };
        self.check_sequence(&header)?;
        let wanted = header.frame_len() - frame.len();
        let available = wanted.min(input.len() - used);
        frame.extend_from_slice(&input[used..used + available]);
        used += available;
        if frame.len() < header.frame_len() {
            self.partial = frame;
            return Ok(used);
        }
        let payload = &mut frame[header.header_len..];
        unmask(payload, header.mask);
        self.deliver(&header, payload, on_event)?;
        // `frame` is dropped here: the reader keeps no buffer once the frame is done.
        Ok(used)
    }

    /// Checks the rules that depend on earlier frames: fragment order and total size.
    fn check_sequence(&self, header: &FrameHeader) -> Result<(), WsError> {
        match header.opcode {
            OpCode::Continuation => {
                if self.fragmented.is_none() {
                    return Err(WsError::Protocol("continuation frame without a message"));
                }
                if header.payload_len > self.max_message_size - self.fragments.len() {
                    return Err(WsError::TooBig);
                }
            }
            OpCode::Text | OpCode::Binary => {
                if self.fragmented.is_some() {
                    return Err(WsError::Protocol("new message inside a fragmented message"));
                }
                if header.payload_len > self.max_message_size {
                    return Err(WsError::TooBig);
                }
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => {}
        }
        Ok(())
    }

    /// Acts on one whole, unmasked frame.
    fn deliver(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        on_event: &mut dyn FnMut(WsEvent<'_>) -> Result<(), WsError>,
    ) -> Result<(), WsError> {
        match header.opcode {
            OpCode::Text | OpCode::Binary if header.fin => {
                let binary = header.opcode == OpCode::Binary;
                if !binary && std::str::from_utf8(payload).is_err() {
                    return Err(WsError::InvalidUtf8);
                }
                on_event(WsEvent::Message { binary, payload })
            }
            OpCode::Text | OpCode::Binary => {
                self.fragmented = Some(header.opcode == OpCode::Binary);
                self.fragments.extend_from_slice(payload);
                Ok(())
            }
            OpCode::Continuation => {
                self.fragments.extend_from_slice(payload);
                if !header.fin {
                    return Ok(());
                }
                let message = std::mem::take(&mut self.fragments);
                let binary = self.fragmented.take().unwrap_or(true);
                if !binary && std::str::from_utf8(&message).is_err() {
                    return Err(WsError::InvalidUtf8);
                }
                on_event(WsEvent::Message { binary, payload: &message })
            }
            OpCode::Ping => on_event(WsEvent::Ping(payload)),
            OpCode::Pong => on_event(WsEvent::Pong),
            OpCode::Close => {
                let (code, reason) = parse_close_payload(payload)?;
                self.closed = true;
                self.fragments = Vec::new();
                self.fragmented = None;
                on_event(WsEvent::Close { code, reason })
            }
        }
    }
}

/// Parses and validates the header at the start of `buf`; `None` if it is cut short.
fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, WsError> {
    let (Some(&first), Some(&second)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set"));
    }
    let opcode = OpCode::from_code(first & 0x0f).ok_or(WsError::Protocol("reserved opcode"))?;
    let fin = first & 0x80 != 0;
    if second & 0x80 == 0 {
        return Err(WsError::Protocol("client frames must be masked"));
    }
    let (payload_len, length_len) = match second & 0x7f {
        126 => match buf.get(2..4) {
            Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 2),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|bytes| <[u8; 8]>::try_from(bytes).ok()) {
            Some(bytes) => (u64::from_be_bytes(bytes), 8),
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    if payload_len >> 63 != 0 {
        return Err(WsError::Protocol("frame length has its top bit set"));
    }
    if opcode.is_control() {
        if !fin {
            return Err(WsError::Protocol("fragmented control frame"));
        }
        if payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(WsError::Protocol("control frame longer than 125 bytes"));
        }
    }
    let payload_len = usize::try_from(payload_len).map_err(|_| WsError::TooBig)?;
    let mask_at = 2 + length_len;
    let Some(mask) = buf.get(mask_at..mask_at + 4).and_then(|bytes| <[u8; 4]>::try_from(bytes).ok()) else {
        return Ok(None);
    };
    let header_len = mask_at + 4;
    debug_assert!(header_len <= MAX_HEADER_LEN);
    if payload_len > usize::MAX - header_len {
        return Err(WsError::TooBig);
    }
    Ok(Some(FrameHeader { fin, opcode, mask, header_len, payload_len }))
}

/// XORs `payload` with the 4-byte client mask (its own inverse).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let mask_word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ mask_word;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// Splits a Close payload into its optional code and UTF-8 reason.
fn parse_close_payload(payload: &[u8]) -> Result<(Option<u16>, &str), WsError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(WsError::Protocol("close frame with a one-byte payload")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !is_valid_close_code(code) {
                return Err(WsError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

/// Codes a peer may send: the registered 1000–1014 minus the ones reserved for
/// local use only (1004–1006), plus the library and application ranges.
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
