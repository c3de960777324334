//! The engine contract suite (`switchboard_engine::contract`) against the raft engine as the
//! binary wires it (`switchboard_server::engine::Engine`): three voters on loopback, each with
//! its own data directory, raft over gRPC and the fan-out bus; and against the embedded single
//! node (one raft voter and the in-process bus) seen through three entry points. Restarts stop
//! every node's raft and gRPC server and start them again on the same data.

use switchboard_engine::contract::{self, Deployment, Member};
use switchboard_server::cli::ServeArgs;
use switchboard_server::config::Settings;
use switchboard_server::engine::Engine;
use switchboard_testkit::free_port;

const SECRET: &str = "contract-test-secret";

struct RaftDeployment {
    settings: Vec<Settings>,
    engines: Vec<Engine>,
    /// Entry points per engine (the single node is seen through three).
    views: usize,
    _data: tempfile::TempDir,
}

impl RaftDeployment {
    async fn start(settings: Vec<Settings>, views: usize, data: tempfile::TempDir) -> RaftDeployment {
        let engines = start_all(&settings).await;
        RaftDeployment { settings, engines, views, _data: data }
    }

    async fn three_voters() -> RaftDeployment {
        let data = tempfile::tempdir().unwrap();
        let grpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let voters: Vec<String> =
            grpc.iter().enumerate().map(|(i, port)| format!("{}=127.0.0.1:{port}", i + 1)).collect();
        let settings = (0..3)
            .map(|i| {
                settings(ServeArgs {
                    node_id: Some((i + 1).to_string()),
                    listen: Some(format!("127.0.0.1:{}", free_port())),
                    grpc_listen: Some(format!("127.0.0.1:{}", grpc[i])),
                    voters: voters.clone(),
                    role: Some("both".into()),
                    cluster_secret: Some(SECRET.into()),
                    data_dir: Some(data.path().join(format!("node{}", i + 1))),
                    ..Default::default()
                })
            })
            .collect();
        RaftDeployment::start(settings, 1, data).await
    }

    async fn single_node() -> RaftDeployment {
        let data = tempfile::tempdir().unwrap();
        let settings = settings(ServeArgs {
            listen: Some(format!("127.0.0.1:{}", free_port())),
            data_dir: Some(data.path().join("single")),
            ..Default::default()
        });
        RaftDeployment::start(vec![settings], 3, data).await
    }
}

fn settings(mut args: ServeArgs) -> Settings {
    args.access_keys = vec!["contract-test-key".into()];
    Settings::resolve(args).unwrap_or_else(|_| panic!("valid settings"))
}

/// Starts every node at once: voters wait for each other to elect. The public address each
/// reports is its `--listen` (nothing listens there: the suite drives the engines directly).
async fn start_all(settings: &[Settings]) -> Vec<Engine> {
    let starts: Vec<_> = settings
        .iter()
        .cloned()
        .map(|s| {
            tokio::spawn(async move {
                Engine::start(&s, s.listen).await.unwrap_or_else(|e| panic!("node {} starts: {e:?}", s.node_id))
            })
        })
        .collect();
    let mut engines = Vec::new();
    for start in starts {
        engines.push(start.await.expect("node start task"));
    }
    engines
}

impl Deployment for RaftDeployment {
    fn members(&self) -> Vec<Member> {
        let mut members = Vec::new();
        for (engine, settings) in self.engines.iter().zip(&self.settings) {
            for _ in 0..self.views {
                members.push(Member {
                    id: settings.node_id,
                    registry: engine.registry.clone(),
                    store: engine.store.clone(),
                    bus: engine.bus.clone(),
                });
            }
        }
        members
    }

    async fn restart(&mut self) {
        for engine in self.engines.drain(..) {
            engine.shutdown().await;
        }
        self.engines = start_all(&self.settings).await;
    }

    async fn stop(&mut self, index: usize) {
        self.engines.remove(index).shutdown().await;
        self.settings.remove(index);
    }
}

/// Runs the suite, then stops what is left of the deployment.
async fn run_then_stop(mut deployment: RaftDeployment) {
    contract::run(&mut deployment).await;
    for engine in deployment.engines.drain(..) {
        engine.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_raft_voters_keep_the_engine_contract() {
    run_then_stop(RaftDeployment::three_voters().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_single_node_keeps_the_engine_contract() {
    run_then_stop(RaftDeployment::single_node().await).await;
}

/// Raft and the control plane's own work run on the cluster's runtime, not on the one serving
/// client connections: with every worker of the latter held (here, the test's runtime, which
/// the engines were started on), a membership write is still committed and applied on every
/// node. On the client runtime, heartbeats and each step of a write would wait behind every
/// connection task queued there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_writes_complete_while_the_client_runtime_is_busy() {
    let deployment = RaftDeployment::three_voters().await;
    let store = deployment.engines[1].store.clone();
    // Both workers held until the write is answered (or the bound passes).
    let workers = 2;
    let held = std::sync::Arc::new(std::sync::Barrier::new(workers + 1));
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Arc::new(std::sync::Mutex::new(released));
    let holds: Vec<_> = (0..workers)
        .map(|_| {
            let (held, released) = (held.clone(), released.clone());
            tokio::spawn(async move {
                held.wait();
                // Blocks the worker, so nothing else runs on it.
                let _ = released.lock().unwrap().recv_timeout(std::time::Duration::from_secs(30));
            })
        })
        .collect();
    held.wait();
    // The write is made from a thread and runtime of its own.
    let write = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), store.add("chat", "ann", "g", None)).await
        })
    });
    let answered = write.join().expect("the writing thread");
    for _ in 0..workers {
        let _ = release.send(());
    }
    for hold in holds {
        hold.await.unwrap();
    }
    let written = answered.expect("the write is answered within 10 s while the client runtime is held");
    written.expect("the write is committed");
    for engine in &deployment.engines {
        assert!(engine.store.is_member("chat", "ann", "g", switchboard_hub::unix_now()), "every node applied it");
    }
    for engine in deployment.engines {
        engine.shutdown().await;
    }
}
