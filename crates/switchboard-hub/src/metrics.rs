//! Counters and histograms that every part of a node updates and its metrics endpoint reads.
//!
//! Labels are closed enums (transport, protocol, route, reason), never user, group or
//! connection ids, so the number of series stays bounded whatever clients do. Everything is a
//! relaxed atomic: a metric may lag a concurrent update, never lose it.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Declares a label enum with its index and Prometheus label value.
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }
    };
}

label_enum!(
    /// How a client is connected.
    Transport { WebSockets => "websockets", ServerSentEvents => "sse", LongPolling => "longpolling" }
);

label_enum!(
    /// What kind of send a delivered message came from (the `route` label).
    SendKind {
        Broadcast => "broadcast",
        User => "user",
        Group => "group",
        Connection => "connection",
    }
);

label_enum!(
    /// Why a connection ended.
    Disconnect {
        /// The client closed it (close frame, DELETE, SignalR close message).
        ClientClosed => "client_closed",
        /// The service closed it: a REST close, a drain, a slow consumer, a protocol error.
        ServerClosed => "server_closed",
        /// Nothing arrived within the client timeout.
        Timeout => "timeout",
        /// The socket or the polling client went away without a close.
        Lost => "lost",
    }
);

label_enum!(
    /// Why a connection attempt was refused before it was established.
    ConnectFailure {
        /// Missing, expired or badly signed access token (401), or a forbidden transport (403).
        Unauthorized => "unauthorized",
        /// The connection id is unknown or already ended (404).
        UnknownConnection => "unknown_connection",
        /// The connection id is already connected (409) or used with the wrong transport.
        Conflict => "conflict",
        /// The handshake was invalid or did not arrive in time.
        Handshake => "handshake",
        /// The user already holds its maximum of connections on this node (429).
        UserLimit => "user_limit",
    }
);

/// One counter per value of a label enum.
#[derive(Debug)]
pub struct Counters<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Counters<N> {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> Counters<N> {
    pub fn add(&self, index: usize, n: u64) {
        self.0[index].fetch_add(n, Ordering::Relaxed);
    }

    /// For gauges kept in counters (connections open).
    pub fn sub(&self, index: usize, n: u64) {
        self.0[index].fetch_sub(n, Ordering::Relaxed);
    }

    pub fn get(&self, index: usize) -> u64 {
        self.0[index].load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of every latency histogram: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram with the fixed [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    buckets: Counters<15>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets.add(slot, 1);
        self.sum_nanos.fetch_add(elapsed.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        (0..=LATENCY_BUCKETS.len()).map(|slot| self.buckets.get(slot)).sum()
    }

    /// Writes the `_bucket`, `_sum` and `_count` series; `labels` is `key="value",…` or empty.
    pub fn write(&self, out: &mut String, name: &str, labels: &str) {
        let separator = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (slot, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets.get(slot);
            let _ = writeln!(out, "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets.get(LATENCY_BUCKETS.len());
        let _ = writeln!(out, "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
pub fn write_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.write(&mut out, "x_seconds", "route=\"a\"");
        assert!(out.contains("x_seconds_bucket{route=\"a\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{route=\"a\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{route=\"a\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{route=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count{route=\"a\"} 3\n"), "{out}");
        assert_eq!(h.count(), 3);
    }
}
