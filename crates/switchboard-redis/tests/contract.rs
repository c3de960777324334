//! The engine contract suite (`switchboard_engine::contract`) against the Redis engine: three
//! nodes (each its own registry, engine and Redis connection, as three processes would have)
//! on a real standalone `redis-server`, and on a real Redis Cluster of three masters with a
//! replica each.

use std::sync::Arc;
use switchboard_engine::contract::{Deployment, Member, run};
use switchboard_hub::{HubConfig, Registry, UserGroupReader};
use switchboard_redis::{RedisEngine, RedisSettings, Servers};
use switchboard_testkit::redis::{RedisCluster, RedisServer};

struct Nodes {
    servers: Servers,
    ca_pem: Option<Vec<u8>>,
    prefix: String,
    engines: Vec<Option<(RedisEngine, Arc<Registry>)>>,
}

async fn start_node(servers: &Servers, ca_pem: &Option<Vec<u8>>, prefix: &str) -> (RedisEngine, Arc<Registry>) {
    start_node_with(servers, ca_pem, prefix, RedisSettings::SNAPSHOT_EVERY).await
}

async fn start_node_with(
    servers: &Servers,
    ca_pem: &Option<Vec<u8>>,
    prefix: &str,
    snapshot_every: u64,
) -> (RedisEngine, Arc<Registry>) {
    let settings = RedisSettings {
        servers: servers.clone(),
        password: None,
        ca_pem: ca_pem.clone(),
        prefix: prefix.to_owned(),
        node_id: None,
        http_address: "127.0.0.1:1".into(),
        snapshot_every,
    };
    let engine = RedisEngine::connect(&settings).await.expect("Redis answers");
    let registry =
        Registry::with_user_groups(HubConfig::default(), engine.user_groups()).reporting_interest(engine.interest());
    let registry = Arc::new(registry);
    engine.start(registry.clone()).await.expect("the engine starts");
    (engine, registry)
}

impl Nodes {
    async fn start(servers: Servers, ca_pem: Option<Vec<u8>>, prefix: &str, count: usize) -> Nodes {
        let mut engines = Vec::new();
        for _ in 0..count {
            engines.push(Some(start_node(&servers, &ca_pem, prefix).await));
        }
        Nodes { servers, ca_pem, prefix: prefix.to_owned(), engines }
    }
}

impl Deployment for Nodes {
    fn members(&self) -> Vec<Member> {
        self.engines
            .iter()
            .flatten()
            .map(|(engine, registry)| Member {
                id: engine.node_id(),
                registry: registry.clone(),
                store: engine.store(),
                bus: engine.bus(),
            })
            .collect()
    }

    async fn restart(&mut self) {
        for (engine, _) in self.engines.iter().flatten() {
            engine.shutdown().await;
        }
        let count = self.engines.len();
        self.engines.clear();
        for _ in 0..count {
            self.engines.push(Some(start_node(&self.servers, &self.ca_pem, &self.prefix).await));
        }
    }

    async fn stop(&mut self, index: usize) {
        let live: Vec<usize> = (0..self.engines.len()).filter(|i| self.engines[*i].is_some()).collect();
        if let Some((engine, _)) = self.engines[live[index]].take() {
            engine.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_engine_passes_the_contract_on_a_standalone_server() {
    let redis = RedisServer::start();
    let mut nodes = Nodes::start(Servers::Standalone(redis.url()), None, "contract", 3).await;
    run(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_engine_passes_the_contract_over_tls() {
    let redis = tokio::task::block_in_place(RedisServer::start_tls);
    let ca = std::fs::read(redis.ca_file.as_ref().expect("a TLS server")).expect("the CA certificate");
    assert!(redis.url().starts_with("rediss://"));
    let mut nodes = Nodes::start(Servers::Standalone(redis.url()), Some(ca), "contract", 3).await;
    run(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_engine_passes_the_contract_on_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1)).await.unwrap();
    let mut nodes = Nodes::start(Servers::Cluster(cluster.urls()), None, "contract", 3).await;
    run(&mut nodes).await;
}

/// The membership log is trimmed behind snapshots, and a node that starts later (or was
/// away) loads the snapshot and the log after it: it sees every membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_membership_log_is_trimmed_behind_snapshots_that_new_nodes_load() {
    let redis = RedisServer::start();
    let servers = Servers::Standalone(redis.url());
    let (first, _) = start_node_with(&servers, &None, "snap", 25).await;
    let (second, _) = start_node_with(&servers, &None, "snap", 25).await;
    let store = first.store();
    for n in 0..120 {
        store.add("h", &format!("u{n}"), "g", None).await.expect("stored");
    }
    store.remove("h", "u7", "g").await.expect("removed");
    store.add("h", "u200", "g", Some(0)).await.expect("a ttl=0 write stores nothing");
    // The lowest node stores a snapshot at its next catch-up (every 2 s at most).
    let log_length = || redis.cli(&["xlen", "{snap}:members:log"]).trim().parse::<u64>().unwrap();
    tokio::task::block_in_place(|| {
        switchboard_testkit::wait_for("a snapshot trims the log", std::time::Duration::from_secs(10), || {
            log_length() < 60
        })
    });
    assert!(redis.cli(&["hget", "{snap}:members:snapshot", "id"]).contains('-'), "a snapshot names its entry");
    let (late, _) = start_node_with(&servers, &None, "snap", 25).await;
    let now = switchboard_hub::unix_now();
    for engine in [&first, &second, &late] {
        let reader = engine.user_groups();
        let members: Vec<bool> = (0..120).map(|n| reader.is_member("h", &format!("u{n}"), "g", now)).collect();
        assert_eq!(members.iter().filter(|m| **m).count(), 119, "node {}", engine.node_id());
        assert!(!members[7] && !reader.is_member("h", "u200", "g", now), "node {}", engine.node_id());
    }
    for engine in [first, second, late] {
        engine.shutdown().await;
    }
}
