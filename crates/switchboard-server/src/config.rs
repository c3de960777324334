//! Resolving flags, environment and config file into validated [`Settings`].

use crate::Exit;
use crate::cli::ServeArgs;
pub use crate::tls::KeyPairFiles;
use crate::tls::ServedCertificate;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use switchboard_control::ClusterSettings;
use switchboard_upstream::{Pattern, Template};
use url::Url;

/// One upstream template of the config file (`[[upstream]]`); patterns default to `*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    pub url_template: String,
    pub hub_pattern: Option<String>,
    pub category_pattern: Option<String>,
    pub event_pattern: Option<String>,
}

/// `switchboard config example`: every setting of [`FileConfig`], commented out, with its default.
pub const EXAMPLE: &str = include_str!("example.toml");

/// The config file: the same settings as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub upstream: Option<Vec<FileUpstream>>,
    pub upstream_timeout: Option<u64>,
    pub listen: Option<String>,
    pub endpoint: Option<String>,
    pub access_keys: Option<Vec<String>>,
    pub access_key_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub internal_listen: Option<String>,
    pub advertise_http: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub allowed_origins: Option<Vec<String>>,
    pub max_message_size: Option<usize>,
    pub max_queued_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_connections_per_user: Option<usize>,
    pub max_messages_per_second: Option<u32>,
    pub max_connect_rate_per_ip: Option<u32>,
    pub max_groups_per_connection: Option<usize>,
    pub max_memberships_per_hub: Option<usize>,
    pub shutdown_grace: Option<u64>,
    pub node_id: Option<NodeIdValue>,
    pub grpc_listen: Option<String>,
    pub advertise: Option<String>,
    pub voters: Option<Vec<String>>,
    pub join: Option<Vec<String>>,
    pub role: Option<String>,
    pub cluster_secret: Option<String>,
    pub cluster_tls_cert: Option<PathBuf>,
    pub cluster_tls_key: Option<PathBuf>,
    pub cluster_ca: Option<PathBuf>,
    pub cluster_tls_name: Option<String>,
    pub keep_alive_interval: Option<u64>,
    pub client_timeout: Option<u64>,
    pub handshake_timeout: Option<u64>,
    pub log_format: Option<String>,
    pub engine: Option<String>,
    pub redis: Option<String>,
    pub redis_cluster: Option<Vec<String>>,
    pub redis_prefix: Option<String>,
    pub redis_password_file: Option<PathBuf>,
    pub redis_ca_file: Option<PathBuf>,
    pub aspnet_backplane: Option<String>,
    pub aspnet_hubs: Option<Vec<String>>,
    pub aspnet_prefix: Option<String>,
    pub aspnet_origin: Option<String>,
}

/// `node_id` in the config file: a number or `ordinal` / `auto`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NodeIdValue {
    Number(u64),
    Text(String),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Validated settings of a node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// `None`: derived from the bound address once listening.
    pub endpoint: Option<Url>,
    /// Empty: use (or create) the key in the data directory.
    pub access_keys: Vec<String>,
    /// Keys read from (and reloaded from) this file instead.
    pub access_key_file: Option<PathBuf>,
    /// TLS on the public port: its certificate and key (re-read when they change).
    pub tls: Option<KeyPairFiles>,
    /// Where /metrics, /healthz and /readyz are served, if anywhere.
    pub internal_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub allowed_origins: Option<Vec<String>>,
    pub max_message_size: usize,
    pub max_queued_bytes: usize,
    /// Sockets the public port holds at most (0: no cap); by default the open-file limit less
    /// [`RESERVED_FILES`].
    pub max_connections: usize,
    /// Sockets one source address may hold (0: no cap).
    pub max_connections_per_ip: usize,
    /// Connections one user may hold on this node (0: no cap).
    pub max_connections_per_user: usize,
    /// Hub messages one connection may send per second (0: no cap).
    pub max_messages_per_second: u32,
    /// New sockets one source address may open per second (0: no cap).
    pub max_connect_rate_per_ip: u32,
    /// Groups one connection may be in (0: no cap).
    pub max_groups_per_connection: usize,
    /// User-group memberships one hub may store (0: no cap).
    pub max_memberships_per_hub: usize,
    pub shutdown_grace: Duration,
    /// Upstream templates, in order: the file's first, then the flags' catch-all ones.
    pub upstream: Vec<Template>,
    pub upstream_timeout: Duration,
    pub keep_alive: Duration,
    pub client_timeout: Duration,
    pub handshake_timeout: Duration,
    pub log_format: LogFormat,
    pub node_id: u64,
    pub cluster: Option<ClusterSettings>,
    /// `--engine redis`: the node is a stateless edge of the deployment sharing this Redis.
    pub redis: Option<RedisConfig>,
    /// `--aspnet-backplane`: the node also joins an ASP.NET SignalR app's Redis backplane.
    pub aspnet: Option<AspNetConfig>,
}

