//! A short run of every scenario against a real node (in this process) on every transport;
//! the report's counts must add up: every delivery expected is received, nothing is lost.

use std::process::Command;
use switchboard_server::local::LocalNode;

const KEY: &str = "loadtest-smoke-key";

fn run(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest")).args(args).output().expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_on_every_transport_accounts_for_every_message() {
    let node = LocalNode::start(KEY, |_| {}).await;
    let endpoint = node.endpoint.clone();
    let pid = std::process::id().to_string();
    for transport in ["websockets", "sse", "long-polling"] {
        let common = ["--endpoint", &endpoint, "--access-key", KEY, "--transport", transport, "--connections", "20"];
        let connect = tokio::task::block_in_place(|| {
            run(&[&["connect"][..], &common, &["--hold", "0", "--max-seconds", "60", "--server-pid", &pid]].concat())
        });
        let result = &connect["result"];
        assert_eq!(result["connected"], 20, "{transport}: {connect}");
        assert_eq!(result["failed"], 0);
        assert!(result["server_bytes_per_connection"].is_number());

        let broadcast = tokio::task::block_in_place(|| {
            run(&[
                &["broadcast"][..],
                &common,
                &["--messages", "30", "--message-rate", "200", "--max-seconds", "60", "--server-pid", &pid],
            ]
            .concat())
        });
        let result = &broadcast["result"];
        assert_eq!(result["messages_rejected"], 0, "{transport}: {broadcast}");
        assert_eq!(result["deliveries_expected"], 20 * 30);
        assert_eq!(result["deliveries_received"], result["deliveries_expected"], "{transport}: {broadcast}");
        assert_eq!(result["deliveries_lost"], 0);
        assert!(result["latency"]["count"].as_u64().unwrap() > 0);

        let to_users = tokio::task::block_in_place(|| {
            run(&[
                &["send-to-user"][..],
                &common,
                &["--messages", "60", "--message-rate", "500", "--max-seconds", "60", "--server-pid", &pid],
            ]
            .concat())
        });
        let result = &to_users["result"];
        assert_eq!(result["deliveries_expected"], 60, "{transport}: {to_users}");
        assert_eq!(result["deliveries_received"], 60, "{transport}: {to_users}");
        assert_eq!(result["deliveries_lost"], 0);
    }
}
