"""signalrcore 1.0.2 against Switchboard, through an Azure-style negotiate redirect.

Independent of the Node suite: the negotiate "function app" and the JWT signer
are written here with the standard library only (http.server + hmac).
Every wait is bounded.
"""

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.types import HubProtocolEncoding

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10 * float(os.environ.get("SWITCHBOARD_TEST_TIMEOUT_SCALE", "1"))


# --------------------------------------------------------------------------- JWT

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_jwt(payload: dict, key: str, alg: str = "HS256") -> str:
    header = {"alg": alg, "typ": "JWT"}
    signing_input = _b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        _b64url(json.dumps(payload, separators=(",", ":")).encode())
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(key.encode("utf-8"), signing_input.encode("ascii"), digest).digest()
    return signing_input + "." + _b64url(sig)


def client_token(endpoint: str, hub: str, key: str, user_id=None) -> str:
    now = int(time.time())
    claims = {"aud": f"{endpoint}/client/?hub={hub}", "exp": now + 3600, "nbf": now, "iat": now}
    if user_id:
        claims["asrs.s.uid"] = user_id
    return sign_jwt(claims, key)


def server_token(url: str, key: str) -> str:
    now = int(time.time())
    parts = urllib.parse.urlsplit(url)
    aud = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return sign_jwt({"aud": aud, "exp": now + 3600, "nbf": now, "iat": now}, key)


# --------------------------------------------------------------------------- server

def parse_connection_string(cs: str) -> dict:
    out = {}
    for part in cs.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip().lower()] = v.strip()
    out["endpoint"] = out["endpoint"].rstrip("/")
    return out


