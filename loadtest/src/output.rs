//! What a run shows and leaves behind: a live progress line on stderr (redrawn in place on
//! a terminal, a plain line every few seconds otherwise), and from the JSON report a
//! Markdown summary and SVG plots of throughput and latency over time.

use crate::Args;
use crate::stats::{BUCKETS, bucket_label};
use crate::worker::FleetState;
use anyhow::Context;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How far the current phase has come.
pub(crate) enum Meter {
    /// Connections that opened or failed.
    Connections,
    /// REST requests made since `base`.
    Sent { sent: Arc<AtomicU64>, base: u64 },
    /// Deliveries since `base`.
    Received { base: u64 },
    /// Seconds elapsed.
    Time { since: Instant, seconds: f64 },
}

/// The phase a run is in, for the display.
pub(crate) struct Progress {
    phase: Mutex<(String, Meter, u64)>,
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress { phase: Mutex::new((String::new(), Meter::Connections, 0)) }
    }

    pub(crate) fn set(&self, label: String, meter: Meter, total: u64) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = (label, meter, total);
    }
}

/// The running display; `finish` ends it.
pub(crate) struct Display {
    task: tokio::task::JoinHandle<()>,
    tty: bool,
}

impl Display {
    pub(crate) fn finish(self) {
        self.task.abort();
        if self.tty {
            eprintln!();
        }
    }
}

pub(crate) fn display(
    progress: Arc<Progress>,
    fleet: Option<watch::Receiver<FleetState>>,
    started: Instant,
) -> Display {
    let tty = std::io::stderr().is_terminal();
    let every = if tty { Duration::from_millis(250) } else { Duration::from_secs(5) };
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut last = (Instant::now(), 0u64);
        loop {
            tick.tick().await;
            let counters = fleet.as_ref().map(|f| f.borrow().counters()).unwrap_or_default();
            let now = Instant::now();
            let rate = counters.received.saturating_sub(last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, counters.received);
            let (label, done, total) = {
                let phase = progress.phase.lock().unwrap_or_else(|e| e.into_inner());
                let (label, meter, total) = &*phase;
                let (done, total) = match meter {
                    Meter::Connections => ((counters.connected + counters.failed) as f64, *total as f64),
                    Meter::Sent { sent, base } => {
                        (sent.load(Ordering::Relaxed).saturating_sub(*base) as f64, *total as f64)
                    }
                    Meter::Received { base } => (counters.received.saturating_sub(*base) as f64, *total as f64),
                    Meter::Time { since, seconds } => (since.elapsed().as_secs_f64().min(*seconds), *seconds),
                };
                (label.clone(), done, total)
            };
            let line = format!(
                "{:>6.1}s {label:<26} {} {:.0}/{:.0} | conns {} failed {} dropped {} reconnects {} | received {} ({:.0}/s)",
                started.elapsed().as_secs_f64(),
                bar(done, total),
                done,
                total,
                counters.connected,
                counters.failed,
                counters.dropped,
                counters.reconnects,
                counters.received,
                rate,
            );
            if tty {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
        }
    });
    Display { task, tty }
}

fn bar(done: f64, total: f64) -> String {
    const WIDTH: usize = 20;
    let filled = if total > 0.0 { ((done / total).clamp(0.0, 1.0) * WIDTH as f64).round() as usize } else { 0 };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(WIDTH - filled))
}

/// Writes the report, the Markdown summary and the plots the options ask for.
/// Which way a ratio to the baseline is good: every ratio is Switchboard's figure over the
/// floor's, efficiencies inverted so that higher is better, except p99 latency.
pub(crate) fn better(ratio: &str) -> &'static str {
    if ratio == "p99_latency" { "lower" } else { "higher" }
}

