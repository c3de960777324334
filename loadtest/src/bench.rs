//! `switchboard-loadtest bench`: the figures that say how close Switchboard runs to the floor,
//! each measured side by side in one run on this machine and stated as a ratio with its goal.
//!
//! Every measurement gets fresh nodes (started here from `--switchboard`: one node as `serve`
//! runs it by default, or raft voters for the cluster rows, one node of them against three) and,
//! where there is one, the baseline server (the floor: WebSockets and nothing else) under the
//! same load:
//! - broadcast: server CPU per delivery (5,000 connections, 100-byte messages, 100/s), and the
//!   highest step passing Azure's rule with its p99 (10,000 connections, steps of 100/s; the
//!   median of `--rounds` ladders);
//! - new connections: server CPU per connection (Switchboard: negotiate, upgrade and handshake
//!   as a real client does them, with and without negotiate; the floor: the upgrade only, and
//!   once more each with the floor answering the same exchanges, to show how much of the gap
//!   the exchanges themselves are; each the median of `--rounds` runs);
//! - idle memory per WebSocket connection (19,500 connections; the median of `--rounds` runs);
//! - REST sends to users on one node: the most per second, and p99 REST-to-client at half that
//!   (each the median of `--rounds` runs), against their goals and against the floor under the
//!   same load (the harness shares the machine, so the floor shows what the machine allows);
//! - group sends on 3 nodes against one node: deliveries per CPU second at 150/s and 300/s (each
//!   side the median of `--rounds` runs, alternating).

use crate::chaos::cluster::Cluster;
use crate::scenario::{self, Kind};
use anyhow::Context;
use serde_json::{Value, json};
use std::path::PathBuf;

const KEY: &str = "bench-run-access-key-0123456789abcdef";

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// The `switchboard` binary to measure (a release build).
    #[arg(long, default_value = "target/release/switchboard")]
    switchboard: PathBuf,
    /// Multiplies every connection and message count (e.g. 0.02 for a quick check that the
    /// preset runs; the figures of a scaled-down run are not comparable).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// How many times to run each measurement that moves between runs on the same machine
    /// (the broadcast ladders, CPU per new connection, idle memory, the most REST sends per
    /// second and the p99 at half that, the cluster rows); their medians make the rows. One
    /// ladder's highest step moved by a step or two, a connection row by 0.1, idle memory by
    /// 9 %, the REST rate by 10 %, its p99 several fold, a cluster ratio by 0.05.
    #[arg(long, alias = "ladders", default_value_t = 3)]
    rounds: usize,
    /// Only these measurements (repeat or comma-separate).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Measurement>,
    /// Write the JSON report (every scenario's own report included) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the table as Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Measurement {
    Broadcast,
    BroadcastSteps,
    Connect,
    Idle,
    Rest,
    Cluster,
}

/// One line of the table: a figure of the floor (or of one node) and of Switchboard.
struct Row {
    figure: String,
    floor: f64,
    switchboard: f64,
    unit: &'static str,
    /// The ratio's goal: Switchboard ÷ floor at most or at least this.
    goal: Goal,
}

#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
    /// The row explains another one and has no goal of its own.
    None,
}

impl Row {
    /// The figure at `path` of scenario reports run with `--compare-baseline`: each side's
    /// median over `reports`.
    fn against_floor(
        figure: impl Into<String>,
        reports: &[Value],
        path: &[&str],
        unit: &'static str,
        goal: Goal,
    ) -> Row {
        let side = |side: &str| median(reports.iter().map(|r| number(&r[side], path)));
        Row { figure: figure.into(), floor: side("baseline"), switchboard: side("result"), unit, goal }
    }

    fn ratio(&self) -> Option<f64> {
        (self.floor > 0.0 && self.switchboard.is_finite()).then(|| self.switchboard / self.floor)
    }

