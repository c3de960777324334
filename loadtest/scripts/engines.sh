#!/usr/bin/env bash
# The same load on a 3-node cluster of each engine, one after the other, in one run:
# the raft engine, the Redis engine on a standalone redis-server, and on a Redis Cluster of three
# masters with a replica each. Server CPU includes every redis-server process.
#
#   loadtest/scripts/engines.sh [OUT_DIR]
#
# Needs release builds (cargo build --release -p switchboard-server -p switchboard-loadtest) and
# Debian's redis-server and redis-tools. Ports 19000-19002 (nodes) and 19400-19406 (Redis).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/target/bench-engines}"
LT="$ROOT/target/release/switchboard-loadtest"
export SWITCHBOARD_BIN="$ROOT/target/release/switchboard"
KEY=benchkey
E="--endpoint http://127.0.0.1:19000,http://127.0.0.1:19001,http://127.0.0.1:19002 --access-key $KEY"
GROUP_ARGS="--connections 10000 --workers 2 --rate 5000 --groups 10 --messages 1500 --message-rate 150 --rest-concurrency 32 --max-seconds 120"
REST_ARGS="--connections 300 --messages 200000 --message-rate 0 --rest-concurrency 64 --max-seconds 60"
mkdir -p "$OUT"
SCRATCH="$(mktemp -d)"
REDIS_PIDS=()

redis_start() { # port [extra args]
  local port="$1"; shift
  mkdir -p "$SCRATCH/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$SCRATCH/redis-$port" "$@" >/dev/null &
  REDIS_PIDS+=("$!")
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
}

redis_stop() {
  for pid in "${REDIS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  REDIS_PIDS=()
}

node_pids() { # data dir
  local pids=()
  for f in "$1"/node-*.pid; do pids+=(--server-pid "$(cat "$f")"); done
  for pid in "${REDIS_PIDS[@]}"; do pids+=(--server-pid "$pid"); done
  echo "${pids[@]}"
}

run() { # name, launcher flags...
  local name="$1"; shift
  local dir="$SCRATCH/$name"
  "$ROOT/deploy/local/cluster.sh" start --nodes 3 --base-port 19000 --data-dir "$dir" --access-key "$KEY" "$@" >/dev/null
  # shellcheck disable=SC2046
  # Exit 1 is a run that failed the pass rule: its report is still a measurement.
  # shellcheck disable=SC2046
  "$LT" group $E $GROUP_ARGS $(node_pids "$dir") --report "$OUT/$name-group.json" || [[ $? == 1 ]]
  # shellcheck disable=SC2046
  "$LT" send-to-user $E $REST_ARGS $(node_pids "$dir") --report "$OUT/$name-rest.json" || [[ $? == 1 ]]
  "$ROOT/deploy/local/cluster.sh" stop --data-dir "$dir"
  redis_stop
}

trap 'redis_stop; rm -rf "$SCRATCH"' EXIT
run raft
redis_start 19400
run redis --engine redis --redis redis://127.0.0.1:19400
for port in 19401 19402 19403 19404 19405 19406; do
  redis_start "$port" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 --repl-diskless-sync-delay 0
done
redis-cli --cluster create 127.0.0.1:1940{1,2,3,4,5,6} --cluster-replicas 1 --cluster-yes >/dev/null
until redis-cli -p 19401 cluster info | grep -q cluster_state:ok; do sleep 0.1; done
run redis-cluster --engine redis --redis-cluster redis://127.0.0.1:19401,redis://127.0.0.1:19402,redis://127.0.0.1:19403

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = {}
for name in ("raft", "redis", "redis-cluster"):
    g = json.load(open(f"{out}/{name}-group.json"))["result"]
    r = json.load(open(f"{out}/{name}-rest.json"))["result"]
    rows[name] = (g, r)
print("| engine (3 nodes) | group: delivered/s | server CPU s (incl. Redis) | µs/delivery | p99 ms | lost | deliveries per CPU-second, ÷ raft | REST sends to users/s | REST p99 ms |")
print("|---|---|---|---|---|---|---|---|---|")
base = rows["raft"][0]["deliveries_received"] / rows["raft"][0]["server_cpu_seconds"]
for name, (g, r) in rows.items():
    per_cpu = g["deliveries_received"] / g["server_cpu_seconds"]
    print(f"| {name} | {g['delivered_per_second']:,.0f} | {g['server_cpu_seconds']:.2f} | {g['server_cpu_us_per_delivery']:.2f} | "
          f"{g['latency']['p99_ms']:.0f} | {g['deliveries_lost']} | {per_cpu / base:.2f} | {r['rest_sends_per_second']:,.0f} | {r['rest_latency']['p99_ms']:.1f} |")
PY