/// The ASP.NET backplane a node joins, as configured.
#[derive(Debug, Clone)]
pub struct AspNetConfig {
    pub url: String,
    pub prefix: String,
    /// Switchboard hub (lower-cased) → the .NET hub type's full name.
    pub hubs: Vec<(String, String)>,
    pub origin: String,
    pub ca_pem: Option<Vec<u8>>,
}

/// Where the Redis engine's Redis is, as configured.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub servers: switchboard_redis::Servers,
    pub prefix: String,
    pub password: Option<String>,
    /// `--redis-ca-file`: the CAs `rediss://` trusts instead of the system's (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// `--node-id`, when given; otherwise Redis hands out the next free id.
    pub node_id: Option<u64>,
    /// `--advertise-http`: where other nodes forward this node's clients (default: the listen
    /// address).
    pub advertise_http: Option<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Open files kept back from client sockets: the internal endpoint, raft, fan-out, upstream
/// calls and the data files need some even while clients hold every socket they may.
pub const RESERVED_FILES: usize = 512;

/// The process's open-file limit less [`RESERVED_FILES`] (at least 64); no cap when the limit
/// cannot be read.
fn default_max_connections() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|value| value.parse::<usize>().ok());
    soft.map_or(0, |files| files.saturating_sub(RESERVED_FILES).max(64))
}
pub const DEFAULT_DATA_DIR: &str = "switchboard-data";

