//! Calling the application: one ordered queue per connection, one worker per queue.

use crate::template::{Template, first_match};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchboard_auth::{AccessKeys, upstream_signature};
use switchboard_hub::{Connection, TraceEvent, Tracer};
use switchboard_protocol::Protocol;
use tokio::sync::{Semaphore, mpsc};

/// Upstream settings.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Checked in order; the first match is called.
    pub templates: Vec<Template>,
    /// Bound on one call, from waiting for a slot to reading the whole reply.
    pub timeout: Duration,
    /// Calls in flight across the node.
    pub max_concurrency: usize,
    /// Largest reply accepted as a completion.
    pub max_reply_bytes: usize,
    /// Events waiting per connection; a client invoking faster than its upstream answers gets
    /// errors instead of unbounded memory.
    pub queue_depth: usize,
    /// Retries of a `connected` or `disconnected` event the upstream could not take (no
    /// connection, or a 5xx / 429 answer), after [`UpstreamConfig::retry_delay`] doubling each
    /// time. Invocations are never retried: that could run them twice or out of order. A
    /// timed-out event is not retried either (the upstream may have taken it).
    pub event_retries: u32,
    pub retry_delay: Duration,
    /// Connection events waiting for room in full per-connection queues, node-wide; past it
    /// they are dropped and counted.
    pub max_pending_events: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            templates: Vec::new(),
            timeout: Duration::from_secs(20),
            max_concurrency: 256,
            max_reply_bytes: 1 << 20,
            queue_depth: 32,
            event_retries: 3,
            retry_delay: Duration::from_millis(200),
            max_pending_events: 65_536,
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Calls answered 2xx.
    pub succeeded: AtomicU64,
    /// Calls answered with another status, failed in transport or timed out.
    pub failed: AtomicU64,
    /// Non-blocking sends dropped: no template matched, or the connection's queue was full.
    pub dropped_sends: AtomicU64,
    /// Calls by outcome: 2xx, 4xx, 5xx (and other statuses), no answer (transport error or timeout).
    pub outcomes: switchboard_hub::metrics::Counters<4>,
    pub duration: switchboard_hub::metrics::Histogram,
    /// Connection events sent again after a failure.
    pub event_retries: AtomicU64,
    /// Connection events given up: retries spent, or more than `max_pending_events` waiting.
    pub dropped_events: AtomicU64,
}

/// Label values of [`Stats::outcomes`], in order.
pub const OUTCOMES: [&str; 4] = ["2xx", "4xx", "5xx", "error"];

/// Who a connection is, as upstream sees it.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    pub connection_id: Arc<str>,
    /// The hub as clients name it (lower-cased).
    pub hub: String,
    pub user_id: Option<String>,
    pub claims: Vec<(String, String)>,
    /// The connect query string without the access token.
    pub query: String,
    pub protocol: Protocol,
}

enum Job {
    Connected,
    Invocation {
        invocation_id: Option<String>,
        target: String,
        body: Bytes,
    },
    /// A StreamInvocation: the app answers through the stream REST routes, so only a failed
    /// call ends the stream here.
    Stream {
        invocation_id: String,
        target: String,
        body: Bytes,
    },
    Disconnected {
        error: Option<String>,
    },
}

/// The node's upstream client. Cheap to share behind an `Arc`.
pub struct Upstream {
    config: UpstreamConfig,
    keys: AccessKeys,
    client: Client<HttpConnector, Full<Bytes>>,
    slots: Semaphore,
    max_queued_bytes: usize,
    stats: Stats,
    /// Connection events waiting for room in a full queue (see [`UpstreamConfig::max_pending_events`]).
    pending_events: std::sync::atomic::AtomicUsize,
    /// Where calls are traced (the node's live trace).
    tracer: Arc<Tracer>,
}

impl Upstream {
    /// `max_queued_bytes` bounds what a completion may add to a connection's outbox.
    pub fn new(config: UpstreamConfig, keys: AccessKeys, max_queued_bytes: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        let slots = Semaphore::new(config.max_concurrency.max(1));
        Self {
            config,
            keys,
            client,
            slots,
            max_queued_bytes,
            stats: Stats::default(),
            pending_events: Default::default(),
            tracer: Arc::default(),
        }
    }

