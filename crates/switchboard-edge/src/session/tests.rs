use super::*;

fn feed(session: &mut Session, data: &[u8]) -> Vec<Output> {
    let mut out = Vec::new();
    session.feed(data, &mut out);
    out
}

fn open_json() -> Session {
    let mut s = Session::new(1024, true, true);
    let out = feed(&mut s, b"{\"protocol\":\"json\",\"version\":1}\x1e");
    assert_eq!(out, vec![Output::Opened(Protocol::Json)]);
    assert!(!s.is_stateful());
    s
}

#[test]
fn handshake_split_across_feeds_with_trailing_messages() {
    let mut s = Session::new(1024, true, true);
    assert!(feed(&mut s, b"{\"protocol\":\"messagepack\",").is_empty());
    let out = feed(&mut s, b"\"version\":2}\x1e\x02\x91\x06");
    assert_eq!(out[0], Output::Opened(Protocol::MessagePack));
    assert_eq!(out.len(), 1, "the trailing ping is consumed silently");
    assert!(s.is_stateful(), "version 2 turns stateful reconnect on");
    assert_eq!(s.protocol(), Some(Protocol::MessagePack));
}

#[test]
fn handshake_errors_use_the_aspnet_texts() {
    for (request, expected) in [
        (&b"{\"protocol\":\"foo\",\"version\":1}\x1e"[..], "Requested protocol 'foo' is not available."),
        (
            b"{\"protocol\":\"json\",\"version\":99}\x1e",
            "The server does not support version 99 of the 'json' protocol.",
        ),
        (b"garbage\x1e", "Error reading handshake"),
    ] {
        let mut s = Session::new(1024, true, true);
        let out = feed(&mut s, request);
        let Output::Close(Some(bytes)) = &out[0] else { panic!("{out:?}") };
        let text = String::from_utf8_lossy(bytes);
        assert!(text.starts_with("{\"error\":") && text.contains(expected), "{text}");
        assert!(feed(&mut s, b"{\"type\":6}\x1e").is_empty(), "nothing after close");
    }
}

#[test]
fn messagepack_is_refused_on_text_only_transports() {
    let mut s = Session::new(1024, false, false);
    let out = feed(&mut s, b"{\"protocol\":\"messagepack\",\"version\":1}\x1e");
    assert!(matches!(&out[0], Output::Close(Some(b)) if String::from_utf8_lossy(b).contains("Binary")));
}

#[test]
fn batched_and_split_messages() {
    let mut s = open_json();
    let out = feed(&mut s, b"{\"type\":6}\x1e{\"type\":1,\"target\":\"a\",\"arguments\":[]}\x1e{\"type\":1,\"invo");
    assert_eq!(
        out,
        vec![Output::Invocation {
            invocation_id: None,
            target: "a".into(),
            body: b"{\"type\":1,\"target\":\"a\",\"arguments\":[]}".to_vec(),
            streaming: false,
        }]
    );
    let out = feed(&mut s, b"cationId\":\"7\",\"target\":\"b\",\"arguments\":[1]}\x1e");
    assert!(
        matches!(&out[..], [Output::Invocation { invocation_id: Some(id), target, .. }] if id == "7" && target == "b")
    );
}

#[test]
fn a_client_result_completion_is_handed_over_framed() {
    let mut s = open_json();
    let completion = b"{\"type\":3,\"invocationId\":\"r1\",\"result\":\"bob\"}\x1e";
    let out = feed(&mut s, &[&completion[..], b"{\"type\":6}\x1e"].concat());
    assert_eq!(out, vec![Output::Completion { invocation_id: "r1".into(), frame: completion.to_vec() }]);
}

#[test]
fn garbage_after_handshake_closes_with_an_error() {
    let mut s = open_json();
    let out = feed(&mut s, b"not json\x1e");
    let Output::Close(Some(bytes)) = &out[0] else { panic!("{out:?}") };
    assert!(String::from_utf8_lossy(bytes).contains("\"type\":7"));
}

