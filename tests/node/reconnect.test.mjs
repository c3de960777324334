// Losing the transport, with the real @microsoft/signalr client behind a TCP
// proxy (lib/proxy.mjs) that can cut its connections:
//
// * stateful reconnect (signalr-protocols.md §7): a `.withStatefulReconnect()`
//   client whose TCP connections are reset comes back on the same connection id
//   without onreconnecting, and gets every message exactly once and in order,
//   including those sent while it was away;
// * clients that did not ask for it never see `useStatefulReconnect`;
// * automatic reconnect: a server shutting down sends Close{allowReconnect:true};
//   a `withAutomaticReconnect()` client reconnects (new connection id) to the
//   server that replaces it behind the same address (the proxy's).
//
// The app hands out the proxy's address; REST goes to the server directly.
// Client-token audiences compare the host only (port ignored), so tokens for
// 127.0.0.1:<proxy> are valid on 127.0.0.1:<server> without --endpoint.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, randomKey } from './lib/server.mjs';
import { startApp } from './lib/app.mjs';
import { startProxy } from './lib/proxy.mjs';
import { connect, stopAll } from './lib/client.mjs';
import { clientToken } from './lib/jwt.mjs';
import { negotiate } from './lib/raw.mjs';
import { Rest, msg, API } from './lib/rest.mjs';
import { uniq } from './lib/fixture.mjs';
import { TEST_TIMEOUT, T, eventually } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };

/** Arguments of received `other` messages, in arrival order (the numbered stream). */
function numbered(c) {
  return c.inbox.filter((m) => m.target === 'other').map((m) => m.args[0]);
}