impl Settings {
    /// Merges flags (with their environment variables) over the config file, then validates.
    pub fn resolve(args: ServeArgs) -> Result<Settings, Exit> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen_text = args.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| usage(format!("--listen '{listen_text}' is not an address like 127.0.0.1:8080")))?;
        let endpoint = match args.endpoint.or(file.endpoint) {
            None => None,
            Some(text) => Some(parse_endpoint(&text)?),
        };
        let access_keys =
            if args.access_keys.is_empty() { file.access_keys.unwrap_or_default() } else { args.access_keys };
        if access_keys.iter().any(|k| k.trim().is_empty() || k.contains(';')) {
            return Err(usage("an access key must be non-empty and must not contain ';'".into()));
        }
        let access_key_file = args.access_key_file.or(file.access_key_file);
        if let Some(path) = &access_key_file {
            if !access_keys.is_empty() {
                return Err(usage("use either --access-key or --access-key-file, not both".into()));
            }
            read_key_file(path).map_err(usage)?;
        }
        let tls = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let files = KeyPairFiles { cert, key };
                ServedCertificate::load(&files).map_err(|e| usage(format!("--tls-cert/--tls-key: {e}")))?;
                Some(files)
            }
            _ => return Err(usage("--tls-cert and --tls-key go together".into())),
        };
        let internal_listen = match args.internal_listen.or(file.internal_listen) {
            None => None,
            Some(text) => Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| usage(format!("--internal-listen '{text}' is not an address like 0.0.0.0:9090")))?,
            ),
        };
        let allowed = if args.allowed_origins.is_empty() {
            file.allowed_origins.unwrap_or_default()
        } else {
            args.allowed_origins
        };
        let log_format = match args.log_format.or(file.log_format).as_deref() {
            None | Some("plain") => LogFormat::Plain,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(usage(format!("--log-format '{other}' must be plain or json"))),
        };
        let max_message_size = args.max_message_size.or(file.max_message_size).unwrap_or(1 << 20);
        let max_queued_bytes =
            args.max_queued_bytes.or(file.max_queued_bytes).unwrap_or(switchboard_hub::DEFAULT_MAX_QUEUED_BYTES);
        if max_message_size < 1024 || max_queued_bytes < 1024 {
            return Err(usage("--max-message-size and --max-queued-bytes must be at least 1024".into()));
        }
        let seconds =
            |flag: Option<u64>, file: Option<u64>, default: u64, name: &str| match flag.or(file).unwrap_or(default) {
                0 => Err(usage(format!("--{name} must be at least 1 second"))),
                s => Ok(Duration::from_secs(s)),
            };
        let keep_alive = seconds(args.keep_alive_interval, file.keep_alive_interval, 15, "keep-alive-interval")?;
        let client_timeout = seconds(args.client_timeout, file.client_timeout, 30, "client-timeout")?;
        let handshake_timeout = seconds(args.handshake_timeout, file.handshake_timeout, 15, "handshake-timeout")?;
        if client_timeout <= keep_alive {
            return Err(usage("--client-timeout must be longer than --keep-alive-interval".into()));
        }
        let mut upstream = Vec::new();
        for entry in file.upstream.unwrap_or_default() {
            check_upstream_url(&entry.url_template)?;
            let pattern = |p: &Option<String>| Pattern::parse(p.as_deref().unwrap_or("*"));
            upstream.push(Template {
                url: entry.url_template.clone(),
                hub: pattern(&entry.hub_pattern),
                category: pattern(&entry.category_pattern),
                event: pattern(&entry.event_pattern),
            });
        }
        for url in args.upstream.iter().filter(|u| !u.is_empty()) {
            check_upstream_url(url)?;
            upstream.push(Template::catch_all(url.clone()));
        }
        let upstream_timeout = seconds(args.upstream_timeout, file.upstream_timeout, 20, "upstream-timeout")?;
        let given_node_id = match args.node_id.map(NodeIdValue::Text).or(file.node_id) {
            None => None,
            Some(value) => Some(resolve_node_id(&value, &hostname()).map_err(usage)?),
        };
        let node_id = given_node_id.unwrap_or(1);
        let redis = redis_config(
            args.engine.or(file.engine).as_deref(),
            args.redis.or(file.redis),
            if args.redis_cluster.is_empty() { file.redis_cluster.unwrap_or_default() } else { args.redis_cluster },
            args.redis_prefix.or(file.redis_prefix),
            [args.redis_password_file.or(file.redis_password_file), args.redis_ca_file.or(file.redis_ca_file)],
            given_node_id,
        )?;
        let aspnet = aspnet_config(
            args.aspnet_backplane.or(file.aspnet_backplane),
            if args.aspnet_hubs.is_empty() { file.aspnet_hubs.unwrap_or_default() } else { args.aspnet_hubs },
            args.aspnet_prefix.or(file.aspnet_prefix),
            args.aspnet_origin.or(file.aspnet_origin),
            redis.as_ref().and_then(|r| r.ca_pem.clone()),
        )?;
        let grpc_listen = args.grpc_listen.or(file.grpc_listen);
        if redis.is_some() && grpc_listen.is_some() {
            return Err(usage("--engine redis has no raft cluster: drop --grpc-listen".into()));
        }
        let voters = if args.voters.is_empty() { file.voters.unwrap_or_default() } else { args.voters };
        let join = if args.join.is_empty() { file.join.unwrap_or_default() } else { args.join };
        let advertise_http = args.advertise_http.or(file.advertise_http);
        if let Some(address) = &advertise_http {
            check_host_port(address).map_err(|()| usage(format!("--advertise-http '{address}' must be host:port")))?;
        }
        let redis = redis.map(|redis| RedisConfig { advertise_http: advertise_http.clone(), ..redis });
        let cluster_tls = cluster_tls(
            args.cluster_tls_cert.or(file.cluster_tls_cert),
            args.cluster_tls_key.or(file.cluster_tls_key),
            args.cluster_ca.or(file.cluster_ca),
            args.cluster_tls_name.or(file.cluster_tls_name),
        )?;
        if cluster_tls.is_some() && grpc_listen.is_none() {
            return Err(usage("--cluster-tls-cert/--cluster-ca are for a raft cluster: add --grpc-listen".into()));
        }
        let cluster = match grpc_listen {
            None => None,
            Some(grpc_listen) => Some(cluster_settings(
                node_id,
                &grpc_listen,
                args.advertise.or(file.advertise),
                advertise_http,
                &voters,
                join,
                args.role.or(file.role).as_deref(),
                args.cluster_secret.or(file.cluster_secret),
            )?),
        };
        let cluster = cluster.map(|cluster| ClusterSettings { tls: cluster_tls, ..cluster });
        Ok(Settings {
            node_id,
            cluster,
            redis,
            aspnet,
            upstream,
            upstream_timeout,
            keep_alive,
            client_timeout,
            handshake_timeout,
            listen,
            endpoint,
            access_keys,
            access_key_file,
            tls,
            internal_listen,
            data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            allowed_origins: (!allowed.is_empty()).then_some(allowed),
            max_message_size,
            max_queued_bytes,
            max_connections: args.max_connections.or(file.max_connections).unwrap_or_else(default_max_connections),
            max_connections_per_ip: args.max_connections_per_ip.or(file.max_connections_per_ip).unwrap_or(0),
            max_connections_per_user: args.max_connections_per_user.or(file.max_connections_per_user).unwrap_or(0),
            max_messages_per_second: args.max_messages_per_second.or(file.max_messages_per_second).unwrap_or(0),
            max_connect_rate_per_ip: args.max_connect_rate_per_ip.or(file.max_connect_rate_per_ip).unwrap_or(0),
            max_groups_per_connection: args.max_groups_per_connection.or(file.max_groups_per_connection).unwrap_or(0),
            max_memberships_per_hub: args.max_memberships_per_hub.or(file.max_memberships_per_hub).unwrap_or(0),
            shutdown_grace: Duration::from_secs(args.shutdown_grace.or(file.shutdown_grace).unwrap_or(10)),
            log_format,
        })
    }
}

