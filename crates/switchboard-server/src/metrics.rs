//! The internal endpoint: Prometheus `/metrics`, `/healthz` (the process runs) and `/readyz`
//! (the node joined its cluster and applied its state; not while draining), on a port of its
//! own so probes and scrapes never share the public one.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;
use switchboard_api::RouteKind;
use switchboard_control::ControlPlane;
use switchboard_fanout::FanoutStats;
use switchboard_hub::metrics::{ConnectFailure, Disconnect, Histogram, SendKind, Transport, write_header};
use switchboard_hub::{Registry, Stats};
use switchboard_upstream::{OUTCOMES, Upstream};

/// Where the node is in its life, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Readiness {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

/// What the internal endpoint reads. Built before the node starts, so probes answer while a
/// node waits for its cluster.
#[derive(Default)]
pub struct Observability {
    readiness: AtomicU8,
    rest: RestMetrics,
    parts: Mutex<Option<Parts>>,
    /// The last minutes in samples (oldest first): the console's charts, no Prometheus needed.
    history: Mutex<VecDeque<Sample>>,
}

/// One sample of the node's own numbers; rates are over the interval before it.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Sample {
    pub at_ms: u64,
    pub connections: u64,
    pub messages_in_per_second: f64,
    pub delivered_per_second: f64,
    pub rest_per_second: f64,
    /// p99 of the REST calls answered in the interval (0 without any).
    pub rest_p99_ms: f64,
    pub memory_bytes: u64,
    /// Of one core.
    pub cpu_percent: f64,
}

/// How often the node samples itself, and how many samples it keeps (10 minutes).
const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
const SAMPLES_KEPT: usize = 300;

/// The running node's components, set once they exist.
#[derive(Clone)]
pub struct Parts {
    pub admission: Arc<switchboard_edge::Admission>,
    pub registry: Arc<Registry>,
    pub upstream: Arc<Upstream>,
    pub fanout: Option<switchboard_fanout::FanoutClient>,
    pub control: Option<ControlPlane>,
    pub redis: Option<Arc<switchboard_redis::RedisEngine>>,
    pub node_id: u64,
    /// The bridge to an ASP.NET backplane, with `--aspnet-backplane`.
    pub bridge: Option<switchboard_redis::AspNetBridge>,
    /// What the console needs to act: the keys, the engine's bus, the public endpoint and its
    /// routes.
    pub console: crate::console::ConsoleParts,
}

/// REST requests by route template and status, and their latency by route: under one lock,
/// taken once per request.
#[derive(Default)]
struct RestMetrics(Mutex<RestTally>);

#[derive(Default)]
struct RestTally {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Arc<Histogram>>,
    /// Latencies (microseconds) since the last sample.
    recent_us: Reservoir,
}

/// A uniform random sample of at most [`RECENT_KEPT`] of the values offered since the last
/// [`take`](Self::take) (Vitter's algorithm R), so a busy window's p99 covers the whole
/// window and not just its first calls.
#[derive(Default)]
struct Reservoir {
    kept: Vec<u32>,
    offered: u64,
}

impl Reservoir {
    fn offer(&mut self, value: u32) {
        self.offered += 1;
        if self.kept.len() < RECENT_KEPT {
            self.kept.push(value);
            return;
        }
        use rand::Rng;
        let slot = rand::rng().random_range(0..self.offered);
        if let Some(kept) = usize::try_from(slot).ok().and_then(|slot| self.kept.get_mut(slot)) {
            *kept = value;
        }
    }

    /// The sample, leaving the reservoir empty.
    fn take(&mut self) -> Vec<u32> {
        self.offered = 0;
        std::mem::take(&mut self.kept)
    }
}

