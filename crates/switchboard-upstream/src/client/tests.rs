//! The worker against a real local HTTP upstream.

use super::*;
use crate::Pattern;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use switchboard_hub::ConnectionInfo;

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

type Log = Arc<tokio::sync::Mutex<Vec<Recorded>>>;

/// Answers by path: `/ok` echoes a completion, `/empty` 200 empty, `/nocontent` 204,
/// `/fail` 500, `/garbage` 200 with junk, `/slow` never answers in time.
async fn upstream(
    State(log): State<Log>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Vec<u8>) {
    let path = uri.path().to_owned();
    log.lock().await.push(Recorded { path: path.clone(), headers, body: body.to_vec() });
    match path.as_str() {
        p if p.ends_with("/ok") => (StatusCode::OK, b"{\"type\":3,\"invocationId\":\"0\",\"result\":42}\x1e".to_vec()),
        p if p.ends_with("/empty") => (StatusCode::OK, Vec::new()),
        p if p.ends_with("/nocontent") => (StatusCode::NO_CONTENT, Vec::new()),
        p if p.ends_with("/fail") => (StatusCode::INTERNAL_SERVER_ERROR, b"boom".to_vec()),
        p if p.ends_with("/garbage") => (StatusCode::OK, b"not a hub message".to_vec()),
        p if p.contains("/flaky") => {
            // The first two calls of each event fail as an overloaded upstream would.
            let calls = log.lock().await.iter().filter(|r| r.path == path).count();
            if calls <= 2 { (StatusCode::SERVICE_UNAVAILABLE, Vec::new()) } else { (StatusCode::OK, Vec::new()) }
        }
        p if p.ends_with("/slow") => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (StatusCode::OK, Vec::new())
        }
        _ => (StatusCode::OK, Vec::new()),
    }
}

async fn start_upstream() -> (String, Log) {
    let log: Log = Arc::default();
    let app = Router::new().route("/{*path}", post(upstream)).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, log)
}

fn setup(base: &str, timeout: Duration) -> (Arc<Upstream>, Arc<Connection>, UpstreamQueue) {
    let templates = vec![
        Template {
            url: format!("{base}/{{hub}}/{{category}}/{{event}}"),
            hub: Pattern::Any,
            category: Pattern::parse("connections"),
            event: Pattern::Any,
        },
        Template {
            url: format!("{base}/{{hub}}/messages/{{event}}"),
            hub: Pattern::Any,
            category: Pattern::Any,
            event: Pattern::parse("ok,empty,nocontent,fail,garbage,slow"),
        },
    ];
    let config = UpstreamConfig { templates, timeout, ..UpstreamConfig::default() };
    let upstream = Arc::new(Upstream::new(config, AccessKeys::new(["k1", "k2"]).unwrap(), 1 << 20));
    let conn = Arc::new(Connection::new("conn.1", Some("alice"), Protocol::Json, ConnectionInfo::default()));
    let context = ConnectionContext {
        connection_id: conn.id.clone(),
        hub: "chat".into(),
        user_id: Some("alice".into()),
        claims: vec![("role".into(), "admin".into()), ("asrs.s.uid".into(), "alice".into())],
        query: "hub=chat&x=1".into(),
        protocol: Protocol::Json,
    };
    let queue = upstream.open(context, conn.clone());
    (upstream, conn, queue)
}

/// The upstream's log once `complete` holds for it (bounded by the test's own timeout).
async fn recorded_once(log: &Log, complete: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
    loop {
        let recorded = log.lock().await.clone();
        if complete(&recorded) {
            return recorded;
        }
        tokio::task::yield_now().await;
    }
}

/// An anonymous JSON connection of hub `chat`.
fn anonymous(id: &str) -> Arc<Connection> {
    Arc::new(Connection::new(id, None, Protocol::Json, ConnectionInfo::default()))
}

/// What upstream is told about an anonymous connection of hub `chat`.
fn context_of(conn: &Connection) -> ConnectionContext {
    ConnectionContext {
        connection_id: conn.id.clone(),
        hub: "chat".into(),
        user_id: None,
        claims: Vec::new(),
        query: String::new(),
        protocol: Protocol::Json,
    }
}

/// The next `n` frames queued for the client.
async fn frames(conn: &Connection, n: usize) -> Vec<String> {
    let mut out = std::collections::VecDeque::new();
    while out.len() < n {
        tokio::time::timeout(Duration::from_secs(10), conn.outbox.ready()).await.expect("a completion");
        conn.drain(&mut out);
    }
    out.iter().map(|f| String::from_utf8(f.to_vec()).unwrap()).collect()
}

async fn next_frame(conn: &Connection) -> String {
    frames(conn, 1).await.remove(0)
}