    /// `None` for a row without a goal.
    fn met(&self) -> Option<bool> {
        let ratio = self.ratio();
        match self.goal {
            Goal::AtMost(goal) => Some(ratio.is_some_and(|r| r <= goal)),
            Goal::AtLeast(goal) => Some(ratio.is_some_and(|r| r >= goal)),
            Goal::None => None,
        }
    }
}

/// Runs the measurements; `Ok(true)` when every goal is met.
pub(crate) async fn run(args: &BenchArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.scale > 0.0, "--scale must be positive");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let wanted = |m: Measurement| args.only.is_empty() || args.only.contains(&m);
    let n = |count: u64| ((count as f64 * args.scale).round() as u64).max(1).to_string();
    let mut rows = Vec::new();
    let mut reports = serde_json::Map::new();
    let mut bench = Bench { args, reports: &mut reports };

    if wanted(Measurement::Broadcast) {
        let argv = ["--connections", &n(5000), "--rate", "2500", "--payload", "100"];
        let more = ["--messages", &n(1000), "--message-rate", "100", "--compare-baseline"];
        let report = bench.one_node("broadcast", Kind::Broadcast, &[&argv[..], &more[..]].concat()).await?;
        let figure = "server CPU per delivered broadcast message";
        rows.push(Row::against_floor(figure, &[report], &["server_cpu_us_per_delivery"], "µs", Goal::AtMost(1.1)));
    }
    if wanted(Measurement::BroadcastSteps) {
        let argv = ["--connections", &n(10_000), "--workers", "2", "--rate", "5000", "--payload", "100"];
        let steps = ["--step-start", "100", "--step-increment", "100", "--step-max", "2500", "--step-duration", "10"];
        let argv = [&argv[..], &steps[..], &["--compare-baseline"][..]].concat();
        let ladders = bench.one_node_rounds("broadcast_steps", Kind::Broadcast, &argv).await?;
        // A ladder where no step passed counts as 0.
        let highest = |side: &str| {
            median(
                ladders
                    .iter()
                    .map(|r| number(&r[side], &["highest_passing_rate"]))
                    .map(|h| if h.is_nan() { 0.0 } else { h }),
            )
        };
        let (sb, floor) = (highest("result"), highest("baseline"));
        // The p99 of that step in the ladders that ran it.
        let p99 =
            |side: &str, rate: f64| median(ladders.iter().map(|r| p99_at(&r[side], rate)).filter(|p| p.is_finite()));
        let of = of_rounds(ladders.len(), "ladders");
        rows.push(Row {
            figure: format!("broadcasts/s: highest step passing Azure's rule{of}"),
            floor,
            switchboard: sb,
            unit: "/s",
            goal: Goal::AtLeast(0.9),
        });
        rows.push(Row {
            figure: format!("broadcast p99 at the highest passing step ({sb}/s against {floor}/s{of})"),
            floor: p99("baseline", floor),
            switchboard: p99("result", sb),
            unit: "ms",
            goal: Goal::AtMost(1.5),
        });
    }
    if wanted(Measurement::Connect) {
        // As most clients connect (negotiate first), and as skipNegotiation clients do: the
        // second says how much of the first is negotiate's own TCP connection.
        // The third and fourth: the floor answers the same negotiate and handshake with fixed
        // replies, so the ratio leaves out the round trips and TCP connections every SignalR
        // server pays.
        for (name, flags, what, goal) in [
            ("connect", &["--negotiate"][..], "negotiate, upgrade, handshake; floor: upgrade only", Goal::AtMost(1.5)),
            (
                "connect_skip_negotiation",
                &[],
                "skipNegotiation: upgrade, handshake; floor: upgrade only",
                Goal::AtMost(1.5),
            ),
            (
                "connect_same_exchanges",
                &["--negotiate", "--same-exchanges"],
                "negotiate, upgrade, handshake; floor: the same, answered with fixed replies",
                Goal::None,
            ),
            (
                "connect_skip_negotiation_same_exchanges",
                &["--same-exchanges"],
                "skipNegotiation: upgrade, handshake; floor: the same, answered with fixed replies",
                Goal::None,
            ),
        ] {
            let connections = n(5000);
            let argv = ["--connections", &connections, "--rate", "2500", "--hold", "1", "--compare-baseline"];
            let reports = bench.one_node_rounds(name, Kind::Connect, &[&argv[..], flags].concat()).await?;
            let figure = format!("server CPU per new connection ({what}){}", of_rounds(args.rounds, "runs"));
            rows.push(Row::against_floor(figure, &reports, &["server_cpu_us_per_connection"], "µs", goal));
        }
    }
    if wanted(Measurement::Idle) {
        let argv =
            ["--connections", &n(19_500), "--workers", "2", "--rate", "5000", "--hold", "5", "--compare-baseline"];
        // One run read 2,553 B and the next 2,794 B on the same build and machine.
        let runs = bench.one_node_rounds("idle", Kind::Connect, &argv).await?;
        let figure = format!("server memory per idle WebSocket connection{}", of_rounds(args.rounds, "runs"));
        rows.push(Row::against_floor(figure, &runs, &["server_bytes_per_connection"], "B", Goal::AtMost(1.05)));
    }
    if wanted(Measurement::Rest) {
        // 32 keep-alive REST connections: with 16 the round trips left a share of the two
        // cores idle, so the rate said more about the harness's pipeline than the node. Each
        // run also runs against the floor (a server writing each send to its user's socket):
        // the harness shares the machine, so the floor shows what the machine allows.
        let argv = [
            "--connections",
            &n(1000),
            "--messages",
            &n(200_000),
            "--message-rate",
            "0",
            "--rest-concurrency",
            "32",
            "--compare-baseline",
        ];
        let runs = bench.one_node_rounds("rest_most", Kind::User, &argv).await?;
        let rate = median(runs.iter().map(|run| number(&run["result"], &["rest_sends_per_second"])));
        rows.push(Row {
            figure: format!("REST sends to users per second (goal: 60,000){}", of_rounds(args.rounds, "runs")),
            floor: 60_000.0,
            switchboard: rate,
            unit: "/s",
            goal: Goal::AtLeast(1.0),
        });
        let figure = format!(
            "REST sends to users per second (floor: the same load against the baseline){}",
            of_rounds(args.rounds, "runs")
        );
        rows.push(Row::against_floor(figure, &runs, &["rest_sends_per_second"], "/s", Goal::None));
        let half = (rate / 2.0).max(1.0).round();
        let messages = ((half * 10.0 * args.scale).round() as u64).max(1).to_string();
        let half_rate = half.to_string();
        let argv = [
            "--connections",
            &n(1000),
            "--messages",
            &messages,
            "--message-rate",
            &half_rate,
            "--rest-concurrency",
            "32",
            "--compare-baseline",
        ];
        // One run's p99 moved between 1.7 and 11.5 ms on the same build and machine.
        let runs = bench.one_node_rounds("rest_half", Kind::User, &argv).await?;
        let p99 = &["latency", "p99_ms"];
        rows.push(Row {
            figure: format!("p99 REST-to-client at {half}/s (goal: 2 ms){}", of_rounds(args.rounds, "runs")),
            floor: 2.0,
            switchboard: median(runs.iter().map(|run| number(&run["result"], p99))),
            unit: "ms",
            goal: Goal::AtMost(1.0),
        });
        let figure = format!(
            "p99 REST-to-client at {half}/s (floor: the baseline at that rate){}",
            of_rounds(args.rounds, "runs")
        );
        rows.push(Row::against_floor(figure, &runs, p99, "ms", Goal::None));
    }
    if wanted(Measurement::Cluster) {
        for (rate, goal) in [(150, 0.9), (300, 0.8)] {
            let argv = ["--connections", &n(10_000), "--workers", "2", "--rate", "5000", "--groups", "10"];
            // At least 2 s of sends even scaled down: the CPU clock ticks every 10 ms, and nodes
            // that used no tick give the row no figure.
            let messages = ((rate as f64 * 10.0 * args.scale).round() as u64).max(rate * 2).to_string();
            let more = ["--messages", &messages, "--message-rate", &rate.to_string(), "--rest-concurrency", "32"];
            let argv = [&argv[..], &more[..]].concat();
            // Alternating, so that the machine's drift reaches both sides alike.
            let (mut one, mut three) = (Vec::new(), Vec::new());
            for round in 1..=args.rounds {
                let report = bench.nodes(&format!("group_{rate}_one_node_{round}"), 1, Kind::Group, &argv).await?;
                one.push(per_cpu_second(&report["result"]));
                let report = bench.nodes(&format!("group_{rate}_three_nodes_{round}"), 3, Kind::Group, &argv).await?;
                three.push(per_cpu_second(&report["result"]));
            }
            rows.push(Row {
                figure: format!(
                    "group sends at {rate}/s: deliveries per server CPU second, 3 nodes against 1{}",
                    of_rounds(args.rounds, "runs")
                ),
                floor: median(one.into_iter()),
                switchboard: median(three.into_iter()),
                unit: "/CPU s",
                goal: Goal::AtLeast(goal),
            });
        }
    }

    let table = table(&rows);
    println!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.report {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({"figure": r.figure, "floor": r.floor, "switchboard": r.switchboard, "unit": r.unit,
                       "ratio": r.ratio(), "goal_met": r.met()})
            })
            .collect();
        let report = json!({"machine": scenario::machine(), "scale": args.scale, "rows": rows, "runs": reports});
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(rows.iter().all(|row| row.met() != Some(false)))
}