impl RestMetrics {
    fn record(&self, route: &'static str, status: u16, elapsed: std::time::Duration) {
        let mut tally = self.0.lock();
        *tally.requests.entry((route, status)).or_default() += 1;
        tally.latency.entry(route).or_default().observe(elapsed);
        tally.recent_us.offer(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
    }

    fn total(&self) -> u64 {
        self.0.lock().requests.values().sum()
    }
}

const RECENT_KEPT: usize = 4096;

/// The 99th percentile (nearest rank) of `values`, if any.
fn p99(mut values: Vec<u32>) -> Option<u32> {
    values.sort_unstable();
    values.get((values.len() * 99).div_ceil(100).saturating_sub(1)).copied()
}

impl Observability {
    pub fn set_readiness(&self, readiness: Readiness) {
        self.readiness.store(readiness as u8, Ordering::Relaxed);
    }

    fn readiness(&self) -> Readiness {
        match self.readiness.load(Ordering::Relaxed) {
            1 => Readiness::Ready,
            2 => Readiness::Draining,
            _ => Readiness::Starting,
        }
    }

    /// Whether the engine's shared service (Redis) answers; always with raft.
    fn engine_reachable(&self) -> bool {
        self.parts.lock().as_ref().and_then(|parts| parts.redis.as_ref()).is_none_or(|redis| redis.is_connected())
    }

    /// Whether this node's cluster lease lapsed (see [`front`]).
    fn lease_lapsed(&self) -> bool {
        self.parts.lock().as_ref().and_then(|parts| parts.control.as_ref()).is_some_and(|c| c.lease_lapsed())
    }

    pub fn attach(&self, parts: Parts) {
        *self.parts.lock() = Some(parts);
    }

    /// The running node's components, once attached.
    pub fn parts(&self) -> Option<Parts> {
        self.parts.lock().clone()
    }

