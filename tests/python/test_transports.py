"""signalrcore 1.0.2 on each transport it implements (signalrcore/transport/: websockets, sse,
long_polling), connecting directly to Switchboard's client endpoint with a client token.

Why directly: after an Azure-style redirect ({url, accessToken}) signalrcore never negotiates
with the service, so it has no connection id; it opens its transport on the bare `url`. That
works for WebSockets (the server creates the connection, see test_signalrcore.py), but an SSE
stream or a poll without `id` is rightly refused (400, signalr-protocols.md §2). The redirect
case is kept below as documented skips.

Direct connection: signalrcore POSTs `{url}/negotiate` (without `negotiateVersion`, so it gets
negotiate version 0 and uses `id=<connectionId>`), then opens the chosen transport. Its default
hub protocol takes the negotiate version as the handshake version, so it sends
`{"protocol":"json","version":0}`; ASP.NET Core 8+ accepts any version <= 2
(`JsonHubProtocol.IsVersionSupported: version <= Version`), so Switchboard must too. The
tests with an explicit version-1 protocol object isolate the transport itself from that.

Every wait is bounded.
"""

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.protocol.json_hub_protocol import JsonHubProtocol
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol
from signalrcore.types import HttpTransportType, HubProtocolEncoding

# The server/JWT helpers of the redirect suite (same directory; pytest puts it on sys.path).
from test_signalrcore import TIMEOUT, Switchboard, client_token

WS = HttpTransportType.web_sockets
SSE = HttpTransportType.server_sent_events
LP = HttpTransportType.long_polling


@pytest.fixture(scope="module")
def server():
    s = Switchboard()
    yield s
    s.stop()


