//! Inter-node authentication: the cluster secret and the protocol version.
//!
//! Every node of a cluster is configured with the same secret. A client interceptor
//! ([`ClientAuth`]) adds two metadata entries to every call:
//!
//! * `x-switchboard-cluster-secret`: the secret, verbatim;
//! * `x-switchboard-protocol-version`: the sender's [`PROTOCOL_VERSION`].
//!
//! A server interceptor ([`ServerAuth`]) checks both before any handler runs, for every service:
//! a missing or wrong secret is refused with `PERMISSION_DENIED`; a missing version, or one
//! outside [`MIN_PROTOCOL_VERSION`]`..=`[`PROTOCOL_VERSION`], with `FAILED_PRECONDITION`. The
//! secret is checked first, so an outsider learns nothing about versions.
//!
//! The secret comparison runs in constant time over SHA-256 digests of the presented and the
//! expected secret, so neither its bytes nor its length leak through timing. The secret itself
//! crosses the wire in clear text: inter-node traffic belongs on a private network (or under a
//! TLS-terminating mesh); the secret keeps stray or misconfigured nodes out, it does not replace
//! transport encryption.
//!
//! Refusals are logged with `warn!` on both sides, at most once per [`WARN_INTERVAL`] per
//! [`WarnThrottle`] (a misconfigured peer retries every heartbeat), with a count of the lines
//! suppressed in between.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Metadata key carrying the cluster secret.
pub const CLUSTER_SECRET_HEADER: &str = "x-switchboard-cluster-secret";
/// Metadata key carrying the sender's protocol version, a decimal `u32`.
pub const PROTOCOL_VERSION_HEADER: &str = "x-switchboard-protocol-version";
/// The inter-node protocol version this build speaks. Bump it when a message's meaning or a
/// payload encoding (the MessagePack-encoded openraft types) changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest protocol version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// Shortest gap between two refusal warnings from one [`WarnThrottle`].
pub const WARN_INTERVAL: Duration = Duration::from_secs(5);

/// Whether `version` is one this build can read.
pub fn is_supported_version(version: u32) -> bool {
    (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version)
}

/// A secret that cannot be used as a cluster secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSecret {
    /// The secret is empty.
    #[error("the cluster secret is empty")]
    Empty,
    /// The secret has bytes outside visible ASCII (0x21..=0x7e), so it cannot travel as gRPC
    /// metadata unchanged.
    #[error("the cluster secret must be visible ASCII (no spaces or control characters)")]
    NotVisibleAscii,
}

/// The shared secret of a cluster (builds the client and server interceptors), and the
/// cluster's mutual TLS when it has one: what a node needs to call and to admit peers.
#[derive(Clone)]
pub struct ClusterSecret {
    /// The secret as it is sent.
    value: MetadataValue<Ascii>,
    /// SHA-256 of the secret, compared in constant time against the digest of what peers send.
    digest: [u8; 32],
    tls: Option<crate::ClusterTls>,
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// Validates `secret`: non-empty visible ASCII.
    pub fn new(secret: &str) -> Result<Self, InvalidSecret> {
        if secret.is_empty() {
            return Err(InvalidSecret::Empty);
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidSecret::NotVisibleAscii);
        }
        let value = MetadataValue::try_from(secret).map_err(|_| InvalidSecret::NotVisibleAscii)?;
        Ok(ClusterSecret { value, digest: Sha256::digest(secret.as_bytes()).into(), tls: None })
    }

    /// The same secret, with calls between nodes over mutual TLS.
    pub fn with_tls(mut self, tls: Option<crate::ClusterTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The cluster's mutual TLS, if any.
    pub fn tls(&self) -> Option<&crate::ClusterTls> {
        self.tls.as_ref()
    }

    /// The interceptor for outgoing calls.
    pub fn client(&self) -> ClientAuth {
        ClientAuth { secret: self.value.clone(), version: version_value(PROTOCOL_VERSION) }
    }

    /// The interceptor for incoming calls. Clones share one refusal counter and one throttle.
    pub fn server(&self) -> ServerAuth {
        ServerAuth {
            digest: self.digest,
            refusals: Arc::new(Refusals { total: AtomicU64::new(0), throttle: WarnThrottle::new(WARN_INTERVAL) }),
        }
    }
}

fn version_value(version: u32) -> MetadataValue<Ascii> {
    MetadataValue::from(version)
}

/// Client interceptor: adds the cluster secret and the protocol version to every call.
#[derive(Clone)]
pub struct ClientAuth {
    secret: MetadataValue<Ascii>,
    version: MetadataValue<Ascii>,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth").field("version", &self.version).finish_non_exhaustive()
    }
}

impl ClientAuth {
    /// Sends `version` instead of [`PROTOCOL_VERSION`]: lets tests play a node of another release.
    pub fn with_protocol_version(mut self, version: u32) -> Self {
        self.version = version_value(version);
        self
    }
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert(CLUSTER_SECRET_HEADER, self.secret.clone());
        metadata.insert(PROTOCOL_VERSION_HEADER, self.version.clone());
        Ok(request)
    }
}

/// Server interceptor: refuses calls without the cluster secret or with an unsupported
/// protocol version (see the module docs).
#[derive(Clone)]
pub struct ServerAuth {
    digest: [u8; 32],
    refusals: Arc<Refusals>,
}