#[test]
fn oversized_partial_input_closes() {
    let mut s = open_json();
    let out = feed(&mut s, &[b'{'; 2000]);
    assert!(matches!(&out[0], Output::Close(Some(_))), "{out:?}");
}

#[test]
fn stream_invocations_cancels_and_refused_uploads() {
    let mut s = open_json();
    let stream = b"{\"type\":4,\"invocationId\":\"1\",\"target\":\"Count\",\"arguments\":[3]}";
    let cancel = b"{\"type\":5,\"invocationId\":\"1\"}";
    let upload = b"{\"type\":1,\"invocationId\":\"2\",\"target\":\"Up\",\"arguments\":[],\"streamIds\":[\"9\"]}\x1e";
    let fire_and_forget_upload = b"{\"type\":1,\"target\":\"Up\",\"arguments\":[],\"streamIds\":[\"8\"]}\x1e";
    let mut input = Vec::new();
    for part in [&stream[..], b"\x1e", cancel, b"\x1e", upload, fire_and_forget_upload, b"{\"type\":7}\x1e"] {
        input.extend_from_slice(part);
    }
    let out = feed(&mut s, &input);
    let streaming = Output::Invocation {
        invocation_id: Some("1".into()),
        target: "Count".into(),
        body: stream.to_vec(),
        streaming: true,
    };
    assert_eq!(out[0], streaming);
    assert_eq!(out[1], Output::Cancel { invocation_id: "1".into(), body: cancel.to_vec() });
    assert!(
        matches!(&out[2], Output::Reply(b) if String::from_utf8_lossy(b).contains("Client-to-server streams are not supported")),
        "{out:?}"
    );
    assert_eq!(out[3], Output::ClientClosed, "the fire-and-forget upload gets no answer");
    assert_eq!(out.len(), 4);
}

#[test]
fn stateful_numbering_acks_and_duplicates() {
    let mut s = Session::new(1024, true, true);
    feed(&mut s, b"{\"protocol\":\"json\",\"version\":2}\x1e");
    let invoke = |id: &str| format!("{{\"type\":1,\"target\":\"t{id}\",\"arguments\":[]}}\x1e");
    let out = feed(
        &mut s,
        format!("{}{}{{\"type\":6}}\x1e{{\"type\":8,\"sequenceId\":4}}\x1e", invoke("1"), invoke("2")).as_bytes(),
    );
    assert_eq!(out.len(), 3);
    assert_eq!(out[2], Output::Acked(4));
    assert_eq!(s.received(), 2);
    // Reconnect: input before the Sequence is dropped, then messages 2 and 3 are replayed and
    // only 3 is new.
    s.resume();
    assert!(feed(&mut s, invoke("x").as_bytes()).is_empty());
    let out = feed(&mut s, format!("{{\"type\":9,\"sequenceId\":2}}\x1e{}{}", invoke("2"), invoke("3")).as_bytes());
    assert!(matches!(&out[..], [Output::Invocation { target, .. }] if target == "t3"));
    assert_eq!(s.received(), 3);
}

#[test]
fn a_sequence_beyond_what_was_received_is_an_error() {
    let mut s = Session::new(1024, true, true);
    feed(&mut s, b"{\"protocol\":\"json\",\"version\":2}\x1e");
    s.resume();
    let out = feed(&mut s, b"{\"type\":9,\"sequenceId\":5}\x1e");
    assert!(matches!(&out[0], Output::Close(Some(b)) if String::from_utf8_lossy(b).contains("Sequence ID greater")));
}

#[test]
fn version_two_without_stateful_support_stays_plain() {
    let mut s = Session::new(1024, true, false);
    feed(&mut s, b"{\"protocol\":\"json\",\"version\":2}\x1e");
    assert!(!s.is_stateful());
    assert!(feed(&mut s, b"{\"type\":8,\"sequenceId\":4}\x1e").is_empty());
}