function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe('stateful reconnect over WebSockets (TCP connections cut by a proxy)', () => {
  let server;
  let proxy;
  let app;
  let rest;
  const clients = [];

  before(async () => {
    server = await startServer();
    proxy = await startProxy({ targetPort: server.port });
    app = await startApp({ endpoint: proxy.url, accessKey: server.accessKey });
    rest = new Rest({ endpoint: server.endpoint, accessKey: server.accessKey });
  });
  after(async () => {
    await stopAll(clients);
    await app?.stop();
    // The server first: the proxy must still forward the close frames the clients just sent.
    await server?.stop();
    await proxy?.stop();
  });

  async function client(o) {
    const c = await connect(app, o);
    clients.push(c);
    return c;
  }

  async function sendRange(hub, user, from, to) {
    for (let i = from; i <= to; i++) {
      const r = await rest.sendToUser(hub, user, msg('other', i, `payload ${i} ${'é'.repeat(i % 7)}`));
      assert.equal(r.status, 202, String(r));
    }
  }

  /**
   * Stop a client and wait until the server has let it go. WebSocketTransport.stop() only
   * queues the close frame, so a cut right after could otherwise turn a clean stop into a
   * lost socket (parked for 30 s).
   */
  async function stopClient(c) {
    const { hub, id } = c;
    await c.stop();
    if (!id) return;
    await eventually(async () => (await rest.request('HEAD', `/api/hubs/${hub}/connections/${id}`, { query: { 'api-version': API } })).status === 404,
      `connection ${id} gone after stop()`);
  }

  /** Un-acknowledged client→server messages the JS client still buffers for replay. */
  function unacked(c) {
    return c.conn._messageBuffer?._messages?.length;
  }

  function waitNumber(c, n) {
    return c.waitFor((m) => m.target === 'other' && m.args[0] === n, { what: `numbered message ${n}`, timeoutMs: 3 * T });
  }

  it('negotiate answers useStatefulReconnect:true only to a client that asked', opts, async () => {
    const hub = uniq();
    const tok = clientToken({ endpoint: server.endpoint, hub, key: server.accessKey });
    const asked = await negotiate(server.endpoint, hub, tok, { extraQuery: '&useStatefulReconnect=true' });
    assert.equal(asked.status, 200, asked.text);
    assert.equal(asked.json.useStatefulReconnect, true, asked.text);
    for (const [what, n] of [
      ['v1 without the flag', await negotiate(server.endpoint, hub, tok)],
      ['v0 without the flag', await negotiate(server.endpoint, hub, tok, { negotiateVersion: null })],
      ['flag=false', await negotiate(server.endpoint, hub, tok, { extraQuery: '&useStatefulReconnect=false' })],
    ]) {
      assert.equal(n.status, 200, `${what}: ${n.text}`);
      assert.ok(!('useStatefulReconnect' in n.json), `${what}: negotiate must not mention useStatefulReconnect: ${n.text}`);
    }
  });

  it('a client that did not ask works, and a cut connection simply closes it (the loss is real)', opts, async () => {
    const hub = uniq();
    const user = uniq('u');
    const c = await client({ hub, userId: user, name: 'plain' });
    const id = c.id;
    assert.ok(!c.conn.connection.features.reconnect, 'stateful reconnect must not be on');
    await sendRange(hub, user, 1, 3);
    await waitNumber(c, 3);
    assert.ok(proxy.cutAll() >= 1);
    const err = await c.closed();
    assert.ok(err instanceof Error, `onclose without an error after a cut: ${err}`);
    // Not stateful: the server drops the connection instead of keeping it for a return.
    await eventually(async () => (await rest.request('HEAD', `/api/hubs/${hub}/connections/${id}`, { query: { 'api-version': API } })).status === 404,
      'the cut non-stateful connection leaves the hub');
  });

  for (const protocol of ['json', 'msgpack']) {
    it(`${protocol}: messages sent before, during and after an outage arrive exactly once, in order, on the same connection`, opts, async () => {
      const hub = uniq();
      const user = uniq('u');
      const c = await client({ hub, userId: user, protocol, statefulReconnect: true, name: `stateful-${protocol}` });
      assert.equal(c.conn.connection.features.reconnect, true, 'the client must have negotiated stateful reconnect');
      const id = c.id;
      const N = 30;
      const M = 60;
      await sendRange(hub, user, 1, N);
      await waitNumber(c, N);

      const acceptedBefore = proxy.accepted;
      proxy.hold();
      assert.ok(proxy.cutAll() >= 1, 'nothing to cut');
      // Client→server replay too: an invocation made while away is buffered by the client,
      // resent after the reconnect, and answered once (no upstream → an error completion).
      const invocation = c.conn.invoke('during_outage', 1).then(() => 'resolved', (e) => e);
      await sendRange(hub, user, N + 1, M);
      // The client comes back by itself (a new TCP connection reaches the proxy).
      await proxy.waitAccepted(acceptedBefore + 1, 3 * T);
      proxy.release();

      await waitNumber(c, M);
      const answer = await invocation;
      assert.ok(answer instanceof Error && /upstream/i.test(answer.message), `invocation made during the outage: ${answer}`);
      await c.barrier(rest);
      assert.deepEqual(numbered(c), range(1, M), 'every message exactly once, in order');
      assert.equal(c.id, id, 'the connection id must survive a stateful reconnect');
      assert.equal(c.conn.connectionId, id);
      assert.deepEqual(c.reconnectingEvents, [], 'onreconnecting must not fire for a stateful reconnect');
      assert.equal(c.isClosed, false);
      // Still one connection on the server, addressable by the same id.
      const head = await rest.request('HEAD', `/api/hubs/${hub}/connections/${id}`, { query: { 'api-version': API } });
      assert.equal(head.status, 200, String(head));
      // The replayed invocation is acknowledged (the server acks about once a second).
      await eventually(() => unacked(c) === 0, `server Ack for the replayed invocation (client still buffers ${unacked(c)})`, 3 * T);
      await stopClient(c);
    });
  }

  it('json: a client message the server received just before the cut is still acknowledged after the reconnect', opts, async () => {
    const hub = uniq();
    const c = await client({ hub, statefulReconnect: true, name: 'stateful-ack' });
    // The error completion proves the server received invocation #1; its Ack is due ~1 s later.
    await assert.rejects(c.conn.invoke('before_cut'), /upstream/i);
    assert.equal(unacked(c), 1);
    proxy.cutAll();
    await c.barrier(rest); // resumed
    assert.deepEqual(c.reconnectingEvents, []);
    // Without the Ack the client keeps the message forever, replays it on every reconnect and,
    // once 100,000 bytes pile up, blocks all its sends (backpressure).
    await eventually(() => unacked(c) === 0, `server Ack for invocation #1 after the reconnect (client still buffers ${unacked(c)})`, 3 * T);
    await stopClient(c);
  });

  it('json: cuts in the middle of a burst, twice, lose and duplicate nothing', opts, async () => {
    const hub = uniq();
    const user = uniq('u');
    const c = await client({ hub, userId: user, statefulReconnect: true, name: 'stateful-burst' });
    const id = c.id;
    const M = 150;
    for (let i = 1; i <= M; i++) {
      if (i === 50 || i === 100) proxy.cutAll();
      const r = await rest.sendToUser(hub, user, msg('other', i, 'x'.repeat(200)));
      assert.equal(r.status, 202, String(r));
    }
    await waitNumber(c, M);
    await c.barrier(rest);
    assert.deepEqual(numbered(c), range(1, M));
    assert.equal(c.id, id);
    assert.deepEqual(c.reconnectingEvents, []);
    assert.equal(c.isClosed, false);
    await stopClient(c);
  });

  it('a client asking for stateful reconnect on Server-Sent Events or Long Polling still works (the feature is WebSockets-only)', opts, async () => {
    for (const transport of ['ServerSentEvents', 'LongPolling']) {
      const hub = uniq();
      const c = await client({ hub, transport, statefulReconnect: true, name: `stateful-${transport}` });
      assert.ok(!c.conn.connection.features.reconnect);
      const r = await rest.broadcast(hub, msg('msg', `hello-${transport}`));
      assert.equal(r.status, 202, String(r));
      await c.expect(`hello-${transport}`);
      await stopClient(c);
    }
  });
});

