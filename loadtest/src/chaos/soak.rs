//! Soak: the chaos workload without faults for a long time, each node's resident memory, open
//! files, connections and bytes queued to clients sampled as it goes, REST latency percentiles
//! per interval, and a verdict on growth: a series may rise while the run warms up, but must
//! level off.

use super::check::Send;
use super::cluster::Cluster;
use serde::Serialize;
use std::time::Duration;

/// One sample of every node.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub(crate) at_s: f64,
    pub(crate) memory_bytes: Vec<Option<u64>>,
    pub(crate) open_files: Vec<Option<u64>>,
    pub(crate) connections: Vec<Option<u64>>,
    pub(crate) queued_bytes: Vec<Option<u64>>,
    /// REST sends answered in the interval before this sample: p50 and p99 in milliseconds.
    pub(crate) rest_p50_ms: Option<f64>,
    pub(crate) rest_p99_ms: Option<f64>,
}

/// Samples every node every `every` for `seconds`; `sends` gives the sends answered so far.
pub(crate) async fn sample_for(
    cluster: &Cluster,
    seconds: u64,
    every: Duration,
    mut sends: impl FnMut() -> Vec<Send>,
) -> Vec<Sample> {
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut samples = Vec::new();
    let mut next = start + every;
    let mut seen = 0;
    while next <= end {
        tokio::time::sleep_until(next).await;
        let mut sample = Sample {
            at_s: start.elapsed().as_secs_f64(),
            memory_bytes: Vec::new(),
            open_files: Vec::new(),
            connections: Vec::new(),
            queued_bytes: Vec::new(),
            rest_p50_ms: None,
            rest_p99_ms: None,
        };
        for node in 0..cluster.specs.len() {
            let stats = cluster.node_stats(node).await;
            let field = |f: fn(&serde_json::Value) -> Option<u64>| stats.as_ref().and_then(f);
            sample.memory_bytes.push(field(|s| s["process"]["memory_bytes"].as_u64()));
            sample.open_files.push(field(|s| s["process"]["open_files"].as_u64()));
            sample.connections.push(field(|s| s["connections"].as_u64()));
            sample.queued_bytes.push(field(|s| s["queued_bytes"].as_u64()));
        }
        let all = sends();
        let mut latencies: Vec<u64> =
            all[seen.min(all.len())..].iter().map(|s| s.completed_us - s.invoked_us).collect();
        seen = all.len();
        latencies.sort_unstable();
        sample.rest_p50_ms = percentile(&latencies, 0.50);
        sample.rest_p99_ms = percentile(&latencies, 0.99);
        let memory: Vec<Option<u64>> = sample.memory_bytes.iter().map(|m| m.map(|b| b >> 20)).collect();
        eprintln!(
            "soak: {:>6.0} s  memory MiB {}  open files {}  connections {}  queued bytes {}  REST p99 {:.1} ms",
            sample.at_s,
            per_node(&memory),
            per_node(&sample.open_files),
            per_node(&sample.connections),
            per_node(&sample.queued_bytes),
            sample.rest_p99_ms.unwrap_or(f64::NAN)
        );
        samples.push(sample);
        next += every;
    }
    samples
}

/// `56/51/-/58`: one value per node, `-` for a node that did not answer.
fn per_node(values: &[Option<u64>]) -> String {
    let values: Vec<String> = values.iter().map(|v| v.map_or("-".into(), |v| v.to_string())).collect();
    values.join("/")
}

fn percentile(sorted: &[u64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64) * q).round() as usize] as f64 / 1000.0)
}

/// The growth findings: one line per node and series that kept growing.
pub(crate) fn growth(samples: &[Sample]) -> Vec<String> {
    let mut findings = Vec::new();
    let nodes = samples.first().map_or(0, |s| s.memory_bytes.len());
    for node in 0..nodes {
        let series = |f: fn(&Sample) -> &Vec<Option<u64>>| -> Vec<f64> {
            samples.iter().filter_map(|s| f(s)[node]).map(|v| v as f64).collect()
        };
        let memory = series(|s| &s.memory_bytes);
        if !levels_off(&memory, 8.0 * (1 << 20) as f64) {
            findings.push(format!("node {}: memory keeps growing ({})", node + 1, thirds(&memory, 1 << 20, "MiB")));
        }
        let files = series(|s| &s.open_files);
        if !levels_off(&files, 16.0) {
            findings.push(format!("node {}: open files keep growing ({})", node + 1, thirds(&files, 1, "")));
        }
        let queued = series(|s| &s.queued_bytes);
        if !levels_off(&queued, (1 << 20) as f64) {
            findings.push(format!("node {}: queued bytes keep growing ({})", node + 1, thirds(&queued, 1, "bytes")));
        }
    }
    findings
}

/// Whether a series levels off: split in thirds, the last third's mean is at most `slack`
/// above the middle's, or rose by at most half as much as the middle rose over the first.
/// Too short a series (under 6 samples) says nothing.
pub(crate) fn levels_off(series: &[f64], slack: f64) -> bool {
    if series.len() < 6 {
        return true;
    }
    let [first, middle, last] = means_of_thirds(series);
    let late = last - middle;
    late <= slack || late <= (middle - first) / 2.0
}

fn means_of_thirds(series: &[f64]) -> [f64; 3] {
    let third = series.len() / 3;
    let mean = |part: &[f64]| part.iter().sum::<f64>() / part.len().max(1) as f64;
    [mean(&series[..third]), mean(&series[third..2 * third]), mean(&series[2 * third..])]
}

fn thirds(series: &[f64], unit: u64, name: &str) -> String {
    let [a, b, c] = means_of_thirds(series).map(|v| v / unit as f64);
    format!("means of thirds {a:.0} -> {b:.0} -> {c:.0} {name}").trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_up_and_noise_level_off_but_steady_growth_does_not() {
        let flat = [100.0, 101.0, 99.0, 100.0, 102.0, 100.0, 101.0, 99.0, 100.0];
        assert!(levels_off(&flat, 4.0));
        let warming = [10.0, 50.0, 80.0, 95.0, 100.0, 102.0, 103.0, 103.0, 104.0];
        assert!(levels_off(&warming, 1.0));
        let leaking: Vec<f64> = (0..12).map(|i| 100.0 + 10.0 * i as f64).collect();
        assert!(!levels_off(&leaking, 4.0));
        assert!(levels_off(&leaking[..5], 4.0), "too short to judge");
    }

    #[test]
    fn a_node_whose_memory_keeps_growing_is_named() {
        let samples: Vec<Sample> = (0..9)
            .map(|i| Sample {
                at_s: i as f64,
                memory_bytes: vec![Some(50 << 20), Some((50 + 20 * i) << 20)],
                open_files: vec![Some(40), Some(40)],
                connections: vec![None, None],
                queued_bytes: vec![Some(0), Some(0)],
                rest_p50_ms: None,
                rest_p99_ms: None,
            })
            .collect();
        let findings = growth(&samples);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].starts_with("node 2: memory keeps growing"), "{findings:?}");
    }
}
