//! An in-process node on a free loopback port with a scratch data directory of its own: how
//! tests, benchmarks and tools embed Switchboard. Dropping it stops the node and removes the
//! directory.

use crate::cli::ServeArgs;
use crate::config::Settings;
use crate::serve::Node;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// See the module docs.
pub struct LocalNode {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub addr: SocketAddr,
    pub connection_string: String,
    /// `/metrics`, `/healthz`, `/readyz`, when `internal_listen` was set (any port: `127.0.0.1:0`).
    pub internal: Option<SocketAddr>,
    /// The node's control plane, for tools that write memberships directly (`None` with Redis).
    pub control: Option<switchboard_control::ControlPlane>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    data_dir: PathBuf,
}

impl LocalNode {
    /// Starts a node whose only access key is `access_key`; `configure` may change any other
    /// setting. Panics when the node cannot start (it is meant for tests and tools).
    pub async fn start(access_key: &str, configure: impl FnOnce(&mut ServeArgs)) -> LocalNode {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let data_dir = std::env::temp_dir().join(format!("switchboard-local-{}-{n}", std::process::id()));
        let mut args = ServeArgs {
            access_keys: vec![access_key.into()],
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir.clone()),
            ..Default::default()
        };
        configure(&mut args);
        let settings = Settings::resolve(args).unwrap_or_else(|_| panic!("invalid settings for a local node"));
        let listener = crate::serve::listen(([127, 0, 0, 1], 0).into()).expect("a free loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let node = Node::start(&settings, &listener).await.unwrap_or_else(|_| panic!("the local node did not start"));
        let endpoint = node.endpoint.as_str().trim_end_matches('/').to_owned();
        let connection_string = node.connection_string.clone();
        let control = node.control().cloned();
        let internal = match settings.internal_listen {
            None => None,
            Some(address) => Some(
                crate::metrics::serve_internal(address, node.observability())
                    .await
                    .expect("the internal address is free"),
            ),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(node.serve(listener, Duration::from_secs(1), async {
            let _ = stopped.await;
        }));
        LocalNode { endpoint, addr, connection_string, internal, control, stop: Some(stop), data_dir }
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