class Switchboard:
    def __init__(self):
        self.bin = os.environ.get("SWITCHBOARD_BIN") or str(REPO_ROOT / "target" / "debug" / "switchboard")
        if not os.path.exists(self.bin):
            raise RuntimeError(f"switchboard binary not found at {self.bin}")
        self.key = secrets.token_urlsafe(33)
        self.data_dir = tempfile.mkdtemp(prefix="switchboard-pytest-")
        # Beside the data directory, not through it: "dir/../x" stops resolving once dir is removed.
        self.stderr_path = self.data_dir + ".stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--listen", "127.0.0.1:0", "--access-key", self.key, "--data-dir", self.data_dir],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL,
        )
        line_box = {}
        ready = threading.Event()

        def read_first_line():
            line_box["line"] = self.proc.stdout.readline().decode("utf-8", "replace").strip()
            ready.set()

        threading.Thread(target=read_first_line, daemon=True).start()
        if not ready.wait(30) or not line_box.get("line", "").startswith("Endpoint="):
            # Read before stop(), which removes the file.
            stderr = self.stderr_tail()
            self.stop()
            raise RuntimeError(f"switchboard did not print its connection string (got {line_box.get('line')!r}); "
                               f"stderr: {stderr}")
        self.connection_string = line_box["line"]
        cs = parse_connection_string(self.connection_string)
        self.endpoint = cs["endpoint"]
        assert cs["accesskey"] == self.key

    def stderr_tail(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        try:
            os.remove(self.stderr_path)
        except OSError:
            pass

    def rest(self, method: str, path: str, body=None, query=None):
        url = self.endpoint + path + (("?" + urllib.parse.urlencode(query, doseq=True)) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", "Bearer " + server_token(url, self.key))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as res:
                return res.status, res.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


# --------------------------------------------------------------------------- negotiate app

class NegotiateApp:
    """POST /api/negotiate → {"url": endpoint/client/?hub=H, "accessToken": jwt} like the seed's function."""

    def __init__(self, endpoint: str, key: str):
        app = self
        self.calls = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                u = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(u.query)
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                app.calls.append(self.path)
                if u.path != "/api/negotiate":
                    self.send_response(404)
                    self.end_headers()
                    return
                hub = (q.get("hub", ["chat"])[0]).lower()
                user = self.headers.get("x-ms-client-principal-id") or q.get("userId", [None])[0]
                body = json.dumps({
                    "url": f"{endpoint}/client/?hub={hub}",
                    "accessToken": client_token(endpoint, hub, key, user),
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def server():
    s = Switchboard()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def app(server):
    a = NegotiateApp(server.endpoint, server.key)
    yield a
    a.stop()


class Client:
    def __init__(self, app: NegotiateApp, hub: str, protocol: HubProtocolEncoding, user_id=None):
        q = {"hub": hub}
        if user_id:
            q["userId"] = user_id
        url = f"{app.url}/api?{urllib.parse.urlencode(q)}"
        self.received = []
        self.cond = threading.Condition()
        self.opened = threading.Event()
        self.closed = threading.Event()
        self.conn = HubConnectionBuilder() \
            .with_url(url) \
            .with_hub_protocol(protocol) \
            .configure_logging(logging.WARNING) \
            .build()
        self.conn.on_open(self.opened.set)
        self.conn.on_close(self.closed.set)
        self.conn.on("msg", self._on_msg)

    def _on_msg(self, args):
        with self.cond:
            self.received.append(list(args))
            self.cond.notify_all()

    def start(self):
        self.conn.start()
        assert self.opened.wait(TIMEOUT), "signalrcore did not open (handshake) in time"

    def wait_for(self, tag):
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while True:
                for args in self.received:
                    if args and args[0] == tag:
                        return args
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for msg {tag!r}; got {self.received!r}")
                self.cond.wait(left)

    def stop(self):
        # signalrcore 1.0.2's stop() closes the socket fd and then joins its
        # receive thread, which stays blocked in recv() until the server sends
        # something (a Ping, ≤15 s) or closes. Run it in the background with a
        # bounded wait so teardown never hangs; the server is killed at module end.
        t = threading.Thread(target=self._stop_quietly, daemon=True)
        t.start()
        t.join(2)

    def _stop_quietly(self):
        try:
            self.conn.stop()
        except Exception:  # noqa: BLE001 - best effort
            pass


def _hub():
    return "py" + uuid.uuid4().hex[:12]


PROTOCOLS = [pytest.param(HubProtocolEncoding.text, id="json"), pytest.param(HubProtocolEncoding.binary, id="msgpack")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_signalrcore_receives_rest_broadcast_through_negotiate_redirect(server, app, protocol):
    hub = _hub()
    calls_before = len(app.calls)
    c = Client(app, hub, protocol)
    c.start()
    try:
        assert any(p.startswith("/api/negotiate") for p in app.calls[calls_before:]), app.calls
        args = ["py-broadcast", {"n": 1, "s": "héllo 🎉"}, [1, 2.5, None, True]]
        status, body = server.rest("POST", f"/api/v1/hubs/{hub}", {"target": "msg", "arguments": args})
        assert status == 202, (status, body)
        got = c.wait_for("py-broadcast")
        assert got == args
        status, body = server.rest("POST", f"/api/hubs/{hub}/:send", {"target": "msg", "arguments": ["py-2022"]},
                                   query={"api-version": "2022-06-01"})
        assert status == 202, (status, body)
        assert c.wait_for("py-2022") == ["py-2022"]
    finally:
        c.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_signalrcore_user_from_negotiate_receives_send_to_user(server, app, protocol):
    hub = _hub()
    user = "pyuser-" + uuid.uuid4().hex[:6]
    c = Client(app, hub, protocol, user_id=user)
    c.start()
    try:
        status, body = server.rest("POST", f"/api/hubs/{hub}/users/{user}/:send",
                                   {"Target": "msg", "Arguments": ["py-user"]}, query={"api-version": "2022-06-01"})
        assert status == 202, (status, body)
        assert c.wait_for("py-user") == ["py-user"]
    finally:
        c.stop()
