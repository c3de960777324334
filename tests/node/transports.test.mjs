// The real @microsoft/signalr client on every transport Switchboard offers
// (signalr-protocols.md §2): WebSockets, Server-Sent Events and Long Polling,
// JSON and MessagePack (MessagePack needs the Binary transfer format, so never
// SSE), always through the app's negotiate redirect. Each combination gets
// every REST send kind and a close with a reason. Then the `asrs.s.htt`
// transport restriction of the client token.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { HttpTransportType } from '@microsoft/signalr';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { clientToken } from './lib/jwt.mjs';
import { negotiate, RawSocket } from './lib/raw.mjs';
import { msg } from './lib/rest.mjs';
import { TEST_TIMEOUT, T, eventually } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };

const CLASS = {
  WebSockets: 'WebSocketTransport',
  ServerSentEvents: 'ServerSentEventsTransport',
  LongPolling: 'LongPollingTransport',
};

const MATRIX = [
  ['WebSockets', 'json'],
  ['WebSockets', 'msgpack'],
  ['ServerSentEvents', 'json'],
  ['LongPolling', 'json'],
  ['LongPolling', 'msgpack'],
];

// Values that must survive both protocols unchanged (no floats that msgpack
// would narrow, no undefined).
const RICH = [{ n: 1, s: 'héllo 🎉 \u2028 "quoted" \\ \n newline', nested: { a: [true, false, null] } }, [1, 2.5, null, true], ''];

