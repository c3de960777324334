//! The transport-independent part of a client connection, sans-io: bytes from the client go
//! in, [`Output`]s come out. It runs the handshake, splits hub records (several per frame,
//! or one across frames), answers what the node answers itself and reports the rest.
//!
//! ```text
//!  transport bytes ──► Session::feed ──► Output::{Opened, Reply, Invocation, Cancel, Completion,
//!                                                 Acked, Close, ClientClosed}
//! ```
//!
//! With stateful reconnect (handshake version 2 on a transport that allows it) the session
//! also numbers the client's trackable messages (types 1-5), drops duplicates replayed after a
//! reconnect, and reports the client's Acks so the transport can trim its replay buffer.

use switchboard_protocol::protocol::Inbound;
use switchboard_protocol::{DecodeError, Protocol, handshake};

/// What the transport must do, in order.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// The handshake succeeded: register the connection, then write the handshake response.
    Opened(Protocol),
    /// A hub message to write to the client (trackable: stateful reconnect numbers it).
    Reply(Vec<u8>),
    /// The client has received every message up to this sequence id.
    Acked(u64),
    /// A client invocation to route to upstream; `body` is the bare message (no record
    /// separator or length prefix), as upstream receives it. `streaming`: a StreamInvocation
    /// (`invocation_id` is then set), answered by the app through the stream REST routes.
    Invocation { invocation_id: Option<String>, target: String, body: Vec<u8>, streaming: bool },
    /// The client's Completion of a client-result invocation, framed as it arrived (its
    /// protocol's record separator or length prefix included), for the waiting REST call.
    Completion { invocation_id: String, frame: Vec<u8> },
    /// The client cancelled the stream `invocation_id`; `body` is the bare CancelInvocation,
    /// for upstream.
    Cancel { invocation_id: String, body: Vec<u8> },
    /// Write the given Close bytes (if any) and end the connection.
    Close(Option<Vec<u8>>),
    /// The client said goodbye (hub Close message); end without writing more.
    ClientClosed,
}

enum Phase {
    Handshake,
    Open(Protocol),
    Done,
}

/// The error Completion of a call that names upload streams (see the README: each item would
/// be an HTTP call to the app).
fn refuse_uploads(protocol: Protocol, invocation_id: &str) -> Vec<u8> {
    let mut reply = Vec::new();
    protocol.encode_completion_error(
        invocation_id,
        "Client-to-server streams are not supported in serverless mode.",
        &mut reply,
    );
    reply
}

/// See the module docs.
pub struct Session {
    phase: Phase,
    protocol: Option<Protocol>,
    /// Bytes of a record not yet complete. Empty (no heap) between whole records.
    partial: Vec<u8>,
    max_message_size: usize,
    binary_allowed: bool,
    stateful_allowed: bool,
    /// Stateful reconnect is on (handshake version 2 where allowed).
    stateful: bool,
    /// Highest sequence id of a trackable client message processed.
    received: u64,
    /// Sequence id the next trackable client message carries.
    next_expected: u64,
    /// After a reconnect, everything is dropped until the client's Sequence message.
    awaiting_sequence: bool,
}

impl Session {
    /// `binary_allowed` is false on transports that carry only text (Server-Sent Events);
    /// `stateful_allowed` is true where stateful reconnect can work (WebSockets).
    pub fn new(max_message_size: usize, binary_allowed: bool, stateful_allowed: bool) -> Self {
        Self {
            phase: Phase::Handshake,
            protocol: None,
            partial: Vec::new(),
            max_message_size,
            binary_allowed,
            stateful_allowed,
            stateful: false,
            received: 0,
            next_expected: 1,
            awaiting_sequence: false,
        }
    }

    /// Whether stateful reconnect is on for this connection.
    pub fn is_stateful(&self) -> bool {
        self.stateful
    }

    /// Highest sequence id of a trackable client message processed (what to Ack).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Starts a new socket of a stateful connection: drop input until the client's Sequence.
    pub fn resume(&mut self) {
        self.partial = Vec::new();
        self.awaiting_sequence = true;
    }

