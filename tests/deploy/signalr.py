"""A small SignalR client for the wiring check: negotiate (version 1) over HTTP, then WebSockets
with the JSON hub protocol (records end with 0x1e). Tokens come from `switchboard token`, so the
test signs nothing itself. Every wait is bounded."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import websocket  # websocket-client

RS = "\x1e"


def mint(binary: str, connection_string: str, *args: str) -> str:
    """`switchboard token ...` with the given connection string."""
    out = subprocess.run([binary, "token", "--connection-string", connection_string, *args],
                         capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def http(method: str, url: str, *, token: str | None = None, body: Any = None,
         timeout: float = 10, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


class HubClient:
    """Negotiates on one node and opens its WebSocket on another (or the same) node."""

    def __init__(self, negotiate_base: str, connect_base: str, hub: str, token: str, timeout: float,
                 context: ssl.SSLContext | None = None):
        self.timeout = timeout
        status, body = http("POST", f"{negotiate_base}/client/negotiate?hub={hub}&negotiateVersion=1", token=token,
                            context=context)
        assert status == 200, f"negotiate on {negotiate_base}: {status} {body}"
        negotiated = json.loads(body)
        self.connection_id = negotiated["connectionId"]
        assert "WebSockets" in [t["transport"] for t in negotiated["availableTransports"]], negotiated
        query = urllib.parse.urlencode({"hub": hub, "id": negotiated["connectionToken"], "access_token": token})
        ws_url = re.sub(r"^http", "ws", connect_base) + f"/client/?{query}"
        sslopt = {"context": context} if context else None
        self.ws = websocket.create_connection(ws_url, timeout=timeout, sslopt=sslopt)
        self.ws.send(json.dumps({"protocol": "json", "version": 1}) + RS)
        self.buffer = ""
        handshake = self._next_record(time.monotonic() + timeout)
        assert handshake == {}, f"handshake answer: {handshake}"

    def _next_record(self, deadline: float) -> dict[str, Any]:
        while RS not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message in time")
            self.ws.settimeout(remaining)
            frame = self.ws.recv()
            if frame in ("", b""):
                raise ConnectionError("the server closed the WebSocket")
            self.buffer += frame if isinstance(frame, str) else frame.decode()
        record, self.buffer = self.buffer.split(RS, 1)
        return json.loads(record)

    def next_message(self, *, types: tuple[int, ...] = (1, 7), timeout: float | None = None) -> dict[str, Any]:
        """The next invocation (1) or close (7); pings (6) are skipped."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            record = self._next_record(deadline)
            if record.get("type") in types:
                return record

    def close(self) -> None:
        try:
            self.ws.close(timeout=2)
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
