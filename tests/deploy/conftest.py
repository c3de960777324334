"""Shared settings of the deployment checks (tests/deploy, run by scripts/test)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import helm_python
import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[2]

# The Helm library logs template `fail` calls at INFO on stderr; the tests read the errors.
helm_python.disable_logging()


def binary() -> str:
    """The switchboard binary under test: $SWITCHBOARD_BIN, else target/debug/switchboard."""
    path = os.environ.get("SWITCHBOARD_BIN") or str(ROOT / "target" / "debug" / "switchboard")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"no switchboard binary at {path}: cargo build -p switchboard-server (or set SWITCHBOARD_BIN)")
    return path


def timeout(seconds: float) -> float:
    return seconds * float(os.environ.get("SWITCHBOARD_TEST_TIMEOUT_SCALE", "1"))


@pytest.fixture
def redis_url():
    """A scratch redis-server (Debian's, installed by the test script) on a free loopback port."""
    server = shutil.which("redis-server")
    assert server, "redis-server is missing: scripts/test installs Debian's redis-server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as scratch:
        process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", scratch], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout(20)
            while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
                assert time.monotonic() < deadline, "redis-server did not answer PING"
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}"
        finally:
            process.kill()
            process.wait()