#[allow(clippy::too_many_arguments)] // each is one merged setting, named at the call
fn cluster_settings(
    node_id: u64,
    grpc_listen: &str,
    advertise: Option<String>,
    advertise_http: Option<String>,
    voters: &[String],
    join: Vec<String>,
    role: Option<&str>,
    secret: Option<String>,
) -> Result<ClusterSettings, Exit> {
    let grpc_listen: SocketAddr = grpc_listen
        .parse()
        .map_err(|_| usage(format!("--grpc-listen '{grpc_listen}' is not an address like 127.0.0.1:7001")))?;
    let (control, edge) = match role.unwrap_or("both") {
        "both" => (true, true),
        "control" => (true, false),
        "edge" => (false, true),
        other => return Err(usage(format!("--role '{other}' must be control, edge or both"))),
    };
    let mut voter_map = std::collections::BTreeMap::new();
    for entry in voters.iter().filter(|v| !v.is_empty()) {
        let parsed = entry.split_once('=').and_then(|(id, addr)| Some((id.trim().parse::<u64>().ok()?, addr.trim())));
        let Some((id, addr)) = parsed.filter(|(_, addr)| check_host_port(addr).is_ok()) else {
            return Err(usage(format!("--voter '{entry}' must look like 1=127.0.0.1:7001")));
        };
        voter_map.insert(id, addr.to_owned());
    }
    let secret = secret.filter(|s| !s.is_empty()).ok_or_else(|| {
        usage("cluster mode (--grpc-listen) needs --cluster-secret, SWITCHBOARD_CLUSTER_SECRET or cluster_secret in the file".into())
    })?;
    if switchboard_grpc::ClusterSecret::new(&secret).is_err() {
        return Err(usage("--cluster-secret must be visible ASCII".into()));
    }
    let join: Vec<String> = join.into_iter().map(|j| j.trim().to_owned()).filter(|j| !j.is_empty()).collect();
    if let Some(bad) = join.iter().find(|j| check_host_port(j).is_err()) {
        return Err(usage(format!("--join '{bad}' must be host:port")));
    }
    if let Some(bad) = advertise.as_ref().filter(|a| check_host_port(a).is_err()) {
        return Err(usage(format!("--advertise '{bad}' must be host:port")));
    }
    if voter_map.is_empty() && join.is_empty() {
        return Err(usage("cluster mode needs --voter entries (the initial voters) or --join ADDRESS".into()));
    }
    if control && join.is_empty() && !voter_map.contains_key(&node_id) {
        return Err(usage(format!("node {node_id} is a control node but not in --voter; add it or use --join")));
    }
    Ok(ClusterSettings {
        grpc_listen,
        advertise: advertise.unwrap_or_else(|| grpc_listen.to_string()),
        advertise_http,
        voters: voter_map,
        join,
        control,
        edge,
        secret,
        tls: None,
    })
}

/// Mutual TLS between nodes from its three files (all or none) and the optional name.
fn cluster_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    name: Option<String>,
) -> Result<Option<switchboard_grpc::ClusterTls>, Exit> {
    let name = name.filter(|n| !n.is_empty());
    match (cert, key, ca) {
        (None, None, None) if name.is_some() => Err(usage("--cluster-tls-name needs --cluster-tls-cert".into())),
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => crate::tls::cluster_tls(&KeyPairFiles { cert, key }, &ca, name.as_deref())
            .map(Some)
            .map_err(|e| usage(format!("--cluster-tls-cert/--cluster-tls-key/--cluster-ca: {e}"))),
        _ => Err(usage("--cluster-tls-cert, --cluster-tls-key and --cluster-ca go together".into())),
    }
}

/// `host:port` with a non-empty host (an IP or a DNS name) and a numeric port.
fn check_host_port(text: &str) -> Result<(), ()> {
    let (host, port) = text.rsplit_once(':').ok_or(())?;
    let host_ok = !host.is_empty() && !host.contains(|c: char| c.is_whitespace() || c == '/');
    if host_ok && port.parse::<u16>().is_ok() { Ok(()) } else { Err(()) }
}

