//! [`Admission`]: caps on the TCP connections the public port holds, in total and per source
//! address, so a flood of idle sockets cannot take every file descriptor: the internal endpoint
//! (health, metrics), raft, fan-out and upstream calls keep the descriptors left over.
//!
//! A [`Ticket`] stands for one admitted socket; the socket is counted until every holder of its
//! ticket is gone (the HTTP connection, and a WebSocket task that took the socket over).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::rate::MessageRate;

/// Addresses whose connect rate is remembered before idle ones are forgotten.
const MAX_REMEMBERED_ADDRESSES: usize = 65_536;

/// See the module docs. `0` turns a cap off.
#[derive(Debug, Default)]
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    /// New sockets one address may open per second (0: no cap).
    max_rate_per_address: u32,
    rates: Mutex<HashMap<IpAddr, MessageRate>>,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Sockets refused because the node held `max_total`.
    pub refused_node_limit: AtomicU64,
    /// Sockets refused because their address held `max_per_address`.
    pub refused_address_limit: AtomicU64,
    /// Sockets refused because their address opened more than `max_rate_per_address` a second.
    pub refused_rate_limit: AtomicU64,
}

/// Why a socket was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NodeLimit,
    AddressLimit,
    RateLimit,
}

impl Refusal {
    /// The answer written to a refused socket before it is closed: Azure's `ErrorDetail` shape.
    pub fn http_response(self) -> Vec<u8> {
        let (status, code, message) = match self {
            Refusal::NodeLimit => {
                ("503 Service Unavailable", "Error.Connection.NodeLimit", "the node holds its maximum of connections")
            }
            Refusal::AddressLimit => (
                "429 Too Many Requests",
                "Error.Connection.AddressLimit",
                "this address holds its maximum of connections",
            ),
            Refusal::RateLimit => {
                ("429 Too Many Requests", "Error.Connection.RateLimit", "this address opens connections too fast")
            }
        };
        let body = format!(r#"{{"code":"{code}","message":"{message}","target":null,"details":[]}}"#);
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nx-ms-error-code: {code}\r\nRetry-After: 1\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// One admitted socket; cloned into whatever holds the socket (see the module docs).
#[derive(Debug, Clone)]
pub struct Ticket {
    _held: Arc<Admitted>,
}

#[derive(Debug)]
struct Admitted {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let admission = &self.admission;
        admission.total.fetch_sub(1, Ordering::Relaxed);
        if admission.max_per_address > 0 {
            let mut counts = admission.per_address.lock();
            if let Some(count) = counts.get_mut(&self.address) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&self.address);
                }
            }
        }
    }
}

impl Admission {
    /// Caps on sockets held in total and per address, and opened per second per address.
    pub fn new(max_total: usize, max_per_address: usize, per_second: u32) -> Arc<Self> {
        Arc::new(Admission { max_total, max_per_address, max_rate_per_address: per_second, ..Admission::default() })
    }

    /// Takes one from `address`'s bucket; `false` when it opens sockets too fast. Full buckets
    /// are forgotten once many addresses are remembered, so the table stays bounded.
    fn within_rate(&self, address: IpAddr) -> bool {
        if self.max_rate_per_address == 0 {
            return true;
        }
        let now = tokio::time::Instant::now();
        let mut rates = self.rates.lock();
        if rates.len() >= MAX_REMEMBERED_ADDRESSES {
            rates.retain(|_, bucket| !bucket.is_full(now));
        }
        rates.entry(address).or_insert_with(|| MessageRate::full(self.max_rate_per_address)).allow(now)
    }

    /// Admits a socket from `address`, or says which cap it hit.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, Refusal> {
        if !self.within_rate(address) {
            self.refused_rate_limit.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::RateLimit);
        }
        let total = self.total.fetch_add(1, Ordering::Relaxed);
        if self.max_total > 0 && total >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            self.refused_node_limit.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::NodeLimit);
        }
        if self.max_per_address > 0 {
            let mut counts = self.per_address.lock();
            let count = counts.entry(address).or_default();
            if *count >= self.max_per_address {
                drop(counts);
                self.total.fetch_sub(1, Ordering::Relaxed);
                self.refused_address_limit.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::AddressLimit);
            }
            *count += 1;
        }
        Ok(Ticket { _held: Arc::new(Admitted { admission: self.clone(), address }) })
    }

    /// Sockets held now.
    pub fn held(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_total_and_per_address_and_frees_on_drop() {
        let admission = Admission::new(3, 2, 0);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let a1 = admission.admit(a).unwrap();
        let a2 = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::AddressLimit);
        let b1 = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).unwrap_err(), Refusal::NodeLimit);
        assert_eq!(admission.held(), 3);
        let shared = a1.clone();
        drop(a1);
        assert_eq!(admission.held(), 3, "a clone still holds the socket");
        drop(shared);
        assert!(admission.admit(a).is_ok(), "freed once every holder is gone");
        drop((a2, b1));
        assert_eq!(admission.refused_address_limit.load(Ordering::Relaxed), 1);
        assert_eq!(admission.refused_node_limit.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn refusals_carry_an_error_detail_body_of_the_declared_length() {
        for refusal in [Refusal::NodeLimit, Refusal::AddressLimit, Refusal::RateLimit] {
            let response = refusal.http_response();
            let text = std::str::from_utf8(&response).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let declared: usize =
                head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
            assert_eq!(declared, body.len(), "{head}");
            let detail: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(detail["code"].as_str().unwrap().starts_with("Error.Connection."));
        }
    }

    #[test]
    fn zero_turns_caps_off() {
        let admission = Admission::new(0, 0, 0);
        let tickets: Vec<Ticket> = (0..100).map(|_| admission.admit("::1".parse().unwrap()).unwrap()).collect();
        assert_eq!(admission.held(), 100);
        drop(tickets);
        assert_eq!(admission.held(), 0);
    }

    #[test]
    fn caps_the_connect_rate_per_address() {
        let admission = Admission::new(0, 0, 3);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let tickets: Vec<Ticket> = (0..3).map(|_| admission.admit(a).unwrap()).collect();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::RateLimit, "a burst of 3, then refused");
        assert!(admission.admit(b).is_ok(), "another address has its own bucket");
        assert_eq!(admission.refused_rate_limit.load(Ordering::Relaxed), 1);
        drop(tickets);
    }
}
