//! Retry rules against a scripted HTTP server: how many attempts each failure gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use switchboard_sdk::{RetryPolicy, ServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the fake service answers every request.
#[derive(Clone, Copy)]
enum Script {
    Status(u16),
    /// Reads the request and never answers.
    Silent,
}

struct FakeService {
    connection_string: String,
    requests: Arc<AtomicUsize>,
}

async fn fake_service(script: Script) -> FakeService {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, script, counter.clone()));
        }
    });
    FakeService { connection_string: format!("Endpoint=http://{addr};AccessKey=key;Version=1.0;"), requests }
}

async fn answer(mut stream: TcpStream, script: Script, requests: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|v| v.trim().parse().unwrap()).unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    requests.fetch_add(1, Ordering::SeqCst);
    match script {
        Script::Status(status) => {
            let response = format!(
                "HTTP/1.1 {status} Scripted\r\nx-ms-error-code: Scripted.Code\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops"
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
        Script::Silent => {
            // Hold the socket open until the client gives up.
            let _ = stream.read(&mut byte).await;
        }
    }
}

fn client(fake: &FakeService, timeout: Duration) -> ServiceClient {
    let retry =
        RetryPolicy { max_attempts: 3, initial_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) };
    ServiceClient::builder(&fake.connection_string).unwrap().timeout(timeout).retry(retry).build().unwrap()
}

const PATIENT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn sends_are_retried_only_above_500() {
    for (status, attempts) in [(503, 3), (502, 3), (500, 1), (408, 1), (400, 1)] {
        let fake = fake_service(Script::Status(status)).await;
        let error = client(&fake, PATIENT).hub("chat").broadcast("x", &[], &[]).await.unwrap_err();
        assert_eq!(error.status(), Some(status));
        assert_eq!(fake.requests.load(Ordering::SeqCst), attempts, "status {status}");
    }
}

#[tokio::test]
async fn other_apis_are_retried_on_5xx_and_408() {
    for (status, attempts) in [(500, 3), (503, 3), (408, 3), (401, 1), (429, 1)] {
        let fake = fake_service(Script::Status(status)).await;
        let error = client(&fake, PATIENT).hub("chat").add_user_to_group("u", "g", None).await.unwrap_err();
        assert_eq!(error.status(), Some(status));
        assert_eq!(error.error_code(), Some("Scripted.Code"));
        assert_eq!(error.body(), Some("oops"));
        assert_eq!(fake.requests.load(Ordering::SeqCst), attempts, "status {status}");
    }
}

#[tokio::test]
async fn existence_checks_and_health_map_statuses() {
    let fake = fake_service(Script::Status(404)).await;
    assert!(!client(&fake, PATIENT).hub("chat").user_exists("u").await.unwrap());
    let fake = fake_service(Script::Status(200)).await;
    assert!(client(&fake, PATIENT).hub("chat").is_user_in_group("u", "g").await.unwrap());
    let fake = fake_service(Script::Status(503)).await;
    assert!(!client(&fake, PATIENT).health().await.unwrap());
    assert_eq!(fake.requests.load(Ordering::SeqCst), 3);
    let fake = fake_service(Script::Status(403)).await;
    assert_eq!(client(&fake, PATIENT).health().await.unwrap_err().status(), Some(403));
}

#[tokio::test]
async fn timeouts_are_retried_except_for_sends() {
    let short = Duration::from_millis(200);
    let fake = fake_service(Script::Silent).await;
    let error = client(&fake, short).hub("chat").connection_exists("c").await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(fake.requests.load(Ordering::SeqCst), 3);

    let fake = fake_service(Script::Silent).await;
    let error = client(&fake, short).hub("chat").send_to_user("u", "x", &[]).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(fake.requests.load(Ordering::SeqCst), 1);
}
