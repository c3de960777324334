//! [`FanoutClient`]: the entry-node side. One long-lived, batched `Deliver` stream per peer, and
//! connection-scoped calls to the owner node.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message;
use switchboard_grpc::auth::WARN_INTERVAL;
use switchboard_grpc::fanout::v1::fanout_client::FanoutClient as GrpcFanoutClient;
use switchboard_grpc::fanout::v1::{ConnectionReply, ConnectionRequest, Delivery, DeliveryBatch};
use switchboard_grpc::{ClientAuth, ClusterSecret, ClusterTls, MAX_MESSAGE_BYTES, WarnThrottle, peer_endpoint};
use switchboard_hub::Registry;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::codec::check_delivery;
use crate::error::FanoutError;
use crate::service::{apply_connection_request, apply_delivery};

/// HTTP/2 pings on idle peer connections, so a silently dead peer is noticed.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is dropped.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest single delivery: half a gRPC message, so a batch (soft-capped by
/// [`FanoutConfig::max_batch_bytes`]) plus one more delivery always fits [`MAX_MESSAGE_BYTES`].
pub const MAX_DELIVERY_BYTES: usize = MAX_MESSAGE_BYTES / 2;

type GrpcClient = GrpcFanoutClient<InterceptedService<Channel, ClientAuth>>;
type Outcome = Result<(), FanoutError>;

/// Tuning of a [`FanoutClient`]. The defaults suit a LAN cluster.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Bound on one `deliver` (queueing, opening the stream, the ack) and on one connection call.
    /// A batch unacknowledged this long fails and its stream is reopened. Default 5 s.
    pub timeout: Duration,
    /// Bound on opening a TCP connection to a peer. Default 2 s.
    pub connect_timeout: Duration,
    /// Most deliveries in one batch. Default 64.
    pub max_batch: usize,
    /// A batch takes no more deliveries once its frames reach this many bytes. Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Most unacknowledged batches per stream; past that, deliveries wait in the queue (and
    /// accumulate into fuller batches). Default 32.
    pub window: usize,
    /// Most deliveries queued per peer before `deliver` waits for room. Default 8192.
    pub queue: usize,
    /// The runtime the peer streams run on (their tasks and connections); `None`: the runtime
    /// of the call that opens them. A node gives them a runtime of their own, so that batches
    /// and acks are not queued behind the writes of its client connections.
    pub runtime: Option<tokio::runtime::Handle>,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_batch: 64,
            max_batch_bytes: 1 << 20,
            window: 32,
            queue: 8192,
            runtime: None,
        }
    }
}

/// Counters of one [`FanoutClient`] (all peers), for metrics and tests.
#[derive(Debug, Default)]
pub struct FanoutStats {
    /// Batches handed to peer streams.
    pub batches: AtomicU64,
    /// Deliveries carried by those batches.
    pub deliveries: AtomicU64,
    /// Deliveries that failed (unreachable, refused, timed out, rejected) after being queued.
    pub failed: AtomicU64,
    /// `Deliver` streams opened.
    pub streams_opened: AtomicU64,
    /// Time from handing a batch to a stream until the peer acknowledged it.
    pub batch_latency: switchboard_hub::metrics::Histogram,
}

impl FanoutStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Sends deliveries and connection calls to other edge nodes; see the crate docs for the
/// guarantees. Cheap to clone: clones share the peers, their streams and their queues.
///
/// Calls addressed to this node's own id are applied to the local [`Registry`] directly, with
/// the same semantics as the [`FanoutService`](crate::FanoutService) of a peer.
#[derive(Clone)]
pub struct FanoutClient {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    registry: Arc<Registry>,
    auth: ClientAuth,
    tls: Option<ClusterTls>,
    config: FanoutConfig,
    peers: Mutex<HashMap<u64, Peer>>,
    stats: Arc<FanoutStats>,
}

/// One peer: its channel (shared by the stream and connection calls) and its delivery queue.
#[derive(Clone)]
struct Peer {
    addr: Arc<str>,
    client: GrpcClient,
    queue: mpsc::Sender<Queued>,
}

/// One delivery waiting for its batch, and where to report the batch's fate.
struct Queued {
    delivery: Delivery,
    done: oneshot::Sender<Outcome>,
}