/// Starts fresh nodes for each measurement and keeps every scenario's report.
struct Bench<'a> {
    args: &'a BenchArgs,
    reports: &'a mut serde_json::Map<String, Value>,
}

impl Bench<'_> {
    /// Runs scenario `kind` with `argv` against one fresh node as `serve` runs it by default.
    async fn one_node(&mut self, name: &str, kind: Kind, argv: &[&str]) -> anyhow::Result<Value> {
        self.run(name, 1, true, kind, argv).await
    }

    /// Runs [`Self::one_node`] `--rounds` times, as `{name}_1`, `{name}_2`, ...
    async fn one_node_rounds(&mut self, name: &str, kind: Kind, argv: &[&str]) -> anyhow::Result<Vec<Value>> {
        let mut reports = Vec::new();
        for round in 1..=self.args.rounds {
            reports.push(self.one_node(&format!("{name}_{round}"), kind, argv).await?);
        }
        Ok(reports)
    }

    /// Runs scenario `kind` with `argv` against `nodes` fresh raft nodes (all voters).
    async fn nodes(&mut self, name: &str, nodes: u64, kind: Kind, argv: &[&str]) -> anyhow::Result<Value> {
        self.run(name, nodes, false, kind, argv).await
    }

    async fn run(
        &mut self,
        name: &str,
        nodes: u64,
        standalone: bool,
        kind: Kind,
        argv: &[&str],
    ) -> anyhow::Result<Value> {
        let dir = std::env::temp_dir().join(format!("switchboard-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = Cluster::new(&self.args.switchboard, dir.clone(), (nodes, 0), None, false, KEY)?;
        cluster.log = "warn,openraft=off".into();
        cluster.standalone = standalone;
        cluster.start_all().await?;
        let endpoints: Vec<String> = (0..cluster.specs.len()).map(|n| cluster.endpoint(n).url.clone()).collect();
        let mut full: Vec<String> =
            vec!["bench".into(), "--endpoint".into(), endpoints.join(","), "--access-key".into()];
        full.push(KEY.into());
        for node in 0..cluster.specs.len() {
            full.push("--server-pid".into());
            full.push(cluster.pid(node).context("a node exited")?.to_string());
        }
        full.extend(argv.iter().map(|a| a.to_string()));
        let args = crate::scenario_args(&full)?;
        eprintln!("bench: {name} ({} node{})", nodes, if nodes == 1 { "" } else { "s" });
        let report = scenario::run(kind, &args).await;
        cluster.stop_all().await;
        let _ = std::fs::remove_dir_all(&dir);
        let report = report.with_context(|| format!("bench: {name}"))?;
        self.reports.insert(name.to_owned(), report.clone());
        Ok(report)
    }
}

fn number(value: &Value, path: &[&str]) -> f64 {
    path.iter().fold(value, |v, k| &v[*k]).as_f64().unwrap_or(f64::NAN)
}

/// The p99 of the step that ran at `rate`.
fn p99_at(result: &Value, rate: f64) -> f64 {
    let steps = result["steps"].as_array().map(Vec::as_slice).unwrap_or_default();
    steps.iter().find(|s| s["rate"].as_f64() == Some(rate)).map_or(f64::NAN, |s| number(s, &["latency", "p99_ms"]))
}

/// The middle value (the mean of the middle two for an even count); NaN when there is none.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// How a row made of `rounds` runs (or ladders) says so.
fn of_rounds(rounds: usize, what: &str) -> String {
    if rounds == 1 { String::new() } else { format!(", median of {rounds} {what}") }
}

/// Deliveries per second of server CPU (summed over the nodes).
fn per_cpu_second(result: &Value) -> f64 {
    number(result, &["deliveries_received"]) / number(result, &["server_cpu_seconds"])
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | floor / one node / goal | Switchboard | ratio | goal | met |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let ratio = row.ratio().map_or("-".into(), |r| format!("{r:.2}"));
        let goal = match row.goal {
            Goal::AtMost(g) => format!("<= {g}"),
            Goal::AtLeast(g) => format!(">= {g}"),
            Goal::None => "-".into(),
        };
        let met = row.met().map_or("-", |met| if met { "yes" } else { "no" });
        out += &format!(
            "| {} | {} {} | {} {} | {ratio} | {goal} | {met} |\n",
            row.figure,
            figure(row.floor),
            row.unit,
            figure(row.switchboard),
            row.unit
        );
    }
    out
}

