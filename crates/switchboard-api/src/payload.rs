//! Send payloads: `{"target": "...", "arguments": [...]}` with keys in any case (the SDK writes
//! PascalCase), or the `application/octet-stream` MessagePack map of prebuilt frames per
//! protocol (azure-serverless.md §4.2).

use crate::ApiError;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::HashMap;
use switchboard_hub::{Command, Frames, is_valid_group_name};
use switchboard_protocol::Protocol;

/// Builds the frames to deliver from a send's body (`content_type` picks JSON or the binary
/// multi-protocol payload); a 400 when it cannot be delivered to clients of every protocol.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Frames, ApiError> {
    let binary = content_type
        .map(|ct| ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .is_some_and(|ct| ct == "application/octet-stream" || ct == "application/x-msgpack");
    if binary { parse_binary(body) } else { parse_json(body) }
}

fn parse_json(body: &[u8]) -> Result<Frames, ApiError> {
    let fields: SendFields<'_> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body must be a JSON object with 'target' and 'arguments': {e}"))
    })?;
    let target = match fields.target.map(|raw| serde_json::from_str::<String>(raw.get())) {
        Some(Ok(target)) if !target.is_empty() => target,
        _ => return Err(ApiError::bad_request("'target' must be a non-empty string")),
    };
    let arguments = match fields.arguments {
        None => RawValue::from_string("[]".into()).expect("valid JSON"),
        Some(raw) if raw.get().starts_with('[') => {
            check_arguments(raw.get()).map_err(ApiError::bad_request)?;
            compact(raw)
        }
        Some(raw) if raw.get() == "null" => RawValue::from_string("[]".into()).expect("valid JSON"),
        Some(_) => return Err(ApiError::bad_request("'arguments' must be an array")),
    };
    Ok(Frames::invocation(target, arguments))
}

/// The two members of a send's JSON object that matter, borrowed from the body. Names match in
/// any case (the SDK writes PascalCase); of two that match, the later wins. Other members are
/// parsed (the body must be valid JSON) and dropped.
#[derive(Default)]
struct SendFields<'a> {
    target: Option<&'a RawValue>,
    arguments: Option<&'a RawValue>,
}

impl<'de> serde::Deserialize<'de> for SendFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SendFieldsVisitor)
    }
}

struct SendFieldsVisitor;

impl<'de> serde::de::Visitor<'de> for SendFieldsVisitor {
    type Value = SendFields<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut fields = SendFields::default();
        while let Some(name) = map.next_key::<SendField>()? {
            match name {
                SendField::Target => fields.target = Some(map.next_value()?),
                SendField::Arguments => fields.arguments = Some(map.next_value()?),
                SendField::Other => _ = map.next_value::<serde::de::IgnoredAny>()?,
            }
        }
        Ok(fields)
    }
}

/// A member name of a send, told apart without copying it.
enum SendField {
    Target,
    Arguments,
    Other,
}