    /// The protocol chosen at handshake (also after the session ended, to frame the last words).
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// Processes bytes from the client.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Output>) {
        if matches!(self.phase, Phase::Done) {
            return;
        }
        if self.partial.is_empty() {
            let used = self.process(data, out);
            self.keep_partial(&data[used..], out);
        } else {
            let mut buffer = std::mem::take(&mut self.partial);
            buffer.extend_from_slice(data);
            let used = self.process(&buffer, out);
            self.keep_partial(&buffer[used..], out);
        }
    }

    fn keep_partial(&mut self, rest: &[u8], out: &mut Vec<Output>) {
        if rest.is_empty() || matches!(self.phase, Phase::Done) {
            self.partial = Vec::new();
        } else if rest.len() > self.max_message_size {
            self.fail("the message exceeds the maximum message size", out);
        } else {
            self.partial = rest.to_vec();
        }
    }

    /// Consumes whole records from `data`; returns the bytes used.
    fn process(&mut self, data: &[u8], out: &mut Vec<Output>) -> usize {
        let mut used = 0;
        while used < data.len() {
            let rest = &data[used..];
            let step = match self.phase {
                Phase::Handshake => self.handshake(rest, out),
                Phase::Open(protocol) => self.message(protocol, rest, out),
                Phase::Done => return data.len(),
            };
            match step {
                Some(n) => used += n,
                None => break,
            }
        }
        used
    }

    fn handshake(&mut self, data: &[u8], out: &mut Vec<Output>) -> Option<usize> {
        let (request, used) = match handshake::parse_request(data) {
            Ok(parsed) => parsed,
            Err(DecodeError::Incomplete) => {
                if data.len() > self.max_message_size {
                    self.refuse("the handshake request is too large", out);
                }
                return None;
            }
            Err(DecodeError::Invalid(reason)) => {
                self.refuse(&format!("Error reading handshake: {reason}"), out);
                return None;
            }
        };
        let Some(protocol) = Protocol::from_name(&request.protocol) else {
            self.refuse(&handshake::unknown_protocol(&request.protocol), out);
            return None;
        };
        if !protocol.supports_version(request.version) {
            self.refuse(&handshake::unsupported_version(&request.protocol, request.version), out);
            return None;
        }
        if protocol.is_binary() && !self.binary_allowed {
            self.refuse(&handshake::unsupported_transfer_format(protocol), out);
            return None;
        }
        self.phase = Phase::Open(protocol);
        self.protocol = Some(protocol);
        self.stateful = self.stateful_allowed && request.version >= 2;
        out.push(Output::Opened(protocol));
        Some(used)
    }

    fn message(&mut self, protocol: Protocol, data: &[u8], out: &mut Vec<Output>) -> Option<usize> {
        let (body, used) = match protocol.next_record(data, self.max_message_size) {
            Ok(record) => record,
            Err(DecodeError::Incomplete) => return None,
            Err(DecodeError::Invalid(reason)) => {
                self.fail(&reason, out);
                return None;
            }
        };
        let inbound = match protocol.inspect(body) {
            Ok(inbound) => inbound,
            Err(error) => {
                self.fail(&error.to_string(), out);
                return None;
            }
        };
        if self.stateful && !self.accept_sequenced(&inbound, out) {
            return Some(used);
        }
        match inbound {
            Inbound::Ping | Inbound::Sequence { .. } => {}
            Inbound::Ack { sequence_id } => {
                if self.stateful {
                    out.push(Output::Acked(sequence_id));
                }
            }
            Inbound::Completion { invocation_id } => {
                out.push(Output::Completion { invocation_id, frame: data[..used].to_vec() });
            }
            // Items and ends of upload streams: uploads are refused at their invocation.
            Inbound::StreamItem => {}
            Inbound::CancelInvocation { invocation_id } => {
                out.push(Output::Cancel { invocation_id, body: body.to_vec() });
            }
            Inbound::Close { .. } => {
                self.phase = Phase::Done;
                out.push(Output::ClientClosed);
            }
            Inbound::Invocation { invocation_id, uploads: true, .. } => {
                // A fire-and-forget call with uploads cannot be answered: it is dropped.
                if let Some(id) = invocation_id {
                    out.push(Output::Reply(refuse_uploads(protocol, &id)));
                }
            }
            Inbound::StreamInvocation { invocation_id, uploads: true, .. } => {
                out.push(Output::Reply(refuse_uploads(protocol, &invocation_id)));
            }
            Inbound::Invocation { invocation_id, target, uploads: false } => {
                out.push(Output::Invocation { invocation_id, target, body: body.to_vec(), streaming: false });
            }
            Inbound::StreamInvocation { invocation_id, target, uploads: false } => {
                let invocation_id = Some(invocation_id);
                out.push(Output::Invocation { invocation_id, target, body: body.to_vec(), streaming: true });
            }
        }
        Some(used)
    }

    /// Applies stateful-reconnect numbering; `false` means the message is to be skipped.
    fn accept_sequenced(&mut self, inbound: &Inbound, out: &mut Vec<Output>) -> bool {
        match inbound {
            Inbound::Sequence { sequence_id } => {
                if *sequence_id > self.received + 1 {
                    self.fail("Sequence ID greater than amount of messages we've received.", out);
                    return false;
                }
                self.next_expected = *sequence_id;
                self.awaiting_sequence = false;
                true
            }
            _ if self.awaiting_sequence => false,
            Inbound::Invocation { .. }
            | Inbound::StreamInvocation { .. }
            | Inbound::StreamItem
            | Inbound::Completion { .. }
            | Inbound::CancelInvocation { .. } => {
                let id = self.next_expected;
                self.next_expected += 1;
                if id <= self.received {
                    return false; // a duplicate replayed after a reconnect
                }
                self.received = id;
                true
            }
            Inbound::Ping | Inbound::Ack { .. } | Inbound::Close { .. } => true,
        }
    }

    /// Answers a failed handshake with the error response, then closes.
    fn refuse(&mut self, error: &str, out: &mut Vec<Output>) {
        self.phase = Phase::Done;
        out.push(Output::Close(Some(handshake::error_response(error))));
    }

    /// Ends an open connection over bad input, telling the client why.
    fn fail(&mut self, reason: &str, out: &mut Vec<Output>) {
        let message = format!("Connection closed with an error. {reason}");
        let bytes = match self.phase {
            Phase::Open(protocol) => {
                let mut close = Vec::new();
                protocol.encode_close(Some(&message), false, &mut close);
                Some(close)
            }
            Phase::Handshake => Some(handshake::error_response(&message)),
            Phase::Done => None,
        };
        self.phase = Phase::Done;
        self.partial = Vec::new();
        out.push(Output::Close(bytes));
    }
}

#[cfg(test)]
mod tests;