    /// Samples the node every few seconds while it exists (the console's charts).
    pub fn start_sampling(self: &Arc<Self>) {
        let observability = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            let mut last: Option<(Instant, [f64; 4])> = None;
            loop {
                tick.tick().await;
                let Some(observability) = observability.upgrade() else { return };
                last = Some(observability.sample(last));
            }
        });
    }

    /// Takes one sample; `last` is when the previous one was taken and its running totals
    /// (messages in, delivered, REST calls, CPU seconds).
    fn sample(&self, last: Option<(Instant, [f64; 4])>) -> (Instant, [f64; 4]) {
        let now = Instant::now();
        let process = ProcessStats::usage();
        let (connections, messages_in, delivered) = match self.parts() {
            Some(parts) => {
                let stats = parts.registry.stats();
                (Stats::get(&stats.connections), Stats::get(&stats.messages_in), Stats::get(&stats.delivered))
            }
            None => (0, 0, 0),
        };
        let rest_total = self.rest.total();
        let totals = [messages_in as f64, delivered as f64, rest_total as f64, process.cpu_seconds.unwrap_or(0.0)];
        let latencies = self.rest.0.lock().recent_us.take();
        let rest_p99_ms = p99(latencies).map_or(0.0, |us| f64::from(us) / 1000.0);
        if let Some((at, before)) = last {
            let seconds = now.duration_since(at).as_secs_f64().max(0.001);
            let rate = |i: usize| ((totals[i] - before[i]) / seconds).max(0.0);
            let sample = Sample {
                at_ms: switchboard_hub::unix_now_ms(),
                connections,
                messages_in_per_second: rate(0),
                delivered_per_second: rate(1),
                rest_per_second: rate(2),
                rest_p99_ms,
                memory_bytes: process.memory_bytes.unwrap_or(0),
                cpu_percent: rate(3) * 100.0,
            };
            let mut history = self.history.lock();
            if history.len() == SAMPLES_KEPT {
                history.pop_front();
            }
            history.push_back(sample);
        }
        (now, totals)
    }

    /// This node's live numbers and recent samples (`GET /api/admin/node`, the console).
    pub fn node_stats(&self) -> serde_json::Value {
        let process = ProcessStats::read();
        let history: Vec<Sample> = self.history.lock().iter().copied().collect();
        let rest_total = self.rest.total();
        let mut stats = serde_json::json!({
            "ready": self.readiness() == Readiness::Ready && self.engine_reachable() && !self.lease_lapsed(),
            "draining": self.readiness() == Readiness::Draining,
            "process": process,
            "rest_requests_total": rest_total,
            "history": history,
        });
        if let Some(parts) = self.parts() {
            let hub = parts.registry.stats();
            let mut by_transport = serde_json::Map::new();
            for transport in Transport::ALL {
                let open = &hub.open[*transport as usize];
                by_transport.insert(
                    transport.label().to_owned(),
                    serde_json::json!({"json": open.get(0), "messagepack": open.get(1)}),
                );
            }
            stats["node_id"] = parts.node_id.into();
            stats["connections"] = Stats::get(&hub.connections).into();
            stats["queued_bytes"] = parts.registry.queued_bytes().into();
            stats["connections_by_transport"] = by_transport.into();
            stats["messages_in_total"] = Stats::get(&hub.messages_in).into();
            stats["delivered_total"] = Stats::get(&hub.delivered).into();
            if let Some(control) = &parts.control {
                let raft = control.raft_numbers();
                stats["raft"] = serde_json::json!({
                    "term": raft.term, "leader": raft.leader, "applied_index": raft.applied_index,
                });
            }
        }
        stats
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        write_header(&mut out, "switchboard_ready", "gauge", "1 when the node serves (joined, applied, not draining).");
        let _ = writeln!(out, "switchboard_ready {}", u8::from(self.readiness() == Readiness::Ready));
        let parts = self.parts.lock().clone();
        if let Some(parts) = &parts {
            write_hub(&mut out, parts.registry.stats(), &parts.registry);
            write_admission(&mut out, &parts.admission);
            write_upstream(&mut out, &parts.upstream);
            if let Some(fanout) = &parts.fanout {
                write_fanout(&mut out, fanout.stats());
            }
            if let Some(control) = &parts.control {
                write_raft(&mut out, control);
            }
            if let Some(redis) = &parts.redis {
                write_redis(&mut out, redis);
            }
            if let Some(bridge) = &parts.bridge {
                write_bridge(&mut out, bridge.stats());
            }
        }
        self.write_rest(&mut out);
        write_process(&mut out);
        out
    }

    fn write_rest(&self, out: &mut String) {
        write_header(out, "switchboard_rest_requests_total", "counter", "REST requests by route and status.");
        let (requests, latency): (Vec<_>, Vec<(&str, Arc<Histogram>)>) = {
            let tally = self.rest.0.lock();
            (
                tally.requests.iter().map(|(k, v)| (*k, *v)).collect(),
                tally.latency.iter().map(|(k, v)| (*k, v.clone())).collect(),
            )
        };
        for ((route, status), count) in requests {
            let _ = writeln!(out, "switchboard_rest_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}");
        }
        let name = "switchboard_rest_request_duration_seconds";
        write_header(out, name, "histogram", "REST request latency by route.");
        for (route, histogram) in latency {
            histogram.write(out, name, &format!("route=\"{route}\""));
        }
    }
}

/// What every request to the public router passes first (one middleware layer: it runs per
/// request).
pub struct Front {
    pub observability: Arc<Observability>,
    pub control: Option<Arc<switchboard_control::ControlPlane>>,
}

/// The public router's middleware:
/// * while this node's cluster lease has lapsed, its view of routes and memberships may be
///   stale (the cluster went on without it): data-plane REST calls and clients are refused
///   with 503 and nothing done, rather than answered from that view (admin and status routes
///   answer);
/// * REST requests are counted, labelled by the kind of call (`send_user`,
///   `add_connection_to_group`, …), with their latency. Client transport requests are
///   connections, counted by the hub.
pub async fn front(State(front): State<Arc<Front>>, request: Request, next: Next) -> Response {
    front.serve(request, |request| next.run(request)).await
}

