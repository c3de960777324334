//! `switchboard`: a self-hosted service compatible with Azure SignalR Service (serverless).
//!
//! `main` only parses the command line and hands over; exit code 64 means invalid
//! configuration (EX_USAGE) and 69 a service it needs (Redis) unreachable at start
//! (EX_UNAVAILABLE), each with a one-line reason on stderr.

use clap::Parser;

/// mimalloc: the node allocates and frees many small short-lived buffers per message and per
/// request from every runtime thread, which glibc's allocator serves markedly slower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use switchboard_server::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => switchboard_server::serve::main(*args),
        Command::Token(args) => switchboard_server::token::main(args),
        Command::Cluster(command) => switchboard_server::cluster::main(command),
        Command::Config(switchboard_server::cli::ConfigCommand::Example) => {
            print!("{}", switchboard_server::config::EXAMPLE);
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(switchboard_server::Exit::Usage(reason)) => {
            eprintln!("switchboard: {reason}");
            std::process::ExitCode::from(64)
        }
        Err(switchboard_server::Exit::Unavailable(reason)) => {
            eprintln!("switchboard: {reason}");
            std::process::ExitCode::from(69)
        }
        Err(switchboard_server::Exit::Failed(error)) => {
            eprintln!("switchboard: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