/// The run in one line, and whether it passed: the verdict, the scenario, what was delivered
/// and how fast, connection failures and the first error.
pub(crate) fn verdict_line(report: &Value) -> (bool, String) {
    let result = &report["result"];
    let pass = result["verdict"]["pass"].as_bool().unwrap_or(false);
    let mut line = format!(
        "{} {}: {} of {} connected ({} failed, {} dropped)",
        if pass { "PASS" } else { "FAIL" },
        report["scenario"].as_str().unwrap_or("run"),
        number(&result["connected"]),
        number(&result["attempts"]),
        number(&result["failed"]),
        number(&result["dropped"]),
    );
    if result["deliveries_expected"].is_number() {
        let _ = write!(
            line,
            "; {} of {} deliveries ({} lost), {}/s, p99 {} ms",
            number(&result["deliveries_received"]),
            number(&result["deliveries_expected"]),
            number(&result["deliveries_lost"]),
            number(&result["delivered_per_second"]),
            number(&result["latency"]["p99_ms"]),
        );
    }
    if let Some(rate) = result["highest_passing_rate"].as_f64() {
        let _ = write!(line, "; highest passing rate {rate}/s");
    }
    if let Some(ratios) = report["ratio_to_baseline"].as_object() {
        let listed: Vec<String> = ratios
            .iter()
            .filter(|(_, v)| v.is_number())
            .map(|(k, v)| format!("{k} {} ({} is better)", number(v), better(k)))
            .collect();
        let _ = write!(line, "; vs the baseline: {}", listed.join(", "));
    }
    if let Some(error) = result["first_error"].as_str() {
        let _ = write!(line, "; first error: {error}");
    }
    (pass, line)
}

pub(crate) fn write_all(report: &Value, args: &Args) -> anyhow::Result<()> {
    let write = |path: &std::path::Path, text: String| -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    if let Some(path) = args.report.as_ref().filter(|path| path.as_os_str() != "-") {
        write(path, serde_json::to_string_pretty(report)?)?;
    }
    if let Some(path) = &args.markdown {
        write(path, markdown(report))?;
    }
    if let Some(dir) = &args.plots {
        let runs = [("switchboard", &report["result"], "#1f77b4"), ("baseline", &report["baseline"], "#7f7f7f")];
        let throughput: Vec<Line> = runs
            .iter()
            .filter(|(_, r, _)| r.is_object())
            .map(|(name, r, color)| Line {
                name: format!("{name} delivered/s"),
                color,
                points: points(r, |s| s["delivered"].as_f64()),
            })
            .collect();
        write(&dir.join("throughput.svg"), chart("Delivered messages per second", "messages/s", &throughput))?;
        let result = &report["result"];
        let latency: Vec<Line> = [("p50", "#2ca02c"), ("p90", "#ff7f0e"), ("p99", "#d62728")]
            .into_iter()
            .map(|(q, color)| Line {
                name: format!("{q} latency"),
                color,
                points: points(result, |s| s["latency"][format!("{q}_ms")].as_f64()),
            })
            .collect();
        write(&dir.join("latency.svg"), chart("End-to-end latency per second", "ms", &latency))?;
    }
    Ok(())
}

fn points(result: &Value, y: impl Fn(&Value) -> Option<f64>) -> Vec<(f64, f64)> {
    let empty = Vec::new();
    let series = result["series"].as_array().unwrap_or(&empty);
    series.iter().filter_map(|s| Some((s["second"].as_f64()?, y(s)?))).collect()
}

