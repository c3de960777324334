//! Wiring of the node's engine (see `switchboard-engine`): the raft membership store
//! (`switchboard-control`, one voter on the embedded single node), the node's hubs reading it,
//! and the bus: the node itself ([`LocalBus`]) on the single node, the fan-out over gRPC
//! (`switchboard-fanout`) in a cluster, whose gRPC server carries raft, admin and fan-out.

use crate::Exit;
use crate::config::Settings;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard_control::{ClusterSettings, ControlPlane, InterestReporter};
use switchboard_engine::{LocalBus, MembershipStore, NodeBus};
use switchboard_fanout::{ClusterBus, FanoutClient, FanoutConfig, FanoutService, fanout_server};
use switchboard_grpc::ClusterSecret;
use switchboard_hub::{HubConfig, Registry};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

/// How long stopping waits for the gRPC server to finish its calls.
const GRPC_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A node's running engine and the hubs it serves.
pub struct Engine {
    pub registry: Arc<Registry>,
    pub store: Arc<dyn MembershipStore>,
    pub bus: Arc<dyn NodeBus>,
    /// The raft group (cluster status, metrics, operators' removals).
    pub control: ControlPlane,
    /// The fan-out client, in a cluster (metrics).
    pub fanout: Option<FanoutClient>,
    grpc: Option<GrpcServer>,
}

/// The cluster's gRPC server and how to stop it.
struct GrpcServer {
    fanout: FanoutService,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Engine {
    /// Starts the engine `settings` describe. `bound` is the public listener's address (what
    /// other nodes forward client requests to when no `--advertise-http` is set).
    pub async fn start(settings: &Settings, bound: SocketAddr) -> Result<Engine, Exit> {
        let hub_config = HubConfig {
            max_queued_bytes: settings.max_queued_bytes,
            max_groups_per_connection: settings.max_groups_per_connection,
        };
        let Some(cluster) = &settings.cluster else {
            let control = ControlPlane::start_single(&settings.data_dir, &bound.to_string()).await?;
            let registry = Arc::new(Registry::with_user_groups(hub_config, Arc::new(control.clone())));
            let bus = Arc::new(LocalBus::new(registry.clone()));
            let store = Arc::new(control.clone());
            return Ok(Engine { registry, store, bus, control, fanout: None, grpc: None });
        };
        let secret = ClusterSecret::new(&cluster.secret)
            .map_err(|_| Exit::Usage("--cluster-secret must be visible ASCII".into()))?;
        let control = ControlPlane::open_cluster(&settings.data_dir, settings.node_id, cluster).await?;
        let (interest, interest_queue) = InterestReporter::new();
        let registry =
            Registry::with_user_groups(hub_config, Arc::new(control.clone())).reporting_interest(interest.clone());
        let registry = Arc::new(registry);
        let fanout = FanoutClient::new(settings.node_id, registry.clone(), &secret, FanoutConfig::default());
        let grpc = serve_grpc(cluster, &control, &secret, FanoutService::new(registry.clone())).await?;
        let http = cluster.advertise_http.clone().unwrap_or_else(|| http_address(bound, &cluster.advertise));
        control.join_cluster(cluster, http).await?;
        tokio::spawn(interest.run(interest_queue, control.clone(), registry.clone()));
        let bus = Arc::new(ClusterBus::new(fanout.clone(), Arc::new(control.clone())));
        let store = Arc::new(control.clone());
        Ok(Engine { registry, store, bus, control, fanout: Some(fanout), grpc: Some(grpc) })
    }

    /// Leaves the cluster (a leader hands leadership over first), stops raft, then the gRPC server.
    pub async fn shutdown(self) {
        self.control.shutdown().await;
        if let Some(GrpcServer { fanout, stop, mut task }) = self.grpc {
            fanout.shutdown();
            let _ = stop.send(());
            if tokio::time::timeout(GRPC_STOP_TIMEOUT, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// Serves raft, admin and fan-out on `--grpc-listen`, every call checked against the cluster
/// secret.
async fn serve_grpc(
    cluster: &ClusterSettings,
    control: &ControlPlane,
    secret: &ClusterSecret,
    fanout: FanoutService,
) -> Result<GrpcServer, Exit> {
    let listener = tokio::net::TcpListener::bind(cluster.grpc_listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", cluster.grpc_listen))?;
    let routes = control.grpc_services().add_service(fanout_server(fanout.clone(), secret.server()));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tonic::transport::Server::builder().add_routes(routes);
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        if let Err(error) = server.serve_with_incoming_shutdown(TcpIncoming::from(listener), stopped).await {
            tracing::error!(%error, "the gRPC server stopped");
        }
    });
    Ok(GrpcServer { fanout, stop, task })
}

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
