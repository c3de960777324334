//! The command line. Every `serve` flag also reads a `SWITCHBOARD_*` environment variable and
//! may be set in the config file; a flag beats the environment, which beats the file.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Real-time messaging compatible with Azure SignalR Service (serverless mode)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (an embedded single node when nothing else is configured).
    Serve(Box<ServeArgs>),
    /// Mint an access token for manual tests: a client token (--hub) or a REST token (--rest).
    Token(TokenArgs),
    /// Inspect a cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented configuration file with every setting and its default.
    Example,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print the cluster as a node sees it: leader, term, nodes, leases, applied indexes.
    ///
    /// Inside a node's container (or next to its config) nothing but --endpoint is needed: the
    /// key and the node's public endpoint (the token's audience) come from the same settings
    /// the node reads.
    Status(StatusArgs),
    /// Remove a node from the cluster for good, after stopping it: out of the raft membership
    /// (a voter no longer counts toward the quorum) and out of the routing table.
    Remove {
        /// Id of the node to remove.
        #[arg(long)]
        node: u64,
        #[command(flatten)]
        target: StatusArgs,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Client/REST address of any node to ask, e.g. http://127.0.0.1:8080 [default: this node's,
    /// from the config file's `listen`, else http://127.0.0.1:8080].
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Access key [default: from --access-key-file, the config file, or the key in --data-dir].
    #[arg(long, env = "SWITCHBOARD_ACCESS_KEY", value_delimiter = ',', allow_hyphen_values = true)]
    pub access_key: Vec<String>,
    /// File with the access keys; the first signs.
    #[arg(long, env = "SWITCHBOARD_ACCESS_KEY_FILE")]
    pub access_key_file: Option<PathBuf>,
    /// The node's config file: its `endpoint` is the audience the node expects (when the node's
    /// public URL differs from the address asked), and it may name the keys.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory holding the generated key [default: ./switchboard-data].
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// A TOML config file; its keys are the flag names with '_' for '-'.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on for clients and REST [default: 127.0.0.1:8080].
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    pub listen: Option<String>,
    /// Public endpoint used in audiences and negotiate answers [default: http://<listen address>].
    #[arg(long, env = "SWITCHBOARD_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Access key (repeat for a secondary key; the first signs). Default: one kept in the data dir.
    // A key may begin with `-` (URL-safe base64 does one time in 64).
    #[arg(long = "access-key", env = "SWITCHBOARD_ACCESS_KEY", value_delimiter = ',', allow_hyphen_values = true)]
    pub access_keys: Vec<String>,
    /// File with the access keys, one per line (the first signs). Re-read on SIGHUP and when it
    /// changes, so keys rotate without a restart. Excludes --access-key.
    #[arg(long, env = "SWITCHBOARD_ACCESS_KEY_FILE")]
    pub access_key_file: Option<PathBuf>,
    /// PEM certificate chain for TLS on the public port (with --tls-key): the node serves
    /// https and wss. Re-read on SIGHUP and when the files change.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Internal address for /metrics, /healthz and /readyz (off when not set).
    #[arg(long, env = "SWITCHBOARD_INTERNAL_LISTEN")]
    pub internal_listen: Option<String>,
    /// Directory for the generated access key and node data [default: ./switchboard-data].
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Browser origin allowed to connect (repeatable); every origin when none is given.
    #[arg(long = "allowed-origin", env = "SWITCHBOARD_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Largest message a client may send, in bytes [default: 1048576].
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Bytes queued for one connection before it is closed as a slow consumer [default: 4194304].
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUED_BYTES")]
    pub max_queued_bytes: Option<usize>,
    /// Sockets the public port holds at most; past it a new one is answered 503 and closed
    /// [default: the open-file limit less 512, kept for health, metrics, raft and upstream; 0: no cap].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Sockets one source address may hold; past it a new one is answered 429 and closed
    /// [default: 0, no cap].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Connections one user may hold on this node; another is refused with 429 [default: 0, no cap].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,
    /// Hub messages one connection may send per second (bursts up to as many); past it the
    /// connection is closed with an error saying so [default: 0, no cap].
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGES_PER_SECOND")]
    pub max_messages_per_second: Option<u32>,
    /// New sockets one source address may open per second (bursts up to as many); past it a new
    /// one is answered 429 and closed [default: 0, no cap].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECT_RATE_PER_IP")]
    pub max_connect_rate_per_ip: Option<u32>,
    /// Groups one connection may be in; adding it to one more is refused with 429
    /// [default: 0, no cap].
    #[arg(long, env = "SWITCHBOARD_MAX_GROUPS_PER_CONNECTION")]
    pub max_groups_per_connection: Option<usize>,
    /// User-group memberships one hub may store; adding one more is refused with 429
    /// [default: 0, no cap].
    #[arg(long, env = "SWITCHBOARD_MAX_MEMBERSHIPS_PER_HUB")]
    pub max_memberships_per_hub: Option<usize>,
    /// Upstream URL template for client invocations and connection events, matching every hub,
    /// category and event (repeatable; `{hub}`, `{category}`, `{event}` are filled in).
    #[arg(long = "upstream", env = "SWITCHBOARD_UPSTREAM", value_delimiter = ' ')]
    pub upstream: Vec<String>,
    /// Seconds an upstream call may take [default: 20].
    #[arg(long, env = "SWITCHBOARD_UPSTREAM_TIMEOUT")]
    pub upstream_timeout: Option<u64>,
    /// Seconds without sending after which a Ping is sent [default: 15].
    #[arg(long, env = "SWITCHBOARD_KEEP_ALIVE_INTERVAL")]
    pub keep_alive_interval: Option<u64>,
    /// Seconds without receiving after which a client is closed [default: 30].
    #[arg(long, env = "SWITCHBOARD_CLIENT_TIMEOUT")]
    pub client_timeout: Option<u64>,
    /// Seconds a client has to complete the handshake [default: 15].
    #[arg(long, env = "SWITCHBOARD_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<u64>,
    /// Seconds to wait for clients to leave on shutdown [default: 10].
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,
    /// This node's id (encoded in its connection ids; unique in a cluster) [default: 1]: a number,
    /// `ordinal` (the hostname's trailing `-N` plus 1, for StatefulSet pods) or `auto` (a stable
    /// hash of the hostname, for pods without an ordinal).
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,
    /// Address for inter-node gRPC (raft, fan-out, admin). Setting it turns on cluster mode.
    #[arg(long, env = "SWITCHBOARD_GRPC_LISTEN")]
    pub grpc_listen: Option<String>,
    /// gRPC address (host:port, a DNS name is fine) other nodes use to reach this one
    /// [default: --grpc-listen].
    #[arg(long, env = "SWITCHBOARD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Client address (host:port) other nodes use to forward this node's connections to it
    /// [default: --listen; when that is 0.0.0.0, the host of --advertise with the listen port].
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    /// Initial voters as `id=host:port` (repeatable or comma-separated; the same list on each).
    #[arg(long = "voter", env = "SWITCHBOARD_VOTERS", value_delimiter = ',')]
    pub voters: Vec<String>,
    /// gRPC addresses of running nodes to join through, tried in turn (edge-only nodes, voters
    /// added later; repeatable or comma-separated).
    #[arg(long, env = "SWITCHBOARD_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Roles of the node: control (raft voter), edge (clients and REST) or both [default: both].
    #[arg(long, env = "SWITCHBOARD_ROLE")]
    pub role: Option<String>,
    /// Secret shared by every node of a cluster; inter-node calls without it are refused.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_SECRET")]
    pub cluster_secret: Option<String>,
    /// Mutual TLS between nodes: this node's PEM certificate (signed by --cluster-ca; it must
    /// name the host other nodes reach it by, its --advertise host). With --cluster-tls-key.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of --cluster-tls-cert.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<PathBuf>,
    /// PEM certificate of the CA that signs every node's certificate: peers without one are refused.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    /// The DNS name every node's certificate carries, checked instead of the host a peer is
    /// dialed at (nodes reached by pod IP can then share one name) [default: the dialed host].
    #[arg(long, env = "SWITCHBOARD_CLUSTER_TLS_NAME")]
    pub cluster_tls_name: Option<String>,
    /// The engine: `raft` (the default: the embedded single node, or a raft cluster with
    /// --grpc-listen) or `redis` (stateless nodes sharing a Redis: --redis or --redis-cluster).
    #[arg(long, env = "SWITCHBOARD_ENGINE")]
    pub engine: Option<String>,
    /// A standalone Redis for --engine redis: `redis://[user:password@]host:port[/db]`.
    #[arg(long, env = "SWITCHBOARD_REDIS")]
    pub redis: Option<String>,
    /// Seed nodes of a Redis Cluster for --engine redis (sharded pub/sub).
    #[arg(long = "redis-cluster", env = "SWITCHBOARD_REDIS_CLUSTER", value_delimiter = ',')]
    pub redis_cluster: Vec<String>,
    /// Prefix of every Redis key and channel, so deployments can share a Redis [default: switchboard].
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// A file holding the Redis password (instead of putting it in the URL).
    #[arg(long, env = "SWITCHBOARD_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// For rediss:// URLs: PEM certificates of the CAs to trust instead of the system's.
    #[arg(long, env = "SWITCHBOARD_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Join an ASP.NET Core SignalR app's Redis backplane (`redis://…`, password in the URL;
    /// `rediss://` trusts --redis-ca-file or the system's CAs), with the hubs of --aspnet-hub.
    #[arg(long, env = "SWITCHBOARD_ASPNET_BACKPLANE")]
    pub aspnet_backplane: Option<String>,
    /// A bridged hub: `chat=Chat.Hubs.ChatHub` (the .NET hub type's full name); repeatable.
    #[arg(long = "aspnet-hub", env = "SWITCHBOARD_ASPNET_HUBS", value_delimiter = ',')]
    pub aspnet_hubs: Vec<String>,
    /// The app's StackExchange.Redis `ChannelPrefix`, as it is set there [default: none].
    #[arg(long, env = "SWITCHBOARD_ASPNET_PREFIX")]
    pub aspnet_prefix: Option<String>,
    /// Marks what this deployment publishes on the backplane, so its nodes skip their own
    /// echo; two Switchboard deployments on one backplane need different ones
    /// [default: switchboard].
    #[arg(long, env = "SWITCHBOARD_ASPNET_ORIGIN")]
    pub aspnet_origin: Option<String>,
    /// Log format: plain or json [default: plain]. Filter with SWITCHBOARD_LOG (e.g. debug).
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Hub a client token is for.
    #[arg(long, required_unless_present = "rest", conflicts_with = "rest")]
    pub hub: Option<String>,
    /// Full REST URL a server token is for (its audience), e.g. http://127.0.0.1:8080/api/v1/hubs/chat.
    #[arg(long)]
    pub rest: Option<String>,
    /// User id written into the token (asrs.s.uid).
    #[arg(long)]
    pub user: Option<String>,
    /// Connection string whose endpoint and key are used; default: the one of --data-dir.
    #[arg(long, env = "SWITCHBOARD_CONNECTION_STRING")]
    pub connection_string: Option<String>,
    /// Data directory of a node started without --access-key [default: ./switchboard-data].
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Endpoint for the audience when reading the key from --data-dir [default: http://127.0.0.1:8080].
    #[arg(long, env = "SWITCHBOARD_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub lifetime: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// URL-safe base64 keys begin with `-` one time in 64: such a key is a value, not a flag.
    #[test]
    fn an_access_key_may_begin_with_a_hyphen() {
        let key = "-bcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH";
        let cli = Cli::try_parse_from(["switchboard", "serve", "--access-key", key, "--access-key", "-x"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("serve") };
        assert_eq!(args.access_keys, [key, "-x"]);
        let cli = Cli::try_parse_from(["switchboard", "cluster", "status", "--access-key", key]).unwrap();
        let Command::Cluster(ClusterCommand::Status(args)) = cli.command else { panic!("cluster status") };
        assert_eq!(args.access_key, [key]);
    }
}
