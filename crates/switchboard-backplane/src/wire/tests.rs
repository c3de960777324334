//! The byte vectors of ASP.NET Core's RedisProtocolTests and the backplane digest's examples.

use super::*;

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace().map(|byte| u8::from_str_radix(byte, 16).unwrap()).collect()
}

fn frames(pairs: &[(&str, &[u8])]) -> Vec<(String, Bytes)> {
    pairs.iter().map(|(name, frame)| ((*name).to_owned(), Bytes::copy_from_slice(frame))).collect()
}

#[test]
fn invocations_match_the_published_vectors() {
    let dummy = frames(&[("p1", &[0x2a]), ("p2", &[0x2a])]);
    let cases = [
        (
            Invocation { excluded: vec![], frames: dummy.clone(), client_result: None, origin: None },
            "92 90 82 A2 70 31 C4 01 2A A2 70 32 C4 01 2A",
        ),
        (
            Invocation { excluded: vec!["a".into()], frames: dummy.clone(), client_result: None, origin: None },
            "92 91 A1 61 82 A2 70 31 C4 01 2A A2 70 32 C4 01 2A",
        ),
        (
            Invocation { excluded: vec!["c1".into(), "c2".into()], frames: dummy, client_result: None, origin: None },
            "92 92 A2 63 31 A2 63 32 82 A2 70 31 C4 01 2A A2 70 32 C4 01 2A",
        ),
    ];
    for (invocation, bytes) in cases {
        assert_eq!(invocation.encode(), hex(bytes), "{invocation:?}");
        assert_eq!(Invocation::decode(&hex(bytes)).unwrap(), invocation);
    }
}

/// `Clients.All.SendAsync("Send", "hi")` from a server with the JSON and MessagePack
/// protocols: 85 bytes.
#[test]
fn a_broadcast_from_an_aspnet_server_is_85_bytes() {
    let json = b"{\"type\":1,\"target\":\"Send\",\"arguments\":[\"hi\"]}\x1e";
    let messagepack = hex("0E 96 01 80 C0 A4 53 65 6E 64 91 A2 68 69 90");
    let invocation = Invocation {
        excluded: vec![],
        frames: frames(&[("json", json), ("messagepack", &messagepack)]),
        client_result: None,
        origin: None,
    };
    let mut expected = hex("92 90 82 A4 6A 73 6F 6E C4 2E");
    expected.extend_from_slice(json);
    expected.extend(hex("AB 6D 65 73 73 61 67 65 70 61 63 6B C4 0F"));
    expected.extend_from_slice(&messagepack);
    assert_eq!(expected.len(), 85);
    assert_eq!(invocation.encode(), expected);
    let decoded = Invocation::decode(&expected).unwrap();
    assert_eq!(decoded.frame("json").map(|f| &f[..]), Some(&json[..]));
    assert_eq!(decoded.frame("messagepack").map(|f| &f[..]), Some(&messagepack[..]));
    assert_eq!(decoded.frame("blazorpack"), None);
}

#[test]
fn a_client_result_invocation_carries_its_id_and_return_channel() {
    let channel = "Chat.Hubs.ChatHub:internal:return:web01_02db60e5fab243b890a847fa5c4dcb29";
    assert_eq!(channel.len(), 72);
    let invocation = Invocation {
        excluded: vec![],
        frames: frames(&[("json", b"{}\x1e")]),
        client_result: Some(("AAAAAAAAAAAAAAAAAAAAAA".into(), channel.into())),
        origin: None,
    };
    let bytes = invocation.encode();
    assert_eq!(bytes[0], 0x94, "an array of four");
    let tail = [&[0xb6][..], b"AAAAAAAAAAAAAAAAAAAAAA", &[0xd9, 0x48], channel.as_bytes()].concat();
    assert!(bytes.ends_with(&tail), "{bytes:02X?}");
    assert_eq!(Invocation::decode(&bytes).unwrap(), invocation);
}

