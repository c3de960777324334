//! Runs a scenario: set up (group members), open the connections in the workers, then one
//! step of sending (or, stepping, one step per rate until one fails the pass rule), wait for
//! the deliveries, and turn the workers' stats and the servers' /proc readings into a report.
//!
//! Accounting: a REST call answered 2xx expects one delivery per connection it targets that
//! opened and does not churn; an echo invocation expects one completion. Whatever was
//! expected and not received within `--drain-seconds` is lost. Churning connections'
//! deliveries are reported apart, since they may legitimately miss messages while away.

use crate::client::{Endpoint, is_churning, now_us, user_of};
use crate::output::{Meter, Progress};
use crate::proc_stats::{self, Usage};
use crate::rest::{Body, Load, Outcome, Rest};
use crate::stats::{BUCKETS, Stats, judge};
use crate::worker::{Fleet, Phase, Plan};
use crate::{Args, Transport, upstream};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connect,
    Broadcast,
    User,
    Connection,
    Group,
    Echo,
    Mixed,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Broadcast => "broadcast",
            Kind::User => "send-to-user",
            Kind::Connection => "send-to-connection",
            Kind::Group => "group",
            Kind::Echo => "echo",
            Kind::Mixed => "mixed",
        }
    }

    fn has_groups(self) -> bool {
        matches!(self, Kind::Group | Kind::Mixed)
    }
}

/// The servers a measurement runs against.
struct Target {
    endpoints: Vec<String>,
    pids: Vec<u32>,
    /// Metrics endpoints of servers elsewhere.
    metrics: Vec<String>,
    baseline: bool,
}

impl Target {
    fn measures_server(&self) -> bool {
        !self.pids.is_empty() || !self.metrics.is_empty()
    }
}

fn check(kind: Kind, args: &Args) -> anyhow::Result<()> {
    if args.transport == Transport::Sse && args.protocol == crate::Protocol::Messagepack {
        bail!("Server-Sent Events carry text only: use --protocol json");
    }
    if (args.baseline || args.compare_baseline)
        && (!matches!(kind, Kind::Connect | Kind::Broadcast | Kind::User) || args.transport != Transport::Websockets)
    {
        bail!("the baseline server takes connect, broadcast and send-to-user over WebSockets only");
    }
    if args.same_exchanges && (kind != Kind::Connect || !(args.baseline || args.compare_baseline)) {
        bail!("--same-exchanges goes with connect against the baseline (--baseline or --compare-baseline)");
    }
    if args.baseline && args.compare_baseline {
        bail!("--baseline and --compare-baseline exclude each other");
    }
    if !args.baseline && args.access_key.is_none() {
        bail!("--access-key (or SWITCHBOARD_ACCESS_KEY) is required");
    }
    if kind == Kind::Echo && args.upstream_listen.is_none() {
        bail!("echo needs --upstream-listen ADDR (and the nodes started with --upstream http://ADDR/{{event}})");
    }
    if kind == Kind::Echo && args.step_start.is_none() && args.message_rate <= 0.0 {
        bail!("echo needs a --message-rate above 0");
    }
    if args.connections == 0 || args.workers == 0 || args.endpoint.is_empty() {
        bail!("--connections, --workers and --endpoint need at least one");
    }
    if args.group_size == 0 || args.groups == Some(0) {
        bail!("groups need at least one member and there must be at least one group");
    }
    Ok(())
}

