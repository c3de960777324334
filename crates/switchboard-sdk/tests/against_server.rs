//! The SDK against a real in-process Switchboard node: negotiate tokens are accepted by the
//! client endpoint, every REST helper succeeds, and its effects reach a WebSocket client.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{KEY, WAIT, connect, service_negotiate, start_node};
use switchboard_sdk::{RetryPolicy, SdkError, ServiceClient};

const LIFETIME: Duration = Duration::from_secs(300);

fn service(connection_string: &str) -> ServiceClient {
    ServiceClient::builder(connection_string).unwrap().timeout(WAIT).build().unwrap()
}

fn invocation(record: &Value) -> (&str, &Value) {
    assert_eq!(record["type"], 1, "an invocation: {record}");
    (record["target"].as_str().unwrap(), &record["arguments"])
}

#[tokio::test]
async fn negotiate_tokens_are_accepted_and_existence_flips_when_a_client_connects() {
    let node = start_node().await;
    let service = service(&node.connection_string);
    let chat = service.hub("Chat");
    assert!(service.health().await.unwrap());
    assert!(!chat.user_exists("alice").await.unwrap());
    assert!(!chat.connection_exists("no-such-connection").await.unwrap());

    let claims = vec![("role".to_string(), "admin".to_string()), ("aud".to_string(), "mine".to_string())];
    let answer = service.negotiate("Chat", Some("alice"), &claims, LIFETIME);
    let (status, body) = service_negotiate(&answer).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["connectionToken"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert_eq!(body["negotiateVersion"], 1);

    let (mut ws, connection_id) = connect(&node, &answer).await;
    assert!(chat.connection_exists(&connection_id).await.unwrap());
    assert!(chat.user_exists("alice").await.unwrap());

    chat.broadcast("newMessage", &[json!("alice"), json!({"text": "hi"})], &[]).await.unwrap();
    let record = ws.next_record().await;
    let (target, args) = invocation(&record);
    assert_eq!(target, "newMessage");
    assert_eq!(args, &json!(["alice", {"text": "hi"}]));
}

#[tokio::test]
async fn every_rest_helper_succeeds_and_reaches_the_client() {
    let node = start_node().await;
    let service = service(&node.connection_string);
    let chat = service.hub("chat");
    let (mut ws, id) = connect(&node, &service.negotiate("chat", Some("bob"), &[], LIFETIME)).await;
    let group = "room/1 ü"; // needs escaping: '/', space, non-ASCII

    chat.send_to_user("bob", "toUser", &[json!(1)]).await.unwrap();
    assert_eq!(invocation(&ws.next_record().await).0, "toUser");
    chat.send_to_connection(&id, "toConnection", &[]).await.unwrap();
    assert_eq!(invocation(&ws.next_record().await).0, "toConnection");

    assert!(!chat.group_exists(group).await.unwrap());
    chat.add_connection_to_group(&id, group).await.unwrap();
    assert!(chat.group_exists(group).await.unwrap());
    chat.send_to_group(group, "toGroup", &[json!(null)], &[]).await.unwrap();
    assert_eq!(invocation(&ws.next_record().await).0, "toGroup");
    chat.send_to_group(group, "excluded", &[], &[&id]).await.unwrap();
    chat.broadcast("excluded", &[], &[&id]).await.unwrap();
    chat.remove_connection_from_group(&id, group).await.unwrap();
    assert!(!chat.group_exists(group).await.unwrap());
    chat.add_connection_to_group(&id, "second").await.unwrap();
    chat.remove_connection_from_all_groups(&id).await.unwrap();
    assert!(!chat.group_exists("second").await.unwrap());

    assert!(!chat.is_user_in_group("bob", group).await.unwrap());
    chat.add_user_to_group("bob", group, Some(Duration::from_secs(600))).await.unwrap();
    assert!(chat.is_user_in_group("bob", group).await.unwrap());
    assert!(chat.group_exists(group).await.unwrap(), "the user's live connection joined the group");
    chat.remove_user_from_group("bob", group).await.unwrap();
    assert!(!chat.is_user_in_group("bob", group).await.unwrap());
    chat.add_user_to_group("bob", "third", None).await.unwrap();
    assert!(chat.is_user_in_group("bob", "third").await.unwrap());
    chat.remove_user_from_all_groups("bob").await.unwrap();
    assert!(!chat.is_user_in_group("bob", "third").await.unwrap());

    // Closing with the only connection excluded leaves it open.
    chat.close_connections(&[&id], Some("all")).await.unwrap();
    chat.close_user_connections("bob", &[&id], Some("user")).await.unwrap();
    chat.add_connection_to_group(&id, "g").await.unwrap();
    chat.close_group_connections("g", &[&id], Some("group")).await.unwrap();
    chat.send_to_connection(&id, "stillOpen", &[]).await.unwrap();
    // Nothing excluded was delivered: the next record is the one sent after them.
    assert_eq!(invocation(&ws.next_record().await).0, "stillOpen");
    assert!(chat.connection_exists(&id).await.unwrap());

    // Fire-and-forget sends to nobody are accepted too.
    chat.send_to_user("nobody", "x", &[]).await.unwrap();
    service.hub("emptyhub").broadcast("x", &[], &[]).await.unwrap();
}

#[tokio::test]
async fn close_connection_sends_the_reason_and_closes_the_socket() {
    let node = start_node().await;
    let service = service(&node.connection_string);
    let chat = service.hub("chat");
    let (mut ws, id) = connect(&node, &service.negotiate("chat", None, &[], LIFETIME)).await;

    chat.close_connection(&id, Some("server says bye")).await.unwrap();
    let record = ws.next_record().await;
    assert_eq!(record["type"], 7, "a Close message: {record}");
    assert_eq!(record["error"], "server says bye");
    ws.wait_closed().await;
    // Closing a connection that is gone is not an error (404 Warning.Connection.NotExisted).
    chat.close_connection(&id, None).await.unwrap();
    chat.close_connection("never-existed", None).await.unwrap();
}

#[tokio::test]
async fn close_group_and_user_connections_reach_their_members() {
    let node = start_node().await;
    let service = service(&node.connection_string);
    let chat = service.hub("chat");
    let (mut in_group, id) = connect(&node, &service.negotiate("chat", None, &[], LIFETIME)).await;
    let (mut user, _) = connect(&node, &service.negotiate("chat", Some("carol"), &[], LIFETIME)).await;
    chat.add_connection_to_group(&id, "g").await.unwrap();

    chat.close_group_connections("g", &[], Some("group closed")).await.unwrap();
    assert_eq!(in_group.next_record().await["error"], "group closed");
    chat.close_user_connections("carol", &[], Some("user closed")).await.unwrap();
    assert_eq!(user.next_record().await["error"], "user closed");

    let (mut everyone, _) = connect(&node, &service.negotiate("chat", None, &[], LIFETIME)).await;
    chat.close_connections(&[], None).await.unwrap();
    assert_eq!(everyone.next_record().await["type"], 7);
}

#[tokio::test]
async fn applications_prefix_the_hub() {
    let node = start_node().await;
    let service = service(&node.connection_string);
    let chat = service.hub("Chat").with_application("MyApp");
    let answer = chat.negotiate(Some("dave"), &[], LIFETIME);
    assert!(answer.url.ends_with("/client/?hub=myapp_chat"), "{}", answer.url);
    let (mut ws, id) = connect(&node, &answer).await;
    assert!(chat.connection_exists(&id).await.unwrap());
    assert!(!service.hub("chat").connection_exists(&id).await.unwrap());
    chat.broadcast("inApp", &[], &[]).await.unwrap();
    assert_eq!(invocation(&ws.next_record().await).0, "inApp");
}

#[tokio::test]
async fn invalid_hub_names_are_refused_with_400() {
    let node = start_node().await;
    let service = service(&node.connection_string);
    let error = service.hub("1-not-a-hub").broadcast("x", &[], &[]).await.unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");
    let error = service.hub("chat").with_application("bad app").user_exists("u").await.unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");
}

#[tokio::test]
async fn a_wrong_access_key_is_refused_with_401() {
    let node = start_node().await;
    let wrong = node.connection_string.replace(KEY, "not-the-key");
    assert_ne!(wrong, node.connection_string);
    let service = ServiceClient::builder(&wrong).unwrap().timeout(WAIT).retry(RetryPolicy::none()).build().unwrap();
    let error = service.hub("chat").broadcast("x", &[], &[]).await.unwrap_err();
    assert_eq!(error.status(), Some(401), "{error}");
    let error = service.hub("chat").connection_exists("c").await.unwrap_err();
    assert_eq!(error.status(), Some(401), "{error}");
    assert!(matches!(error, SdkError::Service { .. }));

    let (status, _) = service_negotiate(&service.negotiate("chat", None, &[], LIFETIME)).await;
    assert_eq!(status, 401, "client tokens signed with the wrong key are refused too");
}

#[tokio::test]
async fn unknown_connections_cannot_join_groups() {
    let node = start_node().await;
    let chat = service(&node.connection_string).hub("chat");
    let error = chat.add_connection_to_group("ghost", "g").await.unwrap_err();
    assert_eq!(error.status(), Some(404));
    assert_eq!(error.error_code(), Some("Error.Connection.NotExisted"));
}
