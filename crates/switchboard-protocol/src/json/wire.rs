//! Reading one JSON hub message body into the neutral model.
//!
//! The body is deserialized once into a flat struct holding every property any
//! message type can have; the `type` then decides which ones are required. That
//! way property order does not matter (clients may put `type` last), unknown
//! properties are skipped by serde, and the checks name the offending property
//! in their error text. The argument payloads are generic so that
//! [`Protocol::inspect`](crate::Protocol::inspect) can borrow them as raw slices
//! instead of building value trees it would throw away.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::DecodeError;
use crate::message::{Completion, Headers, HubMessage};

/// An argument/item/result value type the JSON reader can produce.
pub(crate) trait Payload<'a>: Sized + Deserialize<'a> {
    /// Splits a JSON array into its elements, or returns `None` if it is not an array.
    fn into_array(self) -> Option<Vec<Self>>;
}

impl Payload<'_> for Value {
    fn into_array(self) -> Option<Vec<Self>> {
        match self {
            Value::Array(elements) => Some(elements),
            _ => None,
        }
    }
}

impl<'a> Payload<'a> for &'a RawValue {
    fn into_array(self) -> Option<Vec<Self>> {
        serde_json::from_str(self.get()).ok()
    }
}

/// Every property of every message type; which are required depends on `type`.
///
/// Scalars are read as `Value` so that a wrong type yields an error naming the
/// property rather than serde's anonymous "invalid type" text. A JSON `null`
/// counts as absent everywhere except `item` and `result`, where it is a value.
#[derive(serde::Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
struct WireMessage<P> {
    #[serde(rename = "type")]
    message_type: Option<Value>,
    #[serde(rename = "invocationId")]
    invocation_id: Option<Value>,
    target: Option<Value>,
    arguments: Option<P>,
    #[serde(rename = "streamIds")]
    stream_ids: Option<Value>,
    headers: Option<WireHeaders>,
    #[serde(default, deserialize_with = "present")]
    item: Option<P>,
    #[serde(default, deserialize_with = "present")]
    result: Option<P>,
    error: Option<Value>,
    #[serde(rename = "allowReconnect")]
    allow_reconnect: Option<Value>,
    #[serde(rename = "sequenceId")]
    sequence_id: Option<Value>,
}

/// Keeps `"result":null` apart from a missing `result` (plain `Option` would merge them).
fn present<'de, D, P>(deserializer: D) -> Result<Option<P>, D::Error>
where
    D: Deserializer<'de>,
    P: Deserialize<'de>,
{
    P::deserialize(deserializer).map(Some)
}

/// Headers read straight from the JSON object so their order survives
/// (`serde_json::Map` would sort them).
struct WireHeaders(Headers);

impl<'de> Deserialize<'de> for WireHeaders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeadersVisitor)
    }
}

struct HeadersVisitor;

impl<'de> Visitor<'de> for HeadersVisitor {
    type Value = WireHeaders;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("headers as an object of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut headers = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            match map.next_value::<Value>()? {
                Value::String(value) => headers.push((name, value)),
                _ => return Err(de::Error::custom("invalid headers")),
            }
        }
        Ok(WireHeaders(headers))
    }
}

