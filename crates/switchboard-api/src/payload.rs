//! Send payloads: `{"target": "...", "arguments": [...]}` with keys in any case (the SDK writes
//! PascalCase), or the `application/octet-stream` MessagePack map of prebuilt frames per
//! protocol (azure-serverless.md §4.2).

use crate::ApiError;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::HashMap;
use switchboard_hub::Frames;

/// Builds the frames to deliver from a request body.
pub(crate) fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Frames, ApiError> {
    let binary = content_type
        .map(|ct| ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .is_some_and(|ct| ct == "application/octet-stream" || ct == "application/x-msgpack");
    if binary { parse_binary(body) } else { parse_json(body) }
}

fn parse_json(body: &[u8]) -> Result<Frames, ApiError> {
    let fields: HashMap<String, Box<RawValue>> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body must be a JSON object with 'target' and 'arguments': {e}"))
    })?;
    let field = |name: &str| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    let target = match field("target").map(|raw| serde_json::from_str::<String>(raw.get())) {
        Some(Ok(target)) if !target.is_empty() => target,
        _ => return Err(ApiError::bad_request("'target' must be a non-empty string")),
    };
    let arguments = match field("arguments") {
        None => RawValue::from_string("[]".into()).expect("valid JSON"),
        Some(raw) if raw.get().starts_with('[') => compact(raw),
        Some(raw) if raw.get() == "null" => RawValue::from_string("[]".into()).expect("valid JSON"),
        Some(_) => return Err(ApiError::bad_request("'arguments' must be an array")),
    };
    Ok(Frames::invocation(target, arguments))
}

/// Arguments are forwarded verbatim unless they contain line breaks, which text transports
/// must never carry inside a message.
fn compact(raw: &RawValue) -> Box<RawValue> {
    let text = raw.get();
    if !text.contains(['\n', '\r']) {
        return raw.to_owned();
    }
    let value: serde_json::Value = serde_json::from_str(text).expect("RawValue holds valid JSON");
    serde_json::value::to_raw_value(&value).expect("serializing a Value cannot fail")
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
    Ok(Frames::prebuilt(json, messagepack))
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
