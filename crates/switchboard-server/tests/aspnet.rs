//! The bridge to an ASP.NET Core SignalR Redis backplane, end to end through a real
//! `redis-server`: a peer publishes and subscribes exactly as the backplane digest says an
//! ASP.NET server does (its own server name, ack and return channels, MessagePack envelopes with
//! framed messages), and a Switchboard node with `--aspnet-backplane` serves WebSocket clients.
//! Sends, group commands with acks, connection sends and client results go both ways.

mod support;

use std::collections::VecDeque;
use support::{Frame, WAIT, start_node};
use switchboard_backplane::{Ack, Completion, GroupAction, GroupCommand, Invocation};
use switchboard_testkit::redis::RedisServer;
use tokio::sync::mpsc;

const PREFIX: &str = "MyApp";
const HUB_TYPE: &str = "Chat.Hubs.ChatHub";
const PEER: &str = "web01_0123456789abcdef0123456789abcdef";

/// An ASP.NET hub server on the backplane, as the digest describes one.
struct Peer {
    publisher: redis::aio::MultiplexedConnection,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    pending: VecDeque<(String, Vec<u8>)>,
    /// What it published itself: its own subscriptions echo it (that is how an ASP.NET server
    /// reaches its own clients), and [`Peer::next_on`] skips it.
    own: Vec<(String, Vec<u8>)>,
}

fn channel(suffix: &str) -> String {
    format!("{PREFIX}{HUB_TYPE}:{suffix}")
}

