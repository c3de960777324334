//! An in-process Switchboard node on a free port, and a SignalR-over-WebSocket connection (the
//! shared test kit's client) made the way a browser does after following a negotiate answer.

#![allow(dead_code, unreachable_pub)]

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use std::time::Duration;
use switchboard_sdk::NegotiateResponse;
use switchboard_server::local::LocalNode;
pub use switchboard_testkit::WsClient;

pub const KEY: &str = "sdk-test-access-key-0123456789";
/// Upper bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A local node of the service.
pub struct TestNode(LocalNode);

impl std::ops::Deref for TestNode {
    type Target = LocalNode;
    fn deref(&self) -> &LocalNode {
        &self.0
    }
}

pub async fn start_node() -> TestNode {
    TestNode(LocalNode::start(KEY, |_| {}).await)
}

/// What the service's own negotiate endpoint answered.
pub struct Negotiated {
    pub connection_id: String,
    pub connection_token: String,
}

/// Follows a negotiate answer like the SignalR JS client: `POST {url-without-query}/negotiate?{query}&negotiateVersion=1`
/// with the access token as bearer. Returns the status and the parsed body.
pub async fn service_negotiate(answer: &NegotiateResponse) -> (u16, Value) {
    let (base, query) = answer.url.split_once('?').unwrap_or((&answer.url, ""));
    let base = if base.ends_with('/') { base.to_owned() } else { format!("{base}/") };
    let url = format!("{base}negotiate?{query}&negotiateVersion=1");
    let response =
        tokio::time::timeout(WAIT, reqwest::Client::new().post(url).bearer_auth(&answer.access_token).send())
            .await
            .expect("negotiate answers within the wait")
            .expect("negotiate request");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// Negotiates with the service and opens a JSON-protocol WebSocket; returns the client and its connection id.
pub async fn connect(node: &TestNode, answer: &NegotiateResponse) -> (WsClient, String) {
    let (status, body) = service_negotiate(answer).await;
    assert_eq!(status, 200, "service negotiate: {body}");
    let negotiated = Negotiated {
        connection_id: body["connectionId"].as_str().expect("connectionId").to_owned(),
        connection_token: body["connectionToken"].as_str().expect("connectionToken").to_owned(),
    };
    let hub = answer.url.split("hub=").nth(1).expect("hub in url");
    let query =
        format!("hub={hub}&id={}&access_token={}", encode(&negotiated.connection_token), encode(&answer.access_token));
    let mut ws = WsClient::open(node.addr, &query).await.expect("upgrade");
    ws.send_text(b"{\"protocol\":\"json\",\"version\":1}\x1e").await;
    assert_eq!(ws.next_record().await, serde_json::json!({}), "handshake answer");
    (ws, negotiated.connection_id)
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}