fn number(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && (f.abs() >= 100.0 || f.fract() == 0.0) => format!("{f:.0}"),
            Some(f) if n.is_f64() => format!("{f:.3}"),
            _ => n.to_string(),
        },
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The Markdown summary of a report.
pub(crate) fn markdown(report: &Value) -> String {
    let mut md = String::new();
    let result = &report["result"];
    let baseline = &report["baseline"];
    let ratios = &report["ratio_to_baseline"];
    let _ = writeln!(md, "# Load test: {}\n", number(&report["scenario"]));
    let m = &report["machine"];
    let _ = writeln!(
        md,
        "Machine: {} CPUs ({}), {:.1} GiB memory. Target: {}.\n",
        number(&m["cpus"]),
        number(&m["cpu_model"]),
        m["memory_bytes"].as_f64().unwrap_or(0.0) / f64::from(1u32 << 30),
        number(&report["target"])
    );
    let _ = writeln!(md, "## Configuration\n\n| option | value |\n|---|---|");
    if let Some(config) = report["config"].as_object() {
        for (key, value) in config.iter().filter(|(_, v)| !v.is_null()) {
            let _ = writeln!(
                md,
                "| {key} | {} |",
                if value.is_object() || value.is_array() { value.to_string() } else { number(value) }
            );
        }
    }
    let with_baseline = baseline.is_object();
    let _ = writeln!(md, "\n## Results\n");
    if with_baseline {
        let _ = writeln!(md, "| measure | switchboard | baseline |\n|---|---|---|");
    } else {
        let _ = writeln!(md, "| measure | value |\n|---|---|");
    }
    let rows: [(&str, &[&str]); 25] = [
        ("connections opened", &["connected"]),
        ("connection attempts", &["attempts"]),
        ("failed", &["failed"]),
        ("dropped", &["dropped"]),
        ("reconnects", &["reconnects"]),
        ("new connections/s", &["connections_per_second"]),
        ("connect time p99 (ms)", &["connect_time", "p99_ms"]),
        ("server bytes per connection", &["server_bytes_per_connection"]),
        ("server CPU µs per new connection", &["server_cpu_us_per_connection"]),
        ("messages sent", &["messages_sent"]),
        ("REST sends accepted/s", &["rest_sends_per_second"]),
        ("REST call p99 (ms)", &["rest_latency", "p99_ms"]),
        ("deliveries expected", &["deliveries_expected"]),
        ("deliveries received", &["deliveries_received"]),
        ("deliveries lost", &["deliveries_lost"]),
        ("deliveries to churning connections", &["deliveries_to_churning"]),
        ("delivered/s", &["delivered_per_second"]),
        ("peak delivered in one second", &["peak_delivered_per_second"]),
        ("latency p50 (ms)", &["latency", "p50_ms"]),
        ("latency p90 (ms)", &["latency", "p90_ms"]),
        ("latency p99 (ms)", &["latency", "p99_ms"]),
        ("latency p99.9 (ms)", &["latency", "p999_ms"]),
        ("server CPU µs per delivery", &["server_cpu_us_per_delivery"]),
        ("bytes received by clients", &["bytes_received"]),
        ("highest passing rate", &["highest_passing_rate"]),
    ];
    let get = |v: &Value, path: &[&str]| path.iter().fold(v, |v, k| &v[*k]).clone();
    for (name, path) in rows {
        let value = get(result, path);
        if value.is_null() && get(baseline, path).is_null() {
            continue;
        }
        if with_baseline {
            let _ = writeln!(md, "| {name} | {} | {} |", number(&value), number(&get(baseline, path)));
        } else {
            let _ = writeln!(md, "| {name} | {} |", number(&value));
        }
    }
    if let Some(ratios) = ratios.as_object() {
        let _ = writeln!(
            md,
            "\n## Switchboard as a ratio of the baseline (1 = as good as the floor)\n\n| measure | ratio | better |\n|---|---|---|"
        );
        for (key, value) in ratios {
            let _ = writeln!(md, "| {key} | {} | {} |", number(value), better(key));
        }
    }
    if result["latency_buckets"].is_object() {
        let _ = writeln!(md, "\n## Latency buckets (sampled messages)\n\n| bucket | messages |\n|---|---|");
        for b in 0..BUCKETS {
            let label = bucket_label(b);
            let _ = writeln!(md, "| {label} | {} |", number(&result["latency_buckets"][&label]));
        }
    }
    if let Some(steps) = result["steps"].as_array().filter(|s| s.len() > 1 || report["config"]["stepping"].is_object())
    {
        let _ = writeln!(
            md,
            "\n## Steps\n\n| rate/s | sent | delivered/s | lost | p99 (ms) | on time | connection errors | pass |\n|---|---|---|---|---|---|---|---|"
        );
        for s in steps {
            let v = &s["verdict"];
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.2} % | {:.2} % | {} |",
                number(&s["rate"]),
                number(&s["messages_sent"]),
                number(&s["delivered_per_second"]),
                number(&s["deliveries_lost"]),
                number(&s["latency"]["p99_ms"]),
                v["on_time_fraction"].as_f64().unwrap_or(0.0) * 100.0,
                v["connection_error_fraction"].as_f64().unwrap_or(0.0) * 100.0,
                if v["pass"] == true { "yes" } else { "no" },
            );
        }
    }
    if let Some(verdict) = result["verdict"].as_object() {
        let _ = writeln!(
            md,
            "\n**Pass rule** (≥ 99 % of messages delivered within 1 s, < 1 % connection errors): {} \
             (on time {:.2} %, connection errors {:.2} %).",
            if verdict.get("pass") == Some(&Value::Bool(true)) { "passed" } else { "failed" },
            verdict.get("on_time_fraction").and_then(Value::as_f64).unwrap_or(0.0) * 100.0,
            verdict.get("connection_error_fraction").and_then(Value::as_f64).unwrap_or(0.0) * 100.0,
        );
    }
    md
}

