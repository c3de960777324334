//! The wire format of ASP.NET Core SignalR's Redis backplane (`AddStackExchangeRedis`), so that
//! Switchboard nodes can join an existing ASP.NET deployment's Redis: `IHubContext` calls made on
//! the ASP.NET servers reach Switchboard's clients, and the other way round. Sans-io: names and
//! bytes only; the Redis connection belongs to the caller.
//!
//! Every channel is `prefix + hub type name + suffix` ([`Channels`]); every message is a
//! MessagePack array whose reader checks a minimum length and ignores trailing items (the
//! format's only extension mechanism):
//!
//! | message | channel | layout |
//! |---|---|---|
//! | [`Invocation`] | `:all`, `:group:{g}`, `:user:{u}`, `:connection:{id}` | `[excluded ids, {protocol: framed message}]`, plus `invocationId, returnChannel` for a client result |
//! | [`GroupCommand`] | `:internal:groups` | `[id, server name, action (1 add, 2 remove), group, connection id]` |
//! | [`Ack`] | `:internal:ack:{server}` | `[id]` |
//! | [`Completion`] | `:internal:return:{server}` | `[protocol, framed completion message]` |
//!
//! Framed messages (a protocol's JSON record with its `0x1E`, or a MessagePack message with
//! its length prefix) travel as MessagePack `bin` and are written to clients byte for byte.
//! Integers are written in their most compact form, strings as `str`, as the .NET writer does,
//! so the bytes match `RedisProtocolTests`.

mod channels;
mod wire;

pub use channels::Channels;
pub use wire::{Ack, Completion, DecodeError, GroupAction, GroupCommand, Invocation};
