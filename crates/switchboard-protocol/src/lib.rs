//! Sans-io SignalR wire protocol: bytes in, values and bytes out.
//!
//! Everything a SignalR server must read or write on the wire lives here, with
//! no sockets, no clocks and no async runtime, so each layer can be unit tested
//! and fuzzed on plain byte slices. The rest of the server owns the I/O and
//! calls into these layers in order:
//!
//! ```text
//!   HTTP  POST /negotiate ──► negotiate   (JSON bodies; which transports, which id)
//!           │
//!   transport: WebSocket │ SSE │ long polling      (owned by the server)
//!           │
//!           ▼
//!   websocket   RFC 6455 frames ─► messages        (WebSocket transport only)
//!           │
//!           ▼
//!   handshake   {"protocol":..,"version":..}␞ ─► Protocol    (always JSON text)
//!           │
//!           ▼
//!   protocol    Protocol::{next_record, inspect}   (route without full decode)
//!           │
//!           ├── json      records ending in 0x1E
//!           └── msgpack   varint length + msgpack array
//!                   │
//!                   ▼
//!   message     HubMessage<V>: the nine message types, codec-neutral
//! ```
//!
//! Decoders never block and never buffer on their own (except the WebSocket
//! reader, which must keep a partial frame): they take the bytes read so far
//! and answer with a value plus the bytes consumed, with
//! [`DecodeError::Incomplete`] ("read more"), or with
//! [`DecodeError::Invalid`] (close the connection; the text is client-facing).
//! This crate must not depend on tokio, HTTP or any other I/O crate.

pub mod handshake;
pub mod json;
pub mod message;
pub mod msgpack;
pub mod negotiate;
pub mod protocol;
pub mod varint;
pub mod websocket;

mod error;

pub use error::{DecodeError, Result};
pub use message::{Completion, Headers, HubMessage};
pub use protocol::Protocol;
