//! The built-in upstream of the echo scenario: Switchboard POSTs each client invocation here
//! (`serve --upstream http://ADDR/{event}`), and the answer, a Completion whose result is the
//! invocation's arguments, goes back to the caller verbatim. Connection events get an empty
//! 200.

use crate::Protocol;
use crate::codec::echo_completion;
use crate::wire::Wire;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;

/// Serves until the task is dropped; `calls` counts the invocations answered.
pub(crate) async fn serve(listener: TcpListener, calls: Arc<AtomicU64>) {
    while let Ok((stream, _)) = listener.accept().await {
        let calls = calls.clone();
        tokio::spawn(async move {
            let _ = connection(Wire::new(stream), &calls).await;
        });
    }
}

async fn connection(mut wire: Wire, calls: &AtomicU64) -> anyhow::Result<()> {
    loop {
        let head = wire.inbox.read_head(&wire.stream).await?;
        let body = wire.inbox.read_body(&wire.stream, &head).await?;
        let reply = if head.header("x-asrs-category").is_some_and(|c| c.eq_ignore_ascii_case("messages")) {
            let msgpack = head.header("content-type").is_some_and(|t| t.contains("msgpack"));
            let protocol = if msgpack { Protocol::Messagepack } else { Protocol::Json };
            calls.fetch_add(1, Ordering::Relaxed);
            echo_completion(protocol, &body).unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", reply.len()).into_bytes();
        response.extend_from_slice(&reply);
        wire.send(&response).await?;
    }
}