/// Three significant digits, thousands separated.
fn figure(value: f64) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    if value.abs() >= 1000.0 {
        let whole = value.round() as i64;
        let digits = whole.abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        return if whole < 0 { format!("-{grouped}") } else { grouped };
    }
    let decimals = if value.abs() >= 100.0 {
        0
    } else if value.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_meets_its_goal_by_its_ratio() {
        let row = |floor, switchboard, goal| Row { figure: "f".into(), floor, switchboard, unit: "µs", goal };
        assert_eq!(row(1.0, 1.05, Goal::AtMost(1.1)).met(), Some(true));
        assert_eq!(row(1.0, 1.2, Goal::AtMost(1.1)).met(), Some(false));
        assert_eq!(row(700.0, 700.0, Goal::AtLeast(0.9)).met(), Some(true));
        assert_eq!(row(700.0, 400.0, Goal::AtLeast(0.9)).met(), Some(false));
        assert_eq!(row(f64::NAN, 1.0, Goal::AtMost(1.1)).met(), Some(false), "a missing figure meets nothing");
        assert_eq!(row(1.0, 3.0, Goal::None).met(), None, "a row without a goal is neither");
        let table = table(&[row(2370.0, 2620.0, Goal::AtMost(1.05))]);
        assert!(table.contains("| f | 2,370 µs | 2,620 µs | 1.11 | <= 1.05 | no |"), "{table}");
        assert_eq!(median([600.0, 500.0, 700.0].into_iter()), 600.0);
        assert_eq!(median([600.0, 500.0].into_iter()), 550.0);
        assert!(median(std::iter::empty()).is_nan());
        assert_eq!(
            (figure(1.034), figure(12.34), figure(215.4), figure(60_123.0)),
            ("1.03".into(), "12.3".into(), "215".into(), "60,123".into())
        );
    }
}