/// The node id a setting names: a number, `ordinal` (StatefulSet pod `name-N` → N + 1) or
/// `auto` (a stable hash of the hostname, above every ordinal id).
/// The Redis engine's settings, or `None` for the raft engine. A Redis URL without
/// `--engine redis` is refused rather than ignored.
fn redis_config(
    engine: Option<&str>,
    redis: Option<String>,
    cluster: Vec<String>,
    prefix: Option<String>,
    [password_file, ca_file]: [Option<PathBuf>; 2],
    node_id: Option<u64>,
) -> Result<Option<RedisConfig>, Exit> {
    match engine.unwrap_or("raft") {
        "raft" if redis.is_some() || !cluster.is_empty() => {
            return Err(usage("--redis and --redis-cluster need --engine redis".into()));
        }
        "raft" => return Ok(None),
        "redis" => {}
        other => return Err(usage(format!("--engine must be raft or redis, not '{other}'"))),
    }
    let servers = match (redis, cluster.is_empty()) {
        (Some(url), true) => switchboard_redis::Servers::Standalone(check_redis_url(&url)?),
        (None, false) => switchboard_redis::Servers::Cluster(
            cluster.iter().map(|url| check_redis_url(url)).collect::<Result<_, _>>()?,
        ),
        (Some(_), false) => return Err(usage("give --redis or --redis-cluster, not both".into())),
        (None, true) => return Err(usage("--engine redis needs --redis URL or --redis-cluster URL,URL,…".into())),
    };
    let prefix = prefix.unwrap_or_else(|| "switchboard".into());
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(usage(format!("--redis-prefix '{prefix}' must be letters, digits, '-', '_' or '.'")));
    }
    let password = match password_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| usage(format!("cannot read --redis-password-file {}: {e}", path.display())))?;
            Some(text.trim_end_matches(['\r', '\n']).to_owned())
        }
    };
    let ca_pem = match ca_file {
        None => None,
        Some(path) => {
            let pem = std::fs::read(&path)
                .map_err(|e| usage(format!("cannot read --redis-ca-file {}: {e}", path.display())))?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(usage(format!("--redis-ca-file {} holds no PEM certificate", path.display())));
            }
            Some(pem)
        }
    };
    Ok(Some(RedisConfig { servers, prefix, password, ca_pem, node_id, advertise_http: None }))
}

/// A `redis://` or `rediss://` (TLS) URL with a host.
/// `--aspnet-backplane` with its hubs (`hub=Type`, at least one), prefix and origin.
fn aspnet_config(
    url: Option<String>,
    hubs: Vec<String>,
    prefix: Option<String>,
    origin: Option<String>,
    ca_pem: Option<Vec<u8>>,
) -> Result<Option<AspNetConfig>, Exit> {
    let hubs: Vec<String> = hubs.into_iter().filter(|h| !h.trim().is_empty()).collect();
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        if hubs.is_empty() && prefix.is_none() {
            return Ok(None);
        }
        return Err(usage("--aspnet-hub and --aspnet-prefix need --aspnet-backplane redis://…".into()));
    };
    let url = check_redis_url(&url)?;
    if hubs.is_empty() {
        return Err(usage("--aspnet-backplane needs at least one --aspnet-hub chat=Chat.Hubs.ChatHub".into()));
    }
    let hubs = hubs
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((hub, hub_type)) if switchboard_hub::is_valid_hub_name(hub.trim()) && !hub_type.trim().is_empty() => {
                Ok((hub.trim().to_ascii_lowercase(), hub_type.trim().to_owned()))
            }
            _ => Err(usage(format!("--aspnet-hub '{entry}' must look like chat=Chat.Hubs.ChatHub"))),
        })
        .collect::<Result<_, _>>()?;
    let origin = origin.unwrap_or_else(|| "switchboard".into());
    if origin.is_empty() {
        return Err(usage("--aspnet-origin must not be empty".into()));
    }
    Ok(Some(AspNetConfig { url, prefix: prefix.unwrap_or_default(), hubs, origin, ca_pem }))
}

fn check_redis_url(url: &str) -> Result<String, Exit> {
    let parsed = Url::parse(url).map_err(|e| usage(format!("'{url}' is not a Redis URL: {e}")))?;
    match parsed.scheme() {
        "redis" | "rediss" if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(url.to_owned()),
        "redis" | "rediss" => Err(usage(format!("the Redis URL '{url}' has no host"))),
        scheme => Err(usage(format!("'{url}' is not a Redis URL (scheme '{scheme}', expected redis:// or rediss://)"))),
    }
}

