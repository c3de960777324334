//! Wiring of the node's engine (see `switchboard-engine`). The raft engine: the raft membership
//! store (`switchboard-control`, one voter on the embedded single node), the node's hubs reading
//! it, and the bus: the node itself ([`LocalBus`]) on the single node, the fan-out over gRPC
//! (`switchboard-fanout`) in a cluster, whose gRPC server carries raft, admin and fan-out (raft,
//! the server and the fan-out streams run on a runtime of their own, `cluster_runtime`). The
//! Redis engine (`--engine redis`, `switchboard-redis`): store, bus and liveness in Redis.

use crate::Exit;
use crate::cluster_runtime::ClusterRuntime;
use crate::config::Settings;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard_control::{ClusterSettings, ControlPlane, InterestReporter, close_clients_while_lapsed};
use switchboard_engine::{LocalBus, MembershipStore, NodeBus};
use switchboard_fanout::{ClusterBus, FanoutClient, FanoutConfig, FanoutService, fanout_server};
use switchboard_grpc::{ClusterSecret, WarnThrottle};
use switchboard_hub::{BothSinks, HubConfig, InterestSink, Registry};
use switchboard_redis::{AspNetBridge, AspNetSettings, RedisEngine, RedisSettings, StartError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;

/// How long stopping waits for the gRPC server to finish its calls.
const GRPC_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A node's running engine and the hubs it serves.
pub struct Engine {
    /// This node's id (connection ids made here name it).
    pub node_id: u64,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn MembershipStore>,
    pub bus: Arc<dyn NodeBus>,
    /// The raft group (cluster status, metrics, operators' removals); `None` with Redis.
    pub control: Option<ControlPlane>,
    /// The Redis engine (metrics, readiness), with `--engine redis`.
    pub redis: Option<Arc<RedisEngine>>,
    /// The fan-out client, in a cluster (metrics).
    pub fanout: Option<FanoutClient>,
    /// The bridge to an ASP.NET backplane, with `--aspnet-backplane`.
    pub bridge: Option<AspNetBridge>,
    grpc: Option<GrpcServer>,
    /// Where the gRPC server and the fan-out streams run, in a cluster (stopped last).
    cluster_runtime: Option<ClusterRuntime>,
}

/// The engine's interest sink, and the bridge's when there is one.
fn both(engine: Arc<dyn InterestSink>, bridge: Option<Arc<dyn InterestSink>>) -> Arc<dyn InterestSink> {
    match bridge {
        Some(bridge) => Arc::new(BothSinks(engine, bridge)),
        None => engine,
    }
}

/// Joins the ASP.NET backplane: exit 64 for settings that cannot work, 69 when its Redis does
/// not answer.
async fn connect_bridge(aspnet: &crate::config::AspNetConfig, node_id: u64) -> Result<AspNetBridge, Exit> {
    let settings = AspNetSettings {
        url: aspnet.url.clone(),
        password: None,
        ca_pem: aspnet.ca_pem.clone(),
        prefix: aspnet.prefix.clone(),
        hubs: aspnet.hubs.clone(),
        origin: aspnet.origin.clone(),
        node_id,
    };
    AspNetBridge::connect(&settings).await.map_err(|error| match error {
        StartError::Invalid(reason) => Exit::Usage(format!("--aspnet-backplane: {reason}")),
        StartError::Unreachable(reason) => {
            let url = switchboard_redis::Servers::Standalone(aspnet.url.clone());
            Exit::Unavailable(format!("cannot reach the ASP.NET backplane's Redis at {url}: {reason}"))
        }
    })
}

/// The cluster's gRPC server and how to stop it.
struct GrpcServer {
    fanout: FanoutService,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Engine {
    /// The parts every engine has; the others are `None` until set.
    fn with(node_id: u64, registry: Arc<Registry>, store: Arc<dyn MembershipStore>, bus: Arc<dyn NodeBus>) -> Engine {
        Engine {
            node_id,
            registry,
            store,
            bus,
            control: None,
            redis: None,
            fanout: None,
            bridge: None,
            grpc: None,
            cluster_runtime: None,
        }
    }

    /// Starts the engine `settings` describe. `bound` is the public listener's address (what
    /// other nodes forward client requests to when no `--advertise-http` is set).
    pub async fn start(settings: &Settings, bound: SocketAddr) -> Result<Engine, Exit> {
        let bridge = match &settings.aspnet {
            Some(aspnet) => Some(connect_bridge(aspnet, settings.node_id).await?),
            None => None,
        };
        let bridge_sink = bridge.as_ref().map(AspNetBridge::interest);
        let mut engine = Self::start_engine(settings, bound, bridge_sink).await?;
        if let Some(bridge) = bridge {
            engine.bus = bridge.wrap(engine.bus.clone());
            bridge.start(engine.registry.clone());
            engine.bridge = Some(bridge);
        }
        Ok(engine)
    }

    /// The engine alone; `bridge` also hears the registry's interest.
    async fn start_engine(
        settings: &Settings,
        bound: SocketAddr,
        bridge: Option<Arc<dyn InterestSink>>,
    ) -> Result<Engine, Exit> {
        let hub_config = HubConfig {
            max_queued_bytes: settings.max_queued_bytes,
            max_groups_per_connection: settings.max_groups_per_connection,
        };
        if let Some(redis) = &settings.redis {
            return Self::start_redis(redis, hub_config, bound, bridge).await;
        }
        let node_id = settings.node_id;
        let Some(cluster) = &settings.cluster else {
            let control = ControlPlane::start_single(&settings.data_dir, &bound.to_string()).await?;
            let mut registry = Registry::with_user_groups(hub_config, Arc::new(control.clone()));
            if let Some(bridge) = bridge {
                registry = registry.reporting_interest(bridge);
            }
            let registry = Arc::new(registry);
            let bus = Arc::new(LocalBus::new(registry.clone()));
            let store = Arc::new(control.clone());
            return Ok(Engine { control: Some(control), ..Engine::with(node_id, registry, store, bus) });
        };
        let secret = cluster.credentials().map_err(|e| Exit::Usage(e.to_string()))?;
        let cluster_runtime = ClusterRuntime::start()?;
        let control =
            ControlPlane::open_cluster(&settings.data_dir, settings.node_id, cluster, cluster_runtime.handle()).await?;
        let (interest, interest_queue) = InterestReporter::new();
        let sink = both(interest.clone(), bridge);
        let registry = Registry::with_user_groups(hub_config, Arc::new(control.clone())).reporting_interest(sink);
        let registry = Arc::new(registry);
        let config = FanoutConfig { runtime: Some(cluster_runtime.handle().clone()), ..FanoutConfig::default() };
        let fanout = FanoutClient::new(settings.node_id, registry.clone(), &secret, config);
        let fanout_service = FanoutService::new(registry.clone());
        let grpc = serve_grpc(cluster, &control, &secret, fanout_service, cluster_runtime.handle()).await?;
        let http = cluster.advertise_http.clone().unwrap_or_else(|| http_address(bound, &cluster.advertise));
        control.join_cluster(cluster, http).await?;
        tokio::spawn(interest.run(interest_queue, control.clone(), registry.clone()));
        tokio::spawn(close_clients_while_lapsed(control.clone(), registry.clone()));
        let bus = Arc::new(ClusterBus::new(fanout.clone(), Arc::new(control.clone())));
        let store = Arc::new(control.clone());
        Ok(Engine {
            control: Some(control),
            fanout: Some(fanout),
            grpc: Some(grpc),
            cluster_runtime: Some(cluster_runtime),
            ..Engine::with(node_id, registry, store, bus)
        })
    }

    /// A stateless node of a deployment sharing a Redis. Exit 64 for settings that cannot
    /// work, 69 when Redis does not answer within a few seconds.
    async fn start_redis(
        redis: &crate::config::RedisConfig,
        hub_config: HubConfig,
        bound: SocketAddr,
        bridge: Option<Arc<dyn InterestSink>>,
    ) -> Result<Engine, Exit> {
        let redis_settings = RedisSettings {
            servers: redis.servers.clone(),
            password: redis.password.clone(),
            ca_pem: redis.ca_pem.clone(),
            prefix: redis.prefix.clone(),
            node_id: redis.node_id,
            http_address: redis.advertise_http.clone().unwrap_or_else(|| crate::serve::reachable(bound)),
            snapshot_every: RedisSettings::SNAPSHOT_EVERY,
        };
        let engine = RedisEngine::connect(&redis_settings).await.map_err(|error| match error {
            StartError::Invalid(reason) => Exit::Usage(format!("--redis: {reason}")),
            StartError::Unreachable(reason) => {
                Exit::Unavailable(format!("cannot reach Redis at {}: {reason}", redis.servers))
            }
        })?;
        let registry = Registry::with_user_groups(hub_config, engine.user_groups())
            .reporting_interest(both(engine.interest(), bridge));
        let registry = Arc::new(registry);
        engine
            .start(registry.clone())
            .await
            .map_err(|error| Exit::Unavailable(format!("cannot reach Redis: {error}")))?;
        let (store, bus) = (engine.store(), engine.bus());
        let redis = Some(Arc::new(engine));
        let node_id = redis.as_ref().map_or(1, |engine| engine.node_id());
        Ok(Engine { redis, ..Engine::with(node_id, registry, store, bus) })
    }

    /// Leaves the cluster (a leader hands leadership over first), stops raft, then the gRPC
    /// server; or leaves the Redis deployment.
    pub async fn shutdown(self) {
        if let Some(bridge) = &self.bridge {
            bridge.stop();
        }
        if let Some(redis) = &self.redis {
            redis.shutdown().await;
        }
        if let Some(control) = &self.control {
            control.shutdown().await;
        }
        if let Some(GrpcServer { fanout, stop, mut task }) = self.grpc {
            fanout.shutdown();
            let _ = stop.send(());
            if tokio::time::timeout(GRPC_STOP_TIMEOUT, &mut task).await.is_err() {
                task.abort();
            }
        }
        // Last: the gRPC server's connections and the fan-out streams run there.
        if let Some(runtime) = self.cluster_runtime {
            runtime.stop().await;
        }
    }
}

/// Serves raft, admin and fan-out on `--grpc-listen` from `runtime`, every call checked
/// against the cluster secret, and with the cluster's mutual TLS only to peers whose
/// certificate the cluster CA signed.
async fn serve_grpc(
    cluster: &ClusterSettings,
    control: &ControlPlane,
    secret: &ClusterSecret,
    fanout: FanoutService,
    runtime: &tokio::runtime::Handle,
) -> Result<GrpcServer, Exit> {
    let cannot_listen = || format!("cannot listen for gRPC on {}", cluster.grpc_listen);
    let listener = tokio::net::TcpListener::bind(cluster.grpc_listen).await.with_context(cannot_listen)?;
    // Moved to `runtime`'s I/O driver, which serves the connections.
    let listener = listener.into_std().with_context(cannot_listen)?;
    let listener = {
        let _runtime = runtime.enter();
        tokio::net::TcpListener::from_std(listener).with_context(cannot_listen)?
    };
    let routes = control.grpc_services().add_service(fanout_server(fanout.clone(), secret.server()));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tonic::transport::Server::builder().add_routes(routes);
    let tls = secret.tls().map(|tls| tokio_rustls::TlsAcceptor::from(tls.server.clone()));
    let task = runtime.spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        let served = match tls {
            // Without it, a reply written in two parts waits for the peer's delayed ACK (40 ms
            // on Linux): forwarded membership writes and their apply barriers took 44 ms each.
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                server.serve_with_incoming_shutdown(incoming, stopped).await
            }
            Some(acceptor) => server.serve_with_incoming_shutdown(tls_incoming(listener, acceptor), stopped).await,
        };
        if let Err(error) = served {
            tracing::error!(%error, "the gRPC server stopped");
        }
    });
    Ok(GrpcServer { fanout, stop, task })
}

