//! `switchboard-loadtest`: drives Switchboard nodes with real protocol traffic and reports
//! what the server paid for it (resident memory per connection, CPU per delivered message,
//! read from `/proc` of the server processes on this machine) next to what the clients saw
//! (deliveries, losses, latency, reconnects).
//!
//! Scenarios:
//! - `connect`: open N connections at a bounded rate and hold them idle.
//! - `broadcast`: REST broadcasts fanned out to every connection.
//! - `send-to-user`: connection `i` is user `u{i}`; REST sends go to the users round-robin.
//! - `send-to-connection`: REST sends to the connections by id, round-robin.
//! - `group`: users in many small groups (`--group-size`) or a few big ones (`--groups`),
//!   added over REST; REST sends go to the groups round-robin.
//! - `echo`: clients invoke `echo`; Switchboard calls the harness's built-in upstream, whose
//!   answer is the completion the caller receives.
//! - `mixed`: broadcasts, group and user sends while some connections leave and come back.
//!
//! - `chaos`: a local cluster under a fault schedule with a mixed workload; every operation
//!   and delivery is recorded and checked against Switchboard's promises.
//!
//! `baseline-server` is a minimal WebSocket broadcast server to compare against. Every run is
//! bounded in connections, messages and time.

mod baseline;
mod bench;
mod chaos;
mod client;
mod codec;
mod output;
mod proc_stats;
mod rest;
mod scenario;
mod stats;
mod upstream;
mod wire;
mod worker;

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "switchboard-loadtest", about = "Load tests for Switchboard")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ramp up idle connections and hold them.
    Connect(Args),
    /// Hold connections and fan REST broadcasts out to them.
    Broadcast(Args),
    /// Connections of distinct users; REST sends to the users one by one.
    SendToUser(Args),
    /// REST sends to the connections one by one, by connection id.
    SendToConnection(Args),
    /// Users in groups (added over REST); REST sends to the groups one by one.
    Group(Args),
    /// Clients invoke `echo`; the built-in upstream answers; the completion is the echo.
    Echo(Args),
    /// Broadcast, group and user sends while some connections leave and come back.
    Mixed(Args),
    /// Start a local cluster, hurt it with faults under a mixed workload, and check every
    /// delivery and membership change against the guarantees.
    Chaos(chaos::ChaosArgs),
    /// Start fresh nodes and the baseline server, measure how close Switchboard runs to the
    /// floor (broadcast, new connections, idle memory, REST, clusters) and print the ratios.
    Bench(bench::BenchArgs),
    /// A minimal WebSocket broadcast server (no SignalR, routing or auth) to compare against.
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
    },
    /// Internal: one worker process of a run (plan and commands on stdin, events on stdout).
    #[command(hide = true)]
    Worker,
}

/// Options of every scenario (each uses those that apply to it).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Node endpoint; repeat or comma-separate for a cluster (connections and REST sends go
    /// round-robin over them).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub(crate) endpoint: Vec<String>,
    /// Access key of the nodes (not needed with --baseline).
    #[arg(long, env = "SWITCHBOARD_ACCESS_KEY")]
    pub(crate) access_key: Option<String>,
    #[arg(long, default_value = "bench")]
    pub(crate) hub: String,
    /// Connections to open.
    #[arg(long, default_value_t = 100)]
    pub(crate) connections: u64,
    /// New connections per second.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) rate: f64,
    #[arg(long, value_enum, default_value_t = Transport::Websockets)]
    pub(crate) transport: Transport,
    #[arg(long, value_enum, default_value_t = Protocol::Json)]
    pub(crate) protocol: Protocol,
    /// Worker processes holding the connections (each process may open at most 20,000
    /// files); 1 runs everything in this process.
    #[arg(long, default_value_t = 1)]
    pub(crate) workers: usize,
    /// Loopback source addresses to spread connections over (127.0.0.1 ..).
    #[arg(long, default_value_t = 32)]
    pub(crate) sources: u8,
    /// Process id of a server (repeatable), to read memory and CPU from /proc.
    #[arg(long)]
    pub(crate) server_pid: Vec<u32>,
    /// Metrics URL of a server (repeatable), e.g. http://10.0.0.5:9090/metrics (its
    /// `--internal-listen`): memory and CPU for servers on other machines.
    #[arg(long)]
    pub(crate) server_metrics: Vec<String>,
    /// Upper bound on the whole run, in seconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) max_seconds: u64,
    /// Negotiate before a WebSocket as well (as clients without skipNegotiation do; SSE and
    /// Long Polling always negotiate).
    #[arg(long)]
    pub(crate) negotiate: bool,
    /// Seconds to hold the connections open (connect).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) hold: f64,

    /// Messages to send (REST sends, or echo invocations over all connections).
    #[arg(long, default_value_t = 100)]
    pub(crate) messages: u64,
    /// Messages per second; 0 sends REST requests as fast as the REST connections go.
    #[arg(long, default_value_t = 50.0)]
    pub(crate) message_rate: f64,
    /// Payload size in bytes (a string argument of this length).
    #[arg(long, default_value_t = 32)]
    pub(crate) payload: usize,
    /// Concurrent keep-alive REST connections.
    #[arg(long, default_value_t = 16)]
    pub(crate) rest_concurrency: usize,
    /// Seconds to wait for the last deliveries after sending before counting the rest lost.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) drain_seconds: f64,

    /// Stepping: first rate (messages per second). Steps go up by --step-increment to
    /// --step-max, each --step-duration seconds, until a step fails the pass rule.
    #[arg(long)]
    pub(crate) step_start: Option<f64>,
    #[arg(long, default_value_t = 100.0)]
    pub(crate) step_increment: f64,
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) step_max: f64,
    #[arg(long, default_value_t = 10.0)]
    pub(crate) step_duration: f64,

    /// Members per group (group, mixed): connection i is in group i / size.
    #[arg(long, default_value_t = 10)]
    pub(crate) group_size: u64,
    /// Number of groups instead (a few big groups): connection i is in group i % groups.
    #[arg(long)]
    pub(crate) groups: Option<u64>,

    /// Address of the built-in upstream (echo); start the nodes with
    /// `--upstream http://ADDR/{event}`.
    #[arg(long)]
    pub(crate) upstream_listen: Option<String>,

    /// Percent of connections that leave and come back (mixed).
    #[arg(long, default_value_t = 10)]
    pub(crate) churn_percent: u64,
    /// Seconds a churning connection stays before it leaves (spread 0.5x..1.5x).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) churn_interval: f64,
    /// Every n-th mixed message is a broadcast; the others alternate groups and users.
    #[arg(long, default_value_t = 10)]
    pub(crate) broadcast_every: u64,

    /// The endpoints are baseline servers (connect, broadcast and send-to-user over WebSockets).
    #[arg(long)]
    pub(crate) baseline: bool,
    /// Also start a baseline server and run the same load against it, stating Switchboard's
    /// numbers as a ratio of it.
    #[arg(long)]
    pub(crate) compare_baseline: bool,
    /// Connect against the baseline as against Switchboard: negotiate (with --negotiate), the
    /// upgrade to /client/, the hub handshake, which the baseline answers with fixed replies.
    /// Its CPU per connection then counts the same round trips and TCP connections, so the
    /// ratio leaves out only what Switchboard does beyond them (tokens, hubs, routing).
    #[arg(long)]
    pub(crate) same_exchanges: bool,

    /// Write the JSON report here (`-`: on stdout, the verdict line then going to stderr).
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    /// Write a Markdown summary here.
    #[arg(long)]
    pub(crate) markdown: Option<PathBuf>,
    /// Write SVG plots of throughput and latency over time into this directory.
    #[arg(long)]
    pub(crate) plots: Option<PathBuf>,
}

