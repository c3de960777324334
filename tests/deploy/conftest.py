"""Shared settings of the deployment checks (tests/deploy, run by scripts/test)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import helm_python

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
