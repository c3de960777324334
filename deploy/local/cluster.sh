#!/usr/bin/env bash
# A local Switchboard cluster of real processes on loopback.
#
#   deploy/local/cluster.sh start --nodes N [--voters V] --base-port P --data-dir DIR [--access-key KEY]
#                                 [--engine raft|redis] [--redis URL | --redis-cluster URL,URL,...]
#   deploy/local/cluster.sh stop --data-dir DIR
#
# Node i (1..N) serves clients and REST on 127.0.0.1:P+i-1 and inter-node gRPC on
# 127.0.0.1:P+100+i-1. The first V nodes (default min(N,3)) are raft voters; the others are
# edge-only nodes that join through node 1. With --engine redis every node is a stateless edge
# node of the Redis given (--voters is accepted and ignored; no gRPC port). `start` waits until
# every node is ready, then prints `node <id> <role> http://127.0.0.1:<port>` per node and the
# connection string. `start` on an existing DIR restarts the same cluster with its data. The
# binary is $SWITCHBOARD_BIN, else target/release/switchboard, else target/debug/switchboard.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }

command="${1:-}"; shift || true
nodes=""; voters=""; base_port=""; data_dir=""; access_key=""; engine="raft"; redis_flags=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --voters) voters="$2"; shift 2 ;;
    --base-port) base_port="$2"; shift 2 ;;
    --data-dir) data_dir="$2"; shift 2 ;;
    --access-key) access_key="$2"; shift 2 ;;
    --engine) engine="$2"; shift 2 ;;
    --redis | --redis-cluster) redis_flags+=("$1" "$2"); shift 2 ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[[ -n "$data_dir" ]] || usage

stop_cluster() {
  local pids=()
  for pidfile in "$data_dir"/node-*.pid; do
    [[ -f "$pidfile" ]] || continue
    local pid; pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
    rm -f "$pidfile"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

case "$command" in
  stop) stop_cluster; exit 0 ;;
  start) ;;
  *) usage ;;
esac

[[ -n "$nodes" && -n "$base_port" ]] || usage
case "$engine" in
  raft)
    (( ${#redis_flags[@]} == 0 )) || { echo "--redis and --redis-cluster need --engine redis" >&2; exit 64; }
    [[ -n "$voters" ]] || voters=$(( nodes < 3 ? nodes : 3 ))
    (( voters >= 1 && voters <= nodes )) || { echo "--voters must be between 1 and --nodes" >&2; exit 64; } ;;
  redis)
    (( ${#redis_flags[@]} == 2 )) || { echo "--engine redis needs one --redis URL or --redis-cluster URL,URL,..." >&2; exit 64; }
    voters=0 ;;
  *) echo "--engine must be raft or redis" >&2; exit 64 ;;
esac

bin="${SWITCHBOARD_BIN:-}"
if [[ -z "$bin" ]]; then
  if [[ -x "$ROOT/target/release/switchboard" ]]; then bin="$ROOT/target/release/switchboard"; else bin="$ROOT/target/debug/switchboard"; fi
fi
[[ -x "$bin" ]] || { echo "no switchboard binary at $bin (cargo build --release -p switchboard-server)" >&2; exit 1; }

mkdir -p "$data_dir"
stop_cluster
# One access key and one cluster secret for the whole cluster, kept in DIR.
if [[ -n "$access_key" ]]; then printf '%s\n' "$access_key" > "$data_dir/access-key"; fi
[[ -s "$data_dir/access-key" ]] || head -c 32 /dev/urandom | base64 > "$data_dir/access-key"
[[ -s "$data_dir/cluster-secret" ]] || head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$data_dir/cluster-secret"
chmod 600 "$data_dir/access-key" "$data_dir/cluster-secret"
secret="$(cat "$data_dir/cluster-secret")"

voter_list=""
for i in $(seq 1 "$voters"); do voter_list+="${voter_list:+,}$i=127.0.0.1:$((base_port + 100 + i - 1))"; done

for i in $(seq 1 "$nodes"); do
  http=$((base_port + i - 1)); grpc=$((base_port + 100 + i - 1))
  # Secrets never on the command line (visible in `ps`): the key from its file, the cluster
  # secret from the environment.
  args=(serve --listen "127.0.0.1:$http" --data-dir "$data_dir/node-$i" --access-key-file "$data_dir/access-key" --node-id "$i")
  if [[ "$engine" == redis ]]; then
    args+=(--engine redis "${redis_flags[@]}")
  else
    args+=(--grpc-listen "127.0.0.1:$grpc")
  fi
  if [[ "$engine" == redis ]]; then
    :
  elif (( i <= voters )); then
    args+=(--role both --voter "$voter_list")
  else
    args+=(--role edge --join "127.0.0.1:$((base_port + 100))")
  fi
  : > "$data_dir/node-$i.out"
  SWITCHBOARD_CLUSTER_SECRET="$secret" nohup "$bin" "${args[@]}" > "$data_dir/node-$i.out" 2> "$data_dir/node-$i.log" < /dev/null &
  echo $! > "$data_dir/node-$i.pid"
done

# Ready = the node printed its connection string (it leads or follows a leader and is registered).
deadline=$((SECONDS + 90))
for i in $(seq 1 "$nodes"); do
  until [[ -s "$data_dir/node-$i.out" ]]; do
    if ! kill -0 "$(cat "$data_dir/node-$i.pid")" 2>/dev/null; then
      echo "node $i exited; see $data_dir/node-$i.log" >&2; tail -5 "$data_dir/node-$i.log" >&2; stop_cluster; exit 1
    fi
    if (( SECONDS > deadline )); then echo "node $i not ready within 90 s; see $data_dir/node-$i.log" >&2; stop_cluster; exit 1; fi
    sleep 0.1
  done
done

for i in $(seq 1 "$nodes"); do
  role=$([[ $i -le $voters ]] && echo both || echo edge)
  echo "node $i $role http://127.0.0.1:$((base_port + i - 1))"
done
head -n 1 "$data_dir/node-1.out"