class _ErrorLog(logging.Handler):
    """Collects signalrcore's warning/error log lines (handshake errors, failed requests)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        try:
            self.lines.append(record.getMessage())
        except Exception:  # noqa: BLE001 - logging must not fail the test
            pass


class DirectClient:
    def __init__(self, server: Switchboard, hub: str, transport: HttpTransportType, protocol, user_id=None):
        token = client_token(server.endpoint, hub, server.key, user_id)
        url = f"{server.endpoint}/client/?hub={hub}"
        if transport == LP:
            # signalrcore's long-polling GETs send only `Accept`, never the configured headers,
            # so the poll that creates the connection carries its token in the query (which the
            # service accepts, like browsers' access_token).
            url += "&access_token=" + urllib.parse.quote(token)
        self.received = []
        self.cond = threading.Condition()
        self.opened = threading.Event()
        self.errors = _ErrorLog()
        # Not configure_logging(): it adds a stderr handler per call. Warnings and errors go to
        # this collector (quoted in failures) and propagate to pytest's log capture.
        logger = logging.getLogger("SignalRCoreClient")
        logger.setLevel(logging.WARNING)
        logger.addHandler(self.errors)
        builder = HubConnectionBuilder() \
            .with_url(url, options={"transport": transport, "headers": {"Authorization": "Bearer " + token}})
        if protocol is not None:
            builder = builder.with_hub_protocol(protocol)
        self.conn = builder.build()
        self.conn.on_open(self.opened.set)
        self.conn.on("msg", self._on_msg)

    def _on_msg(self, args):
        with self.cond:
            self.received.append(list(args))
            self.cond.notify_all()

    def start(self):
        try:
            self.conn.start()
        except Exception as e:  # noqa: BLE001 - reported with the log below
            self.errors.lines.append(f"start() raised {e!r}")
        if not self.opened.wait(TIMEOUT):
            proto = getattr(self.conn, "protocol", None)
            sent = f"{proto.protocol} version {proto.version}" if proto is not None else "none"
            raise AssertionError(f"signalrcore did not complete the handshake within {TIMEOUT} s "
                                 f"(handshake request: {sent}); its errors: {self.errors.lines[-5:]!r}")
        return self

    def transport_class(self):
        return type(self.conn.transport).__name__

    def wait_for(self, tag):
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while True:
                for args in self.received:
                    if args and args[0] == tag:
                        return args
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for msg {tag!r}; got {self.received!r}; "
                                         f"errors: {self.errors.lines[-5:]!r}")
                self.cond.wait(left)

    def stop(self):
        # Bounded, in the background: signalrcore's stop() joins its receive thread, which can sit
        # in recv() until the server next writes (see test_signalrcore.Client.stop).
        t = threading.Thread(target=self._stop_quietly, daemon=True)
        t.start()
        t.join(3)
        logging.getLogger("SignalRCoreClient").removeHandler(self.errors)

    def _stop_quietly(self):
        try:
            self.conn.stop()
        except Exception:  # noqa: BLE001 - best effort
            pass


def _hub():
    return "pyt" + uuid.uuid4().hex[:12]


def _broadcast_and_receive(server, client, hub):
    args = ["py-" + uuid.uuid4().hex[:6], {"n": 1, "s": "héllo 🎉"}, [1, 2.5, None, True]]
    status, body = server.rest("POST", f"/api/v1/hubs/{hub}", {"target": "msg", "arguments": args})
    assert status == 202, (status, body)
    assert client.wait_for(args[0]) == args


EXPECTED_CLASS = {WS: "WebsocketTransport", SSE: "SSETransport", LP: "LongPollingTransport"}


# --------------------------------------------------------------------------- default protocol

@pytest.mark.parametrize("transport", [pytest.param(WS, id="websockets"), pytest.param(SSE, id="sse"),
                                       pytest.param(LP, id="longpolling")])
def test_direct_connection_with_signalrcore_defaults_receives_broadcast(server, transport):
    """signalrcore as shipped: JSON, handshake version = negotiate version = 0."""
    hub = _hub()
    c = DirectClient(server, hub, transport, None)
    try:
        c.start()
        assert c.transport_class() == EXPECTED_CLASS[transport]
        _broadcast_and_receive(server, c, hub)
    finally:
        c.stop()


# --------------------------------------------------------------------------- explicit version 1

TRANSPORT_PROTOCOLS = [
    pytest.param(WS, "json", id="websockets-json"),
    pytest.param(WS, "msgpack", id="websockets-msgpack"),
    pytest.param(SSE, "json", id="sse-json"),
    pytest.param(LP, "json", id="longpolling-json"),
]


@pytest.mark.parametrize("transport,protocol", TRANSPORT_PROTOCOLS)
def test_direct_connection_with_version_1_protocol_receives_broadcast_and_user_send(server, transport, protocol):
    hub = _hub()
    user = "pyu-" + uuid.uuid4().hex[:6]
    proto = JsonHubProtocol(version=1) if protocol == "json" else MessagePackHubProtocol(version=1)
    c = DirectClient(server, hub, transport, proto, user_id=user)
    try:
        c.start()
        assert c.transport_class() == EXPECTED_CLASS[transport]
        _broadcast_and_receive(server, c, hub)
        status, body = server.rest("POST", f"/api/hubs/{hub}/users/{user}/:send",
                                   {"target": "msg", "arguments": ["py-user"]}, query={"api-version": "2022-06-01"})
        assert status == 202, (status, body)
        assert c.wait_for("py-user") == ["py-user"]
    finally:
        c.stop()


def test_long_polling_accepts_client_bytes_posted_before_the_first_poll(server):
    """signalrcore's long-polling client POSTs the handshake before its first GET. ASP.NET creates
    the connection at negotiate and buffers such bytes (HttpConnectionDispatcher.ProcessSend only
    refuses unknown ids and WebSocket connections), so the POST must succeed and the first polls
    must then deliver the handshake response."""
    hub = _hub()
    token = client_token(server.endpoint, hub, server.key)
    auth = {"Authorization": "Bearer " + token}
    neg = _http("POST", f"{server.endpoint}/client/negotiate?hub={hub}&negotiateVersion=1", headers=auth)
    assert neg[0] == 200, neg
    cid = json.loads(neg[1])["connectionToken"]
    url = f"{server.endpoint}/client/?" + urllib.parse.urlencode({"hub": hub, "id": cid})
    post = _http("POST", url, b'{"protocol":"json","version":1}\x1e', headers={**auth, "Content-Type": "text/plain"})
    assert post[0] == 200, f"handshake POST before the first poll: {post}"
    body = b""
    deadline = time.monotonic() + TIMEOUT
    while b"\x1e" not in body and time.monotonic() < deadline:
        status, chunk = _http("GET", url, headers=auth)
        assert status == 200, (status, chunk)
        body += chunk
    assert body.startswith(b"{}\x1e"), body


def _http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.skip(reason="signalrcore 1.0.2 cannot do MessagePack over Long Polling: TransportFactory never "
                         "passes is_binary, so LongPollingTransport always builds LongPollingTextClient (UTF-8 "
                         "decoding binary frames), and LongPollingBinaryClient.__init__ calls "
                         "super(LongPollingTextClient, self) and raises TypeError.")
def test_direct_long_polling_messagepack():
    pass


@pytest.mark.skip(reason="MessagePack needs the Binary transfer format, which Server-Sent Events lacks "
                         "(the server refuses the handshake; transports-badinput.test.mjs checks that).")
def test_direct_sse_messagepack():
    pass


@pytest.mark.skip(reason="signalrcore 1.0.2 does not negotiate with the service after an Azure redirect "
                         "(NegotiationHandler returns the redirect url as is), so an SSE stream or a poll has "
                         "no `id`; the server rightly answers 400. Only WebSockets, which may connect without "
                         "an id, works through the redirect (test_signalrcore.py).")
def test_sse_and_long_polling_through_the_negotiate_redirect():
    pass