impl FanoutClient {
    /// The client of node `node_id`, whose own connections live in `registry`; every call carries
    /// `secret`.
    pub fn new(node_id: u64, registry: Arc<Registry>, secret: &ClusterSecret, config: FanoutConfig) -> Self {
        Self::build(node_id, registry, secret.client(), secret.tls().cloned(), config)
    }

    /// As [`FanoutClient::new`], with a prepared client interceptor (another protocol version, in
    /// tests).
    pub fn with_auth(node_id: u64, registry: Arc<Registry>, auth: ClientAuth, config: FanoutConfig) -> Self {
        Self::build(node_id, registry, auth, None, config)
    }

    fn build(
        node_id: u64,
        registry: Arc<Registry>,
        auth: ClientAuth,
        tls: Option<ClusterTls>,
        config: FanoutConfig,
    ) -> Self {
        let peers = Mutex::default();
        FanoutClient { inner: Arc::new(Inner { node_id, registry, auth, tls, config, peers, stats: Arc::default() }) }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// Counters over every peer.
    pub fn stats(&self) -> &FanoutStats {
        &self.inner.stats
    }

    /// The configuration in use.
    pub fn config(&self) -> &FanoutConfig {
        &self.inner.config
    }

    /// Delivers `delivery` to `node` (at gRPC address `addr`, `host:port` or a URI) and resolves
    /// once that node acknowledged the batch carrying it: every target connection there has the
    /// frames in its outbox. Deliveries to one peer are sent, applied and acknowledged in the
    /// order they were submitted.
    pub async fn deliver(&self, node: u64, addr: &str, delivery: Delivery) -> Outcome {
        check(&delivery)?;
        if node == self.inner.node_id {
            apply_delivery(&self.inner.registry, &delivery);
            return Ok(());
        }
        let deadline = Instant::now() + self.inner.config.timeout;
        let waiter = self.enqueue(node, addr, delivery, deadline).await?;
        self.wait(node, waiter, deadline).await
    }

    /// Delivers `delivery` to every node of `nodes` (for example the output of
    /// [`Router::route`](crate::Router::route)) at once, and resolves when all have answered:
    /// `Ok` when every node acknowledged but those that are down (nothing listens at their
    /// address: they have no live clients), else the first error in the order of `nodes`. A failing node does not hold
    /// back the others; each is bounded by [`FanoutConfig::timeout`].
    pub async fn deliver_all(&self, nodes: &[(u64, &str)], delivery: Delivery) -> Outcome {
        check(&delivery)?;
        let deadline = Instant::now() + self.inner.config.timeout;
        let mut waiters = Vec::with_capacity(nodes.len());
        let mut local = false;
        for &(node, addr) in nodes {
            if node == self.inner.node_id {
                local = true;
            } else {
                waiters.push((node, self.enqueue(node, addr, delivery.clone(), deadline).await));
            }
        }
        if local {
            apply_delivery(&self.inner.registry, &delivery);
        }
        // A node that is down has no live clients (they lost their connections with it), so it
        // does not fail the delivery: it is logged, and its lease expiry removes it from routing.
        // A node that cannot be reached otherwise (cut off, paused, a broken stream) may still
        // hold connected clients: that fails the delivery, as does a timeout or a refusal.
        let mut first_error = None;
        for (node, waiter) in waiters {
            let outcome = match waiter {
                Ok(waiter) => self.wait(node, waiter, deadline).await,
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => {}
                Err(FanoutError::Down { node, reason }) => {
                    tracing::warn!(node, %reason, "skipping a node that is down");
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Sends one connection-scoped call to `node` (the connection's owner, see
    /// [`Router::owner`](crate::Router::owner)) and returns its reply: `found` is whether the
    /// connection was live there.
    pub async fn connection_call(
        &self,
        node: u64,
        addr: &str,
        request: ConnectionRequest,
    ) -> Result<ConnectionReply, FanoutError> {
        self.connection_call_within(node, addr, request, self.inner.config.timeout).await
    }

    /// [`FanoutClient::connection_call`] waiting up to `timeout` (a client result waits for
    /// the client).
    pub async fn connection_call_within(
        &self,
        node: u64,
        addr: &str,
        request: ConnectionRequest,
        timeout: Duration,
    ) -> Result<ConnectionReply, FanoutError> {
        if node == self.inner.node_id {
            return apply_connection_request(&self.inner.registry, &request)
                .await
                .map_err(|status| FanoutError::Invalid(status.message().to_owned()));
        }
        let mut client = self.peer(node, addr)?.client;
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        let started = Instant::now();
        match tokio::time::timeout(timeout, client.connection_call(request)).await {
            Err(_elapsed) => Err(FanoutError::Timeout { node, timeout }),
            // tonic enforces the `grpc-timeout` it sends itself, reporting `CANCELLED`.
            Ok(Err(status)) if status.code() == tonic::Code::Cancelled && started.elapsed() >= timeout => {
                Err(FanoutError::Timeout { node, timeout })
            }
            Ok(Err(status)) => Err(FanoutError::from_status(node, &status, timeout)),
            Ok(Ok(reply)) => Ok(reply.into_inner()),
        }
    }

    /// Drops the channel, queue and stream of `node` (it left the cluster). Deliveries already
    /// queued for it are still attempted; later calls open a fresh channel.
    pub fn forget(&self, node: u64) {
        self.inner.peers.lock().remove(&node);
    }

    /// Queues `delivery` for `node` and returns where its outcome will arrive.
    async fn enqueue(
        &self,
        node: u64,
        addr: &str,
        delivery: Delivery,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Outcome>, FanoutError> {
        let peer = self.peer(node, addr)?;
        let (done, waiter) = oneshot::channel();
        match tokio::time::timeout_at(deadline, peer.queue.send(Queued { delivery, done })).await {
            Err(_elapsed) => Err(FanoutError::Timeout { node, timeout: self.inner.config.timeout }),
            Ok(Err(_closed)) => Err(task_stopped(node)),
            Ok(Ok(())) => Ok(waiter),
        }
    }

    async fn wait(&self, node: u64, waiter: oneshot::Receiver<Outcome>, deadline: Instant) -> Outcome {
        match tokio::time::timeout_at(deadline, waiter).await {
            Err(_elapsed) => Err(FanoutError::Timeout { node, timeout: self.inner.config.timeout }),
            Ok(Err(_dropped)) => Err(task_stopped(node)),
            Ok(Ok(outcome)) => outcome,
        }
    }

    /// The peer `node` at `addr`, created (channel not yet connected, sender task started) when
    /// there is none or it moved.
    fn peer(&self, node: u64, addr: &str) -> Result<Peer, FanoutError> {
        let mut peers = self.inner.peers.lock();
        if let Some(peer) = peers.get(&node).filter(|p| &*p.addr == addr) {
            return Ok(peer.clone());
        }
        let config = &self.inner.config;
        let invalid = |e: &dyn std::fmt::Display| FanoutError::Unreachable {
            node,
            reason: format!("invalid peer address {addr:?}: {e}"),
        };
        let endpoint = peer_endpoint(addr, self.inner.tls.as_ref())
            .map_err(|e| invalid(&e))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
        // Entered, `config.runtime` gets the channel's connection and the peer task.
        let _runtime = config.runtime.as_ref().map(tokio::runtime::Handle::enter);
        let client = GrpcFanoutClient::with_interceptor(endpoint.connect_lazy(), self.inner.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (queue, queued) = mpsc::channel(config.queue.max(1));
        let task = PeerTask {
            node,
            client: client.clone(),
            queue: queued,
            config: config.clone(),
            next_batch_id: 0,
            warnings: WarnThrottle::new(WARN_INTERVAL),
            stats: self.inner.stats.clone(),
        };
        tokio::spawn(task.run());
        let peer = Peer { addr: Arc::from(addr), client, queue };
        peers.insert(node, peer.clone());
        Ok(peer)
    }
}

impl std::fmt::Debug for FanoutClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutClient")
            .field("node_id", &self.inner.node_id)
            .field("peers", &self.inner.peers.lock().len())
            .finish_non_exhaustive()
    }
}

/// Peers advertise `host:port`; a full `http://` URI is accepted too.
fn task_stopped(node: u64) -> FanoutError {
    FanoutError::Unreachable { node, reason: "the delivery queue of this peer was dropped".into() }
}

/// Checks a delivery before anything is sent.
fn check(delivery: &Delivery) -> Outcome {
    check_delivery(delivery).map_err(|reason| FanoutError::Invalid(reason.to_owned()))?;
    let size = delivery.encoded_len();
    if size > MAX_DELIVERY_BYTES {
        return Err(FanoutError::Invalid(format!(
            "delivery of {size} bytes exceeds the {MAX_DELIVERY_BYTES}-byte limit"
        )));
    }
    Ok(())
}

/// Approximate wire size of a delivery, for the batch byte cap.
fn approx_len(delivery: &Delivery) -> usize {
    delivery.json.len() + delivery.messagepack.len() + delivery.hub.len() + 64
}

/// A batch sent and not yet acknowledged.
struct Pending {
    id: u64,
    deadline: Instant,
    sent_at: Instant,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

/// Owns one peer's queue and its `Deliver` stream: opens the stream when a delivery arrives and
/// none is open, batches queued deliveries, matches acks to batches, fails every unacknowledged
/// batch when the stream breaks or stalls, and reopens on the next delivery.
struct PeerTask {
    node: u64,
    client: GrpcClient,
    queue: mpsc::Receiver<Queued>,
    config: FanoutConfig,
    /// Increases along the task's life, so along every stream it opens.
    next_batch_id: u64,
    warnings: WarnThrottle,
    stats: Arc<FanoutStats>,
}

impl PeerTask {
    /// Runs until the client forgot the peer (the queue closed) and everything queued is settled.
    async fn run(mut self) {
        while let Some(first) = self.next_live().await {
            self.stream(first).await;
        }
    }

    /// The next queued delivery whose caller still waits.
    async fn next_live(&mut self) -> Option<Queued> {
        loop {
            let item = self.queue.recv().await?;
            if !item.done.is_closed() {
                return Some(item);
            }
        }
    }

    /// Opens a stream carrying `first` and serves it until it fails, or until the queue closed
    /// and every batch is settled.
    async fn stream(&mut self, first: Queued) {
        let timeout = self.config.timeout;
        let window = self.config.window.max(1);
        let (mut out, outgoing) = mpsc::channel(window);
        let mut pending = VecDeque::with_capacity(window);
        let first = self.batch(first);
        // Kept to open the stream once more should the first attempt never get to send it.
        let mut resend = Some(first.0.clone());
        if let Err(error) = self.send(&out, &mut pending, first) {
            return self.fail(pending, error);
        }
        let mut client = self.client.clone();
        let mut outgoing = Some(outgoing);
        let mut acks = loop {
            let stream = ReceiverStream::new(outgoing.take().expect("one stream per attempt"));
            match tokio::time::timeout(timeout, client.deliver(stream)).await {
                Ok(Ok(response)) => break response.into_inner(),
                // The connection closed before the call was written (the peer went away between
                // streams): nothing was applied, so one more attempt on a new connection says
                // whether it is down or answers.
                Ok(Err(status)) if crate::error::never_sent(&status) && resend.is_some() => {
                    let again;
                    (out, again) = mpsc::channel(window);
                    let _ = out.try_send(resend.take().expect("checked"));
                    outgoing = Some(again);
                }
                Ok(Err(status)) => {
                    let error = FanoutError::from_status(self.node, &status, timeout);
                    return self.fail_all_queued(pending, error);
                }
                Err(_elapsed) => {
                    return self.fail_all_queued(pending, FanoutError::Timeout { node: self.node, timeout });
                }
            }
        };
        self.stats.streams_opened.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(peer_id = self.node, "fan-out stream open");
        let mut queue_open = true;
        loop {
            if !queue_open && pending.is_empty() {
                return;
            }
            let oldest = pending.front().map(|p: &Pending| p.deadline);
            let may_send = queue_open && pending.len() < window;
            tokio::select! {
                biased;
                ack = acks.message() => {
                    let error = match ack {
                        Ok(Some(ack)) if pending.front().is_some_and(|p| p.id == ack.batch_id) => {
                            let batch = pending.pop_front().expect("checked");
                            self.stats.batch_latency.observe(batch.sent_at.elapsed());
                            batch.waiters.into_iter().for_each(|w| drop(w.send(Ok(()))));
                            continue;
                        }
                        Ok(Some(ack)) => FanoutError::Unreachable {
                            node: self.node,
                            reason: format!("acknowledged batch {} out of order", ack.batch_id),
                        },
                        Ok(None) => FanoutError::Unreachable {
                            node: self.node,
                            reason: "the node closed the delivery stream".into(),
                        },
                        Err(status) => FanoutError::from_status(self.node, &status, timeout),
                    };
                    return self.fail(pending, error);
                }
                () = tokio::time::sleep_until(oldest.unwrap_or_else(Instant::now)), if oldest.is_some() => {
                    return self.fail(pending, FanoutError::Timeout { node: self.node, timeout });
                }
                item = self.queue.recv(), if may_send => match item {
                    None => queue_open = false,
                    Some(item) if item.done.is_closed() => {}
                    Some(item) => {
                        let batch = self.batch(item);
                        if let Err(error) = self.send(&out, &mut pending, batch) {
                            return self.fail(pending, error);
                        }
                    }
                },
            }
        }
    }

    /// Builds a batch from `first` plus whatever is already queued, up to the batch limits. It
    /// never waits for more: see "Batching" in the crate docs.
    fn batch(&mut self, first: Queued) -> (DeliveryBatch, Vec<oneshot::Sender<Outcome>>) {
        let (max, max_bytes) = (self.config.max_batch.max(1), self.config.max_batch_bytes);
        let mut deliveries = Vec::new();
        let mut waiters = Vec::new();
        let mut bytes = 0;
        let mut add = |item: Queued| {
            if !item.done.is_closed() {
                bytes += approx_len(&item.delivery);
                deliveries.push(item.delivery);
                waiters.push(item.done);
            }
            deliveries.len() < max && bytes < max_bytes
        };
        let mut room = add(first);
        while room {
            match self.queue.try_recv() {
                Ok(item) => room = add(item),
                Err(_) => break,
            }
        }
        let batch_id = self.next_batch_id;
        self.next_batch_id += 1;
        (DeliveryBatch { batch_id, deliveries }, waiters)
    }

    /// Hands a batch to the stream (never blocks: the channel holds a whole window).
    fn send(
        &self,
        out: &mpsc::Sender<DeliveryBatch>,
        pending: &mut VecDeque<Pending>,
        (batch, waiters): (DeliveryBatch, Vec<oneshot::Sender<Outcome>>),
    ) -> Outcome {
        let id = batch.batch_id;
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.deliveries.fetch_add(batch.deliveries.len() as u64, Ordering::Relaxed);
        let sent = out.try_send(batch);
        let sent_at = Instant::now();
        pending.push_back(Pending { id, deadline: sent_at + self.config.timeout, sent_at, waiters });
        sent.map_err(|_| FanoutError::Unreachable { node: self.node, reason: "the delivery stream closed".into() })
    }

    /// Fails every unacknowledged batch with `error`; the stream is then dropped.
    fn fail(&self, pending: VecDeque<Pending>, error: FanoutError) {
        let unacked: usize = pending.iter().map(|p| p.waiters.len()).sum();
        self.stats.failed.fetch_add(unacked as u64, Ordering::Relaxed);
        if let Some(suppressed) = self.warnings.check() {
            tracing::warn!(
                peer_id = self.node,
                %error,
                unacked,
                suppressed,
                "fan-out stream to a peer failed; it is reopened on the next delivery"
            );
        } else {
            tracing::debug!(peer_id = self.node, %error, unacked, "fan-out stream to a peer failed");
        }
        for batch in pending {
            for waiter in batch.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }

    /// The stream could not be opened: fails its first batch and everything queued meanwhile, so
    /// a dead peer costs one attempt per burst rather than one per delivery.
    fn fail_all_queued(&mut self, mut pending: VecDeque<Pending>, error: FanoutError) {
        let mut queued = Vec::new();
        while let Ok(item) = self.queue.try_recv() {
            queued.push(item.done);
        }
        let now = Instant::now();
        pending.push_back(Pending { id: u64::MAX, deadline: now, sent_at: now, waiters: queued });
        self.fail(pending, error);
    }
}
