//! Cluster status for operators: `GET /api/admin/cluster` (a server token whose audience is
//! that URL) and `switchboard cluster status`, which prints it as a table.

use crate::Exit;
use crate::cli::{ClusterCommand, StatusArgs};
use crate::config::DEFAULT_DATA_DIR;
use crate::serve::node_key;
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
use switchboard_control::ControlPlane;
use switchboard_grpc::admin::v1::{NodeState, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The path of the status endpoint.
pub const STATUS_PATH: &str = "/api/admin/cluster";
/// `DELETE {NODES_PATH}/{id}` removes a node from the cluster.
pub const NODES_PATH: &str = "/api/admin/cluster/nodes";

/// What the status endpoint needs.
pub struct StatusState {
    pub control: ControlPlane,
    pub verifier: Arc<Verifier>,
}

/// `GET /api/admin/cluster`.
pub async fn status_endpoint(State(state): State<Arc<StatusState>>, request: Request) -> Response {
    let token = bearer(&request);
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
                "client_url": (!n.http_address.is_empty()).then(|| format!("http://{}", n.http_address)),
                "state": node_state,
                "lease_expires_at_ms": n.lease_expires_at_ms,
                "applied_index": n.applied_index,
            })
        })
        .collect();
    let body = json!({"leader": status.leader, "term": status.term, "answered_by": status.answered_by, "nodes": nodes});
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `DELETE /api/admin/cluster/nodes/{id}` (a REST token for that URL).
pub async fn remove_node_endpoint(
    State(state): State<Arc<StatusState>>,
    axum::extract::Path(node): axum::extract::Path<String>,
    request: Request,
) -> Response {
    let token = bearer(&request);
    if let Err(e) = state.verifier.verify_server(token, request.uri().path()) {
        return ApiError::unauthorized(e.to_string()).into_response();
    }
    let Ok(node) = node.parse::<u64>() else {
        return ApiError::bad_request("the node id must be a number").into_response();
    };
    match state.control.remove_member(node).await {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json!({"removed": node}).to_string())
            .into_response(),
        Err(switchboard_control::RemoveError::Engine(error)) => ApiError::from(error).into_response(),
        Err(error) => ApiError::bad_request(error.to_string()).into_response(),
    }
}

fn bearer(request: &Request) -> &str {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, token)| token.trim())
        .unwrap_or_default()
}

/// `switchboard cluster …`
pub fn main(command: ClusterCommand) -> Result<(), Exit> {
    match command {
        ClusterCommand::Status(args) => {
            let body = call(&args, "GET", STATUS_PATH)?;
            print_status(&body)
        }
        ClusterCommand::Remove { node, target } => {
            call(&target, "DELETE", &format!("{NODES_PATH}/{node}"))?;
            println!("node {node} removed");
            Ok(())
        }
    }
}

/// One admin call to the node at `--endpoint`, signed with the key found as the node finds it
/// and for the audience the node expects (its own public endpoint, from its config, which may
/// differ from the address asked: a pod asked on 127.0.0.1 behind a public Service URL).
fn call(args: &StatusArgs, method: &str, path: &str) -> Result<String, Exit> {
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
        let data_dir = args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        node_key(&data_dir)?
    };
    let asked = match &args.endpoint {
        Some(endpoint) => endpoint.clone(),
        None => format!("http://{}", local_address(file.listen.as_deref())),
    };
    let endpoint = asked.trim_end_matches('/').to_owned();
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| Exit::Usage(format!("--endpoint '{endpoint}' must be http://host:port")))?
        .to_owned();
    let url = format!("{endpoint}{path}");
    let audience = match &file.endpoint {
        Some(public) => format!("{}{path}", crate::config::parse_endpoint(public)?.as_str().trim_end_matches('/')),
        None => url.clone(),
    };
    let token = mint_server_token(&audience, Duration::from_secs(300), &key);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("no runtime")?;
    let (status, body) = runtime
        .block_on(request(method, &authority, path, &token))
        .with_context(|| format!("could not reach {url}"))?;
    if status != 200 {
        return Err(Exit::Failed(anyhow::anyhow!("{method} {url} answered {status}: {}", body.trim())));
    }
    Ok(body)
}

/// Where this node listens, for asking it: the config file's `listen` (a wildcard address
/// asked on loopback), else the default.
fn local_address(listen: Option<&str>) -> String {
    let listen = listen.unwrap_or(crate::config::DEFAULT_LISTEN);
    match listen.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_owned(),
    }
}

/// Prints the status answer as a table, columns aligned. A node whose lease ran out (or that
/// never registered) is shown as down, whatever its place in the raft membership.
fn print_status(body: &str) -> Result<(), Exit> {
    let value: Value = serde_json::from_str(body).context("the status is not JSON")?;
    println!("leader: {}  term: {}  (answered by node {})", value["leader"], value["term"], value["answered_by"]);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let mut rows = vec![["id", "roles", "address", "state", "lease (ms left)", "applied", "client"].map(String::from)];
    for node in value["nodes"].as_array().into_iter().flatten() {
        let roles: Vec<&str> = node["roles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let lease = node["lease_expires_at_ms"].as_i64().map(|at| at - now);
        let state = match lease {
            Some(left) if left > 0 => node["state"].as_str().unwrap_or("").to_owned(),
            _ => "down".to_owned(),
        };
        rows.push([
            node["id"].to_string(),
            if roles.is_empty() { "-".to_owned() } else { roles.join(",") },
            node["address"].as_str().unwrap_or("-").to_owned(),
            state,
            lease.map_or("-".to_owned(), |left| left.max(0).to_string()),
            node["applied_index"].as_u64().map_or("-".to_owned(), |i| i.to_string()),
            node["client_url"].as_str().unwrap_or("-").to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..7).map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0)).collect();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}

/// A minimal HTTP/1.1 request (the binary carries no HTTP client).
pub(crate) async fn request(method: &str, authority: &str, path: &str, token: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(authority))
        .await
        .context("timed out connecting")??;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.context("timed out")??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
    Ok((status, body.to_owned()))
}
