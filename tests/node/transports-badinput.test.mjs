// Bad input on the HTTP transports (Server-Sent Events, Long Polling), raw HTTP
// against `/client/?hub=&id=` (signalr-protocols.md §2): unknown and stale ids,
// concurrent polls, oversized POSTs, MessagePack over SSE, transport mix-ups.
// After every case, real clients on all three transports in another hub still
// receive a broadcast.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { clientToken } from './lib/jwt.mjs';
import { openRawReady, RawSocket, RS } from './lib/raw.mjs';
import { msg } from './lib/rest.mjs';
import {
  clientUrl, del, jsonMessages, negotiateId, openLp, openSse, poll, request, send, SseStream,
} from './lib/httpraw.mjs';
import { TEST_TIMEOUT, T, eventually } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };
const MAX = 4096; // --max-message-size for this file

describe('bad input on Server-Sent Events and Long Polling', () => {
  let s;
  let sentinelHub;
  let sentinels = [];
  let seq = 0;

  before(async () => {
    s = await setupSuite({ extraArgs: ['--max-message-size', String(MAX)] });
    sentinelHub = uniq('sentinel');
    sentinels = [
      await s.connect({ hub: sentinelHub, transport: 'WebSockets', name: 'sentinel-ws' }),
      await s.connect({ hub: sentinelHub, transport: 'ServerSentEvents', name: 'sentinel-sse' }),
      await s.connect({ hub: sentinelHub, transport: 'LongPolling', protocol: 'msgpack', name: 'sentinel-lp' }),
    ];
  });
  after(async () => { await s?.teardown(); });

  afterEach(async () => {
    if (!s) return;
    seq += 1;
    const tag = `alive-${seq}`;
    const r = await s.rest.broadcast(sentinelHub, msg('msg', tag));
    assert.equal(r.status, 202, `sentinel broadcast: ${r}`);
    for (const c of sentinels) {
      await c.expect(tag);
      assert.equal(c.isClosed, false, `${c.name} was closed`);
    }
  });

  const ctx = (hub) => ({ endpoint: s.endpoint, key: s.key, hub });

  it('an unknown id → 404 for SSE GET, poll, POST and DELETE', opts, async () => {
    const hub = uniq();
    const token = clientToken({ endpoint: s.endpoint, hub, key: s.key });
    for (const id of [randomUUID(), 'not-a-connection', 'abc.1~00000000~AAAAAAAAAAAAAAAAAAAAAA']) {
      const sse = new SseStream(clientUrl(s.endpoint, hub, id), { token });
      await sse.response();
      await sse.waitEnd();
      assert.equal(sse.status, 404, `SSE GET id=${id}: ${sse.status} ${sse.text}`);
      const p = await poll(s.endpoint, hub, id, { token });
      assert.equal(p.status, 404, `poll id=${id}: ${p.status} ${p.text}`);
      const post = await send(s.endpoint, hub, id, '{"protocol":"json","version":1}' + RS, { token });
      assert.equal(post.status, 404, `POST id=${id}: ${post.status} ${post.text}`);
      const d = await del(s.endpoint, hub, id, { token });
      assert.equal(d.status, 404, `DELETE id=${id}: ${d.status} ${d.text}`);
    }
  });

  it('a GET without id → 400 (SSE and poll)', opts, async () => {
    const hub = uniq();
    const token = clientToken({ endpoint: s.endpoint, hub, key: s.key });
    const sse = new SseStream(clientUrl(s.endpoint, hub), { token });
    await sse.response();
    await sse.waitEnd();
    assert.equal(sse.status, 400, `SSE GET without id: ${sse.status} ${sse.text}`);
    const p = await request('GET', clientUrl(s.endpoint, hub), { headers: { authorization: `Bearer ${token}` } });
    assert.equal(p.status, 400, `poll without id: ${p.status} ${p.text}`);
  });

  it('Long Polling: DELETE → 202; the pending poll → 204; afterwards the id is gone (404 for poll, POST, DELETE)', opts, async () => {
    const hub = uniq();
    const lp = await openLp(ctx(hub));
    const waiting = poll(s.endpoint, hub, lp.id, { timeoutMs: 2 * T });
    // Whether this poll is already held when the DELETE lands or arrives just after it, a
    // poll on a connection that was just deleted is answered 204 (the client stops cleanly).
    const d = await del(s.endpoint, hub, lp.id);
    assert.equal(d.status, 202, `DELETE: ${d.status} ${d.text}`);
    assert.equal(d.text, '');
    const w = await waiting;
    assert.equal(w.status, 204, `the poll pending at DELETE: ${w.status} ${w.text}`);
    const post = await send(s.endpoint, hub, lp.id, '{"type":6}' + RS);
    assert.equal(post.status, 404, `POST after DELETE: ${post.status} ${post.text}`);
    const again = await poll(s.endpoint, hub, lp.id, { token: lp.token });
    assert.equal(again.status, 404, `poll after DELETE (even with a valid access token): ${again.status} ${again.text}`);
    const d2 = await del(s.endpoint, hub, lp.id);
    assert.equal(d2.status, 404, `second DELETE: ${d2.status} ${d2.text}`);
    const head = await s.rest.request('HEAD', `/api/hubs/${hub}/connections/${lp.connectionId}`, { query: { 'api-version': '2022-06-01' } });
    assert.equal(head.status, 404, `the deleted connection is still in the hub: ${head}`);
  });

  it('Long Polling: DELETE with no poll pending → 202; POST → 404; the next poll → 204 or 404, then 404', opts, async () => {
    const hub = uniq();
    const lp = await openLp(ctx(hub));
    const d = await del(s.endpoint, hub, lp.id);
    assert.equal(d.status, 202, `DELETE: ${d.status} ${d.text}`);
    const post = await send(s.endpoint, hub, lp.id, '{"type":6}' + RS);
    assert.equal(post.status, 404, `POST after DELETE: ${post.status} ${post.text}`);
    const p1 = await poll(s.endpoint, hub, lp.id);
    assert.ok(p1.status === 204 || p1.status === 404, `first poll after DELETE: ${p1.status} ${p1.text}`);
    const p2 = await poll(s.endpoint, hub, lp.id, { token: lp.token });
    assert.equal(p2.status, 404, `second poll after DELETE: ${p2.status} ${p2.text}`);
  });

  it('Long Polling: a newer poll displaces the older (204); the newer one still gets the data', opts, async () => {
    const hub = uniq();
    const lp = await openLp(ctx(hub));
    const polls = [poll(s.endpoint, hub, lp.id, { timeoutMs: 3 * T }), poll(s.endpoint, hub, lp.id, { timeoutMs: 3 * T })];
    // Nothing is sent yet, so a poll can only come back now by being displaced: the one the
    // server got first (the older) answers 204 as soon as the other arrives.
    const firstDone = await Promise.race(polls.map((p, i) => p.then((r) => ({ i, r }))));
    assert.equal(firstDone.r.status, 204, `the displaced poll: ${firstDone.r.status} ${firstDone.r.text}`);
    assert.equal(firstDone.r.body.length, 0);
    assert.equal((await s.rest.sendToConnection(hub, lp.connectionId, msg('msg', 'for-newer'))).status, 202);
    const n = await polls[1 - firstDone.i];
    assert.equal(n.status, 200, n.text);
    assert.deepEqual(jsonMessages(n.text).filter((m) => m.type === 1).map((m) => m.arguments), [['for-newer']]);
    // And the connection lives on.
    const next = poll(s.endpoint, hub, lp.id, { timeoutMs: 3 * T });
    assert.equal((await s.rest.sendToConnection(hub, lp.connectionId, msg('msg', 'after'))).status, 202);
    const nx = await next;
    assert.equal(nx.status, 200);
    assert.deepEqual(jsonMessages(nx.text).filter((m) => m.type === 1).map((m) => m.arguments), [['after']]);
    assert.equal((await del(s.endpoint, hub, lp.id)).status, 202);
  });

  for (const transport of ['LongPolling', 'ServerSentEvents']) {
    it(`${transport}: a POST over --max-message-size → 413; the connection carries on`, opts, async () => {
      const hub = uniq();
      const conn = transport === 'LongPolling' ? await openLp(ctx(hub)) : await openSse(ctx(hub));
      const big = JSON.stringify({ type: 6, pad: 'x'.repeat(MAX * 2) }) + RS;
      const r = await send(s.endpoint, hub, conn.id, big);
      assert.equal(r.status, 413, `oversized POST: ${r.status} ${r.text}`);
      const small = await send(s.endpoint, hub, conn.id, '{"type":6}' + RS);
      assert.equal(small.status, 200, `normal POST after the 413: ${small.status} ${small.text}`);
      assert.equal(small.text, '', 'POST answers must have an empty body');
      if (transport === 'LongPolling') {
        const p = poll(s.endpoint, hub, conn.id);
        assert.equal((await s.rest.sendToConnection(hub, conn.connectionId, msg('msg', 'still-here'))).status, 202);
        const got = await p;
        assert.equal(got.status, 200);
        assert.deepEqual(jsonMessages(got.text).filter((m) => m.type === 1).map((m) => m.arguments), [['still-here']]);
        assert.equal((await del(s.endpoint, hub, conn.id)).status, 202);
      } else {
        assert.equal((await s.rest.sendToConnection(hub, conn.connectionId, msg('msg', 'still-here'))).status, 202);
        const m = await conn.nextMessage((x) => x.type === 1);
        assert.deepEqual(m.arguments, ['still-here']);
        conn.close();
      }
    });
  }

  it('SSE: the response is text/event-stream, starts with ":\\r\\n" and frames messages as "data: …\\r\\n\\r\\n"', opts, async () => {
    const hub = uniq();
    const sse = await openSse(ctx(hub));
    assert.match(sse.headers['content-type'], /^text\/event-stream/);
    assert.match(String(sse.headers['cache-control']), /no-cache/);
    await sse.nextMessage(() => true, T, 'handshake response');
    assert.ok(sse.text.startsWith(':\r\n'), `first bytes: ${JSON.stringify(sse.text.slice(0, 20))}`);
    assert.deepEqual(sse.messages[0], {}, 'the first message must be the handshake response {}');
    assert.ok(sse.text.includes(`data: {}${RS}\r\n\r\n`), JSON.stringify(sse.text.slice(0, 100)));
    // A payload with a line break inside a string is JSON-escaped, so it stays on one data line.
    assert.equal((await s.rest.sendToConnection(hub, sse.connectionId, msg('msg', 'a\nb\r\nc'))).status, 202);
    const m = await sse.nextMessage((x) => x.type === 1);
    assert.deepEqual(m.arguments, ['a\nb\r\nc']);
    sse.close();
  });

  it('SSE: a MessagePack handshake fails with an error naming the Binary transfer format; the stream ends', opts, async () => {
    const hub = uniq();
    const n = await negotiateId(ctx(hub));
    const sse = new SseStream(clientUrl(s.endpoint, hub, n.id), { token: n.token });
    await sse.response();
    assert.equal(sse.status, 200);
    const r = await send(s.endpoint, hub, n.id, JSON.stringify({ protocol: 'messagepack', version: 1 }) + RS);
    assert.ok(r.status === 200 || r.status === 404, `handshake POST: ${r.status} ${r.text}`);
    const m = await sse.nextMessage((x) => 'error' in x, T, 'handshake error');
    assert.match(m.error, /Binary/, `handshake error: ${m.error}`);
    await sse.waitEnd();
    // The connection never opened: nothing by that id is left.
    const post = await send(s.endpoint, hub, n.id, '{"type":6}' + RS);
    assert.equal(post.status, 404, `POST after the failed handshake: ${post.status} ${post.text}`);
  });

  it('SSE: a poll on an SSE connection id → a clear 4xx; the stream carries on', opts, async () => {
    const hub = uniq();
    const sse = await openSse(ctx(hub));
    await sse.nextMessage(() => true, T, 'handshake response');
    const p = await poll(s.endpoint, hub, sse.id, { token: sse.token });
    assert.ok(p.status >= 400 && p.status < 500, `poll on an SSE id: ${p.status} ${p.text}`);
    assert.notEqual(p.status, 404, 'the id exists; the answer should name the transport mix-up, not "unknown id"');
    assert.ok(p.text.trim().length > 0, 'the 4xx should explain itself');
    assert.equal((await s.rest.sendToConnection(hub, sse.connectionId, msg('msg', 'after-poll'))).status, 202);
    const m = await sse.nextMessage((x) => x.type === 1);
    assert.deepEqual(m.arguments, ['after-poll']);
    assert.equal(sse.ended, false);
    sse.close();
  });

  it('SSE: a second stream for the same id → 409; the first carries on', opts, async () => {
    const hub = uniq();
    const sse = await openSse(ctx(hub));
    await sse.nextMessage(() => true, T, 'handshake response');
    const dup = new SseStream(clientUrl(s.endpoint, hub, sse.id), { token: sse.token });
    await dup.response();
    await dup.waitEnd();
    assert.equal(dup.status, 409, `second SSE GET: ${dup.status} ${dup.text}`);
    assert.equal((await s.rest.sendToConnection(hub, sse.connectionId, msg('msg', 'first-still'))).status, 202);
    assert.deepEqual((await sse.nextMessage((x) => x.type === 1)).arguments, ['first-still']);
    sse.close();
  });

  it('SSE: after the client drops the stream the id is dead (POST and GET → 404)', opts, async () => {
    const hub = uniq();
    const sse = await openSse(ctx(hub));
    await sse.nextMessage(() => true, T, 'handshake response');
    sse.close();
    // The server notices the dropped stream asynchronously.
    await eventually(async () => (await send(s.endpoint, hub, sse.id, '{"type":6}' + RS)).status === 404,
      'a POST answered 404 after the stream was dropped');
    const again = new SseStream(clientUrl(s.endpoint, hub, sse.id), { token: sse.token });
    await again.response();
    await again.waitEnd();
    assert.equal(again.status, 404, `SSE GET on a dropped id: ${again.status} ${again.text}`);
  });

  it('Long Polling: garbage after the handshake ends the connection with a Close carrying an error', opts, async () => {
    const hub = uniq();
    const lp = await openLp(ctx(hub));
    const r = await send(s.endpoint, hub, lp.id, 'this is not json' + RS);
    assert.ok(r.status === 200 || r.status === 400, `garbage POST: ${r.status} ${r.text}`);
    const p = await poll(s.endpoint, hub, lp.id);
    assert.equal(p.status, 200, `poll after garbage: ${p.status} ${p.text}`);
    const close = jsonMessages(p.text).find((m) => m.type === 7);
    assert.ok(close && typeof close.error === 'string' && close.error.length > 0, `expected a Close with an error, got ${JSON.stringify(p.text)}`);
    const after = await poll(s.endpoint, hub, lp.id);
    assert.ok(after.status === 204 || after.status === 404, `poll after the Close: ${after.status}`);
  });

  it('a WebSocket upgrade with a Long Polling connection id is refused with a 4xx; the LP connection carries on', opts, async () => {
    const hub = uniq();
    const lp = await openLp(ctx(hub));
    const url = `${s.endpoint.replace(/^http/, 'ws')}/client/?${new URLSearchParams({ hub, id: lp.id })}`;
    const ws = s.track(new RawSocket(url, { headers: { authorization: `Bearer ${lp.token}` } }));
    await assert.rejects(ws.opened(), (e) => e.statusCode >= 400 && e.statusCode < 500, 'WebSocket upgrade on an LP id must be refused');
    const p = poll(s.endpoint, hub, lp.id);
    assert.equal((await s.rest.sendToConnection(hub, lp.connectionId, msg('msg', 'lp-alive'))).status, 202);
    const got = await p;
    assert.equal(got.status, 200);
    assert.deepEqual(jsonMessages(got.text).filter((m) => m.type === 1).map((m) => m.arguments), [['lp-alive']]);
    assert.equal((await del(s.endpoint, hub, lp.id)).status, 202);
  });

  it('a POST to a WebSocket connection id → 405 (ASP.NET: POST is not allowed for WebSocket connections)', opts, async () => {
    const hub = uniq();
    const raw = s.track(await openRawReady({ endpoint: s.endpoint, key: s.key, hub }));
    const id = raw.negotiateResponse.connectionToken;
    const r = await send(s.endpoint, hub, id, '{"type":6}' + RS);
    assert.equal(r.status, 405, `POST to a WebSocket connection: ${r.status} ${r.text}`);
    const tag = uniq('ws');
    assert.equal((await s.rest.sendToConnection(hub, raw.connectionId, msg('msg', tag))).status, 202);
    await raw.nextMessage((m) => m.type === 1 && m.arguments[0] === tag);
  });
});
