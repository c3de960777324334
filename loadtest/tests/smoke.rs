//! Short runs of every scenario against a real node (in this process): every transport,
//! both protocols, the built-in echo upstream, churn, worker processes, stepping and the
//! baseline. The reports' counts must add up: every message sent is received or counted lost
//! (and with so little load, none is lost).

use serde_json::Value;
use std::process::Command;
use switchboard_server::local::LocalNode;

const KEY: &str = "loadtest-smoke-key";

/// Runs the harness with `--report -` (the JSON report on stdout, the verdict line on stderr).
fn run(args: &[&str]) -> Value {
    let output = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
            .args(args)
            .args(["--report", "-"])
            .output()
            .expect("the harness runs")
    });
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    let verdict = String::from_utf8_lossy(&output.stderr);
    assert!(verdict.lines().last().is_some_and(|line| line.starts_with("PASS ")), "{args:?}: {verdict}");
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

/// Without `--report`, stdout is one verdict line; a run that fails the pass rule exits 1 and
/// names its first error (here every connection is refused: the key is wrong).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_says_why_in_one_line_and_exits_1() {
    let node = LocalNode::start(KEY, |_| {}).await;
    let output = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
            .args(["connect", "--endpoint", &node.endpoint, "--access-key", "not-the-key", "--connections", "5"])
            .args(["--max-seconds", "30", "--hold", "0"])
            .output()
            .expect("the harness runs")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert!(stdout.starts_with("FAIL connect: 0 of 5 connected (5 failed"), "{stdout}");
    assert!(stdout.contains("first error:") && stdout.contains("401"), "{stdout}");
    let unreachable = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
            .args(["connect", "--endpoint", &node.endpoint, "--access-key", KEY, "--connections", "0"])
            .output()
            .expect("the harness runs")
    });
    assert_eq!(unreachable.status.code(), Some(2), "a run that cannot be made is an error");
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Every delivery expected is received or lost; here none is lost and nothing failed.
fn assert_accounted(what: &str, report: &Value) {
    let r = &report["result"];
    let (expected, received, lost) =
        (u(&r["deliveries_expected"]), u(&r["deliveries_received"]), u(&r["deliveries_lost"]));
    assert_eq!(expected, received + lost, "{what}: {report}");
    assert_eq!(lost, 0, "{what}: {report}");
    assert!(expected > 0, "{what}: {report}");
    assert_eq!(u(&r["failed"]), 0, "{what}: {report}");
    assert_eq!(r["verdict"]["pass"], true, "{what}: {report}");
    assert!(u(&r["latency"]["count"]) > 0, "{what}: {report}");
    let buckets: u64 = r["latency_buckets"].as_object().unwrap().values().map(u).sum();
    assert_eq!(buckets, u(&r["latency"]["count"]), "{what}: {report}");
    let per_second: u64 = r["series"].as_array().unwrap().iter().map(|s| u(&s["delivered"])).sum();
    assert_eq!(per_second, received + u(&r["deliveries_to_churning"]), "{what}: {report}");
    for step in r["steps"].as_array().unwrap() {
        assert_eq!(u(&step["deliveries_expected"]), u(&step["deliveries_received"]) + u(&step["deliveries_lost"]));
    }
}