fn invocation(id: &str, target: &str) -> Vec<u8> {
    format!(r#"{{"type":1,"invocationId":"{id}","target":"{target}","arguments":[1]}}"#).into_bytes()
}

#[tokio::test]
async fn replies_become_completions_in_order_with_every_header() {
    let (base, log) = start_upstream().await;
    let (_upstream, conn, queue) = setup(&base, Duration::from_secs(5));
    for (id, target) in
        [("0", "ok"), ("1", "empty"), ("2", "nocontent"), ("3", "fail"), ("4", "garbage"), ("5", "unknown")]
    {
        queue.invoke(Some(id.into()), target.into(), invocation(id, target)).unwrap();
    }
    let replies = frames(&conn, 6).await;
    assert_eq!(replies[0], "{\"type\":3,\"invocationId\":\"0\",\"result\":42}\u{1e}");
    assert_eq!(replies[1], "{\"type\":3,\"invocationId\":\"1\"}\u{1e}");
    assert_eq!(replies[2], "{\"type\":3,\"invocationId\":\"2\"}\u{1e}");
    assert!(replies[3].contains("Invocation failed, status code 500"));
    assert!(replies[4].contains("not a valid hub message"));
    assert!(replies[5].contains("No upstream is configured to handle 'unknown'"));
    queue.disconnected(Some("gone".into()));

    // The log is complete once `disconnected` has been recorded.
    let log = recorded_once(&log, |log| log.iter().any(|r| r.path.ends_with("/disconnected"))).await;
    let paths: Vec<&str> = log.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/chat/connections/connected",
            "/chat/messages/ok",
            "/chat/messages/empty",
            "/chat/messages/nocontent",
            "/chat/messages/fail",
            "/chat/messages/garbage",
            "/chat/connections/disconnected"
        ]
    );
    let first = &log[1];
    let header = |name: &str| first.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("x-asrs-connection-id").as_deref(), Some("conn.1"));
    assert_eq!(header("x-asrs-hub").as_deref(), Some("chat"));
    assert_eq!(header("x-asrs-category").as_deref(), Some("messages"));
    assert_eq!(header("x-asrs-event").as_deref(), Some("ok"));
    assert_eq!(header("x-asrs-user-id").as_deref(), Some("alice"));
    assert_eq!(header("x-asrs-user-claims").as_deref(), Some("role: admin, asrs.s.uid: alice"));
    assert_eq!(header("x-asrs-client-query").as_deref(), Some("?hub=chat&x=1"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    let signature = header("x-asrs-signature").unwrap();
    assert_eq!(signature.split(',').count(), 2);
    assert_eq!(first.body, invocation("0", "ok"));
    assert_eq!(log[0].body, br#"{"type":10}"#);
    assert_eq!(log[6].body, br#"{"type":11,"error":"gone"}"#);
}

#[tokio::test]
async fn a_hanging_upstream_times_out_without_blocking_other_connections() {
    let (base, _log) = start_upstream().await;
    let (upstream, slow_conn, slow_queue) = setup(&base, Duration::from_millis(500));
    slow_queue.invoke(Some("0".into()), "slow".into(), invocation("0", "slow")).unwrap();
    let other_conn = anonymous("other.1");
    let other = upstream.open(context_of(&other_conn), other_conn.clone());
    other.invoke(Some("9".into()), "empty".into(), invocation("9", "empty")).unwrap();
    assert_eq!(next_frame(&other_conn).await, "{\"type\":3,\"invocationId\":\"9\"}\u{1e}");
    assert!(next_frame(&slow_conn).await.contains("Invocation failed, error: timed out"));
}

#[tokio::test]
async fn an_unreachable_upstream_gives_an_error_completion() {
    let (_upstream, conn, queue) = setup("http://127.0.0.1:1", Duration::from_secs(5));
    queue.invoke(Some("0".into()), "ok".into(), invocation("0", "ok")).unwrap();
    assert!(next_frame(&conn).await.contains("Invocation failed, error:"));
}

#[tokio::test]
async fn sends_without_an_id_get_no_completion_and_unmatched_ones_are_counted() {
    let (base, _log) = start_upstream().await;
    let (upstream, conn, queue) = setup(&base, Duration::from_secs(5));
    queue.invoke(None, "unknown".into(), invocation("x", "unknown")).unwrap();
    queue.invoke(Some("1".into()), "empty".into(), invocation("1", "empty")).unwrap();
    assert_eq!(next_frame(&conn).await, "{\"type\":3,\"invocationId\":\"1\"}\u{1e}");
    assert_eq!(upstream.stats().dropped_sends.load(Ordering::Relaxed), 1);
}

/// Connection events the upstream could not take are sent again with backoff; invocations
/// never are.
#[tokio::test]
async fn connection_events_are_retried_and_invocations_are_not() {
    let (base, log) = start_upstream().await;
    let templates = vec![Template {
        url: format!("{base}/flaky/{{category}}/{{event}}"),
        hub: Pattern::Any,
        category: Pattern::Any,
        event: Pattern::Any,
    }];
    let config = UpstreamConfig { templates, retry_delay: Duration::from_millis(10), ..UpstreamConfig::default() };
    let upstream = Arc::new(Upstream::new(config, AccessKeys::new(["k1"]).unwrap(), 1 << 20));
    let conn = anonymous("flaky.1");
    let queue = upstream.open(context_of(&conn), conn.clone());
    queue.invoke(Some("0".into()), "once".into(), invocation("0", "once")).unwrap();
    assert!(next_frame(&conn).await.contains("Invocation failed, status code 503"), "not retried");
    queue.disconnected(None);
    let log = recorded_once(&log, |log| log.iter().filter(|r| r.path.ends_with("/disconnected")).count() == 3).await;
    let paths: Vec<&str> = log.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/flaky/connections/connected",
            "/flaky/connections/connected",
            "/flaky/connections/connected",
            "/flaky/messages/once",
            "/flaky/connections/disconnected",
            "/flaky/connections/disconnected",
            "/flaky/connections/disconnected",
        ],
        "connected retried until taken, before the invocation; the invocation sent once"
    );
    assert_eq!(upstream.stats().event_retries.load(Ordering::Relaxed), 4);
    assert_eq!(upstream.stats().dropped_events.load(Ordering::Relaxed), 0);
}