impl Front {
    /// What [`front`] does, around `call` (the router, or the REST handler called directly).
    pub async fn serve<F: Future<Output = Response>>(
        &self,
        request: Request,
        call: impl FnOnce(Request) -> F,
    ) -> Response {
        let path = request.uri().path();
        let data_plane =
            path.starts_with("/api/hubs/") || path.starts_with("/api/v1/hubs/") || path.starts_with("/client");
        let lapsed = data_plane && self.control.as_ref().is_some_and(|control| control.lease_lapsed());
        if !path.starts_with("/api/") {
            return if lapsed { refusal() } else { call(request).await };
        }
        let status_path = path == crate::cluster::STATUS_PATH;
        let started = Instant::now();
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| (request.method().clone(), path.to_owned()));
        let response = if lapsed {
            // It never reaches the API handler, which names the kind of call of the others.
            let mut refused = refusal();
            if let Ok(route) = switchboard_api::parse_route(request.method(), path, None) {
                refused.extensions_mut().insert(RouteKind(route.operation.kind()));
            }
            refused
        } else {
            call(request).await
        };
        let elapsed = started.elapsed();
        let route = if status_path {
            "cluster_status"
        } else {
            response.extensions().get::<RouteKind>().map_or("unmatched", |kind| kind.0)
        };
        if let Some((method, path)) = logged {
            tracing::debug!(%method, path, status = response.status().as_u16(), micros = elapsed.as_micros() as u64, "rest call");
        }
        self.observability.rest.record(route, response.status().as_u16(), elapsed);
        response
    }
}

fn refusal() -> Response {
    let message = "this node lost contact with the cluster; nothing was done, try another node";
    switchboard_api::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Error.Service.Unavailable", message)
        .into_response()
}

/// Binds `address` and serves the internal endpoint there; returns the bound address.
pub async fn serve_internal(
    address: std::net::SocketAddr,
    observability: Arc<Observability>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let app = router(observability);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the internal endpoint stopped");
        }
    });
    Ok(bound)
}

/// The internal router.
pub fn router(observability: Arc<Observability>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(o): State<Arc<Observability>>| async move {
                match o.readiness() {
                    Readiness::Ready if !o.engine_reachable() => {
                        (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable").into_response()
                    }
                    Readiness::Ready if o.lease_lapsed() => {
                        (StatusCode::SERVICE_UNAVAILABLE, "lost contact with the cluster").into_response()
                    }
                    Readiness::Ready => (StatusCode::OK, "ready").into_response(),
                    Readiness::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response(),
                    Readiness::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response(),
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(o): State<Arc<Observability>>| async move {
                ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], o.render())
            }),
        )
        .nest("/console", crate::console::router())
        .route("/console/", get(|| async { axum::response::Redirect::permanent("/console") }))
        .with_state(observability)
}

