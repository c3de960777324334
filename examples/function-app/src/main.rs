//! `switchboard-function-app`: the serverless back end of the Azure Functions + SignalR Service
//! flow, as one small axum binary driving Switchboard through `switchboard-sdk`.
//!
//! | route | Functions equivalent |
//! |---|---|
//! | `POST /api/negotiate` | HTTP trigger + `SignalRConnectionInfo` input binding |
//! | `POST /api/messages` | HTTP trigger + `SignalR` output binding (broadcast, user, group) |
//! | `POST /api/groups/{group}/join`, `/leave` | `SignalR` output binding, group actions |
//! | `POST /runtime/webhooks/signalr` | the `SignalRTrigger` webhook (upstream) |
//! | `GET /` | a chat page using the `@microsoft/signalr` browser client |
//!
//! See `examples/function-app/README.md`.

mod api;
mod cors;
mod page;
mod webhook;

use anyhow::{Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use switchboard_sdk::ServiceClient;
use tokio::net::TcpListener;

/// Sample serverless back end for Switchboard (an Azure Functions app in one binary).
#[derive(Debug, Parser)]
#[command(name = "switchboard-function-app", version)]
struct Cli {
    /// Connection string of the service, as `switchboard serve` prints it.
    #[arg(long, env = "SWITCHBOARD_CONNECTION_STRING", hide_env_values = true)]
    connection_string: String,

    /// Address of the API, the webhook and the page (Functions' default port is 7071).
    #[arg(long, env = "FUNCTION_APP_LISTEN", default_value = "127.0.0.1:7071")]
    listen: SocketAddr,

    /// Also serve the page on this second address, so the page's origin differs from the
    /// API's and the browser's calls to the API are cross-origin too. Its origin is allowed.
    #[arg(long, env = "FUNCTION_APP_PAGE_LISTEN")]
    page_listen: Option<SocketAddr>,

    /// Hub the page and the API use.
    #[arg(long, env = "FUNCTION_APP_HUB", default_value = "chat")]
    hub: String,

    /// Browser origin allowed to call the API with credentials (repeatable; `*` echoes any
    /// origin). The page listener's origins are always allowed.
    #[arg(long = "allowed-origin", env = "FUNCTION_APP_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,

    /// The `@microsoft/signalr` browser bundle served as `/signalr.min.js`. Default: the copy
    /// `npm ci` puts in this example's `node_modules`.
    #[arg(long, env = "FUNCTION_APP_SIGNALR_JS")]
    signalr_js: Option<PathBuf>,
}

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) service: ServiceClient,
    /// Lower-cased, as the SDK and the service use it.
    pub(crate) hub: String,
    pub(crate) access_keys: Vec<String>,
    pub(crate) cors: cors::Cors,
    pub(crate) page: page::Page,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let service = ServiceClient::from_connection_string(&cli.connection_string)
        .context("bad --connection-string / SWITCHBOARD_CONNECTION_STRING (use what `switchboard serve` prints)")?;
    let access_keys: Vec<String> = service.connection_string().access_key.iter().cloned().collect();

    let api_listener =
        TcpListener::bind(cli.listen).await.with_context(|| format!("binding --listen {}", cli.listen))?;
    let api_addr = api_listener.local_addr()?;
    let page_listener = match cli.page_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("binding --page-listen {addr}"))?),
        None => None,
    };
    let page_addr = page_listener.as_ref().map(TcpListener::local_addr).transpose()?;

    let mut cors = cors::Cors::new(&cli.allowed_origins);
    if let Some(addr) = page_addr {
        cors.allow_listener(addr);
    }
    let signalr_js = page::load_signalr_js(cli.signalr_js.as_deref());
    let state = Arc::new(AppState {
        service,
        hub: cli.hub.to_lowercase(),
        access_keys,
        cors,
        page: page::Page { signalr_js, api_port: api_addr.port() },
    });

    let shutdown = shutdown_signal();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut rx = stop_rx.clone();
    servers.spawn(
        axum::serve(api_listener, api::router(state.clone()))
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .into_future(),
    );
    if let Some(listener) = page_listener {
        let mut rx = stop_rx.clone();
        servers.spawn(
            axum::serve(listener, page::router(state.clone(), page::Listener::PageOnly))
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .into_future(),
        );
    }

    // One machine-readable line on stdout once both listeners accept (tests parse it).
    let page_url = page_addr.unwrap_or(api_addr);
    match page_addr {
        Some(page) => println!("api=http://{api_addr} page=http://{page}"),
        None => println!("api=http://{api_addr}"),
    }
    tracing::info!(
        hub = %state.hub,
        service = %state.service.rest_base(),
        "function app ready: open http://{page_url}/?user=alice (upstream webhook: http://{api_addr}/runtime/webhooks/signalr)"
    );

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    while let Some(result) = servers.join_next().await {
        result.context("server task")?.context("serving")?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