/// The peers of the gRPC port that completed a mutual TLS handshake. A peer that fails it
/// (no certificate, one the cluster CA did not sign, or no TLS at all) is refused with a
/// warning naming it and why (throttled).
fn tls_incoming(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> ReceiverStream<std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    let (admitted, incoming) = tokio::sync::mpsc::channel(64);
    let warnings = Arc::new(WarnThrottle::new(Duration::from_secs(10)));
    tokio::spawn(async move {
        loop {
            // The server stopped (it dropped the stream): stop listening too.
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = admitted.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, admitted, warnings) = (acceptor.clone(), admitted.clone(), warnings.clone());
            tokio::spawn(async move {
                let error = match tokio::time::timeout(PEER_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = admitted.send(Ok(stream)).await;
                        return;
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => "no TLS handshake within 10 s".to_owned(),
                };
                if let Some(suppressed) = warnings.check() {
                    tracing::warn!(%peer, %error, suppressed, "refused a peer on the gRPC port: its TLS handshake failed (is it a node with a certificate from --cluster-ca?)");
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// How long a peer may take to complete its TLS handshake.
const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where other nodes reach this node's client endpoint: the listen address, or with a
/// wildcard listen address, the advertised gRPC host with the listen port.
fn http_address(bound: SocketAddr, advertise: &str) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    match advertise.rsplit_once(':') {
        Some((host, _)) => format!("{host}:{}", bound.port()),
        None => crate::serve::reachable(bound),
    }
}