describe('@microsoft/signalr on every transport (through the negotiate redirect)', () => {
  let s;
  before(async () => { s = await setupSuite(); });
  after(async () => { await s?.teardown(); });

  for (const [transport, protocol] of MATRIX) {
    const label = `${transport}/${protocol}`;

    it(`${label}: broadcast, group, user and connection sends reach exactly the addressed clients`, opts, async () => {
      const hub = uniq();
      const user = uniq('u');
      const group = uniq('g');
      const c = await s.connect({ hub, userId: user, protocol, transport, name: `${label}:target` });
      const other = await s.connect({ hub, userId: uniq('u'), protocol, transport, name: `${label}:bystander` });
      assert.equal(c.transportName, CLASS[transport], 'the client must really use the requested transport');
      assert.equal(other.transportName, CLASS[transport]);
      assert.notEqual(c.id, other.id);

      let r = await s.rest.broadcast(hub, msg('msg', 'bc', ...RICH));
      assert.equal(r.status, 202, String(r));
      assert.deepEqual(await c.expect('bc'), ['bc', ...RICH]);
      assert.deepEqual(await other.expect('bc'), ['bc', ...RICH]);

      r = await s.rest.addConnectionToGroup(hub, group, c.id);
      assert.equal(r.status, 200, String(r));
      r = await s.rest.sendToGroup(hub, group, msg('msg', 'grp', 7));
      assert.equal(r.status, 202, String(r));
      assert.deepEqual(await c.expect('grp'), ['grp', 7]);

      r = await s.rest.sendToUser(hub, user, msg('msg', 'usr', 'for-user'));
      assert.equal(r.status, 202, String(r));
      assert.deepEqual(await c.expect('usr'), ['usr', 'for-user']);

      r = await s.rest.sendToConnection(hub, c.id, msg('msg', 'conn', { x: 1 }));
      assert.equal(r.status, 202, String(r));
      assert.deepEqual(await c.expect('conn'), ['conn', { x: 1 }]);

      // Ordered delivery: whatever the bystander was (wrongly) sent arrived before this barrier.
      await other.barrier(s.rest);
      await c.barrier(s.rest);
      assert.equal(other.count('grp'), 0, 'group send leaked to a non-member');
      assert.equal(other.count('usr'), 0, 'user send leaked to another user');
      assert.equal(other.count('conn'), 0, 'connection send leaked to another connection');
      assert.equal(c.count('bc'), 1);
      assert.equal(c.count('grp'), 1);
      assert.equal(c.count('usr'), 1);
      assert.equal(c.count('conn'), 1);
      assert.equal(c.isClosed, false);
      await Promise.all([c.stop(), other.stop()]);
    });

    it(`${label}: a burst of 200 sends and a 300 KB message arrive whole, in order, exactly once`, opts, async () => {
      const hub = uniq();
      const c = await s.connect({ hub, protocol, transport, name: `${label}:burst` });
      const N = 200;
      for (let i = 0; i < N; i++) {
        const r = await s.rest.sendToConnection(hub, c.id, msg('other', i));
        assert.equal(r.status, 202, String(r));
      }
      const big = 'x'.repeat(300 * 1024) + '🎉\n\r\n' + 'y'.repeat(1000);
      const r = await s.rest.broadcast(hub, msg('msg', 'big', big));
      assert.equal(r.status, 202, String(r));
      const got = await c.expect('big', { timeoutMs: 3 * T });
      assert.equal(got[1].length, big.length);
      assert.ok(got[1] === big, 'the large message was altered in transit');
      await c.barrier(s.rest);
      const seq = c.inbox.filter((m) => m.target === 'other').map((m) => m.args[0]);
      assert.deepEqual(seq, Array.from({ length: N }, (_, i) => i));
      await c.stop();
    });

    it(`${label}: messages as large as a REST body may be (1 MiB) reach the client, sent to it, broadcast and several at once`, opts, async () => {
      const hub = uniq();
      const c = await s.connect({ hub, protocol, transport, name: `${label}:largest` });
      const text = 'z'.repeat(1024 * 1024 - JSON.stringify(msg('msg', 'to-one', '')).length);
      assert.equal(JSON.stringify(msg('msg', 'to-one', text)).length, 1024 * 1024);
      let r = await s.rest.sendToConnection(hub, c.id, msg('msg', 'to-one', text));
      assert.equal(r.status, 202, String(r));
      assert.ok((await c.expect('to-one', { timeoutMs: 3 * T }))[1] === text, 'altered in transit');
      r = await s.rest.broadcast(hub, msg('msg', 'to-all', text));
      assert.equal(r.status, 202, String(r));
      assert.ok((await c.expect('to-all', { timeoutMs: 3 * T }))[1] === text, 'altered in transit');
      // Several at once: they queue behind each other (over Long Polling, between two polls).
      const tags = ['many-0', 'many-1', 'many-2'];
      const sent = await Promise.all(tags.map((tag) => s.rest.sendToConnection(hub, c.id, msg('msg', tag, text))));
      assert.deepEqual(sent.map((x) => x.status), [202, 202, 202]);
      for (const tag of tags) {
        assert.ok((await c.expect(tag, { timeoutMs: 3 * T }))[1] === text, `${tag} altered in transit`);
      }
      assert.equal(c.isClosed, false);
      await c.stop();
    });

    it(`${label}: REST close with a reason ends the client; its onclose error carries the reason`, opts, async () => {
      const hub = uniq();
      const c = await s.connect({ hub, protocol, transport, name: `${label}:victim` });
      const bystander = await s.connect({ hub, protocol, transport, name: `${label}:bystander` });
      const reason = `closed over ${label} ünïcode`;
      const r = await s.rest.closeConnection(hub, c.id, { reason });
      assert.equal(r.status, 200, String(r));
      const err = await c.closed();
      assert.ok(err instanceof Error, `onclose got no error (got ${err})`);
      assert.ok(err.message.includes(reason), `onclose error "${err.message}" lacks the reason`);
      // The closed connection is gone from the hub; the bystander is untouched.
      const tag = uniq('after');
      const b = await s.rest.broadcast(hub, msg('msg', tag));
      assert.equal(b.status, 202, String(b));
      await bystander.expect(tag);
      assert.equal(bystander.isClosed, false);
      assert.equal(c.count(tag), 0);
      await bystander.stop();
    });
  }

  it('the client falls back by itself: with every transport allowed it picks WebSockets', opts, async () => {
    const hub = uniq();
    const all = HttpTransportType.WebSockets | HttpTransportType.ServerSentEvents | HttpTransportType.LongPolling;
    const c = await s.connect({ hub, transport: all });
    assert.equal(c.transportName, 'WebSocketTransport');
    await c.stop();
  });

  it('a client stop() over SSE and Long Polling leaves the hub (no ghost connection)', opts, async () => {
    for (const transport of ['ServerSentEvents', 'LongPolling']) {
      const hub = uniq();
      const c = await s.connect({ hub, transport });
      const id = c.id;
      await c.stop();
      // The server learns of an SSE client leaving when its stream is dropped, possibly a
      // moment after stop() resolved.
      const exists = () => s.rest.request('HEAD', `/api/hubs/${hub}/connections/${id}`, { query: { 'api-version': '2022-06-01' } });
      await eventually(async () => (await exists()).status === 404, `connection ${id} (${transport}) gone after stop()`);
    }
  });
});