impl Peer {
    /// Subscribes to what a server with `connections` of `users` would.
    async fn start(url: &str, connections: &[&str], users: &[&str]) -> Peer {
        let client = redis::Client::open(url).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        let fixed = [
            "all".to_owned(),
            "internal:groups".into(),
            format!("internal:ack:{PEER}"),
            format!("internal:return:{PEER}"),
        ];
        let own =
            connections.iter().map(|c| format!("connection:{c}")).chain(users.iter().map(|u| format!("user:{u}")));
        for suffix in fixed.into_iter().chain(own) {
            pubsub.subscribe(channel(&suffix)).await.unwrap();
        }
        let (sender, messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut stream = pubsub.into_on_message();
            while let Some(message) = stream.next().await {
                let _ = sender.send((message.get_channel_name().to_owned(), message.get_payload_bytes().to_vec()));
            }
        });
        let publisher = client.get_multiplexed_async_connection().await.unwrap();
        Peer { publisher, messages, pending: VecDeque::new(), own: Vec::new() }
    }

    async fn publish(&mut self, suffix: &str, payload: &[u8]) -> usize {
        self.own.push((channel(suffix), payload.to_vec()));
        redis::cmd("PUBLISH").arg(channel(suffix)).arg(payload).query_async(&mut self.publisher).await.unwrap()
    }

    /// The next message on the channel with `suffix` (others are kept for later).
    async fn next_on(&mut self, suffix: &str) -> Vec<u8> {
        let wanted = channel(suffix);
        self.pending.retain(|message| !self.own.contains(message));
        if let Some(at) = self.pending.iter().position(|(c, _)| *c == wanted) {
            return self.pending.remove(at).unwrap().1;
        }
        let own = &self.own;
        let (messages, pending) = (&mut self.messages, &mut self.pending);
        tokio::time::timeout(WAIT, async {
            loop {
                let message = messages.recv().await.expect("the peer's subscription runs");
                if own.contains(&message) {
                    continue;
                }
                if message.0 == wanted {
                    return message.1;
                }
                pending.push_back(message);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing on {wanted}"))
    }
}

/// An ASP.NET envelope of one invocation of `target` with `argument`, in both protocols, framed
/// as `GetMessageBytes` frames them.
fn envelope(target: &str, argument: &str, excluded: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let json = format!(r#"{{"type":1,"target":"{target}","arguments":["{argument}"]}}"#).into_bytes();
    let framed_json = [json.as_slice(), b"\x1e"].concat();
    let mut message = Vec::new();
    let value = rmpv::Value::Array(vec![
        1.into(),
        rmpv::Value::Map(vec![]),
        rmpv::Value::Nil,
        target.into(),
        rmpv::Value::Array(vec![argument.into()]),
        rmpv::Value::Array(vec![]),
    ]);
    rmpv::encode::write_value(&mut message, &value).unwrap();
    let framed_messagepack = [&[message.len() as u8][..], &message].concat();
    let invocation = Invocation {
        excluded: excluded.iter().map(|e| (*e).to_owned()).collect(),
        frames: vec![("json".into(), framed_json.clone().into()), ("messagepack".into(), framed_messagepack.into())],
        client_result: None,
        origin: None,
    };
    (invocation.encode(), framed_json)
}

async fn connection_id_of(node: &support::TestNode, user: &str) -> String {
    let (status, _, body) =
        node.rest("GET", &format!("/api/hubs/chat/users/{user}/connections?api-version=2024-12-01"), b"").await;
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    listed["value"][0]["connectionId"].as_str().expect("a connection").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aspnet_server_and_switchboard_share_the_backplane() {
    let redis = tokio::task::block_in_place(RedisServer::start);
    let url = redis.url();
    let node = start_node(|args| {
        args.aspnet_backplane = Some(url.clone());
        args.aspnet_hubs = vec![format!("chat={HUB_TYPE}")];
        args.aspnet_prefix = Some(PREFIX.into());
    })
    .await;
    let mut alice = node.connect_json("chat", Some("alice")).await;
    let mut carol = node.connect_json("chat", Some("carol")).await;
    let (alice_id, carol_id) = (connection_id_of(&node, "alice").await, connection_id_of(&node, "carol").await);
    let mut peer = Peer::start(&url, &["aspnet-1"], &["dave"]).await;

    // ASP.NET → Switchboard: each blob reaches the clients byte for byte; excluded ids are honoured.
    let (payload, framed) = envelope("fromAll", "1", &[&carol_id]);
    assert!(peer.publish("all", &payload).await >= 2, "the node and the peer listen on all");
    assert_eq!(alice.next_message().await, Frame::Data(framed));
    // What is not an envelope is ignored (and counted); the node and its clients carry on.
    for garbage in [&b"\xc1"[..], b"\x92\x90\x81\xa4json\x01", b"not msgpack at all", b""] {
        peer.publish("all", garbage).await;
        peer.publish("internal:groups", garbage).await;
    }
    let (payload, framed) = envelope("fromUser", "2", &[]);
    assert_eq!(peer.publish("user:alice", &payload).await, 1, "the node holds alice");
    assert_eq!(alice.next_message().await, Frame::Data(framed));
    let (payload, framed) = envelope("fromConnection", "3", &[]);
    assert_eq!(peer.publish(&format!("connection:{carol_id}"), &payload).await, 1);
    assert_eq!(carol.next_message().await, Frame::Data(framed), "carol's first message: the excluded one never came");

    // A group command for a Switchboard connection is applied and acked; the group then routes.
    let add = GroupCommand {
        id: 7,
        server: PEER.into(),
        action: GroupAction::Add,
        group: "room".into(),
        connection_id: alice_id.clone(),
    };
    peer.publish("internal:groups", &add.encode()).await;
    assert_eq!(Ack::decode(&peer.next_on(&format!("internal:ack:{PEER}")).await).unwrap(), Ack { id: 7 });
    let (payload, framed) = envelope("fromGroup", "4", &[]);
    assert_eq!(peer.publish("group:room", &payload).await, 1, "subscribed before the ack");
    assert_eq!(alice.next_message().await, Frame::Data(framed));

    // Switchboard → ASP.NET: a REST broadcast reaches Switchboard's clients once and the peer as
    // an envelope with both protocols and the origin that makes Switchboard skip its echo.
    let (status, _, _) = node.rest("POST", "/api/v1/hubs/chat", br#"{"target":"rest","arguments":["x"]}"#).await;
    assert_eq!(status, 202);
    let expected = b"{\"type\":1,\"target\":\"rest\",\"arguments\":[\"x\"]}\x1e".to_vec();
    assert_eq!(alice.next_message().await, Frame::Data(expected.clone()));
    let published = Invocation::decode(&peer.next_on("all").await).unwrap();
    assert_eq!(published.frame("json").map(|f| f.to_vec()), Some(expected));
    assert!(published.frame("messagepack").is_some());
    assert_eq!(published.origin.as_deref(), Some("switchboard"));
    let (payload, framed) = envelope("after", "5", &[]);
    peer.publish("all", &payload).await;
    assert_eq!(alice.next_message().await, Frame::Data(framed), "no second copy of the REST broadcast");

    // A send to an ASP.NET connection, and a group change of one (waits for its owner's ack).
    let (status, _, _) =
        node.rest("POST", "/api/v1/hubs/chat/connections/aspnet-1", br#"{"target":"t","arguments":[]}"#).await;
    assert_eq!(status, 202);
    let to_connection = Invocation::decode(&peer.next_on("connection:aspnet-1").await).unwrap();
    assert_eq!(
        to_connection.frame("json").map(|f| f.to_vec()),
        Some(b"{\"type\":1,\"target\":\"t\",\"arguments\":[]}\x1e".to_vec())
    );
    let rest = {
        let node = &node;
        async move { node.rest("PUT", "/api/v1/hubs/chat/groups/g2/connections/aspnet-1", b"").await }
    };
    let acking = async {
        let command = GroupCommand::decode(&peer.next_on("internal:groups").await).unwrap();
        assert_eq!(
            (command.action, command.group.as_str(), command.connection_id.as_str()),
            (GroupAction::Add, "g2", "aspnet-1")
        );
        assert!(command.server.starts_with("switchboard-"), "{}", command.server);
        peer.publish(&format!("internal:ack:{}", command.server), &Ack { id: command.id }.encode()).await;
    };
    let ((status, _, body), ()) = tokio::join!(rest, acking);
    assert_eq!(status, 200, "{body}");

    // Client results, ASP.NET asking a Switchboard client: the answer comes back on the peer's
    // return channel (named without the prefix in the envelope).
    let ask = Invocation {
        excluded: vec![],
        frames: vec![(
            "json".into(),
            b"{\"type\":1,\"invocationId\":\"inv1\",\"target\":\"getName\",\"arguments\":[]}\x1e".to_vec().into(),
        )],
        client_result: Some(("inv1".into(), format!("{HUB_TYPE}:internal:return:{PEER}"))),
        origin: None,
    };
    peer.publish(&format!("connection:{alice_id}"), &ask.encode()).await;
    let asked = alice.next_record().await;
    assert_eq!((asked["invocationId"].as_str(), asked["target"].as_str()), (Some("inv1"), Some("getName")));
    let answer = b"{\"type\":3,\"invocationId\":\"inv1\",\"result\":\"alice\"}\x1e";
    alice.send(1, answer).await;
    let completion = Completion::decode(&peer.next_on(&format!("internal:return:{PEER}")).await).unwrap();
    assert_eq!((completion.protocol.as_str(), &completion.frame[..]), ("json", &answer[..]));

    // Client results, Switchboard asking an ASP.NET client: the peer answers on the return
    // channel the invocation names.
    let invoke = {
        let node = &node;
        async move {
            node.rest(
                "POST",
                "/api/hubs/chat/connections/aspnet-1/:invoke?api-version=2024-12-01",
                br#"{"target":"getName","arguments":[]}"#,
            )
            .await
        }
    };
    let answering = async {
        let asked = Invocation::decode(&peer.next_on("connection:aspnet-1").await).unwrap();
        let (id, return_channel) = asked.client_result.expect("a client-result invocation");
        assert!(return_channel.starts_with(&format!("{HUB_TYPE}:internal:return:switchboard-")), "{return_channel}");
        let frame = format!(r#"{{"type":3,"invocationId":"{id}","result":"dave"}}"#) + "\u{1e}";
        let completion = Completion { protocol: "json".into(), frame: frame.into_bytes().into() };
        let mut publisher = peer.publisher.clone();
        let _: usize = redis::cmd("PUBLISH")
            .arg(format!("{PREFIX}{return_channel}"))
            .arg(completion.encode())
            .query_async(&mut publisher)
            .await
            .unwrap();
    };
    let ((status, _, body), ()) = tokio::join!(invoke, answering);
    assert_eq!((status, body.as_str()), (200, r#"{"result":"dave"}"#));
}
