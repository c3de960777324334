//! Run statistics that add up across connections, worker processes and steps: counters,
//! HDR histograms (sent between processes as `(value, count)` pairs), Azure's 100 ms latency
//! buckets, a per-second series, and the pass rule of Azure's performance guide.

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latencies and connect times are microseconds up to a minute.
const MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub(crate) struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist::with_precision(3)
    }
}

impl Hist {
    /// Two significant digits: small enough to keep one per second of a run.
    pub(crate) fn coarse() -> Self {
        Hist::with_precision(2)
    }

    fn with_precision(sigfig: u8) -> Self {
        Hist(Histogram::new_with_bounds(1, MAX_US, sigfig).expect("valid histogram bounds"))
    }

    pub(crate) fn record(&mut self, us: u64) {
        let _ = self.0.record(us.clamp(1, MAX_US));
    }

    pub(crate) fn merge(&mut self, other: &Hist) {
        let _ = self.0.add(&other.0);
    }

    /// What was recorded after `earlier` (a snapshot of the same histogram).
    pub(crate) fn minus(&self, earlier: &Hist) -> Hist {
        let mut rest = self.clone();
        let _ = rest.0.subtract(&earlier.0);
        rest
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` in milliseconds (0 when empty).
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() { 0.0 } else { self.0.value_at_quantile(q) as f64 / 1000.0 }
    }

    pub(crate) fn summary(&self) -> Value {
        json!({
            "count": self.count(),
            "mean_ms": if self.0.is_empty() { 0.0 } else { self.0.mean() / 1000.0 },
            "p50_ms": self.quantile_ms(0.5),
            "p90_ms": self.quantile_ms(0.9),
            "p99_ms": self.quantile_ms(0.99),
            "p999_ms": self.quantile_ms(0.999),
            "max_ms": self.quantile_ms(1.0),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct HistWire {
    sigfig: u8,
    counts: Vec<(u64, u64)>,
}

impl Serialize for Hist {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let counts = self.0.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        HistWire { sigfig: self.0.sigfig(), counts }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = HistWire::deserialize(deserializer)?;
        let mut hist = Hist::with_precision(wire.sigfig.clamp(1, 5));
        for (value, count) in wire.counts {
            let _ = hist.0.record_n(value.clamp(1, MAX_US), count);
        }
        Ok(hist)
    }
}

/// Azure's latency buckets: `<100 ms`, `100-200 ms`, …, `900-1000 ms`, `>=1 s`.
pub(crate) const BUCKETS: usize = 11;

pub(crate) fn bucket_of(latency_us: u64) -> usize {
    ((latency_us / 100_000) as usize).min(BUCKETS - 1)
}

pub(crate) fn bucket_label(bucket: usize) -> String {
    match bucket {
        0 => "<100ms".into(),
        b if b >= BUCKETS - 1 => ">=1000ms".into(),
        b => format!("{}-{}ms", b * 100, (b + 1) * 100),
    }
}

/// The counters of a run. The order of [`Counter`] is the order of [`Counters::to_array`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    /// First connection attempts.
    pub(crate) attempts: u64,
    pub(crate) connected: u64,
    pub(crate) failed: u64,
    /// Connections the server or the network ended.
    pub(crate) dropped: u64,
    /// Connections made again after a drop or a deliberate leave (churn).
    pub(crate) reconnects: u64,
    pub(crate) reconnect_failures: u64,
    /// Hub messages received by connections that never leave on purpose (they are accounted).
    pub(crate) received: u64,
    /// Hub messages received by churning connections (not accounted: they come and go).
    pub(crate) received_churning: u64,
    /// Invocations sent by clients (echo).
    pub(crate) invocations: u64,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
}

/// Names the counters for [`Recorder::add`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    Attempts,
    Connected,
    Failed,
    Dropped,
    Reconnects,
    ReconnectFailures,
    Received,
    ReceivedChurning,
    Invocations,
    BytesReceived,
    BytesSent,
}

const COUNTERS: usize = 11;

impl Counters {
    fn to_array(self) -> [u64; COUNTERS] {
        [
            self.attempts,
            self.connected,
            self.failed,
            self.dropped,
            self.reconnects,
            self.reconnect_failures,
            self.received,
            self.received_churning,
            self.invocations,
            self.bytes_received,
            self.bytes_sent,
        ]
    }

    fn from_array(values: [u64; COUNTERS]) -> Self {
        let [
            attempts,
            connected,
            failed,
            dropped,
            reconnects,
            reconnect_failures,
            received,
            received_churning,
            invocations,
            bytes_received,
            bytes_sent,
        ] = values;
        Counters {
            attempts,
            connected,
            failed,
            dropped,
            reconnects,
            reconnect_failures,
            received,
            received_churning,
            invocations,
            bytes_received,
            bytes_sent,
        }
    }

    pub(crate) fn add(&mut self, other: &Counters) {
        let mut sum = self.to_array();
        for (a, b) in sum.iter_mut().zip(other.to_array()) {
            *a += b;
        }
        *self = Counters::from_array(sum);
    }

    pub(crate) fn minus(&self, earlier: &Counters) -> Counters {
        let mut rest = self.to_array();
        for (a, b) in rest.iter_mut().zip(earlier.to_array()) {
            *a = a.saturating_sub(b);
        }
        Counters::from_array(rest)
    }

    /// Connections that failed to open or were lost, as the pass rule counts them.
    pub(crate) fn connection_errors(&self) -> u64 {
        self.failed + self.dropped + self.reconnect_failures
    }
}

/// One second of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Second {
    pub(crate) delivered: u64,
    pub(crate) latency: Hist,
}

impl Default for Second {
    fn default() -> Self {
        Second { delivered: 0, latency: Hist::coarse() }
    }
}

/// Everything a run measured at the clients.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Stats {
    pub(crate) counters: Counters,
    /// Time to open a connection (first attempts).
    pub(crate) connect: Hist,
    /// Sampled end-to-end latency: the sender's timestamp to the client's receipt.
    pub(crate) latency: Hist,
    /// The same samples in Azure's buckets.
    pub(crate) buckets: [u64; BUCKETS],
    /// Second `i` of the run is `series[i]`.
    pub(crate) series: Vec<Second>,
    /// The first thing that went wrong (a refused connection, with the status or error).
    #[serde(default)]
    pub(crate) first_error: Option<String>,
}

impl Stats {
    pub(crate) fn merge(&mut self, other: &Stats) {
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.counters.add(&other.counters);
        self.connect.merge(&other.connect);
        self.latency.merge(&other.latency);
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        if self.series.len() < other.series.len() {
            self.series.resize_with(other.series.len(), Second::default);
        }
        for (a, b) in self.series.iter_mut().zip(&other.series) {
            a.delivered += b.delivered;
            a.latency.merge(&b.latency);
        }
    }

    /// What happened after `earlier`, a snapshot of the same run (one step of a stepped run).
    pub(crate) fn minus(&self, earlier: &Stats) -> Stats {
        let mut buckets = self.buckets;
        for (a, b) in buckets.iter_mut().zip(earlier.buckets) {
            *a = a.saturating_sub(b);
        }
        let series = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| match earlier.series.get(i) {
                Some(e) => {
                    Second { delivered: s.delivered.saturating_sub(e.delivered), latency: s.latency.minus(&e.latency) }
                }
                None => s.clone(),
            })
            .collect();
        Stats {
            counters: self.counters.minus(&earlier.counters),
            connect: self.connect.minus(&earlier.connect),
            latency: self.latency.minus(&earlier.latency),
            buckets,
            series,
            first_error: self.first_error.clone(),
        }
    }

    pub(crate) fn buckets_json(&self) -> Value {
        let map: serde_json::Map<String, Value> =
            self.buckets.iter().enumerate().map(|(i, n)| (bucket_label(i), json!(n))).collect();
        Value::Object(map)
    }
}

/// What the worker's connections add to while they run; [`Recorder::snapshot`] turns it
/// into [`Stats`]. Counters are atomics (touched on every message), histograms sit behind
/// one lock (touched on sampled messages and connects only).
pub(crate) struct Recorder {
    counters: [AtomicU64; COUNTERS],
    per_second: Vec<AtomicU64>,
    samples: Mutex<Stats>,
    epoch_us: u64,
}

impl Recorder {
    /// `epoch_us` is second 0 of the series; `seconds` bounds its length.
    pub(crate) fn new(epoch_us: u64, seconds: usize) -> Self {
        Recorder {
            counters: Default::default(),
            per_second: (0..seconds).map(|_| AtomicU64::new(0)).collect(),
            samples: Mutex::new(Stats::default()),
            epoch_us,
        }
    }

    pub(crate) fn add(&self, counter: Counter, n: u64) {
        self.counters[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Keeps `error` if it is the run's first.
    pub(crate) fn error(&self, error: impl FnOnce() -> String) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.first_error.is_none() {
            samples.first_error = Some(error());
        }
    }

    fn second(&self, at_us: u64) -> usize {
        (at_us.saturating_sub(self.epoch_us) / 1_000_000) as usize
    }

    /// Counts `n` messages delivered at `now_us` in the series.
    pub(crate) fn delivered(&self, now_us: u64, n: u64) {
        if let Some(slot) = self.per_second.get(self.second(now_us)) {
            slot.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn latency(&self, now_us: u64, latency_us: u64) {
        let second = self.second(now_us);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.latency.record(latency_us);
        samples.buckets[bucket_of(latency_us)] += 1;
        if second < self.per_second.len() {
            if samples.series.len() <= second {
                samples.series.resize_with(second + 1, Second::default);
            }
            samples.series[second].latency.record(latency_us);
        }
    }

    pub(crate) fn connect_time(&self, us: u64) {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).connect.record(us);
    }

    pub(crate) fn counters(&self) -> Counters {
        Counters::from_array(std::array::from_fn(|i| self.counters[i].load(Ordering::Relaxed)))
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let mut stats = self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
        stats.counters = self.counters();
        let last = self.per_second.iter().rposition(|s| s.load(Ordering::Relaxed) > 0).map_or(0, |i| i + 1);
        if stats.series.len() < last {
            stats.series.resize_with(last, Second::default);
        }
        for (second, slot) in stats.series.iter_mut().zip(&self.per_second) {
            second.delivered = slot.load(Ordering::Relaxed);
        }
        stats
    }
}

/// The verdict of Azure's pass rule on one load level: at least 99 % of the messages arrive
/// within 1 s (a lost message is not on time) and under 1 % of connections fail.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Verdict {
    pub(crate) delivered_fraction: f64,
    /// Of the sampled messages, those under 1 s.
    pub(crate) under_1s_fraction: f64,
    /// Delivered and under 1 s: `delivered_fraction * under_1s_fraction`.
    pub(crate) on_time_fraction: f64,
    pub(crate) connection_error_fraction: f64,
    pub(crate) pass: bool,
}

pub(crate) fn judge(expected: u64, received: u64, buckets: &[u64; BUCKETS], attempts: u64, errors: u64) -> Verdict {
    let delivered_fraction = if expected == 0 { 1.0 } else { (received as f64 / expected as f64).min(1.0) };
    let samples: u64 = buckets.iter().sum();
    let under_1s_fraction = if samples == 0 { 1.0 } else { (samples - buckets[BUCKETS - 1]) as f64 / samples as f64 };
    let on_time_fraction = delivered_fraction * under_1s_fraction;
    let connection_error_fraction = if attempts == 0 { 0.0 } else { errors as f64 / attempts as f64 };
    Verdict {
        delivered_fraction,
        under_1s_fraction,
        on_time_fraction,
        connection_error_fraction,
        pass: on_time_fraction >= 0.99 && connection_error_fraction < 0.01,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_ms: impl IntoIterator<Item = u64>) -> Hist {
        let mut h = Hist::default();
        for ms in values_ms {
            h.record(ms * 1000);
        }
        h
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b * 0.002 + 0.001
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let h = hist(1..=1000);
        assert_eq!(h.count(), 1000);
        assert!(close(h.quantile_ms(0.5), 500.0), "{}", h.quantile_ms(0.5));
        assert!(close(h.quantile_ms(0.9), 900.0));
        assert!(close(h.quantile_ms(0.99), 990.0));
        assert!(close(h.quantile_ms(0.999), 999.0));
        assert!(close(h.quantile_ms(1.0), 1000.0));
        assert_eq!(Hist::default().quantile_ms(0.99), 0.0);
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_everything() {
        let mut merged = hist(1..=500);
        merged.merge(&hist(501..=1000));
        let whole = hist(1..=1000);
        assert_eq!(merged.count(), whole.count());
        for q in [0.5, 0.9, 0.99, 0.999] {
            assert_eq!(merged.quantile_ms(q), whole.quantile_ms(q));
        }
        // Merging a coarse (per-second) histogram into a fine one keeps every count.
        let mut coarse = Hist::coarse();
        coarse.record(5_000);
        merged.merge(&coarse);
        assert_eq!(merged.count(), 1001);
    }

    #[test]
    fn histograms_survive_the_trip_between_processes() {
        let h = hist([1, 2, 3, 50, 999, 1500]);
        let back: Hist = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back.count(), h.count());
        for q in [0.0, 0.5, 0.9, 1.0] {
            assert_eq!(back.quantile_ms(q), h.quantile_ms(q));
        }
        let coarse: Hist = serde_json::from_str(&serde_json::to_string(&Hist::coarse()).unwrap()).unwrap();
        assert_eq!(coarse.0.sigfig(), 2);
    }

    #[test]
    fn a_later_snapshot_minus_an_earlier_one_is_what_happened_between() {
        let earlier = hist(1..=100);
        let mut later = earlier.clone();
        later.merge(&hist(900..=999));
        let between = later.minus(&earlier);
        assert_eq!(between.count(), 100);
        assert!(between.quantile_ms(0.0) >= 899.0);
    }

    #[test]
    fn buckets_are_100_ms_wide_up_to_one_second() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(99_999), 0);
        assert_eq!(bucket_of(100_000), 1);
        assert_eq!(bucket_of(950_000), 9);
        assert_eq!(bucket_of(999_999), 9);
        assert_eq!(bucket_of(1_000_000), 10);
        assert_eq!(bucket_of(59_000_000), 10);
        let labels: Vec<String> = (0..BUCKETS).map(bucket_label).collect();
        assert_eq!(labels[0], "<100ms");
        assert_eq!(labels[1], "100-200ms");
        assert_eq!(labels[9], "900-1000ms");
        assert_eq!(labels[10], ">=1000ms");
    }

    #[test]
    fn the_recorder_fills_counters_buckets_and_the_series() {
        let epoch = 1_000_000_000;
        let recorder = Recorder::new(epoch, 10);
        recorder.add(Counter::Received, 5);
        recorder.add(Counter::Attempts, 2);
        recorder.delivered(epoch + 500_000, 3);
        recorder.delivered(epoch + 2_100_000, 2);
        recorder.latency(epoch + 2_100_000, 150_000);
        recorder.latency(epoch + 2_200_000, 2_000_000);
        // Outside the series: counted in the totals, not in a second.
        recorder.delivered(epoch + 60_000_000, 1);
        let stats = recorder.snapshot();
        assert_eq!(stats.counters.received, 5);
        assert_eq!(stats.counters.attempts, 2);
        assert_eq!(stats.series.len(), 3);
        assert_eq!(stats.series.iter().map(|s| s.delivered).collect::<Vec<_>>(), [3, 0, 2]);
        assert_eq!(stats.series[2].latency.count(), 2);
        assert_eq!(stats.buckets[1], 1);
        assert_eq!(stats.buckets[10], 1);
    }

    #[test]
    fn stats_merge_and_subtract_field_by_field() {
        let a = Recorder::new(0, 5);
        a.add(Counter::Received, 10);
        a.delivered(1_500_000, 10);
        a.latency(1_500_000, 1_000);
        let b = Recorder::new(0, 5);
        b.add(Counter::Received, 4);
        b.add(Counter::Dropped, 1);
        b.delivered(3_500_000, 4);
        let mut total = a.snapshot();
        total.merge(&b.snapshot());
        assert_eq!(total.counters.received, 14);
        assert_eq!(total.counters.dropped, 1);
        assert_eq!(total.series.iter().map(|s| s.delivered).collect::<Vec<_>>(), [0, 10, 0, 4]);
        assert_eq!(total.latency.count(), 1);
        let after = total.minus(&a.snapshot());
        assert_eq!(after.counters.received, 4);
        assert_eq!(after.latency.count(), 0);
        assert_eq!(after.series[1].delivered, 0);
        assert_eq!(after.series[3].delivered, 4);
        let wire: Stats = serde_json::from_str(&serde_json::to_string(&total).unwrap()).unwrap();
        assert_eq!(wire.counters, total.counters);
        assert_eq!(wire.buckets, total.buckets);
    }

    fn buckets(under: u64, over: u64) -> [u64; BUCKETS] {
        let mut b = [0; BUCKETS];
        b[0] = under;
        b[BUCKETS - 1] = over;
        b
    }

    #[test]
    fn the_pass_rule_needs_99_percent_on_time_and_under_1_percent_connection_errors() {
        assert!(judge(1000, 1000, &buckets(99, 1), 100, 0).pass);
        assert!(!judge(1000, 1000, &buckets(98, 2), 100, 0).pass);
        // Lost messages are not on time.
        assert!(judge(1000, 990, &buckets(100, 0), 100, 0).pass);
        let lossy = judge(1000, 989, &buckets(100, 0), 100, 0);
        assert!(!lossy.pass);
        assert!((lossy.on_time_fraction - 0.989).abs() < 1e-9);
        // Both at once: 99.5 % delivered and 99.5 % of those on time is 99.0025 %.
        assert!(judge(1000, 995, &buckets(995, 5), 100, 0).pass);
        assert!(!judge(1000, 995, &buckets(990, 10), 100, 0).pass);
        // Connection errors: 0.9 % passes, 1 % fails.
        assert!(judge(10, 10, &buckets(10, 0), 1000, 9).pass);
        assert!(!judge(10, 10, &buckets(10, 0), 1000, 10).pass);
        // Nothing expected, nothing sampled: nothing failed.
        assert!(judge(0, 0, &[0; BUCKETS], 0, 0).pass);
        // Everything lost.
        assert!(!judge(10, 0, &[0; BUCKETS], 10, 0).pass);
    }
}
