//! `switchboard serve`: one port carries the client endpoint and the REST API.
//!
//! Connections are served with hyper's HTTP/1 builder directly (not `axum::serve`), so a
//! WebSocket upgrade can take the raw `TcpStream` (and its TLS session) back (see
//! `switchboard-edge`). With `--tls-cert` the port speaks TLS only.

use crate::Exit;
use crate::cli::ServeArgs;
use crate::config::{LogFormat, Settings};
use crate::engine::Engine;
use crate::metrics::{Observability, Readiness};
use crate::tls::ServedCertificate;
use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::Rng;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use switchboard_api::ApiState;
use switchboard_auth::{AccessKeys, Audience, ConnectionTokens, Verifier, generate_access_key};
use switchboard_control::ControlPlane;
use switchboard_edge::{Admission, ClientCall, EdgeConfig, EdgeState, Refusal, Ticket};
use switchboard_hub::{CloseRequest, Registry, Stats};
use switchboard_upstream::{Upstream, UpstreamConfig};
use tokio::net::TcpListener;
use url::Url;

/// Name of the file holding the generated access key inside the data directory.
pub const ACCESS_KEY_FILE: &str = "access-key";

/// Entry point of `switchboard serve`.
pub fn main(args: ServeArgs) -> Result<(), Exit> {
    let settings = Settings::resolve(args)?;
    init_logging(settings.log_format);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let observability = Arc::new(Observability::default());
        if let Some(address) = settings.internal_listen {
            crate::metrics::serve_internal(address, observability.clone())
                .await
                .with_context(|| format!("cannot listen on {address} (--internal-listen)"))?;
        }
        let listener = listen(settings.listen).with_context(|| format!("cannot listen on {}", settings.listen))?;
        let node = Node::start_observed(&settings, &listener, observability).await?;
        // Listening for signals before the connection string goes out: a supervisor may stop
        // the node as soon as it reads it.
        let shutdown = shutdown_signal();
        println!("{}", node.connection_string);
        let bound = listener.local_addr().context("listener has no address")?;
        tracing::info!(listen = %bound, endpoint = %node.endpoint, "switchboard is serving; the connection string is on stdout");
        if let Some(path) = settings.access_key_file.clone() {
            let keys = node.keys.clone();
            tokio::spawn(on_change_or_hangup(move |by_signal| reload_keys(&path, &keys, by_signal)));
        }
        if let Some(certificate) = node.tls.clone() {
            tokio::spawn(on_change_or_hangup(move |by_signal| reload_certificate(&certificate, by_signal)));
        }
        node.serve(listener, settings.shutdown_grace, shutdown).await;
        Ok(())
    })
}

/// Calls `check` every few seconds, and at once on SIGHUP (with `true`): files mounted from
/// Kubernetes Secrets (access keys, certificates) are updated in place, so they are re-read
/// without a restart.
async fn on_change_or_hangup(mut check: impl FnMut(bool)) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(KEY_FILE_CHECK);
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<Option<()>>();
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            _ = signalled => true,
        };
        check(by_signal);
    }
}

/// Re-reads the access key file; a file that cannot be read or holds no key is reported and
/// the current keys stay.
fn reload_keys(path: &Path, keys: &AccessKeys, by_signal: bool) {
    match crate::config::read_key_file(path) {
        Ok(new) if *keys.current() != *new => {
            keys.replace(new.clone());
            tracing::info!(keys = new.len(), path = %path.display(), "access keys reloaded");
        }
        Ok(_) if by_signal => tracing::info!(path = %path.display(), "access keys unchanged"),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "keeping the current access keys"),
    }
}

/// Re-reads the public port's certificate; one that cannot be used is reported and the current
/// one stays.
fn reload_certificate(certificate: &ServedCertificate, by_signal: bool) {
    match certificate.reload() {
        Ok(true) => tracing::info!("TLS certificate reloaded"),
        Ok(false) if by_signal => tracing::info!("TLS certificate unchanged"),
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, "keeping the current TLS certificate"),
    }
}