struct Line {
    name: String,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

/// A round number at or above `x` (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten).
fn nice_ceiling(x: f64) -> f64 {
    if x <= 0.0 {
        return 0.2;
    }
    let magnitude = 10f64.powf(x.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= x * 0.999_999)
        .unwrap_or(10.0 * magnitude)
}

/// A line chart as a standalone SVG document.
fn chart(title: &str, unit: &str, lines: &[Line]) -> String {
    const W: f64 = 800.0;
    const H: f64 = 400.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    let all = lines.iter().flat_map(|l| l.points.iter());
    // Five gridlines at a round step.
    let max_x = 5.0 * nice_ceiling(all.clone().map(|p| p.0).fold(0.0, f64::max) / 5.0);
    let max_y = 5.0 * nice_ceiling(all.map(|p| p.1).fold(0.0, f64::max) / 5.0);
    let x = |v: f64| LEFT + v / max_x * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - v / max_y * (H - TOP - BOTTOM);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n",
        W / 2.0
    );
    for i in 0..=5 {
        let (vx, vy) = (max_x * i as f64 / 5.0, max_y * i as f64 / 5.0);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y(vy) + 4.0,
            short(vy),
            H - BOTTOM + 18.0,
            short(vx),
            y = y(vy),
            x = x(vx),
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{axis_y}\" stroke=\"black\"/>\
         <line x1=\"{LEFT}\" x2=\"{right}\" y1=\"{axis_y}\" y2=\"{axis_y}\" stroke=\"black\"/>\
         <text x=\"{mid_x}\" y=\"{bottom_text}\" text-anchor=\"middle\">seconds since the start of the run</text>\
         <text x=\"16\" y=\"{mid_y}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {mid_y})\">{unit}</text>",
        axis_y = H - BOTTOM,
        right = W - RIGHT,
        mid_x = (LEFT + W - RIGHT) / 2.0,
        bottom_text = H - 10.0,
        mid_y = (H - TOP - BOTTOM) / 2.0 + TOP,
    );
    for (i, line) in lines.iter().enumerate() {
        let path: Vec<String> = line.points.iter().map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py))).collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{0}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            line.color,
            path.join(" "),
            LEFT + 10.0 + 190.0 * i as f64,
            TOP - 6.0,
            LEFT + 26.0 + 190.0 * i as f64,
            TOP - 2.0,
            line.name,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// 1500 → "1.5k", 2000000 → "2M", 0.5 → "0.5".
fn short(v: f64) -> String {
    let trim = |s: String| if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s };
    match v.abs() {
        a if a >= 1e6 => format!("{}M", trim(format!("{:.2}", v / 1e6))),
        a if a >= 1e3 => format!("{}k", trim(format!("{:.2}", v / 1e3))),
        _ => trim(format!("{v:.2}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_numbers_are_round_and_short() {
        assert_eq!(nice_ceiling(7.0), 8.0);
        assert_eq!(nice_ceiling(1300.0), 1500.0);
        assert_eq!(nice_ceiling(2.2), 2.5);
        assert_eq!(nice_ceiling(12.8), 15.0);
        assert_eq!(nice_ceiling(5.0), 5.0);
        assert_eq!(nice_ceiling(9.0), 10.0);
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(2_000_000.0), "2M");
        assert_eq!(short(0.5), "0.5");
        assert_eq!(short(40.0), "40");
    }

    #[test]
    fn a_chart_is_an_svg_with_one_polyline_per_line() {
        let lines = [
            Line { name: "a".into(), color: "#000", points: vec![(0.0, 1.0), (1.0, 3.0)] },
            Line { name: "b".into(), color: "#f00", points: vec![] },
        ];
        let svg = chart("t", "ms", &lines);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}
