//! Mutual TLS between nodes: every node presents a certificate signed by the cluster's CA and
//! accepts only peers that do, on raft, admin and fan-out alike. The cluster secret stays a
//! second factor on every call.

use std::fmt;
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// This node's side of mutual TLS: the server configuration (client certificates required)
/// and the client configuration for calls to peers.
#[derive(Clone)]
pub struct ClusterTls {
    /// For the node's gRPC port: presents the node's certificate, requires a client
    /// certificate signed by the cluster CA.
    pub server: Arc<rustls::ServerConfig>,
    client: ClientTlsConfig,
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterTls(<certificates>)")
    }
}

impl ClusterTls {
    /// `server` is the port's configuration; the client side presents `cert_pem`/`key_pem`,
    /// trusts `ca_pem`, and checks that a peer's certificate names `server_name` (when given)
    /// instead of the host it dialed: nodes reached by pod IP can share one name.
    pub fn new(
        server: Arc<rustls::ServerConfig>,
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
        server_name: Option<&str>,
    ) -> ClusterTls {
        let mut client = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(cert_pem, key_pem));
        if let Some(name) = server_name {
            client = client.domain_name(name);
        }
        ClusterTls { server, client }
    }
}

/// The endpoint of the peer at `addr` (`host:port`, or a URL): `https` with the cluster's TLS
/// when there is one (the peer's certificate must name `host`), else `http`.
pub fn peer_endpoint(addr: &str, tls: Option<&ClusterTls>) -> Result<Endpoint, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = if addr.contains("://") { addr.to_owned() } else { format!("{scheme}://{addr}") };
    let endpoint = Endpoint::from_shared(uri)?;
    match tls {
        Some(tls) => endpoint.tls_config(tls.client.clone()),
        None => Ok(endpoint),
    }
}