/// How often the access key and certificate files are checked for changes.
const KEY_FILE_CHECK: Duration = Duration::from_secs(5);

/// A node ready to serve: its state and its HTTP application.
pub struct Node {
    /// The public endpoint (from the settings, else the bound address).
    pub endpoint: Url,
    /// `Endpoint=…;AccessKey=…;Version=1.0;` for application back ends.
    pub connection_string: String,
    pub registry: Arc<Registry>,
    /// The accepted keys; replacing them (a reload) reaches every component.
    pub keys: AccessKeys,
    /// The public port's certificate, when it serves TLS.
    pub tls: Option<Arc<ServedCertificate>>,
    edge: Arc<EdgeState>,
    engine: Engine,
    app: App,
    observability: Arc<Observability>,
    admission: Arc<Admission>,
}

impl Node {
    /// What the internal endpoint (`/metrics`, `/healthz`, `/readyz`) reads.
    pub fn observability(&self) -> Arc<Observability> {
        self.observability.clone()
    }

    /// The node's raft group (membership writes and reads, cluster state); `None` with Redis.
    pub fn control(&self) -> Option<&ControlPlane> {
        self.engine.control.as_ref()
    }

    /// Builds the node for a bound `listener` (its address becomes the default endpoint) and
    /// starts its control plane in the data directory.
    pub async fn start(settings: &Settings, listener: &TcpListener) -> Result<Node, Exit> {
        Self::start_observed(settings, listener, Arc::default()).await
    }

