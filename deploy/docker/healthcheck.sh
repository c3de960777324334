#!/bin/bash
# Container health check (Dockerfile HEALTHCHECK): GET /healthz on the internal port,
# healthy on an HTTP 200. Uses bash's /dev/tcp, so the image needs no curl or wget.
# The port comes from SWITCHBOARD_INTERNAL_LISTEN (default 0.0.0.0:9090); the check
# connects to 127.0.0.1 unless the node listens on one specific address.
set -euo pipefail
listen="${SWITCHBOARD_INTERNAL_LISTEN:-0.0.0.0:9090}"
port="${listen##*:}"
host="${listen%:*}"
host="${host#[}"; host="${host%]}"
case "$host" in 0.0.0.0 | "" | "::") host=127.0.0.1 ;; esac
exec 3<>"/dev/tcp/${host}/${port}"
printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3
IFS= read -r -t 5 status <&3
exec 3<&-
[[ "$status" == "HTTP/1."[01]" 200"* ]]