/// Client transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub(crate) enum Transport {
    Websockets,
    Sse,
    LongPolling,
}

/// Hub protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub(crate) enum Protocol {
    Json,
    Messagepack,
}

/// Raises the soft limit on open files to the hard limit: connections are files.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("switchboard-loadtest: cannot raise the open files limit: {e}");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchboard-loadtest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (kind, args) = match cli.command {
            Command::Worker => return worker::serve_stdio().await.map(|_| None),
            Command::BaselineServer { listen } => return serve_baseline(&listen).await.map(|_| None),
            Command::Chaos(args) => {
                return chaos::run(&args).await.map(|pass| Some(Err(("chaos", pass))));
            }
            Command::Bench(args) => {
                return bench::run(&args).await.map(|pass| Some(Err(("bench", pass))));
            }
            Command::Connect(a) => (scenario::Kind::Connect, a),
            Command::Broadcast(a) => (scenario::Kind::Broadcast, a),
            Command::SendToUser(a) => (scenario::Kind::User, a),
            Command::SendToConnection(a) => (scenario::Kind::Connection, a),
            Command::Group(a) => (scenario::Kind::Group, a),
            Command::Echo(a) => (scenario::Kind::Echo, a),
            Command::Mixed(a) => (scenario::Kind::Mixed, a),
        };
        let report = scenario::run(kind, &args).await?;
        output::write_all(&report, &args)?;
        let to_stdout = args.report.as_deref() == Some(std::path::Path::new("-"));
        Ok(Some(Ok((report, to_stdout))))
    });
    // Connections still open in spawned tasks are closed with the runtime.
    runtime.shutdown_background();
    match result {
        Ok(Some(Err((what, passed)))) => {
            let line = match (what, passed) {
                ("chaos", true) => "PASS chaos: every promise kept",
                ("chaos", false) => "FAIL chaos: see the violations above",
                (_, true) => "PASS bench: every goal met",
                (_, false) => "FAIL bench: see the goals not met above",
            };
            println!("{line}");
            if passed { ExitCode::SUCCESS } else { ExitCode::from(EXIT_VERDICT_FAILED) }
        }
        Ok(Some(Ok((report, to_stdout)))) => {
            let (pass, line) = output::verdict_line(&report);
            if to_stdout {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            if pass { ExitCode::SUCCESS } else { ExitCode::from(EXIT_VERDICT_FAILED) }
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-loadtest: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The options of a scenario from its command line (`argv[0]` first), for presets.
pub(crate) fn scenario_args(argv: &[String]) -> anyhow::Result<Args> {
    #[derive(Parser)]
    struct One {
        #[command(flatten)]
        args: Args,
    }
    Ok(One::try_parse_from(argv)?.args)
}

/// Exit codes: the run failed Azure's pass rule; the run could not be made at all.
const EXIT_VERDICT_FAILED: u8 = 1;
const EXIT_ERROR: u8 = 2;

/// Prints `listening ADDR` once bound (how a parent learns a port chosen at run time).
async fn serve_baseline(listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening {}", listener.local_addr()?);
    baseline::serve(listener).await;
    Ok(())
}