/// A Switchboard node's origin is one trailing item: three items for a send (which .NET never
/// reads as a client result), five for a client result.
#[test]
fn the_origin_marker_trails_what_dotnet_reads() {
    let send = Invocation {
        excluded: vec![],
        frames: frames(&[("json", b"{}\x1e")]),
        client_result: None,
        origin: Some("sb".into()),
    };
    let bytes = send.encode();
    assert_eq!(bytes[0], 0x93);
    assert!(bytes.ends_with(&[0xa2, b's', b'b']));
    assert_eq!(Invocation::decode(&bytes).unwrap(), send);
    let result = Invocation { client_result: Some(("id".into(), "ret".into())), ..send.clone() };
    let bytes = result.encode();
    assert_eq!(bytes[0], 0x95);
    assert_eq!(Invocation::decode(&bytes).unwrap(), result);
    let dotnet = Invocation { origin: None, ..send };
    assert_eq!(Invocation::decode(&dotnet.encode()).unwrap().origin, None);
}

#[test]
fn group_commands_and_acks_match_the_published_vectors() {
    let add = GroupCommand {
        id: 42,
        server: "S".into(),
        action: GroupAction::Add,
        group: "G".into(),
        connection_id: "C".into(),
    };
    assert_eq!(add.encode(), hex("95 2A A1 53 01 A1 47 A1 43"));
    assert_eq!(GroupCommand::decode(&hex("95 2A A1 53 01 A1 47 A1 43")).unwrap(), add);
    let remove = GroupCommand { action: GroupAction::Remove, ..add.clone() };
    assert_eq!(remove.encode(), hex("95 2A A1 53 02 A1 47 A1 43"));
    assert_eq!(Ack { id: 42 }.encode(), hex("91 2A"));
    assert_eq!(Ack::decode(&hex("91 2A")).unwrap(), Ack { id: 42 });
    // Integers take their most compact form, and any form whose value fits is read.
    for (id, bytes) in [(180, "91 CC B4"), (384, "91 CD 01 80"), (70000, "91 CE 00 01 11 70")] {
        assert_eq!(Ack { id }.encode(), hex(bytes));
        assert_eq!(Ack::decode(&hex(bytes)).unwrap(), Ack { id });
    }
    assert_eq!(Ack::decode(&hex("91 D3 00 00 00 00 00 00 00 2A")).unwrap(), Ack { id: 42 }, "an int64 42");
}

#[test]
fn completions_carry_the_clients_framed_message() {
    let frame = Bytes::from_static(b"{\"type\":3,\"invocationId\":\"ID\",\"result\":\"bob\"}\x1e");
    let completion = Completion { protocol: "json".into(), frame: frame.clone() };
    let bytes = completion.encode();
    assert_eq!(frame.len(), 46);
    assert_eq!(bytes[..8], hex("92 A4 6A 73 6F 6E C4 2E")[..]);
    assert_eq!(&bytes[8..], &frame[..]);
    assert_eq!(Completion::decode(&bytes).unwrap(), completion);
}

#[test]
fn readers_ignore_extra_items_and_refuse_what_is_not_an_envelope() {
    // Extra trailing items are the format's extension mechanism.
    assert_eq!(Ack::decode(&hex("92 2A C0")).unwrap(), Ack { id: 42 });
    let command = GroupCommand::decode(&hex("96 2A A1 53 01 A1 47 A1 43 A0")).unwrap();
    assert_eq!(command.group, "G");
    // A nil string reads as empty, as the .NET reader returns null.
    assert_eq!(Invocation::decode(&hex("92 91 C0 80")).unwrap().excluded, vec![String::new()]);
    for (bytes, says) in [
        ("", "ack"),
        ("90", "0 items"),
        ("2A", "not an array"),
        ("91 A1 61", "32-bit"),
        ("91 CF 00 00 00 01 00 00 00 00", "32-bit"),
        ("91 2A 2A", "after the message"),
        ("91 DC FF FF", "ack"),
    ] {
        let error = Ack::decode(&hex(bytes)).unwrap_err().to_string();
        assert!(error.contains(says), "{bytes}: {error}");
    }
    assert!(GroupCommand::decode(&hex("95 2A A1 53 03 A1 47 A1 43")).unwrap_err().to_string().contains("action"));
    assert!(Invocation::decode(&hex("92 90 81 A1 61 A1 62")).unwrap_err().to_string().contains("frame"));
    assert!(Completion::decode(&hex("92 A4 6A 73 6F 6E A1 62")).unwrap_err().to_string().contains("bytes"));
    // Deep nesting is refused, not recursed into.
    let deep = [vec![0x91u8; 100_000], vec![0x2a]].concat();
    assert!(Invocation::decode(&deep).is_err());
}
