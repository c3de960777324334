//! TLS with rustls (the ring provider): the public port's certificate, which is re-read when
//! its files change or on SIGHUP (cert-manager renews a Secret in place), and mutual TLS
//! between nodes (read at start).

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use switchboard_grpc::ClusterTls;

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Mutual TLS between nodes: the node's certificate for both sides, peers verified against
/// the CA in `ca` (client certificates required on the gRPC port) and, with `server_name`,
/// against that name rather than the address dialed.
pub fn cluster_tls(files: &KeyPairFiles, ca: &Path, server_name: Option<&str>) -> Result<ClusterTls, String> {
    let (cert_pem, key_pem) = read_key_pair(files)?;
    let key = certified(&files.cert, cert_pem.clone(), key_pem.clone())?;
    let ca_pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
    let roots = Arc::new(load_roots(ca, &ca_pem)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    server.alpn_protocols = vec![b"h2".to_vec()];
    if let Some(name) = server_name {
        rustls::pki_types::ServerName::try_from(name).map_err(|_| format!("'{name}' is not a DNS name"))?;
    }
    Ok(ClusterTls::new(Arc::new(server), &cert_pem, &key_pem, &ca_pem, server_name))
}

/// The PEM text of a certificate file and its key file.
type Pem = (Vec<u8>, Vec<u8>);

/// The PEM text of both files, read once (the reloader compares it).
fn read_key_pair(files: &KeyPairFiles) -> Result<Pem, String> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    Ok((read(&files.cert)?, read(&files.key)?))
}

fn certified(cert_path: &Path, chain: Vec<u8>, key: Vec<u8>) -> Result<CertifiedKey, String> {
    let chain = certificates(cert_path, &chain)?;
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| format!("no private key in the key file for {}: {e}", cert_path.display()))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("the key does not fit the certificate {}: {e}", cert_path.display()))
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(chain)
}

/// The CA certificates of a PEM file, as roots to verify peers against.
fn load_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, pem)? {
        roots.add(cert).map_err(|e| format!("{} holds a certificate that is no CA: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The public port's certificate. Handshakes read the current one; [`ServedCertificate::reload`]
/// replaces it when the files changed.
#[derive(Debug)]
pub struct ServedCertificate {
    files: KeyPairFiles,
    /// The certificate served, and the files' text it was made from.
    current: parking_lot::RwLock<(Arc<CertifiedKey>, Pem)>,
}

impl ServedCertificate {
    pub fn load(files: &KeyPairFiles) -> Result<Arc<ServedCertificate>, String> {
        let pem = read_key_pair(files)?;
        let key = certified(&files.cert, pem.0.clone(), pem.1.clone())?;
        Ok(Arc::new(ServedCertificate {
            files: files.clone(),
            current: parking_lot::RwLock::new((Arc::new(key), pem)),
        }))
    }

    /// Re-reads the files: `Ok(true)` when a new certificate is now served, `Ok(false)` when
    /// they did not change; a pair that cannot be used is an error and the current one stays.
    pub fn reload(&self) -> Result<bool, String> {
        let pem = read_key_pair(&self.files)?;
        if self.current.read().1 == pem {
            return Ok(false);
        }
        let key = certified(&self.files.cert, pem.0.clone(), pem.1.clone())?;
        *self.current.write() = (Arc::new(key), pem);
        Ok(true)
    }

    /// The TLS acceptor of the public port (HTTP/1.1; no client certificates).
    pub fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().0.clone())
    }
}