pub fn resolve_node_id(value: &NodeIdValue, hostname: &str) -> Result<u64, String> {
    let text = match value {
        NodeIdValue::Number(0) => return Err("--node-id must be at least 1".into()),
        NodeIdValue::Number(id) => return Ok(*id),
        NodeIdValue::Text(text) => text.trim(),
    };
    match text {
        "ordinal" => hostname
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .map(|n| n + 1)
            .ok_or_else(|| format!("--node-id ordinal needs a hostname ending in -N, not '{hostname}'")),
        "auto" if hostname.is_empty() => Err("--node-id auto needs a hostname".into()),
        "auto" => {
            // FNV-1a: stable across versions and platforms, unlike std's hasher.
            let hash = hostname
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            Ok(1_000_000 + hash % (1 << 52))
        }
        number => match number.parse::<u64>() {
            Ok(0) | Err(_) => Err(format!("--node-id '{number}' must be a positive number, ordinal or auto")),
            Ok(id) => Ok(id),
        },
    }
}

/// `$HOSTNAME`, else the kernel's host name.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// The keys of an access key file: one per line, blank lines and `#` comments skipped.
pub fn read_key_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let keys: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    if keys.is_empty() {
        return Err(format!("{} holds no access key", path.display()));
    }
    if keys.iter().any(|k| k.contains(';')) {
        return Err(format!("{}: an access key must not contain ';'", path.display()));
    }
    Ok(keys)
}

/// Upstream URLs are plain `http` (calls go to the application next to the node).
fn check_upstream_url(template: &str) -> Result<(), Exit> {
    let probe = template.replace("{hub}", "h").replace("{category}", "c").replace("{event}", "e");
    match Url::parse(&probe) {
        Ok(url) if url.scheme() == "http" && url.host_str().is_some() => Ok(()),
        Ok(_) => Err(usage(format!("upstream '{template}' must be an http:// URL (https is not supported)"))),
        Err(e) => Err(usage(format!("upstream '{template}' is not a URL: {e}"))),
    }
}