pub(crate) async fn run(kind: Kind, args: &Args) -> anyhow::Result<Value> {
    check(kind, args)?;
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let mut upstream_calls = None;
    let _upstream = match (&args.upstream_listen, kind) {
        (Some(listen), Kind::Echo) => {
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
            let calls = Arc::new(AtomicU64::new(0));
            upstream_calls = Some(calls.clone());
            Some(AbortOnDrop(tokio::spawn(upstream::serve(listener, calls))))
        }
        _ => None,
    };
    let target = Target {
        endpoints: args.endpoint.clone(),
        pids: args.server_pid.clone(),
        metrics: args.server_metrics.clone(),
        baseline: args.baseline,
    };
    let mut result = measure(kind, args, &target, deadline, "").await?;
    if let Some(calls) = upstream_calls {
        result["upstream_calls"] = json!(calls.load(std::sync::atomic::Ordering::Relaxed));
    }
    let mut report = json!({
        "scenario": kind.name(),
        "target": if args.baseline { "baseline" } else { "switchboard" },
        "machine": machine(),
        "config": config(kind, args),
        "result": result,
    });
    if args.compare_baseline {
        let child = BaselineChild::start().await?;
        let target =
            Target { endpoints: vec![child.url.clone()], pids: vec![child.pid], metrics: Vec::new(), baseline: true };
        // The baseline gets its own time budget: the comparison is part of the run.
        let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
        let baseline = measure(kind, args, &target, deadline, "baseline ").await?;
        report["ratio_to_baseline"] = ratios(&report["result"], &baseline);
        report["baseline"] = baseline;
    }
    Ok(report)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
    });
    let memory_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    });
    json!({"cpus": cpus, "cpu_model": model, "memory_bytes": memory_kib.map(|k| k * 1024)})
}

fn config(kind: Kind, args: &Args) -> Value {
    json!({
        "endpoints": args.endpoint,
        "transport": format!("{:?}", args.transport),
        "protocol": format!("{:?}", args.protocol),
        "connections": args.connections,
        "connect_rate": args.rate,
        "negotiate": args.negotiate,
        "same_exchanges": args.same_exchanges,
        "workers": args.workers,
        "messages": args.messages,
        "message_rate": args.message_rate,
        "payload_bytes": args.payload,
        "rest_concurrency": args.rest_concurrency,
        "stepping": args.step_start.map(|start| json!({
            "start": start, "increment": args.step_increment, "max": args.step_max, "duration_seconds": args.step_duration,
        })),
        "group_size": (kind.has_groups() && args.groups.is_none()).then_some(args.group_size),
        "groups": args.groups.filter(|_| kind.has_groups()),
        "churn_percent": (kind == Kind::Mixed).then_some(args.churn_percent),
        "churn_interval_seconds": (kind == Kind::Mixed).then_some(args.churn_interval),
        "broadcast_every": (kind == Kind::Mixed).then_some(args.broadcast_every),
        "max_seconds": args.max_seconds,
    })
}

/// The group of connection `index`.
fn group_of(args: &Args, index: u64) -> u64 {
    match args.groups {
        Some(groups) => index % groups,
        None => index / args.group_size,
    }
}

fn usage(target: &Target) -> anyhow::Result<Option<Usage>> {
    proc_stats::read_all(&target.pids, &target.metrics)
}