struct Refusals {
    /// Calls refused since this interceptor was built.
    total: AtomicU64,
    throttle: WarnThrottle,
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAuth").field("refused", &self.refused()).finish_non_exhaustive()
    }
}

impl ServerAuth {
    /// Calls refused so far by this interceptor and its clones.
    pub fn refused(&self) -> u64 {
        self.refusals.total.load(Ordering::Relaxed)
    }

    /// Checks the metadata of one incoming call; `peer` is only used in the log line.
    pub fn check(&self, metadata: &MetadataMap, peer: Option<SocketAddr>) -> Result<(), Status> {
        let refused = match self.refusal(metadata) {
            None => return Ok(()),
            Some(status) => status,
        };
        let total = self.refusals.total.fetch_add(1, Ordering::Relaxed) + 1;
        let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        match self.refusals.throttle.check() {
            Some(suppressed) => tracing::warn!(
                %peer,
                code = ?refused.code(),
                reason = refused.message(),
                refused_total = total,
                suppressed,
                "refused an inter-node call: check that every node has the same cluster secret and a compatible release"
            ),
            None => tracing::debug!(%peer, reason = refused.message(), "refused an inter-node call"),
        }
        Err(refused)
    }

    fn refusal(&self, metadata: &MetadataMap) -> Option<Status> {
        let Some(secret) = metadata.get(CLUSTER_SECRET_HEADER) else {
            return Some(Status::permission_denied(format!("missing {CLUSTER_SECRET_HEADER}: not a cluster member")));
        };
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if !bool::from(presented.ct_eq(&self.digest)) {
            return Some(Status::permission_denied("wrong cluster secret"));
        }
        let version = metadata.get(PROTOCOL_VERSION_HEADER).and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
        match version {
            Some(v) if is_supported_version(v) => None,
            Some(v) => Some(Status::failed_precondition(format!(
                "protocol version {v} is not supported: this node speaks {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}"
            ))),
            None => Some(Status::failed_precondition(format!("missing or malformed {PROTOCOL_VERSION_HEADER}"))),
        }
    }
}

impl Interceptor for ServerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata(), request.remote_addr())?;
        Ok(request)
    }
}

/// Lets a repeated warning through at most once per interval and counts the ones held back.
#[derive(Debug)]
pub struct WarnThrottle {
    interval: Duration,
    start: Instant,
    /// Milliseconds after `start` before which warnings are held back.
    next_ms: AtomicU64,
    /// Warnings held back since the last one let through.
    suppressed: AtomicU64,
}

impl WarnThrottle {
    /// A throttle that lets the first warning through at once.
    pub fn new(interval: Duration) -> Self {
        WarnThrottle { interval, start: Instant::now(), next_ms: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// Returns `Some(held back since the last one)` if a warning may be logged now, `None` if it
    /// should be held back.
    pub fn check(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        let until = now.saturating_add(self.interval.as_millis() as u64);
        if now >= next && self.next_ms.compare_exchange(next, until, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_with(client: Option<ClientAuth>) -> Result<(), Status> {
        let server = ClusterSecret::new("s3cret").unwrap().server();
        let mut request = Request::new(());
        if let Some(mut client) = client {
            request = client.call(request).unwrap();
        }
        server.check(request.metadata(), None)
    }

    #[test]
    fn the_right_secret_and_version_pass() {
        assert!(call_with(Some(ClusterSecret::new("s3cret").unwrap().client())).is_ok());
    }

    #[test]
    fn a_missing_or_wrong_secret_is_permission_denied() {
        assert_eq!(call_with(None).unwrap_err().code(), tonic::Code::PermissionDenied);
        let wrong = ClusterSecret::new("other").unwrap().client();
        let status = call_with(Some(wrong)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), "wrong cluster secret");
    }

    #[test]
    fn an_unsupported_version_is_failed_precondition() {
        let future = ClusterSecret::new("s3cret").unwrap().client().with_protocol_version(PROTOCOL_VERSION + 1);
        assert_eq!(call_with(Some(future)).unwrap_err().code(), tonic::Code::FailedPrecondition);
        let ancient = ClusterSecret::new("s3cret").unwrap().client().with_protocol_version(0);
        assert_eq!(call_with(Some(ancient)).unwrap_err().code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn refusals_are_counted_across_clones() {
        let server = ClusterSecret::new("s3cret").unwrap().server();
        let clone = server.clone();
        assert!(clone.check(&MetadataMap::new(), None).is_err());
        assert!(server.check(&MetadataMap::new(), None).is_err());
        assert_eq!(server.refused(), 2);
    }

    #[test]
    fn secrets_must_be_visible_ascii() {
        assert_eq!(ClusterSecret::new("").unwrap_err(), InvalidSecret::Empty);
        assert_eq!(ClusterSecret::new("a b").unwrap_err(), InvalidSecret::NotVisibleAscii);
        assert_eq!(ClusterSecret::new("é").unwrap_err(), InvalidSecret::NotVisibleAscii);
        assert_eq!(format!("{:?}", ClusterSecret::new("s3cret").unwrap()), "ClusterSecret(<redacted>)");
    }

    #[test]
    fn the_throttle_lets_one_warning_through_per_interval() {
        let throttle = WarnThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.check(), Some(0));
        assert_eq!(throttle.check(), None);
        assert_eq!(throttle.check(), None);
        let open = WarnThrottle::new(Duration::ZERO);
        assert_eq!(open.check(), Some(0));
        assert_eq!(open.check(), Some(0));
    }
}
