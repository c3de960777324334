//! The engine's connection to Redis: one multiplexed RESP3 connection to a standalone server
//! (commands, and the pub/sub pushes on the same socket), or a cluster connection (sharded
//! pub/sub, `SSUBSCRIBE`/`SPUBLISH`) to a Redis Cluster.
//!
//! Pushes go to a bounded queue; a push that finds it full is dropped and counted (a slow node
//! must not grow without bound). A Redis Cluster node ends the sharded subscriptions of a slot
//! that moves away from it (a failover, a resharding) with an unrequested `SUNSUBSCRIBE`, and
//! the library then forgets them: those channels go to a second queue, and the engine
//! subscribes to the ones it still wants again, at the slot's new owner.
//!
//! When the connection drops, the library says so with a disconnection push:
//! [`Link::reconnect`] rebuilds it with backoff and the engine resubscribes and catches up on
//! the membership log. (A cluster connection rebuilds its own node connections and follows slot
//! moves; the engine resubscribes anyway.)

use bytes::Bytes;
use parking_lot::RwLock;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may take before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pushes queued for the engine before new ones are dropped.
pub(crate) const PUSH_QUEUE: usize = 65_536;

/// A message that arrived on a subscription: (channel, payload).
pub(crate) type Push = (Bytes, Bytes);

/// A sharded channel whose subscription Redis ended (see the module docs).
pub(crate) type Ended = Bytes;

/// Where the Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Servers {
    /// A standalone server: `redis://[user:password@]host:port[/db]`.
    Standalone(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

impl std::fmt::Display for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Servers::Standalone(url) => f.write_str(&redacted(url)),
            Servers::Cluster(urls) => {
                let urls: Vec<String> = urls.iter().map(|url| redacted(url)).collect();
                write!(f, "the Redis Cluster {}", urls.join(","))
            }
        }
    }
}

