//! Stateful reconnect for WebSockets (signalr-protocols.md §7), the server's half: number the
//! trackable messages sent, keep them until the client acks them, and on a new socket send
//! `Sequence` followed by everything not yet acked.

use bytes::Bytes;
use std::collections::VecDeque;
use switchboard_protocol::{HubMessage, Protocol, json, msgpack};

/// ASP.NET Core's default `StatefulReconnectBufferSize`.
pub(crate) const DEFAULT_BUFFER_BYTES: usize = 100_000;

/// Sent trackable messages not yet acknowledged by the client.
#[derive(Debug)]
pub(crate) struct ReplayBuffer {
    limit: usize,
    /// Sequence id of the next message sent.
    next_id: u64,
    entries: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl ReplayBuffer {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit, next_id: 1, entries: VecDeque::new(), bytes: 0 }
    }

    /// Numbers and keeps a sent message.
    pub(crate) fn record(&mut self, message: Bytes) {
        self.bytes += message.len();
        self.entries.push_back((self.next_id, message));
        self.next_id += 1;
    }

    /// Drops every message up to and including `sequence_id`.
    pub(crate) fn ack(&mut self, sequence_id: u64) {
        while self.entries.front().is_some_and(|(id, _)| *id <= sequence_id) {
            let (_, message) = self.entries.pop_front().expect("checked non-empty");
            self.bytes -= message.len();
        }
        if self.entries.is_empty() && self.entries.capacity() > 16 {
            self.entries = VecDeque::new();
        }
    }

    /// Whether more sends must wait for acks (backpressure, as ASP.NET does).
    pub(crate) fn is_full(&self) -> bool {
        self.bytes >= self.limit
    }

    /// Writes what a new socket starts with: `Sequence{id of the oldest unacked message, or the
    /// next id}` then every unacked message in order.
    pub(crate) fn resend(&self, protocol: Protocol, out: &mut Vec<u8>) {
        let first = self.entries.front().map_or(self.next_id, |(id, _)| *id);
        encode_control(protocol, HubMessage::Sequence { sequence_id: first }, out);
        for (_, message) in &self.entries {
            out.extend_from_slice(message);
        }
    }
}

/// Encodes an `Ack` for the client.
pub(crate) fn encode_ack(protocol: Protocol, sequence_id: u64, out: &mut Vec<u8>) {
    encode_control(protocol, HubMessage::Ack { sequence_id }, out);
}

fn encode_control(protocol: Protocol, message: HubMessage<()>, out: &mut Vec<u8>) {
    match protocol {
        Protocol::Json => json::encode(&message.map_values(|()| serde_json::Value::Null), out),
        Protocol::MessagePack => msgpack::encode(&message.map_values(|()| rmpv::Value::Nil), out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_acks_and_resend() {
        let mut buffer = ReplayBuffer::new(10);
        for m in ["a", "b", "c"] {
            buffer.record(Bytes::from(m));
        }
        buffer.ack(1);
        let mut out = Vec::new();
        buffer.resend(Protocol::Json, &mut out);
        assert_eq!(out, b"{\"type\":9,\"sequenceId\":2}\x1ebc");
        buffer.ack(3);
        out.clear();
        buffer.resend(Protocol::Json, &mut out);
        assert_eq!(out, b"{\"type\":9,\"sequenceId\":4}\x1e");
    }

    #[test]
    fn full_at_the_limit() {
        let mut buffer = ReplayBuffer::new(4);
        buffer.record(Bytes::from("abc"));
        assert!(!buffer.is_full());
        buffer.record(Bytes::from("d"));
        assert!(buffer.is_full());
        buffer.ack(1);
        assert!(!buffer.is_full());
    }

    #[test]
    fn messagepack_ack() {
        let mut out = Vec::new();
        encode_ack(Protocol::MessagePack, 5, &mut out);
        assert_eq!(out, [0x03, 0x92, 0x08, 0x05]);
    }
}
