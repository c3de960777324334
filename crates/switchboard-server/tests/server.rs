//! End-to-end tests of a real node over loopback sockets with a byte-exact client.

mod support;

use std::time::Duration;
use support::{Frame, KEY, WAIT, read_to_close, start_node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn rest_broadcast_reaches_a_websocket_client() {
    let node = start_node(|_| {}).await;
    let mut a = node.connect_json("chat", Some("alice")).await;
    let (status, _, _) = node.rest("POST", "/api/v1/hubs/chat", br#"{"target":"hello","arguments":[1,"x"]}"#).await;
    assert_eq!(status, 202);
    assert_eq!(a.next_data().await, b"{\"type\":1,\"target\":\"hello\",\"arguments\":[1,\"x\"]}\x1e");
}

#[tokio::test]
async fn handshake_errors_are_answered_then_closed() {
    let node = start_node(|_| {}).await;
    let token = node.client_token("chat", None);
    for (request, expected) in [
        (&b"{\"protocol\":\"foo\",\"version\":1}\x1e"[..], "Requested protocol 'foo' is not available."),
        (b"{\"protocol\":\"json\",\"version\":9}\x1e", "does not support version 9"),
        (b"\x00\x01garbage\x1e", "Error reading handshake"),
    ] {
        let mut ws = node.websocket(&format!("hub=chat&access_token={token}")).await.unwrap();
        ws.send(1, request).await;
        let reply = String::from_utf8(ws.next_data().await).unwrap();
        assert!(reply.contains(expected), "{reply}");
        assert_eq!(ws.next_message().await, Frame::Close(1000));
    }
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let node = start_node(|args| args.max_message_size = Some(4096)).await;
    let mut healthy = node.connect_json("chat", None).await;

    let mut garbage = node.connect_json("chat", None).await;
    garbage.send(1, b"this is not json\x1e").await;
    let close = String::from_utf8(garbage.next_data().await).unwrap();
    assert!(close.starts_with("{\"type\":7,\"error\":\"Connection closed with an error."), "{close}");
    assert_eq!(garbage.next_message().await, Frame::Close(1000));

    let mut oversized = node.connect_json("chat", None).await;
    oversized.send(2, &vec![b'x'; 5000]).await;
    assert_eq!(oversized.next_message().await, Frame::Close(1009));

    let mut unmasked = node.connect_json("chat", None).await;
    use tokio::io::AsyncWriteExt;
    unmasked.stream.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    assert_eq!(unmasked.next_message().await, Frame::Close(1002));

    let (status, _, _) =
        node.rest("POST", "/api/hubs/chat/:send?api-version=2022-06-01", br#"{"target":"still"}"#).await;
    assert_eq!(status, 202);
    assert_eq!(healthy.next_data().await, b"{\"type\":1,\"target\":\"still\",\"arguments\":[]}\x1e");
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401() {
    let node = start_node(|_| {}).await;
    let other_hub = node.client_token("other", None);
    let wrong_key = switchboard_auth::mint_client_token(
        &format!("{}/client/?hub=chat", node.endpoint),
        None,
        Duration::from_secs(60),
        "not-the-key",
    );
    for token in [other_hub.as_str(), wrong_key.as_str(), "garbage", ""] {
        assert_eq!(node.websocket(&format!("hub=chat&access_token={token}")).await.err(), Some(401));
        let (status, _, _) = node
            .raw_http("POST", "/client/negotiate?hub=chat", &[("Authorization", &format!("Bearer {token}"))], b"")
            .await;
        assert_eq!(status, 401);
    }
    assert_eq!(node.websocket("hub=1bad").await.err(), Some(400));
}

#[tokio::test]
async fn negotiate_then_connect_with_the_token_once() {
    let node = start_node(|_| {}).await;
    let token = node.client_token("chat", Some("u"));
    let auth = format!("Bearer {token}");
    let (status, _, body) =
        node.raw_http("POST", "/client/negotiate?hub=chat&negotiateVersion=1", &[("Authorization", &auth)], b"").await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = answer["connectionToken"].as_str().unwrap().to_owned();
    assert!(answer.get("useStatefulReconnect").is_none());
    let query = format!("hub=chat&id={id}&access_token={token}");
    let mut ws = node.websocket(&query).await.unwrap();
    ws.send(1, b"{\"protocol\":\"json\",\"version\":1}\x1e").await;
    assert_eq!(ws.next_data().await, b"{}\x1e");
    assert_eq!(node.websocket(&query).await.err(), Some(409), "a second socket for a live connection");
    drop(ws);
    let forged = id.replace('~', "~0");
    assert_eq!(node.websocket(&format!("hub=chat&id={forged}&access_token={token}")).await.err(), Some(404));
}

#[tokio::test]
async fn rest_errors_carry_error_codes() {
    let node = start_node(|_| {}).await;
    let (status, head, body) = node.rest("HEAD", "/api/hubs/chat/connections/nope?api-version=2022-06-01", b"").await;
    assert_eq!(status, 404);
    assert!(head.to_ascii_lowercase().contains("x-ms-error-code: warning.connection.notexisted"), "{head}");
    assert!(body.is_empty());
    let big = vec![b' '; 1024 * 1024 + 1];
    assert_eq!(node.rest("POST", "/api/v1/hubs/chat", &big).await.0, 413);
    let (status, _, _) = node.raw_http("POST", "/api/v1/hubs/chat", &[], br#"{"target":"x"}"#).await;
    assert_eq!(status, 401);
    assert_eq!(node.rest("POST", "/api/v1/hubs/chat", b"{}").await.0, 400);
    assert_eq!(node.rest("PUT", "/api/v1/hubs/chat/groups/g/connections/none", b"").await.0, 404);
    let (status, _, _) = node.raw_http("GET", "/api/v1/health", &[], b"").await;
    assert_eq!(status, 200);
    let _ = KEY;
}

/// A REST send may carry up to 1 MiB: a message that size reaches a client that keeps up,
/// alone and several at once, rather than closing it as a slow consumer.
#[tokio::test]
async fn messages_of_the_largest_body_reach_a_client_that_keeps_up() {
    let node = start_node(|_| {}).await;
    let mut ws = node.connect_json("chat", Some("big")).await;
    let envelope = r#"{"target":"m","arguments":[""]}"#;
    let text = "x".repeat(switchboard_api::MAX_BODY_BYTES - envelope.len());
    let body = format!(r#"{{"target":"m","arguments":["{text}"]}}"#);
    assert_eq!(body.len(), switchboard_api::MAX_BODY_BYTES);
    for path in ["/api/v1/hubs/chat/users/big", "/api/v1/hubs/chat"] {
        assert_eq!(node.rest("POST", path, body.as_bytes()).await.0, 202, "{path}");
        let record = ws.next_record().await;
        let received = (record["target"].as_str(), record["arguments"][0].as_str().map(str::len));
        assert_eq!(
            received,
            (Some("m"), Some(text.len())),
            "{path}: type {}, error {}",
            record["type"],
            record["error"]
        );
    }
    let send = || node.rest("POST", "/api/v1/hubs/chat/users/big", body.as_bytes());
    // Three at once fit the default queue even if none is written before the last arrives
    // (with a 1 MiB bound this failed in 3 of 3 runs; the hub's unit test
    // `by_default_messages_of_the_largest_body_queue_back_to_back` is the deterministic guard).
    let statuses = tokio::join!(send(), send(), send());
    assert_eq!([statuses.0.0, statuses.1.0, statuses.2.0], [202; 3]);
    for n in 0..3 {
        let record = ws.next_record().await;
        assert_eq!(record["arguments"][0].as_str().map(str::len), Some(text.len()), "{n}: {}", record["error"]);
    }
    assert_eq!(
        node.rest("POST", "/api/v1/hubs/chat/users/big", br#"{"target":"m","arguments":["after"]}"#).await.0,
        202
    );
    assert_eq!(ws.next_record().await["arguments"][0], "after");
}

#[test]
fn invalid_configuration_exits_64_with_one_line() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--listen"));
}

#[test]
fn prints_its_connection_string_and_keeps_the_generated_key() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("switchboard-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let cs: switchboard_auth::ConnectionString = line.trim().parse().unwrap();
        cs.access_key.unwrap()
    };
    let first = run();
    assert_eq!(first, run(), "the key is created once and kept");
    assert_eq!(std::fs::read_to_string(dir.join("access-key")).unwrap().trim(), first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn pings_when_idle_and_closes_silent_clients() {
    let node = start_node(|args| {
        args.keep_alive_interval = Some(1);
        args.client_timeout = Some(2);
        args.handshake_timeout = Some(1);
    })
    .await;
    let mut ws = node.connect_json("chat", None).await;
    assert_eq!(ws.next_message().await, Frame::Data(b"{\"type\":6}\x1e".to_vec()), "keep-alive ping");
    let close = loop {
        match ws.next_message().await {
            Frame::Data(data) if data == b"{\"type\":6}\x1e" => continue,
            other => break other,
        }
    };
    let Frame::Data(close) = close else { panic!("expected a Close message, got {close:?}") };
    assert!(String::from_utf8_lossy(&close).contains("client timeout"));
    assert_eq!(ws.next_message().await, Frame::Close(1000));

    let token = node.client_token("chat", None);
    let mut silent = node.websocket(&format!("hub=chat&access_token={token}")).await.unwrap();
    let reply = String::from_utf8(silent.next_data().await).unwrap();
    assert_eq!(reply, "{\"error\":\"Handshake was canceled.\"}\u{1e}");
}

/// Messages going out do not keep alive a client that sends nothing: the connection's timer,
/// no longer moved for every message sent, still closes it once the client timeout passes.
#[tokio::test]
async fn a_silent_client_is_closed_while_messages_flow_to_it() {
    let node = start_node(|args| {
        args.keep_alive_interval = Some(1);
        args.client_timeout = Some(2);
    })
    .await;
    let mut ws = node.connect_json("chat", Some("quiet")).await;
    let closed = std::sync::atomic::AtomicBool::new(false);
    let send = async {
        // Bounded: 100 sends at most, one every 100 ms, well past the 2 s timeout.
        for _ in 0..100 {
            if closed.load(std::sync::atomic::Ordering::Relaxed) {
                return true;
            }
            let (status, ..) =
                node.rest("POST", "/api/v1/hubs/chat/users/quiet", br#"{"target":"t","arguments":[]}"#).await;
            assert_eq!(status, 202);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let receive = async {
        let mut messages = 0;
        let close = loop {
            match ws.next_message().await {
                Frame::Data(data) if data.starts_with(b"{\"type\":1,") => messages += 1,
                Frame::Data(data) if data == b"{\"type\":6}\x1e" => {}
                other => break other,
            }
        };
        closed.store(true, std::sync::atomic::Ordering::Relaxed);
        (messages, close)
    };
    let both = tokio::time::timeout(2 * WAIT, async { tokio::join!(send, receive) }).await;
    let (stopped, (messages, close)) = both.expect("the connection was never closed");
    assert!(stopped, "the sends ran out before the connection closed");
    assert!(messages >= 5, "messages flowed until the close ({messages})");
    let Frame::Data(close) = close else { panic!("expected a Close message, got {close:?}") };
    assert!(String::from_utf8_lossy(&close).contains("client timeout"), "{}", String::from_utf8_lossy(&close));
}

#[tokio::test]
async fn cors_echoes_the_origin_with_credentials_and_enforces_the_allow_list() {
    let open = start_node(|_| {}).await;
    let origin = [("Origin", "http://page.example")];
    let preflight = [
        ("Origin", "http://page.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "authorization, x-requested-with, x-signalr-user-agent"),
    ];
    let (status, head, _) = open.raw_http("OPTIONS", "/client/negotiate?hub=chat", &preflight, b"").await;
    let head = head.to_ascii_lowercase();
    assert_eq!(status, 204);
    assert!(head.contains("access-control-allow-origin: http://page.example"), "{head}");
    assert!(head.contains("access-control-allow-credentials: true"));
    assert!(head.contains("access-control-allow-headers: authorization, x-requested-with, x-signalr-user-agent"));
    assert!(head.contains("access-control-allow-methods: get, post, delete, options"));
    let (status, head, _) = open.raw_http("POST", "/client/negotiate?hub=chat", &origin, b"").await;
    assert_eq!(status, 401, "CORS headers also on errors, so the page can read them");
    assert!(head.to_ascii_lowercase().contains("access-control-allow-origin: http://page.example"));

    let listed = start_node(|args| args.allowed_origins = vec!["http://good.example".into()]).await;
    let token = listed.client_token("chat", None);
    let auth = format!("Bearer {token}");
    let good = [("Origin", "http://good.example"), ("Authorization", auth.as_str())];
    let bad = [("Origin", "http://evil.example"), ("Authorization", auth.as_str())];
    assert_eq!(listed.raw_http("POST", "/client/negotiate?hub=chat", &good, b"").await.0, 200);
    assert_eq!(listed.raw_http("POST", "/client/negotiate?hub=chat", &bad, b"").await.0, 403);
    assert_eq!(
        listed.raw_http("POST", "/client/negotiate?hub=chat", &[("Authorization", auth.as_str())], b"").await.0,
        200,
        "non-browser callers send no Origin"
    );
}

/// W5: Server-Sent Events and Long Polling apply the handshake timeout WebSockets apply: a
/// client that never sends its handshake gets Azure's handshake-canceled answer and the
/// connection ends.
#[tokio::test]
async fn sse_and_long_polling_apply_the_handshake_timeout() {
    let node = start_node(|args| args.handshake_timeout = Some(1)).await;
    let token = node.client_token("chat", None);
    let auth = format!("Bearer {token}");
    let negotiate = || async {
        let (status, _, body) = node
            .raw_http("POST", "/client/negotiate?hub=chat&negotiateVersion=1", &[("Authorization", &auth)], b"")
            .await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        answer["connectionToken"].as_str().unwrap().to_owned()
    };
    let canceled = "{\"error\":\"Handshake was canceled.\"}\u{1e}";

    let id = negotiate().await;
    let started = std::time::Instant::now();
    let target = format!("/client/?hub=chat&id={id}&access_token={token}");
    let (status, _, body) = node.raw_http("GET", &target, &[("Accept", "text/event-stream")], b"").await;
    assert_eq!(status, 200);
    assert!(body.contains(&format!("data: {canceled}")), "SSE stream: {body:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "ended after {:?}", started.elapsed());

    let id = negotiate().await;
    let target = format!("/client/?hub=chat&id={id}&access_token={token}");
    let (status, _, body) = node.raw_http("GET", &target, &[], b"").await;
    assert_eq!((status, body.as_str()), (200, ""), "the first poll opens the connection");
    let (status, _, body) = node.raw_http("GET", &target, &[], b"").await;
    assert_eq!((status, body.as_str()), (200, canceled), "the next poll carries the answer");
    let (status, _, _) = node.raw_http("GET", &target, &[], b"").await;
    assert_eq!(status, 204, "then the connection is gone");
}

/// A Long Polling client that vanishes in the middle of a poll (a closed tab, a network that
/// went away) sends no DELETE: its connection is reclaimed once the client timeout passes
/// without a poll, the dropped poll counting as ended.
#[tokio::test]
async fn a_long_polling_client_that_vanishes_mid_poll_is_reclaimed() {
    let node = start_node(|args| {
        args.keep_alive_interval = Some(1);
        args.client_timeout = Some(2);
    })
    .await;
    let token = node.client_token("chat", None);
    let auth = format!("Bearer {token}");
    let (status, _, body) =
        node.raw_http("POST", "/client/negotiate?hub=chat&negotiateVersion=1", &[("Authorization", &auth)], b"").await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (id, connection_token) =
        (answer["connectionId"].as_str().unwrap(), answer["connectionToken"].as_str().unwrap());
    let target = format!("/client/?hub=chat&id={connection_token}&access_token={token}");
    assert_eq!(node.raw_http("GET", &target, &[], b"").await.0, 200, "the first poll opens the connection");
    let handshake = b"{\"protocol\":\"json\",\"version\":1}\x1e";
    assert_eq!(node.raw_http("POST", &target, &[], handshake).await.0, 200);
    assert_eq!(node.raw_http("GET", &target, &[], b"").await.0, 200, "the handshake's answer");
    let exists = format!("/api/hubs/chat/connections/{id}?api-version=2022-06-01");
    assert_eq!(node.rest("HEAD", &exists, b"").await.0, 200);
    // A poll that waits for messages, and its client gone without a word.
    let mut poll = TcpStream::connect(node.addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", node.addr);
    poll.write_all(request.as_bytes()).await.unwrap();
    let polling = format!("/api/hubs/chat/connections/{id}/:send?api-version=2022-06-01");
    assert_eq!(node.rest("POST", &polling, br#"{"target":"t","arguments":[]}"#).await.0, 202);
    let mut first = [0u8; 1];
    tokio::time::timeout(WAIT, poll.read_exact(&mut first)).await.unwrap().unwrap();
    let mut poll = TcpStream::connect(node.addr).await.unwrap();
    poll.write_all(request.as_bytes()).await.unwrap();
    // The client closes while the server holds the poll (once the server read the request:
    // closed earlier, the poll never began and there is nothing to test).
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(poll);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while node.rest("HEAD", &exists, b"").await.0 != 404 {
        assert!(tokio::time::Instant::now() < deadline, "the vanished connection was not reclaimed within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The hostile inputs of the hardening campaign, each through the real HTTP path: a clear 4xx
/// with an ErrorDetail body, the node unharmed, a client still served.
#[tokio::test]
async fn hostile_rest_and_token_inputs_get_clear_errors() {
    let node = start_node(|_| {}).await;
    let mut ws = node.connect_json("chat", None).await;
    let error_code = |head: &str| {
        head.lines().find_map(|l| l.strip_prefix("x-ms-error-code: ").map(str::to_owned)).unwrap_or_default()
    };
    // D1 and D2: arguments nested 127 levels (with and without a line break) and an
    // out-of-range number: refused before the 202, no panic, no silent drop.
    let deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    for arguments in [format!("[{deep}]"), format!("[\n{deep}]"), "[1e400]".to_owned()] {
        let body = format!("{{\"target\":\"t\",\"arguments\":{arguments}}}");
        let (status, head, text) = node.rest("POST", "/api/v1/hubs/chat", body.as_bytes()).await;
        assert_eq!(status, 400, "{text}");
        assert_eq!(error_code(&head), "Error.Request.Invalid");
        assert!(text.contains("\"code\""), "ErrorDetail body: {text}");
    }
    // W2: a 1,025-character user id.
    let long = "u".repeat(1025);
    for (method, path) in [
        ("PUT", format!("/api/v1/hubs/chat/users/{long}/groups/g")),
        ("POST", format!("/api/hubs/chat/users/{long}/:closeConnections?api-version=2024-12-01")),
    ] {
        assert_eq!(node.rest(method, &path, b"").await.0, 400, "{method} {}", &path[..40]);
    }
    // W6: group names that are not UTF-8.
    assert_eq!(node.rest("PUT", "/api/v1/hubs/chat/groups/%FF/users/u", b"").await.0, 400);
    // An api-version that is not a date.
    assert_eq!(node.rest("POST", "/api/hubs/chat/:send?api-version=banana", br#"{"target":"t"}"#).await.0, 400);
    // W1: a client token for another resource whose path ends in "client".
    let aud = format!("{}/api/v1/hubs/xclient?hub=chat", node.endpoint);
    let token = switchboard_auth::mint_client_token(&aud, None, Duration::from_secs(60), KEY);
    let auth = format!("Bearer {token}");
    let (status, _, _) = node.raw_http("POST", "/client/negotiate?hub=chat", &[("Authorization", &auth)], b"").await;
    assert_eq!(status, 401);
    // The node is unharmed and the client still served.
    let (status, _, _) = node.rest("POST", "/api/v1/hubs/chat", br#"{"target":"t","arguments":["after"]}"#).await;
    assert_eq!(status, 202);
    assert_eq!(ws.next_data().await, b"{\"type\":1,\"target\":\"t\",\"arguments\":[\"after\"]}\x1e");
}

/// W3: sockets past `--max-connections` are answered 503 and closed at once, past
/// `--max-connections-per-ip` 429, with ErrorDetail bodies, counted in the metrics; a WebSocket
/// keeps its socket counted after the upgrade; a freed socket admits the next one; the
/// internal endpoint stays reachable throughout.
#[tokio::test]
async fn connection_caps_refuse_sockets_clearly_and_free_them() {
    let node = start_node(|args| {
        args.max_connections = Some(4);
        args.max_connections_per_ip = Some(2);
        args.internal_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let from = |source: &'static str| node.socket_from(source);
    let refusal = read_to_close;
    let metrics = || async {
        let internal = node.internal.unwrap();
        let mut stream = tokio::net::TcpStream::connect(internal).await.unwrap();
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {internal}\r\nConnection: close\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
        refusal(stream).await
    };
    let gauge = |text: &str, name: &str| -> u64 {
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX)
    };

    // A WebSocket from 127.0.0.1 and one idle socket: that address's two.
    let mut ws = node.connect_json("chat", None).await;
    let _idle = from("127.0.0.1").await;
    let answer = refusal(from("127.0.0.1").await).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("x-ms-error-code: Error.Connection.AddressLimit") && answer.contains("\"code\""));
    // Two from another address fill the node.
    let _b1 = from("127.0.0.2").await;
    let b2 = from("127.0.0.2").await;
    let answer = refusal(from("127.0.0.3").await).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("x-ms-error-code: Error.Connection.NodeLimit"));
    let text = metrics().await;
    assert_eq!(gauge(&text, "switchboard_sockets_open"), 4, "the upgraded WebSocket still counts");
    assert_eq!(gauge(&text, "switchboard_sockets_refused_total{reason=\"node_limit\"}"), 1);
    assert_eq!(gauge(&text, "switchboard_sockets_refused_total{reason=\"address_limit\"}"), 1);

    // A freed socket admits the next one, once the node saw it close.
    let open_becomes = |want: u64| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let open = gauge(&metrics().await, "switchboard_sockets_open");
            if open == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "sockets open: {open}, expected {want}");
            tokio::task::yield_now().await;
        }
    };
    drop(b2);
    open_becomes(3).await;
    let _c1 = from("127.0.0.3").await;
    open_becomes(4).await;
    let text = metrics().await;
    assert_eq!(gauge(&text, "switchboard_sockets_refused_total{reason=\"node_limit\"}"), 1, "admitted, not refused");
    // Below the caps again, REST and the WebSocket are served as before.
    drop(_idle);
    open_becomes(3).await;
    let (status, _, _) = node.rest("POST", "/api/v1/hubs/chat", br#"{"target":"t","arguments":[1]}"#).await;
    assert_eq!(status, 202);
    assert_eq!(ws.next_data().await, b"{\"type\":1,\"target\":\"t\",\"arguments\":[1]}\x1e");
}

/// `--max-connections-per-user` refuses a user's next connection with 429;
/// `--max-messages-per-second` closes a connection sending faster with a Close saying why;
/// other connections carry on.
#[tokio::test]
async fn per_user_connections_and_message_rates_are_capped() {
    let node = start_node(|args| {
        args.max_connections_per_user = Some(1);
        args.max_messages_per_second = Some(5);
    })
    .await;
    let mut fast = node.connect_json("chat", Some("u")).await;
    let token = node.client_token("chat", Some("u"));
    assert_eq!(node.websocket(&format!("hub=chat&access_token={token}")).await.err(), Some(429), "u's second");
    let mut calm = node.connect_json("chat", Some("v")).await;
    for i in 0..20 {
        fast.send(1, format!("{{\"type\":1,\"target\":\"x\",\"arguments\":[{i}]}}\x1e").as_bytes()).await;
    }
    let close = String::from_utf8(fast.next_data().await).unwrap();
    assert!(close.contains("\"type\":7") && close.contains("more messages per second than allowed"), "{close}");
    assert_eq!(fast.next_message().await, Frame::Close(1000));
    let (status, _, _) = node.rest("POST", "/api/v1/hubs/chat/users/v", br#"{"target":"t","arguments":[1]}"#).await;
    assert_eq!(status, 202);
    assert_eq!(calm.next_data().await, b"{\"type\":1,\"target\":\"t\",\"arguments\":[1]}\x1e");
    // Once u's connection is gone, u may connect again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while node.websocket(&format!("hub=chat&access_token={token}")).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "u connects again after its connection closed");
        tokio::task::yield_now().await;
    }
}

/// `POST /api/hubs/{hub}/:generateToken` mints a client token the node accepts (as the user
/// asked for, for the minutes asked for); the dated family requires `api-version`.
#[tokio::test]
async fn generate_token_mints_a_client_token_and_dated_routes_need_an_api_version() {
    let node = start_node(|_| {}).await;
    let path = "/api/hubs/chat/:generateToken?userId=user1&minutesToExpire=5&api-version=2024-12-01";
    let (status, head, body) = node.rest("POST", path, b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"));
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {token}");
    let (status, _, body) =
        node.raw_http("POST", "/client/negotiate?hub=chat&negotiateVersion=1", &[("Authorization", &auth)], b"").await;
    assert_eq!(status, 200, "the minted token negotiates: {body}");
    let mut ws = node.websocket(&format!("hub=chat&access_token={token}")).await.expect("it connects");
    ws.send(1, b"{\"protocol\":\"json\",\"version\":1}\x1e").await;
    assert_eq!(ws.next_data().await, b"{}\x1e");
    let (status, _, _) =
        node.rest("POST", "/api/hubs/chat/users/user1/:send?api-version=2024-12-01", br#"{"target":"t"}"#).await;
    assert_eq!(status, 202);
    assert_eq!(ws.next_data().await, b"{\"type\":1,\"target\":\"t\",\"arguments\":[]}\x1e", "connected as user1");
    // The claims: five minutes, no more.
    let claims = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 300);
    for bad in ["minutesToExpire=0", "minutesToExpire=-1", "minutesToExpire=soon"] {
        let path = format!("/api/hubs/chat/:generateToken?{bad}&api-version=2024-12-01");
        assert_eq!(node.rest("POST", &path, b"").await.0, 400, "{bad}");
    }
    assert_eq!(node.rest("POST", "/api/hubs/chat/:generateToken", b"").await.0, 400, "no api-version");
    assert_eq!(node.rest("POST", "/api/hubs/chat/:send", br#"{"target":"t"}"#).await.0, 400, "no api-version");
    assert_eq!(node.rest("POST", "/api/v1/hubs/chat", br#"{"target":"t"}"#).await.0, 202, "v1 needs none");
    // Entra ID's temporary keys: refused plainly, as documented.
    for path in ["/api/v1/auth/accessKey", "/api/auth/accessKey?api-version=2024-12-01"] {
        let (status, head, body) = node.raw_http("GET", path, &[("Authorization", "Bearer entra-token")], b"").await;
        assert_eq!(status, 401, "{path}");
        assert!(
            head.contains("x-ms-error-code: Error.Auth.EntraIdNotSupported") && body.contains("AccessKey"),
            "{body}"
        );
    }
}

/// Listing connections (Azure's `GET …/groups/{group}/connections`, and the presence and count
/// extensions): 1,000 connections paged 200 at a time by following `nextLink`, each once in id
/// order; `top`; a group through its member users; a user's; counts; bad paging parameters.
#[tokio::test]
async fn connections_are_listed_page_by_page_and_counted() {
    let node = start_node(|_| {}).await;
    let version = "api-version=2024-12-01";
    let mut clients = Vec::new();
    for i in 0..1000 {
        clients.push(node.connect_json("listing", Some(&format!("u{}", i % 7))).await);
    }
    for user in ["u0", "u1"] {
        let path = format!("/api/hubs/listing/users/{user}/groups/pair?{version}");
        assert_eq!(node.rest("PUT", &path, b"").await.0, 200);
    }
    let node = &node;
    let get = |path_and_query: String| async move {
        let (status, _, body) = node.rest("GET", &path_and_query, b"").await;
        assert_eq!(status, 200, "{path_and_query}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["value"].as_array().unwrap().iter().map(|c| c["connectionId"].as_str().unwrap().to_owned()).collect()
    };
    // Every connection once, in order, five pages of 200.
    let mut next = format!("/api/hubs/listing/connections?maxpagesize=200&{version}");
    let (mut seen, mut pages) = (Vec::new(), 0);
    loop {
        let page = get(next.clone()).await;
        pages += 1;
        seen.extend(ids(&page));
        match page["nextLink"].as_str() {
            Some(link) => {
                assert!(link.starts_with(&node.endpoint), "absolute: {link}");
                next = link.trim_start_matches(&node.endpoint).to_owned();
            }
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (5, 1000));
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "sorted by id, no repeats");
    // `top` caps the whole listing.
    let first = get(format!("/api/hubs/listing/connections?maxpagesize=200&top=250&{version}")).await;
    assert_eq!(ids(&first).len(), 200);
    let link = first["nextLink"].as_str().unwrap().trim_start_matches(&node.endpoint).to_owned();
    let second = get(link).await;
    assert_eq!(ids(&second).len(), 50);
    assert!(second.get("nextLink").is_none(), "no nextLink on the last page");
    // A group through its member users, a user's connections, counts.
    let pair = get(format!("/api/hubs/listing/groups/pair/connections?{version}")).await;
    let expected = (0..1000).filter(|i| i % 7 < 2).count();
    assert_eq!(ids(&pair).len(), 200, "the default page size is the largest, 200");
    assert!(pair["nextLink"].is_string(), "{expected} members: a second page");
    assert!(pair["value"].as_array().unwrap().iter().all(|c| c["userId"] == "u0" || c["userId"] == "u1"));
    let three = get(format!("/api/hubs/listing/users/u3/connections?{version}")).await;
    assert_eq!(ids(&three).len(), (0..1000).filter(|i| i % 7 == 3).count());
    assert_eq!(get(format!("/api/hubs/listing/:count?{version}")).await["count"], 1000);
    assert_eq!(get(format!("/api/hubs/listing/groups/pair/:count?{version}")).await["count"], expected);
    assert_eq!(
        get(format!("/api/hubs/listing/groups/empty/connections?{version}")).await["value"],
        serde_json::json!([])
    );
    for bad in ["maxpagesize=0", "maxpagesize=201", "top=0", "continuationToken=%21%21"] {
        let path = format!("/api/hubs/listing/connections?{bad}&{version}");
        assert_eq!(node.rest("GET", &path, b"").await.0, 400, "{bad}");
    }
    drop(clients);
}

/// `POST /api/hubs/{hub}/:execute?filter=`: the commands reach the connections the OData filter
/// matches and no others; a bad filter is a 400 naming the position, bad commands a 400.
#[tokio::test]
async fn execute_applies_commands_to_what_the_filter_matches() {
    let node = start_node(|_| {}).await;
    let mut listener = node.connect_json("chat", Some("listener-1")).await;
    let mut other = node.connect_json("chat", Some("other")).await;
    let filter = "startswith(userId%2C%20%27listener-%27)";
    let body =
        br#"[{"type":"JoinGroup","group":"ears"},{"type":"SendMessage","message":{"target":"t","arguments":["hi"]}}]"#;
    let path = format!("/api/hubs/chat/:execute?filter={filter}&api-version=2024-12-01");
    let (status, _, text) = node.rest("POST", &path, body).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(listener.next_data().await, b"{\"type\":1,\"target\":\"t\",\"arguments\":[\"hi\"]}\x1e");
    let (status, _, _) =
        node.rest("POST", "/api/hubs/chat/groups/ears/:send?api-version=2024-12-01", br#"{"target":"g"}"#).await;
    assert_eq!(status, 202);
    assert_eq!(listener.next_data().await, b"{\"type\":1,\"target\":\"g\",\"arguments\":[]}\x1e");
    let (status, _, _) =
        node.rest("POST", "/api/hubs/chat/users/other/:send?api-version=2024-12-01", br#"{"target":"marker"}"#).await;
    assert_eq!(status, 202);
    assert_eq!(
        other.next_data().await,
        b"{\"type\":1,\"target\":\"marker\",\"arguments\":[]}\x1e",
        "nothing before the marker"
    );
    let (status, _, text) =
        node.rest("POST", "/api/hubs/chat/:execute?filter=userId%20eq&api-version=2024-12-01", body).await;
    assert_eq!(status, 400);
    assert!(text.contains("position 9"), "{text}");
    for bad in [&b"[]"[..], br#"[{"type":"Explode"}]"#, br#"[{"type":"JoinGroup","group":"   "}]"#, b"{}"] {
        let (status, _, _) = node.rest("POST", "/api/hubs/chat/:execute?api-version=2024-12-01", bad).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(bad));
    }
}

/// `switchboard token` never makes a key up: without a node's key in the data directory it
/// exits 64 naming where it looked, and creates nothing there.
#[test]
fn token_refuses_to_mint_without_a_nodes_key() {
    let dir = std::env::temp_dir().join(format!("switchboard-token-{}", std::process::id()));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["token", "--hub", "chat", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&dir.join("access-key").display().to_string()), "{stderr}");
    assert!(!dir.exists(), "nothing created");
    assert!(output.stdout.is_empty(), "no token printed");
}

/// The default log level tells the node's own story: the generated key and where it is kept,
/// serving, draining; raft's internals stay out, and a normal restart logs no error.
#[test]
fn a_single_node_start_and_restart_log_quietly() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("switchboard-quiet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut logs = Vec::new();
    for _ in 0..2 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .env_remove("SWITCHBOARD_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("Endpoint="), "{line}");
        let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        logs.push(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(logs[0].contains("generated an access key") && logs[0].contains("access-key"), "{}", logs[0]);
    assert!(logs[1].contains("using the access key kept in the data directory"), "{}", logs[1]);
    for log in &logs {
        assert!(log.contains("switchboard is serving") && log.contains("draining"), "{log}");
        assert!(!log.contains("ERROR") && !log.contains("openraft"), "{log}");
    }
}

/// `--max-connect-rate-per-ip`: an address opening sockets faster is answered 429 and closed;
/// other addresses are not affected.
#[tokio::test]
async fn sockets_opened_too_fast_from_one_address_are_refused() {
    let node = start_node(|args| args.max_connect_rate_per_ip = Some(2)).await;
    let _first = node.socket_from("127.0.0.7").await;
    let _second = node.socket_from("127.0.0.7").await;
    let answer = read_to_close(node.socket_from("127.0.0.7").await).await;
    assert!(answer.starts_with("HTTP/1.1 429") && answer.contains("Error.Connection.RateLimit"), "{answer}");
    let (status, _, _) = node.rest("POST", "/api/v1/hubs/chat", br#"{"target":"t"}"#).await;
    assert_eq!(status, 202, "127.0.0.1 has its own budget");
}

/// `--max-memberships-per-hub`: a hub at the cap refuses a new user-group membership with 429
/// and nothing changes; refreshing one is fine; other hubs are not affected; removing one
/// makes room.
#[tokio::test]
async fn the_memberships_of_a_hub_are_capped() {
    let node = start_node(|args| args.max_memberships_per_hub = Some(2)).await;
    let put = |path: &str| {
        let path = path.to_owned();
        let node = &node;
        async move { node.rest("PUT", &path, b"").await }
    };
    assert_eq!(put("/api/v1/hubs/chat/groups/g1/users/a").await.0, 202);
    assert_eq!(put("/api/v1/hubs/chat/groups/g2/users/a").await.0, 202);
    let (status, head, body) = put("/api/v1/hubs/chat/groups/g3/users/b").await;
    assert_eq!(status, 429, "{body}");
    assert!(head.contains("x-ms-error-code: Error.Hub.MembershipLimit"), "{head}");
    let (status, _, _) = node.rest("HEAD", "/api/v1/hubs/chat/groups/g3/users/b", b"").await;
    assert_eq!(status, 404, "nothing was stored");
    assert_eq!(put("/api/v1/hubs/chat/groups/g1/users/a?ttl=60").await.0, 202, "a refresh is no new membership");
    assert_eq!(put("/api/v1/hubs/other/groups/g3/users/b").await.0, 202, "the cap is per hub");
    assert_eq!(node.rest("DELETE", "/api/v1/hubs/chat/groups/g2/users/a", b"").await.0, 202);
    assert_eq!(put("/api/v1/hubs/chat/groups/g3/users/b").await.0, 202, "room again");
}

/// `--max-groups-per-connection`: one group more is refused with 429 and an ErrorDetail code;
/// a group the connection is already in, and other connections, are not affected.
#[tokio::test]
async fn the_groups_of_a_connection_are_capped() {
    let node = start_node(|args| args.max_groups_per_connection = Some(2)).await;
    let token = node.client_token("chat", None);
    let auth = format!("Bearer {token}");
    let (status, _, body) =
        node.raw_http("POST", "/client/negotiate?hub=chat&negotiateVersion=1", &[("Authorization", &auth)], b"").await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (id, connection_token) =
        (answer["connectionId"].as_str().unwrap().to_owned(), answer["connectionToken"].as_str().unwrap().to_owned());
    let mut ws = node.websocket(&format!("hub=chat&id={connection_token}&access_token={token}")).await.unwrap();
    ws.send(1, b"{\"protocol\":\"json\",\"version\":1}\x1e").await;
    assert_eq!(ws.next_data().await, b"{}\x1e");
    let node = &node;
    let put = |group: &'static str| {
        let path = format!("/api/v1/hubs/chat/groups/{group}/connections/{id}");
        async move { node.rest("PUT", &path, b"").await }
    };
    assert_eq!(put("g1").await.0, 200);
    assert_eq!(put("g2").await.0, 200);
    let (status, head, body) = put("g3").await;
    assert_eq!(status, 429, "{body}");
    assert!(head.contains("x-ms-error-code: Error.Connection.GroupLimit"), "{head}");
    assert_eq!(put("g1").await.0, 200, "a group it is in is no new group");
    let (status, _, _) = node.rest("POST", "/api/v1/hubs/chat/groups/g2", br#"{"target":"t"}"#).await;
    assert_eq!(status, 202);
    assert_eq!(ws.next_data().await, b"{\"type\":1,\"target\":\"t\",\"arguments\":[]}\x1e");
}

/// Client requests skip the router (`ClientCall`): every method on every client path must get
/// the answer the router gives, including its 405 for methods a route does not take.
#[tokio::test]
async fn client_paths_answer_every_method_as_routed() {
    let node = start_node(|_| {}).await;
    let token = node.client_token("chat", None);
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let preflight = [("Origin", "http://page.example"), ("Access-Control-Request-Method", "POST")];
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&str, &str, Headers, u16)] = &[
        ("POST", "/client/negotiate?hub=chat", &[], 401),
        ("POST", "/client/negotiate/?hub=chat&negotiateVersion=1", &auth, 200),
        ("POST", "/client/negotiate?hub=chat&negotiateVersion=1", &auth, 200),
        ("OPTIONS", "/client/negotiate?hub=chat", &preflight, 204),
        ("OPTIONS", "/client/?hub=chat", &preflight, 204),
        ("GET", "/client/negotiate?hub=chat", &auth, 405),
        ("PUT", "/client/?hub=chat&id=nobody", &[], 405),
        ("PATCH", "/client?hub=chat&id=nobody", &[], 405),
        ("HEAD", "/client/?hub=chat&id=nobody", &[], 404),
        ("GET", "/client/?hub=chat&id=nobody", &[], 404),
        ("GET", "/client?hub=chat", &[], 400),
        ("POST", "/client/?hub=chat&id=nobody", &[], 404),
        ("DELETE", "/client?hub=chat&id=nobody", &[], 404),
        ("GET", "/clients/?hub=chat", &[], 404),
        ("POST", "/client/negotiate/x?hub=chat", &auth, 404),
    ];
    for (method, target, headers, expected) in cases {
        let (status, head, _) = node.raw_http(method, target, headers, b"").await;
        assert_eq!(status, *expected, "{method} {target}: {head}");
        if *method == "GET" && target.contains("negotiate") {
            assert!(head.to_ascii_lowercase().contains("allow: post,options"), "{head}");
        }
    }
}