/// One measurement against one set of servers.
async fn measure(kind: Kind, args: &Args, target: &Target, deadline: Instant, label: &str) -> anyhow::Result<Value> {
    let started = Instant::now();
    let epoch_us = now_us();
    // Users and groups are named per run, so memberships left on the server by an earlier
    // run (they are persistent) never add deliveries to this one.
    let prefix = format!("r{}-", epoch_us / 1000 % 1_000_000_000);
    let n = args.connections;
    let endpoints = target.endpoints.iter().map(|e| Endpoint::parse(e)).collect::<anyhow::Result<Vec<_>>>()?;
    let rest = Rest {
        endpoints,
        concurrency: args.rest_concurrency,
        access_key: if target.baseline { None } else { args.access_key.clone() },
        sent: Arc::new(AtomicU64::new(0)),
    };
    let churn_percent = if kind == Kind::Mixed { args.churn_percent.min(100) } else { 0 };
    let users = matches!(kind, Kind::User | Kind::Group | Kind::Mixed);
    let progress = Arc::new(Progress::new());

    let mut result = json!({});
    if kind.has_groups() {
        progress.set(format!("{label}adding {n} users to groups"), Meter::Sent { sent: rest.sent.clone(), base: 0 }, n);
        let display = crate::output::display(progress.clone(), None, started);
        // Memberships outlive the run by a margin, then expire.
        let ttl = args.max_seconds + 600;
        let routes = (0..n)
            .map(|i| {
                let path = format!(
                    "/api/v1/hubs/{}/groups/{prefix}g{}/users/{}?ttl={ttl}",
                    args.hub,
                    group_of(args, i),
                    user_of(&prefix, i)
                );
                rest.route(path, 0)
            })
            .collect();
        let out = rest.run(Arc::new(Load::new("PUT", routes, Body::Empty)), 0, n, 0.0, deadline).await;
        display.finish();
        if out.accepted < n {
            bail!("adding users to groups: {} of {n} calls failed", n - out.accepted);
        }
        result["memberships_seconds"] = json!(out.seconds);
        result["memberships_per_second"] = json!(n as f64 / out.seconds.max(1e-9));
    }

    let before = usage(target)?;
    let workers = (args.workers as u64).clamp(1, n);
    let plans: Vec<Plan> = (0..workers)
        .map(|w| {
            let first = n * w / workers;
            let count = n * (w + 1) / workers - first;
            Plan {
                worker: w as usize,
                endpoints: target.endpoints.clone(),
                hub: args.hub.clone(),
                access_key: args.access_key.clone().unwrap_or_default(),
                transport: args.transport,
                protocol: args.protocol,
                first,
                count,
                rate: args.rate / workers as f64,
                sources: args.sources,
                user_prefix: users.then(|| prefix.clone()),
                report_ids: kind == Kind::Connection || args.negotiate,
                churn_percent,
                churn_interval_ms: (args.churn_interval * 1000.0) as u64,
                // Connections to a baseline answering SignalR's exchanges open as to Switchboard.
                baseline: target.baseline && !args.same_exchanges,
                payload: args.payload,
                epoch_us,
                max_seconds: args.max_seconds,
            }
        })
        .collect();
    let mut fleet = Fleet::start(plans)?;
    progress.set(format!("{label}connecting"), Meter::Connections, n);
    let display = crate::output::display(progress.clone(), Some(fleet.state()), started);
    let connect_started = Instant::now();
    let opened = fleet.ready(deadline).await;
    let opened = match opened {
        Ok(opened) => opened,
        Err(e) => {
            display.finish();
            fleet.stop().await;
            return Err(e);
        }
    };
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    if target.measures_server() {
        // Let the server settle (allocator, task wake-ups) before reading its memory.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let open_usage = usage(target)?;
    let stable: Vec<&(u64, Option<String>)> = opened.iter().filter(|(i, _)| !is_churning(*i, churn_percent)).collect();

    let mut steps = Vec::new();
    let mut totals = Totals::default();
    let hard_deadline = deadline + Duration::from_secs_f64(args.drain_seconds + 10.0);
    let mut base = fleet.snapshot(hard_deadline).await?;
    let after_connect = base.clone();
    if kind == Kind::Connect {
        progress.set(format!("{label}holding"), Meter::Time { since: Instant::now(), seconds: args.hold }, 0);
        let hold = Duration::from_secs_f64(args.hold.max(0.0)).min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(hold).await;
    } else {
        let load = Arc::new(build_load(kind, args, &rest, &prefix, &stable, target.baseline));
        let rates = step_rates(args);
        let stepping = args.step_start.is_some();
        let mut first_message = 0;
        for (number, &(rate, count)) in rates.iter().enumerate() {
            if Instant::now() >= deadline {
                totals.cut_short = true;
                break;
            }
            let step_label = if stepping {
                format!("{label}step {}/{} at {rate}/s", number + 1, rates.len())
            } else {
                format!("{label}sending")
            };
            let cpu_before = usage(target)?;
            let step_started = Instant::now();
            let outcome = if kind == Kind::Echo {
                progress.set(step_label, Meter::Time { since: step_started, seconds: count as f64 / rate }, 0);
                fleet.phase(Phase { echo_rate: rate / stable.len().max(1) as f64, churn: false });
                let send_for = Duration::from_secs_f64(count as f64 / rate);
                tokio::time::sleep(send_for.min(deadline.saturating_duration_since(Instant::now()))).await;
                Outcome { seconds: step_started.elapsed().as_secs_f64(), ..Outcome::default() }
            } else {
                let sent_base = rest.sent.load(std::sync::atomic::Ordering::Relaxed);
                progress.set(step_label, Meter::Sent { sent: rest.sent.clone(), base: sent_base }, count);
                fleet.phase(Phase { echo_rate: 0.0, churn: churn_percent > 0 });
                let outcome = rest.run(load.clone(), first_message, count, rate, deadline).await;
                first_message += count;
                outcome
            };
            // Stop sending (echo) and churning, then wait for what is on its way.
            let seq = fleet.phase(Phase::default());
            let expected_rest = outcome.expected;
            let received_base = base.counters.received;
            let invocations_base = base.counters.invocations;
            progress.set(format!("{label}draining"), Meter::Received { base: received_base }, expected_rest);
            let drain_until = (Instant::now() + Duration::from_secs_f64(args.drain_seconds)).min(hard_deadline);
            fleet
                .wait_counters(drain_until, seq, |c| {
                    let expected =
                        if kind == Kind::Echo { c.invocations.saturating_sub(invocations_base) } else { expected_rest };
                    c.received.saturating_sub(received_base) >= expected
                })
                .await;
            let seconds = step_started.elapsed().as_secs_f64();
            let cpu_after = usage(target)?;
            let now = fleet.snapshot(hard_deadline).await?;
            let step = now.minus(&base);
            let expected = if kind == Kind::Echo { step.counters.invocations } else { outcome.expected };
            let verdict = judge(
                expected,
                step.counters.received,
                &step.buckets,
                now.counters.attempts,
                now.counters.connection_errors(),
            );
            let cpu = cpu_seconds(cpu_before, cpu_after);
            let mut report = step_report(&step, &outcome, expected, seconds, cpu);
            report["rate"] = json!(rate);
            report["verdict"] = json!(verdict);
            steps.push(report);
            totals.add(&outcome, expected, seconds, cpu);
            base = now;
            if stepping && !verdict.pass {
                break;
            }
        }
    }
    display.finish();
    let last = fleet.snapshot(hard_deadline).await?;
    fleet.stop().await;

    connection_report(&mut result, &last, connect_seconds, before, open_usage);
    if kind == Kind::Connect {
        // Connecting passes on the same rule: under 1 % of the connections failed.
        let verdict = judge(0, 0, &[0; BUCKETS], last.counters.attempts, last.counters.connection_errors());
        result["verdict"] = json!(verdict);
    }
    if kind != Kind::Connect {
        let sending = last.minus(&after_connect);
        if kind == Kind::Echo {
            totals.expected = sending.counters.invocations;
        }
        let mut whole = step_report(&sending, &totals.outcome, totals.expected, totals.seconds, totals.cpu);
        let verdict = judge(
            totals.expected,
            sending.counters.received,
            &sending.buckets,
            last.counters.attempts,
            last.counters.connection_errors(),
        );
        whole["verdict"] = json!(verdict);
        merge_into(&mut result, whole);
        result["stopped_by_time_limit"] = json!(totals.cut_short || totals.outcome.cut_short);
        if args.step_start.is_some() {
            let passing = steps
                .iter()
                .filter(|s| s["verdict"]["pass"] == true)
                .filter_map(|s| s["rate"].as_f64())
                .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
            result["highest_passing_rate"] = json!(passing);
        }
        result["steps"] = json!(steps);
    }
    result["first_error"] = json!(last.first_error.clone().or_else(|| totals.outcome.first_error.clone()));
    result["series"] = series(&last);
    Ok(result)
}

/// What the steps of a run add up to.
#[derive(Default)]
struct Totals {
    outcome: Outcome,
    expected: u64,
    seconds: f64,
    cpu: Option<f64>,
    cut_short: bool,
}

impl Totals {
    fn add(&mut self, outcome: &Outcome, expected: u64, seconds: f64, cpu: Option<f64>) {
        self.outcome.merge(outcome);
        self.outcome.seconds += outcome.seconds;
        self.expected += expected;
        self.seconds += seconds;
        self.cpu = match (self.cpu, cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

fn cpu_seconds(before: Option<Usage>, after: Option<Usage>) -> Option<f64> {
    Some(after?.cpu.saturating_sub(before?.cpu).as_secs_f64())
}

fn merge_into(target: &mut Value, source: Value) {
    if let (Some(t), Value::Object(s)) = (target.as_object_mut(), source) {
        t.extend(s);
    }
}

/// Rates and message counts of the steps (one step without stepping).
fn step_rates(args: &Args) -> Vec<(f64, u64)> {
    let Some(start) = args.step_start else { return vec![(args.message_rate, args.messages)] };
    let mut rates = Vec::new();
    let mut rate = start;
    while rate <= args.step_max + 1e-9 && rates.len() < 1000 {
        rates.push((rate, (rate * args.step_duration).ceil().max(1.0) as u64));
        if args.step_increment <= 0.0 {
            break;
        }
        rate += args.step_increment;
    }
    rates
}

/// The REST targets of a scenario, each with the deliveries a send to it should make.
fn build_load(
    kind: Kind,
    args: &Args,
    rest: &Rest,
    prefix: &str,
    stable: &[&(u64, Option<String>)],
    baseline: bool,
) -> Load {
    let hub = &args.hub;
    let padding = "x".repeat(args.payload);
    let body = if baseline { Body::Baseline { protocol: args.protocol, padding } } else { Body::Rest { padding } };
    let broadcast = || {
        let path = if baseline { "/broadcast".to_owned() } else { format!("/api/v1/hubs/{hub}") };
        rest.route(path, stable.len() as u64)
    };
    let users = || {
        stable.iter().map(|(i, _)| {
            let user = user_of(prefix, *i);
            rest.route(if baseline { format!("/users/{user}") } else { format!("/api/v1/hubs/{hub}/users/{user}") }, 1)
        })
    };
    let groups = || {
        let mut members: BTreeMap<u64, u64> = BTreeMap::new();
        for (i, _) in stable {
            *members.entry(group_of(args, *i)).or_default() += 1;
        }
        members
            .into_iter()
            .map(|(g, count)| rest.route(format!("/api/v1/hubs/{hub}/groups/{prefix}g{g}"), count))
            .collect::<Vec<_>>()
    };
    match kind {
        Kind::Connect | Kind::Echo | Kind::Broadcast => Load::new("POST", vec![broadcast()], body),
        Kind::User => Load::new("POST", users().collect(), body),
        Kind::Connection => {
            let routes = stable
                .iter()
                .filter_map(|(_, id)| id.as_ref())
                .map(|id| rest.route(format!("/api/v1/hubs/{hub}/connections/{id}"), 1))
                .collect();
            Load::new("POST", routes, body)
        }
        Kind::Group => Load::new("POST", groups(), body),
        Kind::Mixed => {
            let groups = groups();
            let users: Vec<_> = users().collect();
            let (g, u) = (groups.len(), users.len());
            let mut routes = vec![broadcast()];
            routes.extend(groups);
            routes.extend(users);
            // Every n-th message a broadcast, the others alternate a group and a user.
            let every = args.broadcast_every.max(1) as usize;
            let length = (every * 2 * g.max(u).max(1)).min(1 << 20);
            let (mut next_group, mut next_user) = (0, 0);
            let sequence = (0..length)
                .map(|k| {
                    if k % every == 0 || g + u == 0 {
                        0
                    } else if ((next_group + next_user) % 2 == 0 && g > 0) || u == 0 {
                        next_group += 1;
                        1 + (next_group - 1) % g
                    } else {
                        next_user += 1;
                        1 + g + (next_user - 1) % u
                    }
                })
                .collect();
            Load { method: "POST", routes, sequence, body }
        }
    }
}

/// The sending half of a report (a step or the whole run).
fn step_report(stats: &Stats, outcome: &Outcome, expected: u64, seconds: f64, cpu: Option<f64>) -> Value {
    let c = &stats.counters;
    let echo = c.invocations > 0;
    let sent = if echo { c.invocations } else { outcome.sent };
    let peak = stats.series.iter().map(|s| s.delivered).max().unwrap_or(0);
    let mut report = json!({
        "messages_sent": sent,
        "messages_rejected": outcome.rejected,
        "rest_errors": outcome.errors,
        "send_seconds": outcome.seconds,
        "seconds": seconds,
        "deliveries_expected": expected,
        "deliveries_received": c.received,
        "deliveries_lost": expected.saturating_sub(c.received),
        "deliveries_to_churning": c.received_churning,
        "delivered_per_second": c.received as f64 / seconds.max(1e-9),
        "peak_delivered_per_second": peak,
        "latency": stats.latency.summary(),
        "latency_buckets": stats.buckets_json(),
        "bytes_received": c.bytes_received,
        "bytes_sent": outcome.bytes_sent + c.bytes_sent,
    });
    if !echo {
        report["rest_sends_per_second"] = json!(outcome.accepted as f64 / outcome.seconds.max(1e-9));
        report["rest_latency"] = outcome.latency.summary();
    }
    if let Some(cpu) = cpu {
        report["server_cpu_seconds"] = json!(cpu);
        report["server_cpu_us_per_delivery"] = json!(cpu * 1e6 / c.received.max(1) as f64);
    }
    report
}

fn connection_report(
    result: &mut Value,
    stats: &Stats,
    connect_seconds: f64,
    before: Option<Usage>,
    open: Option<Usage>,
) {
    let c = &stats.counters;
    merge_into(
        result,
        json!({
            "attempts": c.attempts,
            "connected": c.connected,
            "failed": c.failed,
            "dropped": c.dropped,
            "reconnects": c.reconnects,
            "reconnect_failures": c.reconnect_failures,
            "connect_seconds": connect_seconds,
            "connections_per_second": c.connected as f64 / connect_seconds.max(1e-9),
            "connect_time": stats.connect.summary(),
        }),
    );
    if let (Some(before), Some(open)) = (before, open) {
        result["server_rss_before_bytes"] = json!(before.rss_bytes);
        result["server_rss_open_bytes"] = json!(open.rss_bytes);
        let grown = open.rss_bytes.saturating_sub(before.rss_bytes);
        result["server_bytes_per_connection"] = json!(grown as f64 / c.connected.max(1) as f64);
        // CPU the servers spent while the connections opened (negotiate, upgrade, handshake).
        let cpu = open.cpu.saturating_sub(before.cpu).as_secs_f64();
        result["server_cpu_us_per_connection"] = json!(cpu * 1e6 / c.connected.max(1) as f64);
    }
}

/// Per second of the run: deliveries and latency percentiles.
fn series(stats: &Stats) -> Value {
    let seconds: Vec<Value> = stats
        .series
        .iter()
        .enumerate()
        .map(|(second, s)| {
            let latency = (s.latency.count() > 0).then(|| {
                json!({"p50_ms": s.latency.quantile_ms(0.5), "p90_ms": s.latency.quantile_ms(0.9), "p99_ms": s.latency.quantile_ms(0.99)})
            });
            json!({"second": second, "delivered": s.delivered, "latency": latency})
        })
        .collect();
    json!(seconds)
}

/// Switchboard as a fraction of the baseline: above 1 is better than the floor.
fn ratios(switchboard: &Value, baseline: &Value) -> Value {
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    };
    let get = |v: &Value, path: &[&str]| path.iter().fold(v, |v, k| &v[*k]).as_f64();
    let both = |path: &[&str]| (get(switchboard, path), get(baseline, path));
    let (sb, base) = both(&["delivered_per_second"]);
    let (sb_cpu, base_cpu) = both(&["server_cpu_us_per_delivery"]);
    let (sb_mem, base_mem) = both(&["server_bytes_per_connection"]);
    let (sb_rate, base_rate) = both(&["highest_passing_rate"]);
    let (sb_conn, base_conn) = both(&["connections_per_second"]);
    let (sb_p99, base_p99) = both(&["latency", "p99_ms"]);
    json!({
        "delivered_per_second": ratio(sb, base),
        "highest_passing_rate": ratio(sb_rate, base_rate),
        "connections_per_second": ratio(sb_conn, base_conn),
        "cpu_efficiency": ratio(base_cpu, sb_cpu),
        "memory_efficiency": ratio(base_mem, sb_mem),
        "p99_latency": ratio(sb_p99, base_p99),
    })
}

/// A baseline server in a child process, so its memory and CPU are its own.
struct BaselineChild {
    _child: tokio::process::Child,
    url: String,
    pid: u32,
}

impl BaselineChild {
    async fn start() -> anyhow::Result<BaselineChild> {
        let exe = std::env::current_exe().context("cannot find the harness binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["baseline-server", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the baseline server")?;
        let pid = child.id().context("the baseline server exited")?;
        let stdout = child.stdout.take().context("baseline stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the baseline server did not start")??
            .context("the baseline server exited")?;
        let addr = line.strip_prefix("listening ").context("unexpected baseline output")?;
        Ok(BaselineChild { _child: child, url: format!("http://{addr}"), pid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(extra: &[&str]) -> Args {
        Cli::parse_from([&["t", "--access-key", "k"][..], extra].concat()).args
    }

    #[test]
    fn steps_go_up_by_the_increment_to_the_maximum() {
        let a = args(&["--step-start", "100", "--step-increment", "50", "--step-max", "200", "--step-duration", "2"]);
        assert_eq!(step_rates(&a), [(100.0, 200), (150.0, 300), (200.0, 400)]);
        let a = args(&["--messages", "7", "--message-rate", "3"]);
        assert_eq!(step_rates(&a), [(3.0, 7)]);
    }

    #[test]
    fn small_groups_are_consecutive_and_big_groups_interleave() {
        let a = args(&["--group-size", "10"]);
        assert_eq!((0..25).map(|i| group_of(&a, i)).collect::<Vec<_>>()[9..12], [0, 1, 1]);
        let a = args(&["--groups", "3"]);
        assert_eq!((0..6).map(|i| group_of(&a, i)).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_mixed_load_alternates_groups_and_users_between_broadcasts() {
        let a = args(&["--group-size", "2", "--broadcast-every", "4"]);
        let rest = Rest {
            endpoints: vec![Endpoint::parse("http://127.0.0.1:1").unwrap()],
            concurrency: 1,
            access_key: Some("k".into()),
            sent: Arc::default(),
        };
        let opened: Vec<(u64, Option<String>)> = (0..4).map(|i| (i, None)).collect();
        let stable: Vec<_> = opened.iter().collect();
        let load = build_load(Kind::Mixed, &a, &rest, "p-", &stable, false);
        // Routes: broadcast, 2 groups, 4 users.
        assert_eq!(load.routes.len(), 7);
        assert_eq!(load.routes[0].expected, 4);
        assert_eq!(load.routes[1].expected, 2);
        assert_eq!(&load.sequence[..8], [0, 1, 3, 2, 0, 4, 1, 5]);
        assert!(load.routes[3].path.ends_with("/users/p-u0"));
    }
}