fn write_hub(out: &mut String, stats: &Stats, registry: &Registry) {
    let value = Stats::get;
    write_header(out, "switchboard_connections", "gauge", "Connections open on this node.");
    for transport in Transport::ALL {
        for (slot, protocol) in ["json", "messagepack"].iter().enumerate() {
            let n = stats.open[*transport as usize].get(slot);
            let t = transport.label();
            let _ = writeln!(out, "switchboard_connections{{transport=\"{t}\",protocol=\"{protocol}\"}} {n}");
        }
    }
    let connects = Transport::ALL.iter().map(|t| (t.label(), stats.connects.get(*t as usize)));
    write_counters(out, "switchboard_connects_total", "Connections established.", "transport", connects);
    let disconnects = Disconnect::ALL.iter().map(|r| (r.label(), stats.disconnects.get(*r as usize)));
    write_counters(out, "switchboard_disconnects_total", "Connections ended, by reason.", "reason", disconnects);
    let failures = ConnectFailure::ALL.iter().map(|r| (r.label(), stats.connect_failures.get(*r as usize)));
    let help = "Connection attempts refused, by reason.";
    write_counters(out, "switchboard_connect_failures_total", help, "reason", failures);
    let sent = SendKind::ALL.iter().map(|r| (r.label(), stats.messages_out.get(*r as usize)));
    let help = "Messages queued to clients, by kind of send.";
    write_counters(out, "switchboard_messages_out_total", help, "route", sent);
    let simple = [
        (
            "switchboard_messages_in_total",
            "counter",
            "Hub invocations received from clients.",
            value(&stats.messages_in),
        ),
        ("switchboard_bytes_in_total", "counter", "Bytes received from clients.", value(&stats.bytes_in)),
        (
            "switchboard_rate_limited_closes_total",
            "counter",
            "Connections closed for sending more messages per second than allowed.",
            value(&stats.rate_limited_closes),
        ),
        ("switchboard_bytes_out_total", "counter", "Bytes written to clients.", value(&stats.bytes_out)),
        (
            "switchboard_slow_consumer_closes_total",
            "counter",
            "Connections closed because their queue overflowed.",
            value(&stats.slow_consumer_closes),
        ),
        ("switchboard_queued_bytes", "gauge", "Bytes waiting in connection queues.", registry.queued_bytes()),
    ];
    for (name, kind, help, n) in simple {
        write_header(out, name, kind, help);
        let _ = writeln!(out, "{name} {n}");
    }
}