/// A URL with its password (if any) replaced, for messages.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// One connection, of either kind. Cheap to clone: clones share the socket(s).
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Publishes `payload` on `channel`; how many subscribers received it. On a Cluster the
    /// count is the shard's: every subscriber of a sharded channel is connected to that shard.
    async fn publish(&mut self, channel: &str, payload: &[u8]) -> redis::RedisResult<usize> {
        let command = if matches!(self, Conn::Single(_)) { "PUBLISH" } else { "SPUBLISH" };
        self.query(redis::cmd(command).arg(channel).arg(payload)).await
    }

    /// Subscribes to `channels`; resolves once Redis confirmed it.
    async fn subscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.subscribe(channels).await,
            // One SSUBSCRIBE per channel: channels of one command must share a slot.
            Conn::Cluster(conn) => {
                for channel in channels {
                    conn.ssubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.unsubscribe(channels).await,
            Conn::Cluster(conn) => {
                for channel in channels {
                    conn.sunsubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    pub(crate) async fn query<T: FromRedisValue>(&mut self, command: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(conn) => command.query_async(conn).await,
            Conn::Cluster(conn) => command.query_async(conn).await,
        }
    }

    pub(crate) async fn pipe<T: FromRedisValue>(&mut self, pipe: &redis::Pipeline) -> redis::RedisResult<T> {
        match self {
            Conn::Single(conn) => pipe.query_async(conn).await,
            Conn::Cluster(conn) => pipe.query_async(conn).await,
        }
    }
}

/// The current connection, and how to make the next one. See the module docs.
pub(crate) struct Link {
    servers: Servers,
    password: Option<String>,
    ca_pem: Option<Vec<u8>>,
    /// `None` once closed.
    conn: RwLock<Option<Conn>>,
    pushes: mpsc::Sender<Push>,
    ended: mpsc::Sender<Ended>,
    /// Pushes dropped because the queue was full.
    pub(crate) dropped: Arc<AtomicU64>,
    /// Told when the library saw the connection close.
    pub(crate) disconnected: Arc<Notify>,
    /// Connections made after the first.
    pub(crate) reconnects: AtomicU64,
    /// The name each standalone connection gives itself (`CLIENT SETNAME`).
    name: RwLock<Option<String>>,
}

impl Link {
    /// Connects; the pushes of this and every later connection arrive on the first returned
    /// queue, the subscriptions Redis ended on the second.
    pub(crate) async fn open(
        servers: Servers,
        password: Option<String>,
        ca_pem: Option<Vec<u8>>,
    ) -> redis::RedisResult<(Link, mpsc::Receiver<Push>, mpsc::Receiver<Ended>)> {
        // One crypto provider for rustls, whatever features other crates enable.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (pushes, received) = mpsc::channel(PUSH_QUEUE);
        let (ended, ended_queue) = mpsc::channel(PUSH_QUEUE);
        let (dropped, disconnected) = (Arc::new(AtomicU64::new(0)), Arc::new(Notify::new()));
        let push = sender(&pushes, &ended, &dropped, &disconnected);
        let conn = connect(&servers, password.as_deref(), ca_pem.as_deref(), push).await?;
        let link = Link {
            servers,
            password,
            ca_pem,
            conn: RwLock::new(Some(conn)),
            pushes,
            ended,
            dropped,
            disconnected,
            reconnects: AtomicU64::new(0),
            name: RwLock::new(None),
        };
        Ok((link, received, ended_queue))
    }

    /// The current connection.
    fn conn(&self) -> redis::RedisResult<Conn> {
        self.conn.read().clone().ok_or_else(closed)
    }

    /// Drops the connection: Redis ends its subscriptions, and every later call fails.
    pub(crate) fn close(&self) {
        self.conn.write().take();
    }

    pub(crate) async fn publish(&self, channel: &str, payload: &[u8]) -> redis::RedisResult<usize> {
        self.watch(self.conn()?.publish(channel, payload).await)
    }

    pub(crate) async fn subscribe(&self, channels: &[String]) -> redis::RedisResult<()> {
        self.watch(self.conn()?.subscribe(channels).await)
    }

    pub(crate) async fn unsubscribe(&self, channels: &[String]) -> redis::RedisResult<()> {
        self.watch(self.conn()?.unsubscribe(channels).await)
    }

    pub(crate) async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> redis::RedisResult<T> {
        self.watch(self.conn()?.query(command).await)
    }

    pub(crate) async fn pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> redis::RedisResult<T> {
        self.watch(self.conn()?.pipe(pipe).await)
    }

    /// A call that failed because a connection broke (or a Cluster's topology moved) may have
    /// cost subscriptions: the engine is told, as for a disconnection push, and resubscribes.
    fn watch<T>(&self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(error) = &result
            && (error.is_io_error() || error.is_connection_dropped() || error.is_cluster_error())
            && self.conn.read().is_some()
        {
            self.disconnected.notify_one();
        }
        result
    }

    /// Names this connection and every later one (standalone only: see `nodes::reap`).
    pub(crate) async fn set_name(&self, name: String) -> redis::RedisResult<()> {
        *self.name.write() = Some(name.clone());
        if self.is_cluster() {
            return Ok(());
        }
        self.query::<()>(redis::cmd("CLIENT").arg("SETNAME").arg(name)).await
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.servers, Servers::Cluster(_))
    }

    /// Replaces a standalone connection that dropped, retrying with backoff (100 ms doubling
    /// to 5 s) until it succeeds. A cluster connection heals itself and is kept.
    pub(crate) async fn reconnect(&self) {
        if self.is_cluster() {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let push = sender(&self.pushes, &self.ended, &self.dropped, &self.disconnected);
            match connect(&self.servers, self.password.as_deref(), self.ca_pem.as_deref(), push).await {
                Ok(mut conn) => {
                    let name = self.name.read().clone();
                    if let Some(name) = name
                        && let Err(error) = conn.query::<()>(redis::cmd("CLIENT").arg("SETNAME").arg(name)).await
                    {
                        tracing::warn!(%error, "cannot name the connection to Redis");
                    }
                    let mut current = self.conn.write();
                    if current.is_none() {
                        return;
                    }
                    *current = Some(conn);
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot reach Redis");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// The CAs to trust for `rediss://`, when not the system's.
fn certificates(ca_pem: Option<&[u8]>) -> redis::TlsCertificates {
    redis::TlsCertificates { client_tls: None, root_cert: ca_pem.map(<[u8]>::to_vec) }
}

async fn connect(
    servers: &Servers,
    password: Option<&str>,
    ca_pem: Option<&[u8]>,
    push: impl redis::aio::AsyncPushSender + Clone,
) -> redis::RedisResult<Conn> {
    match servers {
        Servers::Standalone(url) => {
            let info = url.as_str().into_connection_info()?;
            let mut settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            if let Some(password) = password {
                settings = settings.set_password(password);
            }
            let info = info.set_redis_settings(settings);
            let client = match ca_pem {
                Some(_) => redis::Client::build_with_tls(info, certificates(ca_pem))?,
                None => redis::Client::open(info)?,
            };
            let config = AsyncConnectionConfig::new()
                .set_push_sender(push)
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT));
            let connect = client.get_multiplexed_async_connection_with_config(&config);
            match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(conn) => Ok(Conn::Single(conn?)),
                Err(_) => Err(timed_out()),
            }
        }
        Servers::Cluster(urls) => {
            let mut builder = ClusterClientBuilder::new(urls.clone())
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(push)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT);
            if let Some(password) = password {
                builder = builder.password(password);
            }
            if ca_pem.is_some() {
                builder = builder.certs(certificates(ca_pem));
            }
            let client = builder.build()?;
            match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_connection()).await {
                Ok(conn) => Ok(Conn::Cluster(conn?)),
                Err(_) => Err(timed_out()),
            }
        }
    }
}

fn closed() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, "the engine stopped"))
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "Redis did not answer in time"))
}

/// The push sender of one connection: messages to the bounded queue (dropped and counted when
/// it is full), ended sharded subscriptions to theirs (when it is full, everything is
/// subscribed again as after a disconnection; nobody reads it for the ASP.NET bridge, which
/// does not shard), a disconnection to the notifier. Never fails: a
/// failing sender would break the connection it belongs to.
fn sender(
    queue: &mpsc::Sender<Push>,
    ended: &mpsc::Sender<Ended>,
    dropped: &Arc<AtomicU64>,
    disconnected: &Arc<Notify>,
) -> impl redis::aio::AsyncPushSender + Clone {
    let (queue, ended, dropped, disconnected) = (queue.clone(), ended.clone(), dropped.clone(), disconnected.clone());
    move |info: PushInfo| -> Result<(), ()> {
        match info.kind {
            PushKind::Disconnection => disconnected.notify_one(),
            // Also the confirmation of this node's own SUNSUBSCRIBE: the engine ignores a
            // channel it no longer wants.
            PushKind::SUnsubscribe => {
                if let Some(Value::BulkString(channel)) = info.data.into_iter().next()
                    && let Err(mpsc::error::TrySendError::Full(_)) = ended.try_send(Bytes::from(channel))
                {
                    disconnected.notify_one();
                }
            }
            PushKind::Message | PushKind::SMessage => {
                let mut data = info.data.into_iter();
                if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) = (data.next(), data.next())
                    && queue.try_send((Bytes::from(channel), Bytes::from(payload))).is_err()
                {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
