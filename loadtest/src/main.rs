//! `switchboard-loadtest`: drives a Switchboard node with real protocol traffic and reports
//! what the server paid for it (resident memory per connection, CPU per delivered message),
//! read from `/proc` of the server process when it runs on this machine.
//!
//! Scenarios:
//! - `connect`: open N connections at a bounded rate, hold them idle, report memory per connection.
//! - `broadcast`: hold N connections, send M REST broadcasts at a bounded rate, report delivered
//!   messages per second, end-to-end latency and server CPU per delivery.
//! - `send-to-user`: connection `i` is user `u{i}`; M REST sends go to the users round-robin.
//!
//! Every run is bounded in connections, messages and time.

mod client;
mod proc_stats;
mod report;
mod scenario;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "switchboard-loadtest", about = "Load tests for Switchboard")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Ramp up idle connections and hold them.
    Connect(scenario::Common),
    /// Hold connections and fan REST broadcasts out to them.
    Broadcast(SendArgs),
    /// Hold connections of distinct users and send to the users one by one over REST.
    SendToUser(SendArgs),
}

#[derive(Debug, clap::Args)]
struct SendArgs {
    #[command(flatten)]
    common: scenario::Common,
    /// REST sends to make.
    #[arg(long, default_value_t = 100)]
    messages: u64,
    /// REST sends per second.
    #[arg(long, default_value_t = 50)]
    message_rate: u64,
    /// Payload size in bytes (a string argument of this length).
    #[arg(long, default_value_t = 32)]
    payload: usize,
}

/// Client transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    Websockets,
    Sse,
    LongPolling,
}

/// Hub protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Protocol {
    Json,
    Messagepack,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchboard-loadtest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.scenario {
            Scenario::Connect(common) => scenario::connect(common).await,
            Scenario::Broadcast(a) => {
                scenario::send(a.common, scenario::SendKind::Broadcast, a.messages, a.message_rate, a.payload).await
            }
            Scenario::SendToUser(a) => {
                scenario::send(a.common, scenario::SendKind::User, a.messages, a.message_rate, a.payload).await
            }
        }
    });
    match result {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}