describe('automatic reconnect after a server shuts down (Close with allowReconnect)', () => {
  for (const transport of ['WebSockets', 'ServerSentEvents', 'LongPolling']) {
    it(`${transport}: the client reconnects to the replacement server with a new connection id`, opts, async () => {
      const key = randomKey();
      const proxy = await startProxy();
      let a;
      let b;
      let app;
      let c;
      try {
        a = await startServer({ keys: [key], extraArgs: ['--shutdown-grace', '3'] });
        proxy.setTarget(a.port);
        app = await startApp({ endpoint: proxy.url, accessKey: key });
        const hub = uniq();
        c = await connect(app, { hub, transport, reconnectDelays: Array(200).fill(100), name: `auto-${transport}` });
        assert.equal(c.transportName, { WebSockets: 'WebSocketTransport', ServerSentEvents: 'ServerSentEventsTransport', LongPolling: 'LongPollingTransport' }[transport]);
        const oldId = c.id;

        // Every reconnect attempt starts at the app's negotiate: holding it keeps the client
        // from reaching A while A drains, so its next connection can only be to B.
        app.holdNegotiate();
        const stopped = await a.stop();
        assert.equal(stopped.forced, false, 'server A did not exit on SIGTERM within the grace');
        const err = await c.reconnecting(3 * T);
        assert.ok(err instanceof Error && /shutting down/i.test(err.message), `onreconnecting error: ${err}`);
        assert.equal(c.isClosed, false, 'Close{allowReconnect:true} must not end a client with automatic reconnect');

        b = await startServer({ keys: [key] });
        proxy.cutAll();
        proxy.setTarget(b.port);
        app.releaseNegotiate();
        const newId = await c.reconnected(3 * T);
        assert.ok(newId && newId !== oldId, `new connection id expected (old ${oldId}, new ${newId})`);
        assert.equal(c.id, newId);

        const restB = new Rest({ endpoint: b.endpoint, accessKey: key });
        const head = await restB.request('HEAD', `/api/hubs/${hub}/connections/${newId}`, { query: { 'api-version': API } });
        assert.equal(head.status, 200, `the reconnected client must be on server B: ${head}`);
        const r = await restB.broadcast(hub, msg('msg', 'from-b'));
        assert.equal(r.status, 202, String(r));
        await c.expect('from-b');
        assert.equal(c.reconnectingEvents.length, 1, 'exactly one reconnect cycle');
        assert.equal(c.reconnectedEvents.length, 1);
      } finally {
        await c?.stop();
        await app?.stop();
        await proxy.stop();
        await a?.stop();
        await b?.stop();
      }
    });
  }
});
