use serde_json::json;

use crate::Protocol;

use super::*;

fn encoded(msg: &HubMessage<Value>) -> String {
    let mut out = Vec::new();
    encode(msg, &mut out);
    assert_eq!(out.last(), Some(&RECORD_SEPARATOR));
    String::from_utf8(out[..out.len() - 1].to_vec()).unwrap()
}

fn parsed(text: &str) -> HubMessage<Value> {
    parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn invalid(text: &str) -> String {
    match parse(text.as_bytes()) {
        Err(DecodeError::Invalid(message)) => message,
        other => panic!("{text}: expected Invalid, got {other:?}"),
    }
}

#[test]
fn spec_examples_round_trip_byte_for_byte() {
    let examples = [
        r#"{"type":1,"invocationId":"0","target":"SendMessage","arguments":["alice","hi"]}"#,
        r#"{"type":1,"target":"ReceiveMessage","arguments":["alice","hi"]}"#,
        r#"{"type":1,"invocationId":"2","target":"Upload","arguments":[],"streamIds":["1"]}"#,
        r#"{"type":2,"invocationId":"1","item":42}"#,
        r#"{"type":3,"invocationId":"0","result":42}"#,
        r#"{"type":3,"invocationId":"0","result":null}"#,
        r#"{"type":3,"invocationId":"0"}"#,
        r#"{"type":3,"invocationId":"0","error":"An unexpected error occurred invoking 'X' on the server."}"#,
        r#"{"type":4,"invocationId":"3","target":"Counter","arguments":[10,500]}"#,
        r#"{"type":5,"invocationId":"3"}"#,
        r#"{"type":6}"#,
        r#"{"type":7}"#,
        r#"{"type":7,"error":"Server shutting down","allowReconnect":true}"#,
        r#"{"type":8,"sequenceId":12}"#,
        r#"{"type":9,"sequenceId":13}"#,
        r#"{"type":1,"headers":{"Foo":"Bar"},"target":"Send","arguments":[1]}"#,
    ];
    for example in examples {
        assert_eq!(encoded(&parsed(example)), example);
    }
}

#[test]
fn completion_result_presence_decides_void() {
    let value = |text: &str| match parsed(text) {
        HubMessage::Completion { result, .. } => result,
        other => panic!("not a completion: {other:?}"),
    };
    assert_eq!(value(r#"{"type":3,"invocationId":"0","result":42}"#), Completion::Value(json!(42)));
    assert_eq!(value(r#"{"type":3,"invocationId":"0","result":null}"#), Completion::Value(Value::Null));
    assert_eq!(value(r#"{"type":3,"invocationId":"0"}"#), Completion::Void);
    assert_eq!(value(r#"{"type":3,"invocationId":"0","error":null}"#), Completion::Void);
}

#[test]
fn result_and_error_together_are_rejected() {
    let message = invalid(r#"{"type":3,"invocationId":"0","result":1,"error":"x"}"#);
    assert_eq!(message, "the 'error' and 'result' properties are mutually exclusive");
}

#[test]
fn property_order_and_unknown_properties_do_not_matter() {
    let message = parsed(r#" {"arguments":[true],"extra":{"deep":[1,2]},"target":"Go","invocationId":"7","type":1} "#);
    assert_eq!(
        message,
        HubMessage::Invocation {
            headers: Vec::new(),
            invocation_id: Some("7".into()),
            target: "Go".into(),
            arguments: vec![json!(true)],
            stream_ids: Vec::new(),
        }
    );
}

#[test]
fn property_names_are_case_sensitive() {
    assert_eq!(invalid(r#"{"Type":6}"#), "missing required property 'type'");
    assert_eq!(invalid(r#"{"type":1,"Target":"x","arguments":[]}"#), "missing required property 'target'");
}

#[test]
fn missing_and_mistyped_fields_are_named() {
    assert_eq!(invalid(r#"{"type":1,"target":5,"arguments":[]}"#), "expected 'target' to be a string");
    assert_eq!(invalid(r#"{"type":1,"target":"x","arguments":{}}"#), "expected 'arguments' to be an array");
    assert_eq!(invalid(r#"{"type":1,"target":"x"}"#), "missing required property 'arguments'");
    assert_eq!(invalid(r#"{"type":2,"invocationId":"1"}"#), "missing required property 'item'");
    assert_eq!(invalid(r#"{"type":8,"sequenceId":-1}"#), "expected 'sequenceId' to be a non-negative integer");
    assert_eq!(invalid(r#"{"type":7,"allowReconnect":"yes"}"#), "expected 'allowReconnect' to be a boolean");
    assert_eq!(
        invalid(r#"{"type":1,"target":"x","arguments":[],"streamIds":[1]}"#),
        "expected 'streamIds' to be an array of strings"
    );
    assert_eq!(invalid(r#"{"type":"1"}"#), "expected 'type' to be a non-negative integer");
    assert_eq!(invalid(r#"{"type":42}"#), "unknown message type 42");
    assert!(invalid(r#"{"type":1,"headers":{"a":1},"target":"x","arguments":[]}"#).starts_with("invalid headers"));
}

#[test]
fn non_objects_and_broken_json_are_invalid() {
    assert_eq!(invalid("[1,{}]"), "expected a json object");
    assert_eq!(invalid(""), "expected a json object");
    assert!(invalid(r#"{"type":6"#).starts_with("invalid json"));
    assert!(invalid(r#"{"type":6} x"#).starts_with("invalid json"));
}

#[test]
fn headers_keep_their_order() {
    let message = parsed(r#"{"type":5,"invocationId":"1","headers":{"z":"1","a":"2"}}"#);
    assert_eq!(message.headers(), Some(&vec![("z".into(), "1".into()), ("a".into(), "2".into())]));
}

#[test]
fn strings_with_newlines_are_escaped() {
    let text = encoded(&HubMessage::Close { error: Some("line\nbreak\r\u{1e}".into()), allow_reconnect: false });
    assert_eq!(text, r#"{"type":7,"error":"line\nbreak\r\u001e"}"#);
}

#[test]
fn raw_invocation_fast_path() {
    let mut out = Vec::new();
    encode_invocation_raw(None, "Receive\"Message", r#"["alice","hello world"]"#, &mut out);
    assert_eq!(out, b"{\"type\":1,\"target\":\"Receive\\\"Message\",\"arguments\":[\"alice\",\"hello world\"]}\x1e");
    let (message, used) = decode(&out).unwrap();
    assert_eq!(used, out.len());
    assert_eq!(message.message_type(), 1);
}

#[test]
fn convenience_encoders() {
    let mut out = Vec::new();
    encode_close(Some("bye"), true, &mut out);
    encode_close(None, false, &mut out);
    encode_completion_error("4", "boom", &mut out);
    encode_completion_void("5", &mut out);
    assert_eq!(
        out,
        b"{\"type\":7,\"error\":\"bye\",\"allowReconnect\":true}\x1e{\"type\":7}\x1e\
          {\"type\":3,\"invocationId\":\"4\",\"error\":\"boom\"}\x1e\
          {\"type\":3,\"invocationId\":\"5\"}\x1e"
    );
}

#[test]
fn records_split_on_separator() {
    let buf = b"{\"type\":6}\x1e{\"type\":7}\x1e{\"ty";
    let (body, used) = next_record(buf).unwrap();
    assert_eq!((body, used), (&b"{\"type\":6}"[..], 11));
    let (message, used2) = decode(&buf[used..]).unwrap();
    assert_eq!(message, HubMessage::Close { error: None, allow_reconnect: false });
    assert_eq!(decode(&buf[used + used2..]), Err(DecodeError::Incomplete));
}

#[test]
fn limited_record_rejects_oversized_bodies_early() {
    assert_eq!(next_record_limited(b"12345", 5), Err(DecodeError::Incomplete));
    assert!(matches!(next_record_limited(b"123456", 5), Err(DecodeError::Invalid(_))));
    assert_eq!(next_record_limited(b"12345\x1e", 5), Ok((&b"12345"[..], 6)));
    assert!(matches!(next_record_limited(b"123456\x1e", 5), Err(DecodeError::Invalid(_))));
}

#[test]
fn borrowed_parse_keeps_raw_arguments() {
    let body = br#"{"type":1,"target":"T","arguments":[ {"a": [1, 2]} , "x"]}"#;
    let HubMessage::Invocation { arguments, .. } = parse_borrowed(body).unwrap() else {
        panic!("not an invocation");
    };
    let raw: Vec<&str> = arguments.iter().map(|value| value.get()).collect();
    assert_eq!(raw, [r#"{"a": [1, 2]}"#, r#""x""#]);
}

#[test]
fn deep_nesting_is_rejected_without_overflowing_the_stack() {
    let depth = 100_000;
    let body = format!(r#"{{"type":1,"target":"T","arguments":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
    assert!(invalid(&body).contains("recursion limit"));
    // inspect builds nothing from argument values, so only their syntax is checked.
    assert!(Protocol::Json.inspect(body.as_bytes()).is_ok());
    let unbalanced = body.replacen(']', "", 1);
    assert!(Protocol::Json.inspect(unbalanced.as_bytes()).is_err());
}