describe('asrs.s.htt restricts the transports of a client token', () => {
  let s;
  before(async () => { s = await setupSuite(); });
  after(async () => { await s?.teardown(); });

  const NAMES = { 1: ['WebSockets'], 2: ['ServerSentEvents'], 4: ['LongPolling'], 3: ['WebSockets', 'ServerSentEvents'], 6: ['ServerSentEvents', 'LongPolling'] };
  for (const [mask, names] of Object.entries(NAMES)) {
    it(`htt=${mask}: negotiate lists only ${names.join(', ')}`, opts, async () => {
      const hub = uniq();
      const tok = clientToken({ endpoint: s.endpoint, hub, key: s.key, claims: { 'asrs.s.htt': Number(mask) } });
      const n = await negotiate(s.endpoint, hub, tok);
      assert.equal(n.status, 200, n.text);
      assert.deepEqual(n.json.availableTransports.map((t) => t.transport), names, n.text);
    });
  }

  it('htt=4: WebSocket upgrade → 403, SSE → 403, and the real client (no transport forced) ends up on Long Polling', opts, async () => {
    const hub = uniq();
    const tok = clientToken({ endpoint: s.endpoint, hub, key: s.key, claims: { 'asrs.s.htt': 4 } });
    const n = await negotiate(s.endpoint, hub, tok);
    assert.equal(n.status, 200, n.text);
    assert.deepEqual(n.json.availableTransports.map((t) => t.transport), ['LongPolling']);

    // WebSocket with the negotiated id.
    const wsUrl = `${s.endpoint.replace(/^http/, 'ws')}/client/?${new URLSearchParams({ hub, id: n.json.connectionToken })}`;
    const raw = s.track(new RawSocket(wsUrl, { headers: { authorization: `Bearer ${tok}` } }));
    await assert.rejects(raw.opened(), (e) => e.statusCode === 403, 'WebSocket upgrade with an LP-only token must be refused with 403');

    // WebSocket without an id (skipNegotiation style) is refused too.
    const rawNoId = s.track(new RawSocket(`${s.endpoint.replace(/^http/, 'ws')}/client/?hub=${hub}`, { headers: { authorization: `Bearer ${tok}` } }));
    await assert.rejects(rawNoId.opened(), (e) => e.statusCode === 403, 'id-less WebSocket upgrade with an LP-only token must be refused with 403');

    // SSE with a fresh negotiated id.
    const n2 = await negotiate(s.endpoint, hub, tok);
    const sse = await fetch(`${s.endpoint}/client/?${new URLSearchParams({ hub, id: n2.json.connectionToken })}`, {
      headers: { accept: 'text/event-stream', authorization: `Bearer ${tok}` },
      signal: AbortSignal.timeout(T),
    });
    const sseBody = await sse.text();
    assert.equal(sse.status, 403, `SSE with an LP-only token: ${sse.status} ${sseBody}`);

    // The real client, connecting directly with this token and no forced transport.
    const all = HttpTransportType.WebSockets | HttpTransportType.ServerSentEvents | HttpTransportType.LongPolling;
    const c = await s.connect({ hub, url: `${s.endpoint}/client/?hub=${hub}`, accessTokenFactory: () => tok, transport: all, name: 'htt4' });
    assert.equal(c.transportName, 'LongPollingTransport');
    const r = await s.rest.broadcast(hub, msg('msg', 'lp-only'));
    assert.equal(r.status, 202, String(r));
    await c.expect('lp-only');
    await c.stop();
  });

  it('htt=4: a client forced onto WebSockets fails to start', opts, async () => {
    const hub = uniq();
    const tok = clientToken({ endpoint: s.endpoint, hub, key: s.key, claims: { 'asrs.s.htt': 4 } });
    await assert.rejects(
      s.connect({ hub, url: `${s.endpoint}/client/?hub=${hub}`, accessTokenFactory: () => tok, transport: 'WebSockets', name: 'htt4-ws' }),
      /transport|WebSockets|not supported|403/i,
    );
  });

  it('htt=2: the real client with every transport allowed ends up on Server-Sent Events', opts, async () => {
    const hub = uniq();
    const tok = clientToken({ endpoint: s.endpoint, hub, key: s.key, claims: { 'asrs.s.htt': 2 } });
    const all = HttpTransportType.WebSockets | HttpTransportType.ServerSentEvents | HttpTransportType.LongPolling;
    const c = await s.connect({ hub, url: `${s.endpoint}/client/?hub=${hub}`, accessTokenFactory: () => tok, transport: all, name: 'htt2' });
    assert.equal(c.transportName, 'ServerSentEventsTransport');
    const r = await s.rest.broadcast(hub, msg('msg', 'sse-only'));
    assert.equal(r.status, 202, String(r));
    await c.expect('sse-only');
    // A Long Polling poll with this token on a fresh id → 403.
    const n = await negotiate(s.endpoint, hub, tok);
    const poll = await fetch(`${s.endpoint}/client/?${new URLSearchParams({ hub, id: n.json.connectionToken })}`, {
      headers: { authorization: `Bearer ${tok}` },
      signal: AbortSignal.timeout(T),
    });
    const body = await poll.text();
    assert.equal(poll.status, 403, `LP poll with an SSE-only token: ${poll.status} ${body}`);
    await c.stop();
  });
});