/// Parses one record body (without its separator) into a message.
pub(crate) fn parse_message<'a, P: Payload<'a>>(body: &'a [u8]) -> Result<HubMessage<P>, DecodeError> {
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') {
        // serde would also accept an array for a struct; the protocol only has objects.
        return Err(DecodeError::invalid("expected a json object"));
    }
    let wire: WireMessage<P> = serde_json::from_slice(body).map_err(json_error)?;
    let headers = wire.headers.map(|headers| headers.0).unwrap_or_default();
    let message = match required_u64(wire.message_type, "type")? {
        1 => HubMessage::Invocation {
            headers,
            invocation_id: optional_string(wire.invocation_id, "invocationId")?,
            target: required_string(wire.target, "target")?,
            arguments: arguments(wire.arguments)?,
            stream_ids: stream_ids(wire.stream_ids)?,
        },
        2 => HubMessage::StreamItem {
            headers,
            invocation_id: required_string(wire.invocation_id, "invocationId")?,
            item: wire.item.ok_or_else(|| missing("item"))?,
        },
        3 => {
            let invocation_id = required_string(wire.invocation_id, "invocationId")?;
            let error = optional_string(wire.error, "error")?;
            let result = match (error, wire.result) {
                (Some(_), Some(_)) => {
                    return Err(DecodeError::invalid("the 'error' and 'result' properties are mutually exclusive"));
                }
                (Some(error), None) => Completion::Error(error),
                (None, Some(value)) => Completion::Value(value),
                (None, None) => Completion::Void,
            };
            HubMessage::Completion { headers, invocation_id, result }
        }
        4 => HubMessage::StreamInvocation {
            headers,
            invocation_id: required_string(wire.invocation_id, "invocationId")?,
            target: required_string(wire.target, "target")?,
            arguments: arguments(wire.arguments)?,
            stream_ids: stream_ids(wire.stream_ids)?,
        },
        5 => HubMessage::CancelInvocation {
            headers,
            invocation_id: required_string(wire.invocation_id, "invocationId")?,
        },
        6 => HubMessage::Ping,
        7 => HubMessage::Close {
            error: optional_string(wire.error, "error")?,
            allow_reconnect: optional_bool(wire.allow_reconnect, "allowReconnect")?,
        },
        8 => HubMessage::Ack { sequence_id: required_u64(wire.sequence_id, "sequenceId")? },
        9 => HubMessage::Sequence { sequence_id: required_u64(wire.sequence_id, "sequenceId")? },
        other => return Err(DecodeError::Invalid(format!("unknown message type {other}"))),
    };
    Ok(message)
}

/// Turns a serde_json failure into client-readable text; syntax errors get a prefix
/// because "expected value at line 1 column 1" alone does not say what was parsed.
fn json_error(error: serde_json::Error) -> DecodeError {
    match error.classify() {
        serde_json::error::Category::Data => DecodeError::Invalid(error.to_string()),
        _ => DecodeError::Invalid(format!("invalid json: {error}")),
    }
}

fn missing(property: &str) -> DecodeError {
    DecodeError::Invalid(format!("missing required property '{property}'"))
}

fn wrong_type(property: &str, expected: &str) -> DecodeError {
    DecodeError::Invalid(format!("expected '{property}' to be {expected}"))
}

fn required_string(value: Option<Value>, property: &str) -> Result<String, DecodeError> {
    optional_string(value, property)?.ok_or_else(|| missing(property))
}

fn optional_string(value: Option<Value>, property: &str) -> Result<Option<String>, DecodeError> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(wrong_type(property, "a string")),
    }
}

fn required_u64(value: Option<Value>, property: &str) -> Result<u64, DecodeError> {
    match value {
        None => Err(missing(property)),
        Some(number) => number.as_u64().ok_or_else(|| wrong_type(property, "a non-negative integer")),
    }
}

fn optional_bool(value: Option<Value>, property: &str) -> Result<bool, DecodeError> {
    match value {
        None => Ok(false),
        Some(Value::Bool(flag)) => Ok(flag),
        Some(_) => Err(wrong_type(property, "a boolean")),
    }
}

fn arguments<'a, P: Payload<'a>>(value: Option<P>) -> Result<Vec<P>, DecodeError> {
    value.ok_or_else(|| missing("arguments"))?.into_array().ok_or_else(|| wrong_type("arguments", "an array"))
}

fn stream_ids(value: Option<Value>) -> Result<Vec<String>, DecodeError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Array(elements) = value else {
        return Err(wrong_type("streamIds", "an array of strings"));
    };
    elements
        .into_iter()
        .map(|element| match element {
            Value::String(id) => Ok(id),
            _ => Err(wrong_type("streamIds", "an array of strings")),
        })
        .collect()
}