impl<'de> serde::Deserialize<'de> for SendField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = SendField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, name: &str) -> Result<SendField, E> {
                Ok(if name.eq_ignore_ascii_case("target") {
                    SendField::Target
                } else if name.eq_ignore_ascii_case("arguments") {
                    SendField::Arguments
                } else {
                    SendField::Other
                })
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// Deepest nesting of arrays and objects a REST payload's arguments may have (the arguments
/// array itself counts as one), as ASP.NET Core SignalR's System.Text.Json allows: deeper
/// payloads could not be delivered to every client, so they are refused before the 202.
pub const MAX_ARGUMENTS_DEPTH: usize = 64;

/// Checks, in one pass over the raw JSON, what every protocol needs of the arguments: nesting
/// within [`MAX_ARGUMENTS_DEPTH`], and numbers a MessagePack client can receive (finite).
fn check_arguments(text: &str) -> Result<(), String> {
    check_values(text, "'arguments'")
}

/// [`check_arguments`] for any JSON text; `what` names it in the error.
fn check_values(text: &str, what: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    let (mut depth, mut at) = (0usize, 0usize);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                at += 1;
                // Straight to the string's end or its next escape: most strings have none.
                loop {
                    match bytes.get(at..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
                        Some(found) => at += found,
                        None => break at = bytes.len(),
                    }
                    if bytes[at] == b'"' {
                        break;
                    } else if bytes.get(at + 1) == Some(&b'u') {
                        at = check_unicode_escape(bytes, at).map_err(|error| format!("{what} hold {error}"))?;
                    } else {
                        at += 2;
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_ARGUMENTS_DEPTH {
                    return Err(format!("{what} are nested deeper than {MAX_ARGUMENTS_DEPTH} levels"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let end = bytes[at..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(bytes.len(), |n| at + n);
                let number = &text[at..end];
                if !number.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(format!("{what} hold a number out of range: {}", clip(number)));
                }
                at = end;
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

/// Checks the `\\uXXXX` escape at `at` (and the low half a high surrogate needs); returns where
/// the text goes on. JSON's syntax allows a lone surrogate, but it is no character: MessagePack
/// clients could not receive it.
fn check_unicode_escape(bytes: &[u8], at: usize) -> Result<usize, String> {
    let unit = |at: usize| {
        let hex = bytes.get(at + 2..at + 6).filter(|_| bytes[at..].starts_with(b"\\u"))?;
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let lone = || Err("a \\u escape of half a surrogate pair".to_owned());
    match unit(at) {
        Some(0xD800..=0xDBFF) => match unit(at + 6) {
            Some(0xDC00..=0xDFFF) => Ok(at + 12),
            _ => lone(),
        },
        Some(0xDC00..=0xDFFF) => lone(),
        _ => Ok(at + 6),
    }
}

fn clip(text: &str) -> &str {
    text.get(..40).unwrap_or(text)
}

/// Arguments are forwarded verbatim unless they contain line breaks, which text transports
/// must never carry inside a message. Checked arguments ([`check_arguments`]) always re-encode.
fn compact(raw: &RawValue) -> Box<RawValue> {
    let text = raw.get();
    if memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_none() {
        return raw.to_owned();
    }
    match serde_json::from_str::<serde_json::Value>(text).and_then(|v| serde_json::value::to_raw_value(&v)) {
        Ok(compacted) => compacted,
        Err(_) => raw.to_owned(),
    }
}

/// The item of a stream's `:send`: the body is one bare JSON value, as the SDK serializes it
/// (an empty body is `null`), checked like arguments.
pub(crate) fn parse_stream_item(stream: &str, body: &[u8]) -> Result<Frames, ApiError> {
    let item: Box<RawValue> = if body.iter().all(u8::is_ascii_whitespace) {
        RawValue::from_string("null".into()).expect("valid JSON")
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body must be one JSON value, the item: {e}")))?
    };
    check_values(item.get(), "the item").map_err(ApiError::bad_request)?;
    Frames::stream_item(stream, &compact(&item))
        .ok_or_else(|| ApiError::bad_request("the item cannot be sent to MessagePack clients"))
}

fn parse_binary(body: &[u8]) -> Result<Frames, ApiError> {
    let invalid = || ApiError::bad_request("the binary payload must be a MessagePack map of protocol name to bin");
    let mut reader = body;
    let value = rmpv::decode::read_value_ref(&mut reader).map_err(|_| invalid())?;
    let rmpv::ValueRef::Map(entries) = value else { return Err(invalid()) };
    let (mut json, mut messagepack) = (None, None);
    for (key, value) in entries {
        let (rmpv::ValueRef::String(key), rmpv::ValueRef::Binary(bytes)) = (key, value) else { return Err(invalid()) };
        match key.as_str() {
            Some("json") => json = Some(Bytes::copy_from_slice(bytes)),
            Some("messagepack") => messagepack = Some(Bytes::copy_from_slice(bytes)),
            _ => {}
        }
    }
    if json.is_none() && messagepack.is_none() {
        return Err(ApiError::bad_request("the binary payload has neither a 'json' nor a 'messagepack' frame"));
    }
    // A missing protocol is converted from the other; one that cannot be is refused here,
    // before the 202, instead of silently reaching no client of that protocol.
    let frames = Frames::prebuilt(json, messagepack);
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        if frames.get(protocol).is_none() {
            return Err(ApiError::bad_request(format!(
                "the binary payload's frame cannot be converted for {} clients",
                protocol.name()
            )));
        }
    }
    Ok(frames)
}

/// Most commands one `:execute` may carry.
pub const MAX_EXECUTE_COMMANDS: usize = 100;

/// The body of `:execute`: a JSON array of Azure's `SignalRCommand`s
/// (`{"type":"SendMessage","message":{"target":…,"arguments":[…]}}`, `JoinGroup` / `LeaveGroup`
/// with `group`, `CloseConnection` with an optional `reason`).
pub fn parse_commands(body: &[u8]) -> Result<Vec<Command>, ApiError> {
    let items: Vec<HashMap<String, Box<RawValue>>> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body must be a JSON array of commands: {e}")))?;
    if items.is_empty() || items.len() > MAX_EXECUTE_COMMANDS {
        return Err(ApiError::bad_request(format!("1 to {MAX_EXECUTE_COMMANDS} commands are allowed")));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, fields)| {
            let field = |name: &str| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.get());
            let text = |name: &str| field(name).and_then(|raw| serde_json::from_str::<String>(raw).ok());
            let bad = |what: &str| ApiError::bad_request(format!("command {index}: {what}"));
            match text("type").as_deref() {
                Some("SendMessage") => {
                    let message = field("message").ok_or_else(|| bad("'message' is required"))?;
                    parse_json(message.as_bytes()).map(Command::SendMessage).map_err(|e| bad(&e.message))
                }
                Some(kind @ ("JoinGroup" | "LeaveGroup")) => {
                    let group = text("group")
                        .filter(|g| is_valid_group_name(g))
                        .ok_or_else(|| bad("'group' must be 1 to 1024 characters, not only whitespace"))?;
                    Ok(if kind == "JoinGroup" { Command::JoinGroup(group) } else { Command::LeaveGroup(group) })
                }
                Some("CloseConnection") => Ok(Command::CloseConnection(text("reason"))),
                _ => Err(bad("'type' must be SendMessage, JoinGroup, LeaveGroup or CloseConnection")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_hub::Frames;

    fn json_frame(frames: &Frames) -> String {
        String::from_utf8(frames.get(switchboard_protocol::Protocol::Json).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn keys_in_any_case() {
        let frames = parse(None, br#"{"Target":"Recv","Arguments":[1, "a"]}"#).unwrap();
        assert_eq!(json_frame(&frames), "{\"type\":1,\"target\":\"Recv\",\"arguments\":[1, \"a\"]}\u{1e}");
        let frames = parse(Some("application/json"), br#"{"target":"t"}"#).unwrap();
        assert!(json_frame(&frames).contains("\"arguments\":[]"));
    }

    /// Member names are matched in any case, escaped or not; of two that match, the later
    /// wins; other members may hold anything valid.
    #[test]
    fn members_are_told_apart_without_copying() {
        let frames = parse(None, br#"{"t\u0061rget":"A","extra":{"x":[1,{"y":null}]},"ARGUMENTS":[2]}"#).unwrap();
        assert_eq!(json_frame(&frames), "{\"type\":1,\"target\":\"A\",\"arguments\":[2]}\u{1e}");
        let frames = parse(None, br#"{"target":"first","Target":"second","arguments":null}"#).unwrap();
        assert_eq!(json_frame(&frames), "{\"type\":1,\"target\":\"second\",\"arguments\":[]}\u{1e}");
        let error = parse(None, br#"{"target":"t","extra":[1,}"#).unwrap_err();
        assert!(error.message.starts_with("the body must be a JSON object"), "{}", error.message);
        let error = parse(None, b"5").unwrap_err();
        assert!(error.message.contains("expected a map"), "{}", error.message);
    }

    #[test]
    fn line_breaks_are_removed() {
        let frames = parse(None, b"{\"target\":\"t\",\"arguments\":[\n1,\r\n2]}").unwrap();
        assert!(!json_frame(&frames).contains('\n'));
    }

    #[test]
    fn bad_payloads() {
        for bad in
            [&b"{}"[..], b"[]", b"{\"target\":\"\"}", b"{\"target\":1}", b"{\"target\":\"t\",\"arguments\":3}", b"nope"]
        {
            assert!(parse(None, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse(Some("application/octet-stream"), b"\x80").is_err());
        assert!(parse(Some("application/octet-stream"), b"garbage").is_err());
    }

    /// D1 (a panic) and D2 (a silent drop for MessagePack clients): deep arguments, with or
    /// without a line break, are refused with a 400 before anything is sent.
    #[test]
    fn arguments_nested_too_deep_are_refused() {
        let nested = |depth: usize, line_break: bool| {
            let inner = format!("{}1{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
            let sep = if line_break { "\n" } else { "" };
            format!("{{\"target\":\"t\",\"arguments\":[{sep}{inner}]}}")
        };
        for depth in [MAX_ARGUMENTS_DEPTH + 1, 127, 128, 200, 5000] {
            for line_break in [false, true] {
                let error = parse(None, nested(depth, line_break).as_bytes()).expect_err("refused");
                assert_eq!(error.status, http::StatusCode::BAD_REQUEST);
                assert!(error.message.contains("nested deeper than 64"), "{}", error.message);
            }
        }
        // At the limit both protocols are built.
        let frames = parse(None, nested(MAX_ARGUMENTS_DEPTH, true).as_bytes()).unwrap();
        assert!(frames.get(Protocol::MessagePack).is_some() && frames.get(Protocol::Json).is_some());
        // Brackets inside strings do not count.
        let text = format!("{{\"target\":\"t\",\"arguments\":[\"{}\\\"\"]}}", "[".repeat(500));
        assert!(parse(None, text.as_bytes()).is_ok());
    }

    /// Numbers no MessagePack client could receive are refused rather than dropped for them.
    #[test]
    fn numbers_out_of_range_are_refused() {
        for bad in ["1e400", "-1e400", &"9".repeat(400)] {
            let body = format!("{{\"target\":\"t\",\"arguments\":[{bad}]}}");
            assert!(parse(None, body.as_bytes()).is_err(), "{bad}");
        }
        let frames = parse(None, br#"{"target":"t","arguments":[1e300,-0.5,18446744073709551615,"1e400"]}"#).unwrap();
        assert!(frames.get(Protocol::MessagePack).is_some());
        // After strings that end in escapes, numbers are still found (and those inside are not).
        assert!(parse(None, br#"{"target":"t","arguments":["\\","a\"1e400\"",1e400]}"#).is_err());
        assert!(parse(None, br#"{"target":"t","arguments":["\\","a\"1e400\"","\u00e9",1]}"#).is_ok());
    }

    /// A lone surrogate escape is valid JSON syntax but no string: it reaches no client either way.
    #[test]
    fn lone_surrogates_in_arguments_are_refused_or_delivered_everywhere() {
        for text in [r#"["\ud800"]"#, r#"["\udc00x"]"#, r#"[{"\ud800":1}]"#, r#"["\ud83d\ude00"]"#] {
            let body = format!("{{\"target\":\"t\",\"arguments\":{text}}}");
            if let Ok(frames) = parse(None, body.as_bytes()) {
                assert!(frames.get(Protocol::MessagePack).is_some(), "{text} accepted but not convertible");
            }
        }
        assert!(parse(None, br#"{"target":"t","arguments":["\ud800"]}"#).is_err());
        assert!(parse(None, br#"{"target":"t","arguments":["\ud83d\ude00 \u00e9"]}"#).is_ok());
    }

    /// A binary payload whose one frame cannot be converted for the other protocol is refused.
    #[test]
    fn an_unconvertible_binary_frame_is_refused() {
        let map = rmpv::Value::Map(vec![(rmpv::Value::from("json"), rmpv::Value::Binary(b"not a frame".to_vec()))]);
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &map).unwrap();
        assert!(parse(Some("application/octet-stream"), &body).is_err());
    }

    #[test]
    fn binary_payload() {
        let json = b"{\"type\":1,\"target\":\"t\",\"arguments\":[]}\x1e".to_vec();
        let map = rmpv::Value::Map(vec![(rmpv::Value::from("json"), rmpv::Value::Binary(json.clone()))]);
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &map).unwrap();
        let frames = parse(Some("application/octet-stream"), &body).unwrap();
        assert_eq!(json_frame(&frames).as_bytes(), &json[..]);
    }
}