/// Reads a config file (`--config`).
pub fn read_file(path: &Path) -> Result<FileConfig, Exit> {
    let text =
        std::fs::read_to_string(path).map_err(|e| usage(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| usage(format!("invalid config file {}: {}", path.display(), one_line(&e.to_string()))))
}

/// Parses a public endpoint: an absolute http(s) URL without query, trailing `/` dropped.
pub fn parse_endpoint(text: &str) -> Result<Url, Exit> {
    let url = Url::parse(text.trim_end_matches('/'))
        .map_err(|e| usage(format!("--endpoint '{text}' is not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.query().is_some() {
        return Err(usage(format!("--endpoint '{text}' must be an http or https URL without a query")));
    }
    Ok(url)
}

fn usage(reason: String) -> Exit {
    Exit::Usage(reason)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: ServeArgs) -> Result<Settings, String> {
        Settings::resolve(args).map_err(|e| match e {
            Exit::Usage(reason) | Exit::Unavailable(reason) => reason,
            Exit::Failed(e) => e.to_string(),
        })
    }

    #[test]
    fn the_redis_engine_is_chosen_explicitly_and_its_urls_checked() {
        let redis = |engine: Option<&str>, url: Option<&str>, cluster: &[&str]| ServeArgs {
            engine: engine.map(Into::into),
            redis: url.map(Into::into),
            redis_cluster: cluster.iter().map(|u| (*u).to_owned()).collect(),
            ..Default::default()
        };
        let standalone = resolve(redis(Some("redis"), Some("redis://127.0.0.1:6379"), &[])).unwrap().redis.unwrap();
        assert_eq!(standalone.servers, switchboard_redis::Servers::Standalone("redis://127.0.0.1:6379".into()));
        assert_eq!((standalone.prefix.as_str(), standalone.node_id), ("switchboard", None));
        let cluster = resolve(redis(Some("redis"), None, &["redis://a:1", "redis://b:2"])).unwrap().redis.unwrap();
        assert!(matches!(cluster.servers, switchboard_redis::Servers::Cluster(urls) if urls.len() == 2));
        assert!(resolve(ServeArgs::default()).unwrap().redis.is_none(), "raft is the default");
        for (args, says) in [
            (redis(Some("redis"), None, &[]), "needs --redis"),
            (redis(None, Some("redis://h:1"), &[]), "need --engine redis"),
            (redis(Some("etcd"), None, &[]), "raft or redis"),
            (redis(Some("redis"), Some("http://h:1"), &[]), "not a Redis URL"),
            (
                ServeArgs {
                    redis_ca_file: Some("/nonexistent/ca.pem".into()),
                    ..redis(Some("redis"), Some("rediss://h:1"), &[])
                },
                "redis-ca-file",
            ),
            (redis(Some("redis"), Some("redis://h:1"), &["redis://h:2"]), "not both"),
            (
                ServeArgs {
                    grpc_listen: Some("127.0.0.1:7001".into()),
                    ..redis(Some("redis"), Some("redis://h:1"), &[])
                },
                "grpc-listen",
            ),
            (
                ServeArgs { redis_prefix: Some("a b".into()), ..redis(Some("redis"), Some("redis://h:1"), &[]) },
                "prefix",
            ),
        ] {
            let error = resolve(args).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
    }

    #[test]
    fn defaults() {
        let s = resolve(ServeArgs::default()).unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert!(s.endpoint.is_none() && s.access_keys.is_empty() && s.allowed_origins.is_none());
        assert_eq!(s.log_format, LogFormat::Plain);
    }

    #[test]
    fn invalid_values_are_usage_errors() {
        let bad = [
            ServeArgs { listen: Some("nowhere".into()), ..Default::default() },
            ServeArgs { endpoint: Some("ftp://x".into()), ..Default::default() },
            ServeArgs { access_keys: vec!["a;b".into()], ..Default::default() },
            ServeArgs { log_format: Some("xml".into()), ..Default::default() },
            ServeArgs { max_message_size: Some(10), ..Default::default() },
            ServeArgs { config: Some("/nonexistent/switchboard.toml".into()), ..Default::default() },
            ServeArgs { upstream: vec!["not a url".into()], ..Default::default() },
            ServeArgs { upstream: vec!["https://app/{event}".into()], ..Default::default() },
        ];
        for args in bad {
            let reason = resolve(args).unwrap_err();
            assert!(!reason.contains('\n'), "{reason}");
        }
    }

    #[test]
    fn flags_beat_the_file() {
        let dir = std::env::temp_dir().join(format!("switchboard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\naccess_keys = [\"file-key\"]\nlog_format = \"json\"\n")
            .unwrap();
        let s = resolve(ServeArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.listen.port(), 9100);
        assert_eq!(s.access_keys, vec!["file-key".to_string()]);
        assert_eq!(s.log_format, LogFormat::Json);
        std::fs::write(&path, "unknown_key = 1\n").unwrap();
        assert!(resolve(ServeArgs { config: Some(path.clone()), ..Default::default() }).is_err());
        // The cluster secret, like every setting, may come from the file; the flag beats it.
        let cluster =
            "grpc_listen = \"127.0.0.1:7001\"\nvoters = [\"1=127.0.0.1:7001\"]\ncluster_secret = \"from-file\"\n";
        std::fs::write(&path, cluster).unwrap();
        let s = resolve(ServeArgs { config: Some(path.clone()), access_keys: vec!["k".into()], ..Default::default() })
            .unwrap();
        assert_eq!(s.cluster.unwrap().secret, "from-file");
        let flag = ServeArgs {
            config: Some(path),
            access_keys: vec!["k".into()],
            cluster_secret: Some("from-flag".into()),
            ..Default::default()
        };
        assert_eq!(resolve(flag).unwrap().cluster.unwrap().secret, "from-flag");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn node_ids_from_hostnames() {
        let text = |t: &str| NodeIdValue::Text(t.into());
        assert_eq!(resolve_node_id(&text("ordinal"), "switchboard-control-0"), Ok(1));
        assert_eq!(resolve_node_id(&text("ordinal"), "sb-control-12"), Ok(13));
        assert!(resolve_node_id(&text("ordinal"), "laptop").is_err());
        let a = resolve_node_id(&text("auto"), "switchboard-edge-7d9f-abcde").unwrap();
        assert_eq!(resolve_node_id(&text("auto"), "switchboard-edge-7d9f-abcde"), Ok(a), "stable");
        assert_ne!(resolve_node_id(&text("auto"), "switchboard-edge-7d9f-xyz12"), Ok(a));
        assert!((1_000_000..1_000_000 + (1 << 52)).contains(&a));
        assert_eq!(resolve_node_id(&text("7"), ""), Ok(7));
        assert_eq!(resolve_node_id(&NodeIdValue::Number(3), ""), Ok(3));
        assert!(resolve_node_id(&text("0"), "").is_err() && resolve_node_id(&NodeIdValue::Number(0), "").is_err());
        assert!(resolve_node_id(&text("seven"), "").is_err());
    }

    #[test]
    fn key_files_need_a_key() {
        let dir = std::env::temp_dir().join(format!("switchboard-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        std::fs::write(&path, "# rotated 2026-11\nprimary\n\n  secondary  \n").unwrap();
        assert_eq!(read_key_file(&path), Ok(vec!["primary".to_owned(), "secondary".to_owned()]));
        std::fs::write(&path, "\n# nothing\n").unwrap();
        assert!(read_key_file(&path).is_err());
        std::fs::write(&path, "a;b\n").unwrap();
        assert!(read_key_file(&path).is_err());
        assert!(read_key_file(&dir.join("absent")).is_err());
        let both = ServeArgs { access_keys: vec!["k".into()], access_key_file: Some(path), ..Default::default() };
        assert!(resolve(both).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_aspnet_bridge_needs_a_url_and_well_formed_hubs() {
        let args = |url: Option<&str>, hubs: &[&str]| ServeArgs {
            access_keys: vec!["k".into()],
            aspnet_backplane: url.map(str::to_owned),
            aspnet_hubs: hubs.iter().map(|h| (*h).to_owned()).collect(),
            ..Default::default()
        };
        let ok = resolve(args(Some("redis://127.0.0.1:6379"), &["Chat=Chat.Hubs.ChatHub", "admin=Ns.Outer+AdminHub"]));
        let aspnet = ok.unwrap().aspnet.unwrap();
        assert_eq!(
            aspnet.hubs,
            [("chat".to_owned(), "Chat.Hubs.ChatHub".to_owned()), ("admin".into(), "Ns.Outer+AdminHub".into())]
        );
        assert_eq!((aspnet.prefix.as_str(), aspnet.origin.as_str()), ("", "switchboard"));
        for (url, hubs, expected) in [
            (Some("redis://h:6379"), &[][..], "at least one --aspnet-hub"),
            (None, &["chat=T"][..], "need --aspnet-backplane"),
            (Some("http://h"), &["chat=T"][..], "not a Redis URL"),
            (Some("redis://h"), &["chat"][..], "must look like chat=Chat.Hubs.ChatHub"),
            (Some("redis://h"), &["1bad=T"][..], "must look like"),
            (Some("redis://h"), &["chat="][..], "must look like"),
        ] {
            let error = resolve(args(url, hubs)).expect_err("refused");
            assert!(error.contains(expected), "{url:?} {hubs:?}: {error}");
        }
    }

    #[test]
    fn cluster_tls_settings_go_together() {
        let cluster = || ServeArgs {
            grpc_listen: Some("127.0.0.1:7001".into()),
            voters: vec!["1=127.0.0.1:7001".into()],
            cluster_secret: Some("s".into()),
            access_keys: vec!["k".into()],
            ..Default::default()
        };
        let error = |args: ServeArgs| resolve(args).expect_err("refused");
        let partial = ServeArgs { cluster_tls_cert: Some("/a".into()), ..cluster() };
        assert!(error(partial).contains("go together"));
        let name_alone = ServeArgs { cluster_tls_name: Some("n".into()), ..cluster() };
        assert!(error(name_alone).contains("needs --cluster-tls-cert"));
        let unreadable = ServeArgs {
            cluster_tls_cert: Some("/nonexistent/node.crt".into()),
            cluster_tls_key: Some("/nonexistent/node.key".into()),
            cluster_ca: Some("/nonexistent/ca.crt".into()),
            ..cluster()
        };
        assert!(error(unreadable).contains("cannot read /nonexistent/node.crt"));
    }

    #[test]
    fn peers_may_be_dns_names() {
        let args = ServeArgs {
            grpc_listen: Some("0.0.0.0:7001".into()),
            cluster_secret: Some("s".into()),
            node_id: Some("2".into()),
            advertise: Some("sb-control-1.sb-control.default.svc.cluster.local:7001".into()),
            voters: vec!["1=sb-control-0.sb:7001".into(), "2=sb-control-1.sb:7001".into()],
            ..Default::default()
        };
        let cluster = resolve(args).unwrap().cluster.unwrap();
        assert_eq!(cluster.voters[&1], "sb-control-0.sb:7001");
        let bad = ServeArgs {
            grpc_listen: Some("0.0.0.0:7001".into()),
            cluster_secret: Some("s".into()),
            join: vec!["no-port".into()],
            role: Some("edge".into()),
            ..Default::default()
        };
        assert!(resolve(bad).is_err());
    }

    /// The example names every setting the file takes, each exactly once, and is a valid file
    /// once uncommented.
    #[test]
    fn the_example_covers_every_setting() {
        let uncommented: String = EXAMPLE
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.contains(" = ") || line.starts_with("[["))
            .map(|line| format!("{line}\n"))
            .collect();
        let file: toml::Table = toml::from_str(&uncommented).expect("the uncommented example parses");
        if let Err(error) = toml::from_str::<FileConfig>(&uncommented) {
            panic!("only known settings: {error}");
        }
        let source = include_str!("config.rs");
        let block = &source[source.find("pub struct FileConfig {").unwrap()..];
        let block = &block[..block.find('}').unwrap()];
        let fields: Vec<&str> = block
            .lines()
            .filter_map(|line| line.trim().strip_prefix("pub ")?.split(':').next())
            .filter(|name| !name.starts_with("struct"))
            .collect();
        assert!(fields.len() > 25, "{fields:?}");
        for field in fields {
            assert!(file.contains_key(field), "the example lacks '{field}'");
        }
    }
}