    /// [`Node::start`], reporting to `observability` (the internal endpoint).
    pub async fn start_observed(
        settings: &Settings,
        listener: &TcpListener,
        observability: Arc<Observability>,
    ) -> Result<Node, Exit> {
        let keys = load_or_create_keys(settings)?;
        let tls = match &settings.tls {
            Some(files) => Some(ServedCertificate::load(files).map_err(Exit::Usage)?),
            None => None,
        };
        let bound = listener.local_addr().context("listener has no address")?;
        let endpoint = match &settings.endpoint {
            Some(url) => url.clone(),
            None => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                Url::parse(&format!("{scheme}://{}", reachable(bound))).context("bound address is not a URL")?
            }
        };
        let connection_string =
            format!("Endpoint={};AccessKey={};Version=1.0;", endpoint.as_str().trim_end_matches('/'), keys.primary());
        let engine = Engine::start(settings, bound).await?;
        let registry = engine.registry.clone();
        let verifier = Arc::new(Verifier::new(keys.clone(), Audience::new([&endpoint]), 30));
        let node_secret: [u8; 32] = rand::rng().random();
        let edge_config = EdgeConfig {
            max_message_size: settings.max_message_size,
            node_id: engine.node_id,
            allowed_origins: settings.allowed_origins.clone(),
            keep_alive: settings.keep_alive,
            client_timeout: settings.client_timeout,
            handshake_timeout: settings.handshake_timeout,
            max_connections_per_user: settings.max_connections_per_user,
            max_messages_per_second: settings.max_messages_per_second,
            ..EdgeConfig::default()
        };
        let tokens = ConnectionTokens::new(node_secret);
        let upstream_config = UpstreamConfig {
            templates: settings.upstream.clone(),
            timeout: settings.upstream_timeout,
            ..UpstreamConfig::default()
        };
        let upstream = Upstream::new(upstream_config, verifier.keys().clone(), settings.max_queued_bytes);
        let upstream = Arc::new(upstream.with_tracer(registry.tracer().clone()));
        let admission =
            Admission::new(settings.max_connections, settings.max_connections_per_ip, settings.max_connect_rate_per_ip);
        let upstream_parts = upstream.clone();
        let mut edge = EdgeState::new(edge_config, registry.clone(), verifier.clone(), tokens, upstream);
        if settings.cluster.is_some() || settings.redis.is_some() {
            let bus = engine.bus.clone();
            edge = edge.with_peers(Arc::new(move |node| bus.http_address(node)));
        }
        let edge = Arc::new(edge);
        let api = Arc::new(ApiState {
            registry: registry.clone(),
            verifier: verifier.clone(),
            endpoint: endpoint.clone(),
            store: engine.store.clone(),
            bus: engine.bus.clone(),
            max_memberships_per_hub: settings.max_memberships_per_hub,
        });
        let mut app = switchboard_edge::router(edge.clone());
        if let Some(control) = &engine.control {
            let status = Arc::new(crate::cluster::StatusState { control: control.clone(), verifier: verifier.clone() });
            let status_route = axum::Router::new()
                .route(crate::cluster::STATUS_PATH, axum::routing::get(crate::cluster::status_endpoint))
                .route(
                    &format!("{}/{{node}}", crate::cluster::NODES_PATH),
                    axum::routing::delete(crate::cluster::remove_node_endpoint),
                )
                .with_state(status);
            app = app.merge(status_route);
        }
        let node_route = axum::Router::new()
            .route(crate::console::NODE_PATH, axum::routing::get(crate::console::node_endpoint))
            .with_state((observability.clone(), verifier.clone()));
        let app = app.merge(node_route).merge(switchboard_api::router(api.clone()));
        observability.attach(crate::metrics::Parts {
            admission: admission.clone(),
            registry: registry.clone(),
            upstream: upstream_parts,
            fanout: engine.fanout.clone(),
            control: engine.control.clone(),
            redis: engine.redis.clone(),
            node_id: engine.node_id,
            bridge: engine.bridge.clone(),
            console: crate::console::ConsoleParts {
                keys: keys.clone(),
                bus: engine.bus.clone(),
                endpoint: endpoint.clone(),
                app: app.clone(),
            },
        });
        observability.start_sampling();
        // In an `Arc`: axum clones a middleware's state for every request.
        let front = Arc::new(crate::metrics::Front {
            observability: observability.clone(),
            control: engine.control.clone().map(Arc::new),
        });
        let app = App {
            router: app.layer(axum::middleware::from_fn_with_state(front.clone(), crate::metrics::front)),
            calls: Arc::new(DirectCalls { front, api, edge: edge.clone() }),
        };
        Ok(Node { endpoint, connection_string, registry, keys, tls, edge, engine, app, observability, admission })
    }

    /// Serves until `shutdown` resolves, then closes every client (with `allowReconnect`) and
    /// waits for them to leave within `grace`.
    pub async fn serve(self, listener: TcpListener, grace: Duration, shutdown: impl Future<Output = ()>) {
        let Node { registry, edge, engine, app, observability, admission, tls, .. } = self;
        let acceptor = tls.map(|certificate| certificate.acceptor());
        observability.set_readiness(Readiness::Ready);
        let purge = match &engine.control {
            Some(control) => tokio::spawn(control.clone().purge_expired_forever()),
            None => tokio::spawn(std::future::pending()),
        };
        tokio::spawn(switchboard_edge::reclaim_abandoned(edge));
        // On a worker, not on the thread that waits for `shutdown` here: a task spawned from
        // outside the workers waits in the runtime's shared queue, behind every connection a
        // broadcast woke, so under load a new request waited a whole round of them (~250 ms
        // at 1,000 broadcasts/s to 10,000 connections) before its first read. Spawned from a
        // worker, it runs next there.
        let accepting = tokio::spawn(accept(listener, app, admission, acceptor));
        shutdown.await;
        // Stops accepting; the listener closes with the task.
        accepting.abort();
        let _ = accepting.await;
        observability.set_readiness(Readiness::Draining);
        drain(&registry, grace).await;
        purge.abort();
        engine.shutdown().await;
    }
}