    /// Whether any template is configured.
    /// Traces every call to `tracer` (the node's live trace).
    pub fn with_tracer(mut self, tracer: Arc<Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    pub fn is_enabled(&self) -> bool {
        !self.config.templates.is_empty()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Starts the ordered queue of a connection that has completed its handshake and tells
    /// upstream it connected.
    pub fn open(self: &Arc<Self>, context: ConnectionContext, conn: Arc<Connection>) -> UpstreamQueue {
        let (sender, mut receiver) = mpsc::channel(self.config.queue_depth.max(1));
        let upstream = self.clone();
        let context = Arc::new(context);
        tokio::spawn(async move {
            while let Some(job) = receiver.recv().await {
                upstream.handle(&context, &conn, job).await;
            }
        });
        let queue = UpstreamQueue { sender, upstream: self.clone() };
        queue.push(Job::Connected);
        queue
    }

    async fn handle(&self, context: &ConnectionContext, conn: &Connection, job: Job) {
        match job {
            Job::Connected => self.event(context, "connected", br#"{"type":10}"#.to_vec()).await,
            Job::Disconnected { error } => {
                let body = match error {
                    Some(error) => {
                        let error = serde_json::to_string(&error).expect("a string serializes");
                        format!(r#"{{"type":11,"error":{error}}}"#)
                    }
                    None => r#"{"type":11}"#.to_owned(),
                };
                self.event(context, "disconnected", body.into_bytes()).await;
            }
            Job::Invocation { invocation_id, target, body } => {
                let reply = self.invoke(context, &target, body).await;
                if let Some(id) = invocation_id {
                    let frame = completion(context.protocol, &id, reply);
                    let _ = conn.outbox.push(frame, self.max_queued_bytes);
                }
            }
            Job::Stream { invocation_id, target, body } => {
                if let Reply::Failed(error) = self.invoke(context, &target, body).await
                    && conn.end_stream(&invocation_id).is_some()
                {
                    let frame = completion(context.protocol, &invocation_id, Reply::Failed(error));
                    let _ = conn.outbox.push(frame, self.max_queued_bytes);
                }
            }
        }
    }

    /// Sends a connection event, retrying (bounded, with backoff) what the upstream could not take.
    async fn event(&self, context: &ConnectionContext, event: &str, body: Vec<u8>) {
        let Some(url) = first_match(&self.config.templates, &context.hub, "connections", event) else { return };
        let body = Bytes::from(body);
        let mut delay = self.config.retry_delay;
        for attempt in 0..=self.config.event_retries {
            let failure = match self.post(&url, context, "connections", event, "application/json", body.clone()).await {
                Ok((status, _)) if status >= 500 || status == 429 => Some(format!("status code {status}")),
                Ok((status, _)) if !(200..300).contains(&status) => {
                    tracing::warn!(connection_id = %context.connection_id, event, status, "upstream refused an event");
                    return;
                }
                Ok(_) => return,
                Err(PostError::TimedOut(error)) => {
                    tracing::warn!(connection_id = %context.connection_id, event, %error, "upstream event failed");
                    return;
                }
                Err(PostError::Failed(error)) => Some(error),
            };
            if attempt == self.config.event_retries {
                self.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(connection_id = %context.connection_id, event, error = failure.unwrap_or_default(), attempts = attempt + 1, "upstream event failed; giving up");
                return;
            }
            self.stats.event_retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    async fn invoke(&self, context: &ConnectionContext, target: &str, body: Bytes) -> Reply {
        let Some(url) = first_match(&self.config.templates, &context.hub, "messages", target) else {
            self.stats.dropped_sends.fetch_add(1, Ordering::Relaxed);
            return Reply::Failed(format!("No upstream is configured to handle '{target}'."));
        };
        let content_type = match context.protocol {
            Protocol::Json => "application/json",
            Protocol::MessagePack => "application/x-msgpack",
        };
        match self.post(&url, context, "messages", target, content_type, body).await {
            Ok((200, body)) if !body.is_empty() => Reply::Body(body),
            Ok((200 | 204, _)) => Reply::Empty,
            Ok((status, _)) => Reply::Failed(format!("Invocation failed, status code {status}")),
            Err(PostError::Failed(error) | PostError::TimedOut(error)) => {
                Reply::Failed(format!("Invocation failed, error: {error}"))
            }
        }
    }

    /// POSTs one event; returns the status and the (bounded) reply body.
    async fn post(
        &self,
        url: &str,
        context: &ConnectionContext,
        category: &str,
        event: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<(u16, Bytes), PostError> {
        let call = async {
            let _slot = self.slots.acquire().await.map_err(|_| "upstream is shutting down".to_owned())?;
            let mut request = http::Request::post(url)
                .header(CONTENT_TYPE, content_type)
                .header("X-ASRS-Connection-Id", header_value(&context.connection_id))
                .header("X-ASRS-Hub", header_value(&context.hub))
                .header("X-ASRS-Category", category)
                .header("X-ASRS-Event", header_value(event))
                .header("X-ASRS-Signature", header_value(&upstream_signature(&self.keys, &context.connection_id)));
            if let Some(user) = &context.user_id {
                request = request.header("X-ASRS-User-Id", header_value(user));
            }
            if !context.claims.is_empty() {
                let claims: Vec<String> = context.claims.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                request = request.header("X-ASRS-User-Claims", header_value(&claims.join(", ")));
            }
            if !context.query.is_empty() {
                request = request.header("X-ASRS-Client-Query", header_value(&format!("?{}", context.query)));
            }
            let request = request.body(Full::new(body)).map_err(|e| format!("invalid upstream request: {e}"))?;
            let response = self.client.request(request).await.map_err(|e| format!("{e}"))?;
            let status = response.status().as_u16();
            let reply = Limited::new(response.into_body(), self.config.max_reply_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        "response too large".to_owned()
                    } else {
                        e.to_string()
                    }
                })?
                .to_bytes();
            Ok((status, reply))
        };
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.config.timeout, call).await {
            Ok(result) => result.map_err(PostError::Failed),
            Err(_) => Err(PostError::TimedOut(format!("timed out after {} s", self.config.timeout.as_secs()))),
        };
        let counter = match &result {
            Ok((status, _)) if (200..300).contains(status) => &self.stats.succeeded,
            _ => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let outcome = match &result {
            Ok((200..=299, _)) => 0,
            Ok((400..=499, _)) => 1,
            Ok(_) => 2,
            Err(_) => 3,
        };
        self.stats.outcomes.add(outcome, 1);
        self.stats.duration.observe(started.elapsed());
        self.tracer.emit(|| {
            let answer = match &result {
                Ok((status, _)) => status.to_string(),
                Err(PostError::Failed(error) | PostError::TimedOut(error)) => error.clone(),
            };
            let detail = format!("{category}/{event}: {answer}");
            TraceEvent::new(&context.hub, &context.connection_id, "upstream", detail)
                .ms(started.elapsed().as_millis() as u64)
        });
        result
    }
}

/// Why a call brought no answer.
enum PostError {
    /// No connection, a broken one, or an unreadable reply: the upstream did not take it.
    Failed(String),
    /// No answer within the timeout: the upstream may have taken it.
    TimedOut(String),
}

/// A connection's handle on its upstream queue. Dropping it lets the worker finish what is
/// queued and stop.
pub struct UpstreamQueue {
    sender: mpsc::Sender<Job>,
    upstream: Arc<Upstream>,
}

impl UpstreamQueue {
    /// Queues a client invocation. `Err` when the queue is full: a blocking invocation should
    /// then be answered with an error at once (a send is dropped and counted here).
    pub fn invoke(&self, invocation_id: Option<String>, target: String, body: Vec<u8>) -> Result<(), String> {
        let blocking = invocation_id.is_some();
        match self.sender.try_send(Job::Invocation { invocation_id, target, body: Bytes::from(body) }) {
            Ok(()) => Ok(()),
            Err(_) if blocking => Err("Invocation failed, too many invocations are waiting for the upstream.".into()),
            Err(_) => {
                self.upstream.stats.dropped_sends.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Queues a client's StreamInvocation (its stream is open on the connection). `Err` when
    /// the queue is full: the stream should then be ended with that error at once.
    pub fn stream(&self, invocation_id: String, target: String, body: Vec<u8>) -> Result<(), String> {
        self.sender
            .try_send(Job::Stream { invocation_id, target, body: Bytes::from(body) })
            .map_err(|_| "Invocation failed, too many invocations are waiting for the upstream.".into())
    }

    /// Tells upstream the connection ended (after everything queued before).
    pub fn disconnected(self, error: Option<String>) {
        self.push(Job::Disconnected { error });
    }

    fn push(&self, job: Job) {
        if let Err(mpsc::error::TrySendError::Full(job)) = self.sender.try_send(job) {
            // Connection events wait for room off the caller's path, a bounded number of them
            // node-wide: past it they are dropped and counted rather than piling up.
            let upstream = self.upstream.clone();
            if upstream.pending_events.fetch_add(1, Ordering::Relaxed) >= upstream.config.max_pending_events {
                upstream.pending_events.fetch_sub(1, Ordering::Relaxed);
                upstream.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let sender = self.sender.clone();
            tokio::spawn(async move {
                let _ = sender.send(job).await;
                upstream.pending_events.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

/// What an invocation's call produced.
enum Reply {
    /// A 200 body: a complete hub message in the client's protocol, forwarded as is.
    Body(Bytes),
    /// 200 without a body, or 204: an empty completion.
    Empty,
    /// Anything else: an error completion with this text.
    Failed(String),
}

/// The completion for the client. A 200 body is checked to be exactly whole hub messages in
/// the client's protocol, so a misbehaving upstream cannot break the client's stream.
fn completion(protocol: Protocol, invocation_id: &str, reply: Reply) -> Bytes {
    let mut out = Vec::new();
    match reply {
        Reply::Body(body) if is_whole_messages(protocol, &body) => return body,
        Reply::Body(_) => protocol.encode_completion_error(
            invocation_id,
            "Invocation failed, the upstream reply is not a valid hub message.",
            &mut out,
        ),
        Reply::Empty => protocol.encode_completion_void(invocation_id, &mut out),
        Reply::Failed(error) => protocol.encode_completion_error(invocation_id, &error, &mut out),
    }
    Bytes::from(out)
}

fn is_whole_messages(protocol: Protocol, mut body: &[u8]) -> bool {
    while !body.is_empty() {
        match protocol.next_record(body, usize::MAX >> 1) {
            Ok((record, used)) if protocol.inspect(record).is_ok() => body = &body[used..],
            _ => return false,
        }
    }
    true
}

/// Header text without control characters (claims and queries come from clients).
fn header_value(text: &str) -> HeaderValue {
    let cleaned: String = text.chars().filter(|c| !c.is_control()).collect();
    HeaderValue::from_bytes(cleaned.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests;