/// A counter family with one label: `name{label="value"} n` per row.
fn write_counters<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    rows: impl Iterator<Item = (&'a str, u64)>,
) {
    write_header(out, name, "counter", help);
    for (value, n) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

fn write_upstream(out: &mut String, upstream: &Upstream) {
    let stats = upstream.stats();
    let outcomes = OUTCOMES.iter().enumerate().map(|(slot, status)| (*status, stats.outcomes.get(slot)));
    write_counters(out, "switchboard_upstream_calls_total", "Upstream calls by outcome.", "status", outcomes);
    write_header(out, "switchboard_upstream_event_retries_total", "counter", "Connection events sent again.");
    let _ = writeln!(out, "switchboard_upstream_event_retries_total {}", stats.event_retries.load(Ordering::Relaxed));
    let help = "Connection events given up (retries spent, or too many waiting).";
    write_header(out, "switchboard_upstream_events_dropped_total", "counter", help);
    let _ = writeln!(out, "switchboard_upstream_events_dropped_total {}", stats.dropped_events.load(Ordering::Relaxed));
    let name = "switchboard_upstream_call_duration_seconds";
    write_header(out, name, "histogram", "Upstream call latency.");
    stats.duration.write(out, name, "");
}

fn write_fanout(out: &mut String, stats: &FanoutStats) {
    write_header(out, "switchboard_fanout_batches_total", "counter", "Delivery batches sent to other nodes.");
    let _ = writeln!(out, "switchboard_fanout_batches_total {}", FanoutStats::get(&stats.batches));
    write_header(
        out,
        "switchboard_fanout_deliveries_failed_total",
        "counter",
        "Deliveries to other nodes that failed.",
    );
    let _ = writeln!(out, "switchboard_fanout_deliveries_failed_total {}", FanoutStats::get(&stats.failed));
    write_header(out, "switchboard_fanout_deliveries_total", "counter", "Deliveries sent to other nodes.");
    let _ = writeln!(out, "switchboard_fanout_deliveries_total {}", FanoutStats::get(&stats.deliveries));
    let name = "switchboard_fanout_batch_duration_seconds";
    write_header(out, name, "histogram", "Time until another node acknowledged a delivery batch.");
    stats.batch_latency.write(out, name, "");
}

fn write_admission(out: &mut String, admission: &switchboard_edge::Admission) {
    write_header(out, "switchboard_sockets_open", "gauge", "Sockets the public port holds.");
    let _ = writeln!(out, "switchboard_sockets_open {}", admission.held());
    write_header(out, "switchboard_sockets_max", "gauge", "Most sockets the public port holds (0: no cap).");
    let _ = writeln!(out, "switchboard_sockets_max {}", admission.max_total());
    let refused = [
        ("node_limit", admission.refused_node_limit.load(Ordering::Relaxed)),
        ("address_limit", admission.refused_address_limit.load(Ordering::Relaxed)),
        ("rate_limit", admission.refused_rate_limit.load(Ordering::Relaxed)),
    ];
    write_counters(
        out,
        "switchboard_sockets_refused_total",
        "Sockets refused at a connection cap.",
        "reason",
        refused.into_iter(),
    );
}

/// The Redis engine's counters.
fn write_bridge(out: &mut String, stats: &switchboard_redis::BridgeStats) {
    let counters = [
        ("switchboard_aspnet_received_total", "Messages received from the ASP.NET backplane.", &stats.received),
        ("switchboard_aspnet_published_total", "Messages published on the ASP.NET backplane.", &stats.published),
        (
            "switchboard_aspnet_refused_total",
            "Backplane messages that were not what their channel carries.",
            &stats.refused,
        ),
        (
            "switchboard_aspnet_group_commands_sent_total",
            "Group commands sent for ASP.NET connections.",
            &stats.group_commands_sent,
        ),
        (
            "switchboard_aspnet_group_commands_answered_total",
            "Group commands applied and acked for this node's connections.",
            &stats.group_commands_answered,
        ),
    ];
    for (name, help, value) in counters {
        write_header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", Stats::get(value));
    }
}

fn write_redis(out: &mut String, redis: &switchboard_redis::RedisEngine) {
    let stats = redis.stats();
    let (dropped, reconnects) = redis.losses();
    let name = "switchboard_redis_messages_total";
    write_header(out, name, "counter", "Messages published to and received from Redis channels, by channel kind.");
    for kind in switchboard_redis::ChannelKind::EVERY {
        let (published, received) = (&stats.published[kind as usize], &stats.received[kind as usize]);
        let label = kind.label();
        let _ = writeln!(out, "{name}{{direction=\"published\",channel=\"{label}\"}} {}", Stats::get(published));
        let _ = writeln!(out, "{name}{{direction=\"received\",channel=\"{label}\"}} {}", Stats::get(received));
    }
    let counters: [(&str, &str, u64); 8] = [
        (
            "switchboard_redis_unavailable_total",
            "Calls answered 503 because Redis could not be reached (nothing was sent).",
            Stats::get(&stats.unavailable),
        ),
        ("switchboard_redis_reply_batches_total", "Pipelines of replies published.", Stats::get(&stats.replies)),
        ("switchboard_redis_subscribes_total", "Channels subscribed to.", Stats::get(&stats.subscribes)),
        (
            "switchboard_redis_resubscribes_total",
            "Times every subscription was renewed after a reconnect.",
            Stats::get(&stats.resubscribes),
        ),
        ("switchboard_redis_reconnects_total", "Connections to Redis rebuilt.", reconnects),
        ("switchboard_redis_dropped_total", "Messages from Redis dropped because this node fell behind.", dropped),
        (
            "switchboard_redis_log_entries_applied_total",
            "Membership log entries applied.",
            Stats::get(&stats.log_entries_applied),
        ),
        (
            "switchboard_redis_reaped_total",
            "Connections of nodes whose lease ran out, closed by this node.",
            Stats::get(&stats.reaped),
        ),
    ];
    for (name, help, value) in counters {
        write_header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "switchboard_redis_heartbeat_seconds";
    write_header(out, name, "gauge", "Round trip of the last lease renewal in Redis.");
    let _ = writeln!(out, "{name} {}", Stats::get(&stats.heartbeat_rtt_micros) as f64 / 1e6);
    let name = "switchboard_redis_connected";
    write_header(out, name, "gauge", "1 while the node's lease in Redis is current.");
    let _ = writeln!(out, "{name} {}", u8::from(redis.is_connected()));
}

fn write_raft(out: &mut String, control: &ControlPlane) {
    let raft = control.raft_numbers();
    let mut gauge = |name: &str, help: &str, value: Option<u64>| {
        if let Some(value) = value {
            write_header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
    };
    gauge("switchboard_raft_term", "Current raft term.", Some(raft.term));
    gauge("switchboard_raft_leader", "Node id of the raft leader (0: none known).", Some(raft.leader.unwrap_or(0)));
    gauge("switchboard_raft_last_log_index", "Last raft log index on this node.", raft.last_log_index);
    gauge("switchboard_raft_commit_index", "Committed raft index (reported by the leader).", raft.commit_index);
    gauge("switchboard_raft_applied_index", "Raft index applied to this node's state.", raft.applied_index);
    let name = "switchboard_raft_proposal_duration_seconds";
    write_header(out, name, "histogram", "Membership writes: proposal, commit and apply barrier.");
    control.proposal_latency().write(out, name, "");
}

/// Resident memory, CPU time and open files of this process, from /proc (Linux).
fn write_process(out: &mut String) {
    let process = ProcessStats::read();
    if let Some(bytes) = process.memory_bytes {
        write_header(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        let _ = writeln!(out, "process_resident_memory_bytes {bytes}");
    }
    if let Some(seconds) = process.cpu_seconds {
        write_header(out, "process_cpu_seconds_total", "counter", "User and system CPU time in seconds.");
        let _ = writeln!(out, "process_cpu_seconds_total {seconds}");
    }
    if let Some(files) = process.open_files {
        write_header(out, "process_open_fds", "gauge", "Open file descriptors.");
        let _ = writeln!(out, "process_open_fds {files}");
    }
}

/// What /proc says about this process (Linux; `None` elsewhere).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcessStats {
    pub memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_files: Option<usize>,
}

impl ProcessStats {
    pub fn read() -> ProcessStats {
        let open_files = std::fs::read_dir("/proc/self/fd").ok().map(|entries| entries.count());
        ProcessStats { open_files, ..Self::usage() }
    }

    /// Memory and CPU time without the open files, for the sampler: counting them lists
    /// /proc/self/fd, milliseconds of a worker thread with thousands of sockets open (2 % of a
    /// node taking new connections, in a profile), every two seconds.
    fn usage() -> ProcessStats {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let memory_bytes = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024);
        // utime and stime are fields 14 and 15, counted after the parenthesised command name.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let ticks: Option<u64> = stat.rsplit_once(')').and_then(|(_, rest)| {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        });
        // USER_HZ is 100 on every Linux platform Switchboard ships for.
        let cpu_seconds = ticks.map(|ticks| ticks as f64 / 100.0);
        ProcessStats { memory_bytes, cpu_seconds, open_files: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_window_is_sampled_throughout() {
        // Fast calls first, then slow ones: far more calls than the reservoir keeps.
        let mut reservoir = Reservoir::default();
        for _ in 0..RECENT_KEPT {
            reservoir.offer(10);
        }
        for _ in 0..RECENT_KEPT * 9 {
            reservoir.offer(5_000);
        }
        let sample = reservoir.take();
        assert_eq!(sample.len(), RECENT_KEPT);
        let slow = sample.iter().filter(|&&us| us == 5_000).count();
        // Nine in ten calls were slow: the sample says so within a few percent.
        assert!((3_500..=3_880).contains(&slow), "{slow} of {RECENT_KEPT} kept were slow");
        assert_eq!(p99(sample), Some(5_000));
    }

    #[test]
    fn take_starts_a_new_window() {
        let mut reservoir = Reservoir::default();
        for us in 0..100 {
            reservoir.offer(us);
        }
        assert_eq!(reservoir.take().len(), 100);
        reservoir.offer(7);
        assert_eq!(reservoir.take(), vec![7]);
        assert_eq!(p99(reservoir.take()), None);
        assert_eq!(p99((1..=100).collect()), Some(99));
    }
}
