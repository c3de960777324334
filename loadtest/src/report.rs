//! Counters and latency histograms shared by the connections of a run.

use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What every connection task adds to.
pub(crate) struct Counters {
    pub(crate) attempts: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) bytes: AtomicU64,
    /// Connect time in microseconds.
    pub(crate) connect_us: Mutex<Histogram<u64>>,
    /// End-to-end latency in microseconds (REST accept to client receive).
    pub(crate) latency_us: Mutex<Histogram<u64>>,
}

impl Counters {
    pub(crate) fn new() -> Self {
        let histogram = || Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"));
        Self {
            attempts: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            connect_us: histogram(),
            latency_us: histogram(),
        }
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record(histogram: &Mutex<Histogram<u64>>, value_us: u64) {
        if let Ok(mut h) = histogram.lock() {
            let _ = h.record(value_us.max(1));
        }
    }
}

/// Percentiles of a histogram in milliseconds.
pub(crate) fn percentiles(histogram: &Mutex<Histogram<u64>>) -> serde_json::Value {
    let h = histogram.lock().expect("not poisoned");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    serde_json::json!({
        "count": h.len(),
        "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0,
    })
}