/// Accepts sockets on the public port for ever, each served by a task of its own; sockets over
/// a cap are answered and closed.
async fn accept(
    listener: TcpListener,
    app: App,
    admission: Arc<Admission>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut refusals = Refusals::default();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let ticket = match admission.admit(peer.ip()) {
                    Ok(ticket) => ticket,
                    Err(refusal) => {
                        refusals.refuse(stream, refusal, &admission);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = Admitted { app: app.clone(), ticket };
                match acceptor.clone() {
                    None => {
                        tokio::spawn(serve_http(stream, service));
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => serve_http(stream, service).await,
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How long a client may take to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 (with upgrades) on one socket, plain or TLS.
async fn serve_http<S>(stream: S, service: Admitted)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 * 1024)
        // One buffer per response, written with `send`: most responses are a few hundred
        // bytes, and a vectored write costs the kernel more for them than the copy does.
        .writev(false)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

/// The public port's application.
#[derive(Clone)]
struct App {
    /// Every route, behind the metrics middleware.
    router: axum::Router,
    /// What [`Admitted`] calls without the router.
    calls: Arc<DirectCalls>,
}

/// The handlers of the requests a node gets most, and the middleware the router puts in
/// front of them.
struct DirectCalls {
    front: Arc<crate::metrics::Front>,
    /// The REST data plane.
    api: Arc<ApiState>,
    /// The client endpoint.
    edge: Arc<EdgeState>,
}

/// The application for one admitted socket.
/// * A REST call of the data plane and a client request (most of a node's requests) go
///   straight to their handlers, behind the same middleware: the router would only find the
///   same handlers, after a lookup, through boxed services and futures of its own (for a REST
///   call, the router's fallback, with an empty parameter list).
/// * Every upgrade request carries the socket's [`Ticket`], so a WebSocket task that takes
///   the socket over keeps it counted. Other requests end before the socket does and carry
///   nothing (no extensions map to allocate).
struct Admitted {
    app: App,
    ticket: Ticket,
}

/// A request [`Admitted`] hands to its handler without the router.
#[derive(Clone, Copy)]
enum Direct {
    /// A REST call of the data plane (the admin routes are the router's).
    Rest,
    Client(ClientCall),
}

impl Direct {
    fn of(method: &http::Method, path: &str) -> Option<Direct> {
        if path.starts_with("/api/") && !path.starts_with("/api/admin/") {
            Some(Direct::Rest)
        } else {
            ClientCall::of(method, path).map(Direct::Client)
        }
    }
}

impl DirectCalls {
    /// Runs `direct`'s handler behind the router's middleware.
    async fn serve(&self, direct: Direct, request: axum::extract::Request) -> axum::response::Response {
        match direct {
            Direct::Rest => {
                self.front.serve(request, |request| switchboard_api::handle(self.api.clone(), request)).await
            }
            Direct::Client(call) => {
                self.front
                    .serve(request, |request| switchboard_edge::serve_client(self.edge.clone(), call, request))
                    .await
            }
        }
    }
}

type DirectFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send>>;
type RouterFuture = <axum::Router as tower::Service<http::Request<hyper::body::Incoming>>>::Future;

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Admitted {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<DirectFuture, RouterFuture>;

    fn call(&self, mut request: http::Request<hyper::body::Incoming>) -> Self::Future {
        use futures_util::future::Either;
        if request.headers().contains_key(http::header::UPGRADE) {
            request.extensions_mut().insert(self.ticket.clone());
        }
        if let Some(direct) = Direct::of(request.method(), request.uri().path()) {
            let calls = self.app.calls.clone();
            let request = request.map(axum::body::Body::new);
            return Either::Left(Box::pin(async move { Ok(calls.serve(direct, request).await) }));
        }
        // The router is always ready.
        Either::Right(tower::Service::call(&mut self.app.router.clone(), request))
    }
}

/// Answers sockets over a cap and closes them, saying so in the log at most every 10 s.
#[derive(Default)]
struct Refusals {
    last_log: Option<tokio::time::Instant>,
    since_log: u64,
}

impl Refusals {
    fn refuse(&mut self, stream: tokio::net::TcpStream, refusal: Refusal, admission: &Admission) {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = stream;
            let answer = refusal.http_response();
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
        });
        self.since_log += 1;
        if self.last_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(
                ?refusal,
                refused = self.since_log,
                held = admission.held(),
                max = admission.max_total(),
                "refusing new sockets: a connection cap is reached"
            );
            self.last_log = Some(tokio::time::Instant::now());
            self.since_log = 0;
        }
    }
}

/// Tells every client to reconnect elsewhere and waits (bounded) for them to go.
async fn drain(registry: &Registry, grace: Duration) {
    let request = CloseRequest { error: Some("Server is shutting down.".into()), allow_reconnect: true };
    let connections = Stats::get(&registry.stats().connections);
    tracing::info!(connections, grace_seconds = grace.as_secs(), "draining: clients are told to reconnect elsewhere");
    for hub in registry.hubs() {
        hub.close_all(&[], &request);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while Stats::get(&registry.stats().connections) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(remaining = Stats::get(&registry.stats().connections), "stopped");
}

/// Keys from the settings or their key file, else the key kept in the data directory
/// (created on first start).
fn load_or_create_keys(settings: &Settings) -> Result<AccessKeys, Exit> {
    if let Some(path) = &settings.access_key_file {
        let keys = crate::config::read_key_file(path).map_err(Exit::Usage)?;
        return AccessKeys::new(keys).ok_or_else(|| Exit::Usage(format!("{} holds no access key", path.display())));
    }
    if let Some(keys) = AccessKeys::new(settings.access_keys.clone()) {
        return Ok(keys);
    }
    let key = read_or_create_key(&settings.data_dir)?;
    Ok(AccessKeys::new([key]).expect("a generated key is never empty"))
}

/// Reads the key of a data directory, creating directory and key when absent.
pub fn read_or_create_key(data_dir: &Path) -> Result<String, Exit> {
    if let Some(key) = read_key(data_dir)? {
        tracing::info!(path = %data_dir.join(ACCESS_KEY_FILE).display(), "using the access key kept in the data directory");
        return Ok(key);
    }
    let path = data_dir.join(ACCESS_KEY_FILE);
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let key = generate_access_key();
    write_private(&path, &key).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated an access key (the connection string on stdout carries it)");
    Ok(key)
}

/// The key a node generated in `data_dir`, if it did.
pub fn read_key(data_dir: &Path) -> Result<Option<String>, Exit> {
    let path = data_dir.join(ACCESS_KEY_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let key = text.trim().to_owned();
    if key.is_empty() {
        return Err(Exit::Usage(format!("{} is empty", path.display())));
    }
    Ok(Some(key))
}

/// The key of the node whose data directory is `data_dir`, for the tools that sign for it
/// (`token`, `cluster`): never made up, since tokens signed with a key no node holds are refused.
pub fn node_key(data_dir: &Path) -> Result<String, Exit> {
    read_key(data_dir)?.ok_or_else(|| {
        Exit::Usage(format!(
            "no access key in {}: start the node with this data directory first (switchboard serve), \
             or pass its key (token: --connection-string; cluster: --access-key)",
            data_dir.join(ACCESS_KEY_FILE).display()
        ))
    })
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{text}\n"))
}

/// Binds the public listener with a deep accept queue: connection storms (every client of a
/// drained node reconnecting at once) would otherwise overflow the default one, and each
/// overflowed SYN costs its client a one-second retransmission. The kernel caps the depth at
/// `net.core.somaxconn`.
pub fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Requested depth of the accept queue.
const ACCEPT_BACKLOG: u32 = 4096;

/// The address clients can reach when listening on every interface.
pub(crate) fn reachable(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => format!("127.0.0.1:{}", v4.port()),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => format!("[::1]:{}", v6.port()),
        other => other.to_string(),
    }
}

/// Switchboard's own lifecycle and warnings; raft's internals only when asked
/// (`SWITCHBOARD_LOG=debug`, or `info,openraft=info`). Raft failures that matter reach
/// Switchboard's own logs through the calls that fail.
const DEFAULT_LOG_FILTER: &str = "info,openraft=off";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Listens for SIGTERM and Ctrl-C from now on; the future resolves on either.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (terminate, interrupt) = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let received = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => drop(signal.recv().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = received(terminate) => {},
                () = received(interrupt) => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }
}