async fn every_rest_scenario_on(transport: &str) {
    let node = LocalNode::start(KEY, |_| {}).await;
    let pid = std::process::id().to_string();
    let common = [
        "--endpoint",
        &node.endpoint,
        "--access-key",
        KEY,
        "--transport",
        transport,
        "--connections",
        "20",
        "--max-seconds",
        "60",
        "--server-pid",
        &pid,
    ];
    let connect = run(&[&["connect"][..], &common, &["--hold", "0"]].concat());
    assert_eq!(connect["result"]["connected"], 20, "{transport}: {connect}");
    assert_eq!(connect["result"]["failed"], 0);
    assert!(connect["result"]["server_bytes_per_connection"].is_number());

    let sends = ["--messages", "40", "--message-rate", "400"];
    let broadcast = run(&[&["broadcast"][..], &common, &sends].concat());
    assert_accounted("broadcast", &broadcast);
    assert_eq!(broadcast["result"]["deliveries_expected"], 20 * 40);
    assert!(broadcast["result"]["server_cpu_us_per_delivery"].is_number());

    for scenario in ["send-to-user", "send-to-connection"] {
        let report = run(&[&[scenario][..], &common, &sends].concat());
        assert_accounted(scenario, &report);
        assert_eq!(report["result"]["deliveries_expected"], 40, "{scenario} {transport}: {report}");
    }

    // Groups of 10 from 25 connections: groups of 10, 10 and 5 members.
    let common_25 = [&common[..6], &["--connections", "25"], &common[8..]].concat();
    let groups = run(&[&["group"][..], &common_25, &["--messages", "30", "--message-rate", "400"]].concat());
    assert_accounted("group", &groups);
    assert_eq!(groups["result"]["deliveries_expected"], 10 * 10 + 10 * 10 + 10 * 5, "{groups}");
    // A few big groups.
    let big = run(&[&["group"][..], &common, &["--groups", "2", "--messages", "10", "--message-rate", "400"]].concat());
    assert_accounted("big groups", &big);
    assert_eq!(big["result"]["deliveries_expected"], 10 * 10, "{big}");

    // Churning connections leave every ~0.2 s while 1 s of mixed sends goes on.
    let mixed = run(&[
        &["mixed"][..],
        &common,
        &["--messages", "200", "--message-rate", "200", "--churn-percent", "20", "--churn-interval", "0.2"],
    ]
    .concat());
    assert_accounted("mixed", &mixed);
    assert!(u(&mixed["result"]["reconnects"]) > 0, "{mixed}");
    assert_eq!(mixed["result"]["reconnect_failures"], 0, "{mixed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_scenarios_over_websockets() {
    every_rest_scenario_on("websockets").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_scenarios_over_server_sent_events() {
    every_rest_scenario_on("sse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_scenarios_over_long_polling() {
    every_rest_scenario_on("long-polling").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_through_the_built_in_upstream_on_every_transport_and_protocol() {
    // A port chosen now, for the upstream the harness will start and the node will call.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let template = format!("http://{upstream}/upstream/{{event}}");
    let node = LocalNode::start(KEY, |args| args.upstream = vec![template]).await;
    for (transport, protocol) in
        [("websockets", "json"), ("websockets", "messagepack"), ("sse", "json"), ("long-polling", "messagepack")]
    {
        let echo = run(&[
            "echo",
            "--endpoint",
            &node.endpoint,
            "--access-key",
            KEY,
            "--transport",
            transport,
            "--protocol",
            protocol,
            "--connections",
            "10",
            "--messages",
            "100",
            "--message-rate",
            "200",
            "--upstream-listen",
            &upstream,
            "--max-seconds",
            "60",
        ]);
        assert_accounted(&format!("echo {transport} {protocol}"), &echo);
        let r = &echo["result"];
        assert_eq!(r["messages_sent"], r["deliveries_expected"], "{echo}");
        assert_eq!(r["upstream_calls"], r["messages_sent"], "{echo}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stepping_and_the_baseline() {
    let node = LocalNode::start(KEY, |_| {}).await;
    let pid = std::process::id().to_string();
    let common = ["--endpoint", &node.endpoint, "--access-key", KEY, "--max-seconds", "60", "--server-pid", &pid];

    // Two worker processes hold the connections; their histograms and counters are merged.
    let workers = run(&[
        &["broadcast"][..],
        &common,
        &["--connections", "30", "--workers", "2", "--messages", "20", "--message-rate", "400"],
    ]
    .concat());
    assert_accounted("workers", &workers);
    assert_eq!(workers["result"]["connected"], 30);
    assert_eq!(workers["result"]["deliveries_expected"], 30 * 20);

    // Stepping: three tiny steps, each accounted, the highest passing one reported.
    let dir = std::env::temp_dir().join(format!("loadtest-smoke-{}", std::process::id()));
    let markdown = dir.join("summary.md");
    let stepping = run(&[
        &["send-to-user"][..],
        &common,
        &[
            "--connections",
            "20",
            "--step-start",
            "50",
            "--step-increment",
            "50",
            "--step-max",
            "150",
            "--step-duration",
            "0.3",
        ],
        &["--markdown", markdown.to_str().unwrap(), "--plots", dir.to_str().unwrap()],
    ]
    .concat());
    assert_accounted("stepping", &stepping);
    let steps = stepping["result"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{stepping}");
    assert_eq!(steps.iter().map(|s| u(&s["messages_sent"])).collect::<Vec<_>>(), [15, 30, 45]);
    assert_eq!(stepping["result"]["highest_passing_rate"], 150.0);
    assert!(std::fs::read_to_string(&markdown).unwrap().contains("## Steps"));
    for plot in ["throughput.svg", "latency.svg"] {
        assert!(std::fs::read_to_string(dir.join(plot)).unwrap().contains("<polyline"));
    }
    let _ = std::fs::remove_dir_all(&dir);

    // The same broadcast against the baseline server, as a ratio. Long enough (about a second
    // each) that both servers use CPU time the clock-tick accounting can see.
    let compared = run(&[
        &["broadcast"][..],
        &common,
        &["--connections", "20", "--messages", "2000", "--message-rate", "2000", "--compare-baseline"],
    ]
    .concat());
    assert_accounted("compare", &compared);
    let baseline = &compared["baseline"];
    assert_eq!(baseline["deliveries_expected"], 20 * 2000, "{compared}");
    assert_eq!(baseline["deliveries_received"], baseline["deliveries_expected"], "{compared}");
    assert!(compared["ratio_to_baseline"]["delivered_per_second"].is_number(), "{compared}");
    assert!(compared["ratio_to_baseline"]["cpu_efficiency"].is_number(), "{compared}");

    // Sends to users against the baseline too: each send reaches the socket opened for its user
    // (a send to a user with no socket is answered 404, a REST error).
    let users = run(&[
        &["send-to-user"][..],
        &common,
        &["--connections", "20", "--messages", "400", "--message-rate", "400", "--compare-baseline"],
    ]
    .concat());
    assert_accounted("users", &users);
    let baseline = &users["baseline"];
    assert_eq!(baseline["deliveries_expected"], 400, "{users}");
    assert_eq!(baseline["deliveries_received"], 400, "{users}");
    assert_eq!(baseline["rest_errors"], 0, "{users}");
    assert!(users["ratio_to_baseline"]["p99_latency"].is_number(), "{users}");

    // Connecting to the baseline as to Switchboard: it answers the negotiate and the handshake
    // (the client fails the connection otherwise).
    let same = run(&[
        &["connect"][..],
        &common,
        &["--connections", "10", "--hold", "0", "--negotiate", "--compare-baseline", "--same-exchanges"],
    ]
    .concat());
    assert_eq!(same["result"]["connected"], 10, "{same}");
    assert_eq!(same["baseline"]["connected"], 10, "{same}");
    assert_eq!(same["config"]["same_exchanges"], true, "{same}");
}

/// A server known only by its metrics endpoint (as on another machine): memory and CPU come
/// from its `process_*` gauges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_usage_from_its_metrics_endpoint() {
    let node = LocalNode::start(KEY, |args| args.internal_listen = Some("127.0.0.1:0".into())).await;
    let metrics = format!("http://{}/metrics", node.internal.expect("an internal endpoint"));
    let report = run(&[
        "broadcast",
        "--endpoint",
        &node.endpoint,
        "--access-key",
        KEY,
        "--max-seconds",
        "60",
        "--server-metrics",
        &metrics,
        "--connections",
        "20",
        "--messages",
        "20",
        "--message-rate",
        "200",
    ]);
    assert_accounted("metrics endpoint", &report);
    let result = &report["result"];
    assert!(result["server_rss_open_bytes"].as_u64().unwrap() > 1_000_000, "{result}");
    assert!(result["server_cpu_us_per_delivery"].as_f64().is_some(), "{result}");
}
