"""deploy/local/cluster.sh with --engine redis: stateless nodes on a real redis-server (Debian's,
installed by the test script), started, used through REST and WebSockets, stopped."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from conftest import ROOT, binary, timeout
from signalr import HubClient, http, mint

LAUNCHER = ROOT / "deploy" / "local" / "cluster.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_block(size: int) -> int:
    """A base port with `size` free ports after it."""
    for _ in range(200):
        base = free_port()
        if base + size < 65000 and all(_free(base + i) for i in range(size)):
            return base
    raise AssertionError("no block of free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def launcher(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SWITCHBOARD_BIN=binary())
    return subprocess.run(["bash", str(LAUNCHER), *args], capture_output=True, text=True, env=env,
                          timeout=timeout(120))


def test_the_launcher_starts_stateless_nodes_on_redis(redis_url):
    base = free_block(3)
    data_dir = Path(tempfile.mkdtemp(prefix="sb-launcher-"))
    try:
        started = launcher("start", "--nodes", "3", "--voters", "3", "--base-port", str(base),
                           "--data-dir", str(data_dir), "--engine", "redis", "--redis", redis_url)
        assert started.returncode == 0, started.stderr
        lines = started.stdout.strip().splitlines()
        assert lines[:3] == [f"node {i} edge http://127.0.0.1:{base + i - 1}" for i in (1, 2, 3)], lines
        connection_string = lines[3]
        assert connection_string.startswith(f"Endpoint=http://127.0.0.1:{base};AccessKey="), lines
        # The key is passed through its file, never on a command line (`ps` shows those).
        key = (data_dir / "access-key").read_text().strip()
        for pid_file in data_dir.glob("node-*.pid"):
            command_line = Path(f"/proc/{pid_file.read_text().strip()}/cmdline").read_bytes()
            assert key.encode() not in command_line and b"--access-key-file" in command_line
        # A client on node 3 gets a broadcast sent through node 1.
        client_token = mint(binary(), connection_string, "--hub", "chat", "--user", "u3")
        node3 = f"http://127.0.0.1:{base + 2}"
        client = HubClient(node3, node3, "chat", client_token, timeout(10))
        try:
            url = f"http://127.0.0.1:{base}/api/v1/hubs/chat"
            rest_token = mint(binary(), connection_string, "--rest", url)
            status, body = http("POST", url, token=rest_token,
                                body={"target": "m", "arguments": ["through-redis"]})
            assert status == 202, body
            assert client.next_message()["arguments"] == ["through-redis"]
        finally:
            client.close()
        # No gRPC port in this mode, and the same arguments without --engine redis are refused.
        refused = launcher("start", "--nodes", "1", "--base-port", str(base), "--data-dir", str(data_dir),
                           "--redis", redis_url)
        assert refused.returncode == 64 and "--engine redis" in refused.stderr, refused.stderr
    finally:
        stopped = launcher("stop", "--data-dir", str(data_dir))
        assert stopped.returncode == 0, stopped.stderr
        shutil.rmtree(data_dir, ignore_errors=True)
