//! No sticky sessions (G2): a transport request whose connection belongs to another node is
//! passed to that node. The owner is read from the connection id inside the `id` parameter
//! (the owner alone checks the token). Plain HTTP requests (Server-Sent Events, Long Polling,
//! sends, deletes) are proxied as they are, response streamed back; a WebSocket upgrade is
//! proxied as an upgrade, then the two sockets are spliced.

use crate::EdgeState;
use crate::request::refuse;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::OnceLock;
use switchboard_hub::owner_of;

/// The HTTP address of node `id` if it is live (set in a cluster).
pub type PeerDirectory = dyn Fn(u64) -> Option<String> + Send + Sync;

/// The owner's address when the request's `id` names a connection of another node.
pub(crate) fn foreign_owner(state: &EdgeState, id: &str) -> Option<Result<String, Response>> {
    let peers = state.peers.as_ref()?;
    let connection_id = id.split('~').next().unwrap_or(id);
    let owner = owner_of(connection_id)?;
    if owner == state.config.node_id {
        return None;
    }
    Some(peers(owner).ok_or_else(|| refuse(StatusCode::NOT_FOUND, "the node owning this connection is gone")))
}

fn client() -> &'static Client<HttpConnector, Body> {
    static CLIENT: OnceLock<Client<HttpConnector, Body>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

/// Sends `request` to the node at `address` and returns its answer (streamed).
pub(crate) async fn proxy(address: &str, mut request: Request) -> Response {
    let path = request.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    let Ok(uri) = format!("http://{address}{path}").parse::<Uri>() else {
        return refuse(StatusCode::BAD_GATEWAY, "invalid owner address");
    };
    *request.uri_mut() = uri;
    if let Ok(host) = HeaderValue::from_str(address) {
        request.headers_mut().insert(header::HOST, host);
    }
    let upgrade = fastwebsockets::upgrade::is_upgrade_request(&request);
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut request));
    match client().request(request).await {
        Ok(mut response) => {
            if let (Some(client_side), StatusCode::SWITCHING_PROTOCOLS) = (client_side, response.status()) {
                let owner_side = hyper::upgrade::on(&mut response);
                tokio::spawn(async move {
                    if let (Ok(client), Ok(owner)) = (client_side.await, owner_side.await) {
                        let _ =
                            tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(owner)).await;
                    }
                });
            }
            response.map(Body::new)
        }
        Err(error) => refuse(StatusCode::BAD_GATEWAY, format!("the owning node did not answer: {error}")),
    }
}

/// Either the forwarded answer, or `None` when this node owns the connection.
pub(crate) async fn forward_if_foreign(
    state: &EdgeState,
    id: Option<&str>,
    request: Request,
) -> Result<Response, Request> {
    let Some(id) = id else { return Err(request) };
    match foreign_owner(state, id) {
        None => Err(request),
        Some(Err(response)) => Ok(response.into_response()),
        Some(Ok(address)) => Ok(proxy(&address, request).await),
    }
}
