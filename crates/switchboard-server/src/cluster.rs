//! Cluster status for operators: `GET /api/admin/cluster` (a server token whose audience is
//! that URL) and `switchboard cluster status`, which prints it as a table.

use crate::Exit;
use crate::cli::ClusterCommand;
use crate::config::DEFAULT_DATA_DIR;
use crate::control::ControlPlane;
use crate::serve::read_or_create_key;
use anyhow::Context;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchboard_api::ApiError;
use switchboard_auth::{Verifier, mint_server_token};
use switchboard_proto::admin::v1::{NodeState, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The path of the status endpoint.
pub const STATUS_PATH: &str = "/api/admin/cluster";

/// What the status endpoint needs.
pub struct StatusState {
    pub control: ControlPlane,
    pub verifier: Arc<Verifier>,
}

/// `GET /api/admin/cluster`.
pub async fn status_endpoint(State(state): State<Arc<StatusState>>, request: Request) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    if let Err(e) = state.verifier.verify_server(token, STATUS_PATH) {
        return ApiError::unauthorized(e.to_string()).into_response();
    }
    let status = state.control.status();
    let nodes: Vec<Value> = status
        .nodes
        .iter()
        .map(|n| {
            let roles: Vec<&str> = n
                .roles
                .iter()
                .filter_map(|r| match Role::try_from(*r) {
                    Ok(Role::Control) => Some("control"),
                    Ok(Role::Edge) => Some("edge"),
                    _ => None,
                })
                .collect();
            let node_state = match NodeState::try_from(n.state) {
                Ok(NodeState::Leader) => "leader",
                Ok(NodeState::Voter) => "voter",
                Ok(NodeState::Learner) => "learner",
                _ => "not-member",
            };
            json!({
                "id": n.id,
                "roles": roles,
                "address": n.advertised_address,
                "state": node_state,
                "lease_expires_at_ms": n.lease_expires_at_ms,
                "applied_index": n.applied_index,
            })
        })
        .collect();
    let body = json!({"leader": status.leader, "term": status.term, "answered_by": status.answered_by, "nodes": nodes});
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `switchboard cluster …`
pub fn main(command: ClusterCommand) -> Result<(), Exit> {
    let ClusterCommand::Status(args) = command;
    let file = match &args.config {
        Some(path) => crate::config::read_file(path)?,
        None => crate::config::FileConfig::default(),
    };
    let key_file = args.access_key_file.clone().or(file.access_key_file.clone());
    let key = if let Some(key) = args.access_key.first() {
        key.clone()
    } else if let Some(path) = key_file {
        crate::config::read_key_file(&path).map_err(Exit::Usage)?.remove(0)
    } else if let Some(key) = file.access_keys.as_ref().and_then(|keys| keys.first()) {
        key.clone()
    } else {
        let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        read_or_create_key(&data_dir)?
    };
    let endpoint = args.endpoint.trim_end_matches('/').to_owned();
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| Exit::Usage(format!("--endpoint '{endpoint}' must be http://host:port")))?
        .to_owned();
    let url = format!("{endpoint}{STATUS_PATH}");
    // The node checks the audience against its own public endpoint, which may differ from the
    // address asked (a pod asked on 127.0.0.1 whose endpoint is the public Service's URL).
    let audience = match &file.endpoint {
        Some(public) => {
            format!("{}{STATUS_PATH}", crate::config::parse_endpoint(public)?.as_str().trim_end_matches('/'))
        }
        None => url.clone(),
    };
    let token = mint_server_token(&audience, Duration::from_secs(300), &key);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("no runtime")?;
    let (status, body) = runtime.block_on(get(&authority, &token))?;
    if status != 200 {
        return Err(Exit::Failed(anyhow::anyhow!("{url} answered {status}: {}", body.trim())));
    }
    let value: Value = serde_json::from_str(&body).context("the status is not JSON")?;
    println!("leader: {}  term: {}  (answered by node {})", value["leader"], value["term"], value["answered_by"]);
    println!("{:<6} {:<13} {:<22} {:<11} {:<16} applied", "id", "roles", "address", "state", "lease (ms left)");
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    for node in value["nodes"].as_array().into_iter().flatten() {
        let roles: Vec<&str> = node["roles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let lease = node["lease_expires_at_ms"].as_i64().map_or("-".to_owned(), |at| (at - now).to_string());
        let applied = node["applied_index"].as_u64().map_or("-".to_owned(), |i| i.to_string());
        println!(
            "{:<6} {:<13} {:<22} {:<11} {:<16} {}",
            node["id"],
            roles.join(","),
            node["address"].as_str().unwrap_or(""),
            node["state"].as_str().unwrap_or(""),
            lease,
            applied
        );
    }
    Ok(())
}

/// A minimal HTTP/1.1 GET (the binary carries no HTTP client).
async fn get(authority: &str, token: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(authority))
        .await
        .context("timed out connecting")??;
    let request = format!(
        "GET {STATUS_PATH} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.context("timed out")??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
    Ok((status, body.to_owned()))
}
