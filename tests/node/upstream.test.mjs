// Upstream webhooks (azure-serverless.md §5) seen through the real
// @microsoft/signalr client (JSON + MessagePack): client invocations and
// connection events are POSTed to the application; its replies complete the
// client's invocations.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HubConnectionBuilder, HttpTransportType } from '@microsoft/signalr';
import { decode } from '@msgpack/msgpack';
import { randomKey } from './lib/server.mjs';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { clientToken } from './lib/jwt.mjs';
import { withTimeout, TimeoutError, T, TEST_TIMEOUT } from './lib/wait.mjs';
import {
  startWebhook, closedPort, expectedSignatures, parseClaims, decodeInvocation, mediaType,
  JSON_TYPE, MSGPACK_TYPE,
} from './lib/upstream.mjs';

const opts = { timeout: TEST_TIMEOUT };
const PROTOCOLS = ['json', 'msgpack'];
const JWT_SHAPE = /eyJ[\w-]+\.eyJ[\w-]+\./;

/** A query string as its ordered, decoded [key, value] pairs (how the trigger reads X-ASRS-Client-Query). */
function queryPairs(q) {
  assert.ok(typeof q === 'string' && q.startsWith('?'), `query must start with '?': ${JSON.stringify(q)}`);
  return [...new URLSearchParams(q.slice(1))];
}

/** Settle-tracking wrapper: {promise, settled(), value, error}. */
function track(p) {
  const t = { done: false };
  t.promise = p.then((v) => { t.done = true; t.value = v; return v; }, (e) => { t.done = true; t.error = e; throw e; });
  t.promise.catch(() => {});
  return t;
}

/** The query of the WebSocket URL the real client connected to (from its log). */
function wsQuery(client) {
  const line = client.logger.lines.find((l) => l.includes('WebSocket connected to '));
  assert.ok(line, `no "WebSocket connected to" line in the client log:\n${client.logger.lines.join('\n')}`);
  const url = new URL(line.slice(line.indexOf('WebSocket connected to ') + 'WebSocket connected to '.length).replace(/\.$/, ''));
  return url.search;
}

function assertSignature(rec, keys, connectionId) {
  const header = rec.headers['x-asrs-signature'];
  assert.ok(header, `no X-ASRS-Signature on ${rec.category}/${rec.event}`);
  assert.ok(!/\s/.test(header), `X-ASRS-Signature must be comma-joined without spaces: ${JSON.stringify(header)}`);
  const got = header.split(',').map((s) => s.toLowerCase()).sort();
  const want = expectedSignatures(keys, connectionId).map((s) => s.toLowerCase()).sort();
  assert.deepEqual(got, want, `X-ASRS-Signature for ${keys.length} keys over connection id ${connectionId}`);
}

function assertNoToken(rec, token) {
  assert.equal(rec.headers.authorization, undefined, 'upstream request carries an Authorization header');
  for (const [name, value] of Object.entries(rec.headers)) {
    const v = String(value);
    assert.ok(!JWT_SHAPE.test(v), `header ${name} carries a JWT: ${v.slice(0, 120)}`);
    assert.ok(!/access_token/i.test(v), `header ${name} mentions access_token: ${v.slice(0, 200)}`);
    if (token) assert.ok(!v.includes(token), `header ${name} carries the client's access token`);
  }
}

async function rejection(p, what) {
  try {
    const v = await withTimeout(p, T * 2, what);
    assert.fail(`${what}: expected a rejection, resolved with ${JSON.stringify(v)}`);
  } catch (e) {
    if (e?.code === 'ERR_ASSERTION' || e instanceof TimeoutError) throw e;
    return e;
  }
}

function writeConfig(text) {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-upstream-'));
  const file = join(dir, 'switchboard.toml');
  writeFileSync(file, text);
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

const tomlStr = (s) => JSON.stringify(s); // TOML basic strings accept JSON string escapes for these inputs

describe('upstream: catch-all template, two access keys', () => {
  let hook;
  let suite;
  let keys;
  before(async () => {
    hook = await startWebhook();
    keys = [randomKey(), randomKey()];
    suite = await setupSuite({ keys, extraArgs: ['--upstream', `${hook.url}/{hub}/api/{category}/{event}`] });
  });
  after(async () => {
    await suite?.teardown();
    await hook?.stop();
    assert.deepEqual(hook?.errors ?? [], [], 'webhook handler errors');
  });

  for (const protocol of PROTOCOLS) {
    it(`${protocol}: invoke reaches the webhook with every header right; the reply is the result`, opts, async () => {
      const hub = uniq();
      const user = `user-${protocol}-${uniq('u')}`;
      const c = await suite.connect({ hub, userId: user, protocol });
      const args = ['hello', 42, { a: [1, 2], s: 'ü' }];
      const result = await withTimeout(c.conn.invoke('echo', ...args), T, 'invoke echo');
      assert.deepEqual(result, { target: 'echo', arguments: args, connectionId: c.id }, 'invoke result = the webhook reply');

      const rec = await hook.waitFor((r) => r.connectionId === c.id && r.category === 'messages', 'messages/echo request');
      assert.equal(rec.method, 'POST');
      assert.equal(rec.rawPath, `/${hub}/api/messages/echo`);
      const h = rec.headers;
      assert.equal(mediaType(h), protocol === 'json' ? JSON_TYPE : MSGPACK_TYPE, `Content-Type ${h['content-type']}`);
      assert.equal(h['x-asrs-connection-id'], c.id);
      assert.equal(h['x-asrs-hub'], hub);
      assert.equal(h['x-asrs-category'], 'messages');
      assert.equal(h['x-asrs-event'], 'echo');
      assert.equal(h['x-asrs-user-id'], user);
      const claims = parseClaims(h['x-asrs-user-claims']);
      assert.ok(claims.some(([t, v]) => t === 'asrs.s.uid' && v === user), `X-ASRS-User-Claims ${JSON.stringify(h['x-asrs-user-claims'])}`);
      assertSignature(rec, keys, c.id);
      const q = wsQuery(c);
      assert.ok(!q.includes('access_token'), `the node client put the token in the URL?? ${q}`);
      assert.deepEqual(queryPairs(h['x-asrs-client-query']), queryPairs(q), `X-ASRS-Client-Query ${h['x-asrs-client-query']} = the connect query ${q}`);
      assert.equal(new URLSearchParams(h['x-asrs-client-query'].slice(1)).get('hub'), hub);
      assertNoToken(rec);

      const inv = decodeInvocation(rec);
      assert.equal(inv.type, 1);
      assert.equal(inv.target, 'echo');
      assert.deepEqual(inv.arguments, args);
      assert.equal(typeof inv.invocationId, 'string');
      assert.ok(inv.invocationId.length > 0);
      if (protocol === 'msgpack') {
        assert.ok(Array.isArray(decode(rec.body)), 'msgpack body is one bare array (no length prefix)');
      } else {
        assert.equal(rec.body[rec.body.length - 1] === 0x1e, false, 'JSON body without 0x1E');
      }
      for (const r of hook.of(c.id)) assertNoToken(r);
    });

    it(`${protocol}: connected arrives before the first message, disconnected after stop`, opts, async () => {
      const hub = uniq();
      const c = await suite.connect({ hub, userId: 'ev-user', protocol });
      const id = c.id;
      await withTimeout(c.conn.invoke('echo', 1), T, 'invoke echo');
      await c.stop();
      const disc = await hook.waitFor((r) => r.connectionId === id && r.event === 'disconnected', 'disconnected event');
      // By the time the app hears of it, the connection is gone from what the REST API sees.
      const head = await suite.rest.request('HEAD', `/api/hubs/${hub}/connections/${id}`, { query: { 'api-version': '2022-06-01' } });
      assert.equal(head.status, 404, `the connection still exists when disconnected arrives: ${head}`);
      const recs = hook.of(id);
      const conn = recs.find((r) => r.category === 'connections' && r.event === 'connected');
      assert.ok(conn, `no connected event; got ${recs.map((r) => `${r.category}/${r.event}`).join(', ')}`);
      const firstMsg = recs.find((r) => r.category === 'messages');
      assert.ok(conn.seq < firstMsg.seq, 'connected before the first message');
      assert.ok(disc.seq > firstMsg.seq, 'disconnected after the messages');
      assert.deepEqual(recs.map((r) => `${r.category}/${r.event}`), ['connections/connected', 'messages/echo', 'connections/disconnected']);

      for (const [rec, event, type] of [[conn, 'connected', 10], [disc, 'disconnected', 11]]) {
        assert.equal(rec.method, 'POST');
        assert.equal(rec.rawPath, `/${hub}/api/connections/${event}`);
        assert.equal(mediaType(rec.headers), JSON_TYPE, `${event} Content-Type`);
        assert.equal(rec.headers['x-asrs-category'], 'connections');
        assert.equal(rec.headers['x-asrs-event'], event);
        assert.equal(rec.headers['x-asrs-hub'], hub);
        assert.equal(rec.headers['x-asrs-user-id'], 'ev-user');
        assertSignature(rec, keys, id);
        assertNoToken(rec);
        const body = JSON.parse(rec.body.toString('utf8'));
        assert.equal(body.type, type, `${event} body ${rec.body}`);
      }
      assert.deepEqual(JSON.parse(conn.body.toString('utf8')), { type: 10 });
      const db = JSON.parse(disc.body.toString('utf8'));
      assert.ok(db.error === undefined || db.error === null || db.error === '', `clean stop gives no error: ${disc.body}`);
    });

    it(`${protocol}: error statuses reject with the documented text; 200 empty / 204 resolve empty`, opts, async () => {
      const c = await suite.connect({ hub: uniq(), protocol });
      let e = await rejection(c.conn.invoke('fail500', 1), 'invoke fail500');
      assert.equal(e.message, 'Invocation failed, status code 500');
      e = await rejection(c.conn.invoke('status404'), 'invoke status404');
      assert.equal(e.message, 'Invocation failed, status code 404');
      assert.equal((await withTimeout(c.conn.invoke('empty200'), T, 'invoke empty200')) ?? null, null);
      assert.equal((await withTimeout(c.conn.invoke('nocontent'), T, 'invoke nocontent')) ?? null, null);
      const r = await withTimeout(c.conn.invoke('echo', 'after'), T, 'invoke echo after errors');
      assert.deepEqual(r.arguments, ['after']);
      assert.equal(c.isClosed, false);
    });

    it(`${protocol}: bad webhook replies (garbage, unframed, wrong protocol, > 1 MiB) reject and the connection keeps working`, opts, async () => {
      const c = await suite.connect({ hub: uniq(), protocol });
      const cases = protocol === 'json' ? ['garbage', 'unframed', 'wrongproto'] : ['garbage', 'wrongproto'];
      for (const target of cases) {
        const e = await rejection(c.conn.invoke(target), `invoke ${target}`);
        assert.match(e.message, /not a valid hub message/, `${target}: ${e.message}`);
        const r = await withTimeout(c.conn.invoke('echo', target), T, `invoke echo after ${target}`);
        assert.deepEqual(r.arguments, [target]);
      }
      const e = await rejection(c.conn.invoke('huge'), 'invoke huge');
      assert.match(e.message, /^Invocation failed.*too large/i, `huge: ${e.message}`);
      const r = await withTimeout(c.conn.invoke('echo', 'after huge'), T, 'invoke echo after huge');
      assert.deepEqual(r.arguments, ['after huge']);
      assert.equal(c.isClosed, false);
    });

    it(`${protocol}: 20 sends then an invoke reach the webhook in order`, opts, async () => {
      const c = await suite.connect({ hub: uniq(), protocol });
      for (let i = 0; i < 20; i++) await c.conn.send('seq', i);
      const r = await withTimeout(c.conn.invoke('seqdone', 20), T, 'invoke seqdone');
      assert.deepEqual(r.arguments, [20]);
      const msgs = hook.of(c.id).filter((x) => x.category === 'messages');
      assert.deepEqual(msgs.map((x) => x.event), [...Array(20).fill('seq'), 'seqdone']);
      const invs = msgs.map(decodeInvocation);
      assert.deepEqual(invs.map((x) => x.arguments[0]), [...Array(21).keys()]);
      for (const x of invs.slice(0, 20)) assert.ok(x.invocationId === undefined || x.invocationId === null, `send has no invocationId: ${JSON.stringify(x.raw)}`);
    });
  }

  it('a hanging upstream call for connection A does not stall connection B', opts, async () => {
    const hub = uniq();
    const a = await suite.connect({ hub, name: 'A' });
    const b = await suite.connect({ hub, name: 'B', protocol: 'msgpack' });
    const pending = track(a.conn.invoke('hang', 'a'));
    await hook.waitFor((r) => r.connectionId === a.id && r.event === 'hang', 'A\'s hang request');
    const t0 = Date.now();
    const r = await withTimeout(b.conn.invoke('echo', 'b'), T, 'B invoke echo while A hangs');
    assert.deepEqual(r, { target: 'echo', arguments: ['b'], connectionId: b.id });
    assert.equal(pending.done, false, 'A\'s invoke is still pending');
    assert.ok(Date.now() - t0 < T, 'B answered quickly');
    // Releasing A's call completes A's invoke: the connection was only waiting.
    hook.release((rec) => rec.connectionId === a.id, (rec, res) => {
      const id = decodeInvocation(rec).invocationId;
      res.writeHead(200, { 'content-type': JSON_TYPE }).end(`${JSON.stringify({ type: 3, invocationId: id, result: 'released' })}\x1e`);
    });
    assert.equal(await withTimeout(pending.promise, T, 'A invoke after release'), 'released');
  });

  it('{event} is URL-escaped in the template; X-ASRS-Event carries the target as sent', opts, async () => {
    const hub = uniq();
    const c = await suite.connect({ hub });
    const target = 'odd name/x?y';
    const r = await withTimeout(c.conn.invoke(target, 1), T, 'invoke odd target');
    assert.deepEqual(r.arguments, [1]);
    const rec = await hook.waitFor((x) => x.connectionId === c.id && x.category === 'messages', 'odd target request');
    assert.equal(rec.headers['x-asrs-event'], target);
    assert.equal(rec.rawPath, `/${hub}/api/messages/odd%20name%2Fx%3Fy`);
    assert.equal(rec.query, '', 'the escaped ? must not start a query');
  });

  it('anonymous client: no X-ASRS-User-Id', opts, async () => {
    const c = await suite.connect({ hub: uniq() });
    await withTimeout(c.conn.invoke('echo'), T, 'invoke echo');
    for (const rec of hook.of(c.id)) {
      assert.equal(rec.headers['x-asrs-user-id'], undefined, `${rec.event}: X-ASRS-User-Id on an anonymous connection`);
      assertSignature(rec, keys, c.id);
    }
  });

  it('client with access_token in its URL: query forwarded without the token, custom claims forwarded', opts, async () => {
    const hub = uniq();
    const user = 'direct-user';
    const token = clientToken({ endpoint: suite.endpoint, hub, key: keys[0], userId: user, claims: { role: 'admin' } });
    const url = `${suite.endpoint}/client/?hub=${hub}&access_token=${encodeURIComponent(token)}&foo=bar&x=1%202`;
    const conn = new HubConnectionBuilder()
      .withUrl(url, { skipNegotiation: true, transport: HttpTransportType.WebSockets })
      .configureLogging({ log() {} })
      .build();
    try {
      await withTimeout(conn.start(), T, 'direct connect');
      const r = await withTimeout(conn.invoke('echo', 'direct'), T, 'invoke echo');
      const cid = r.connectionId;
      assert.ok(cid, 'webhook saw a connection id');
      const rec = await hook.waitFor((x) => x.connectionId === cid && x.category === 'messages', 'direct echo request');
      assert.deepEqual(queryPairs(rec.headers['x-asrs-client-query']), [['hub', hub], ['foo', 'bar'], ['x', '1 2']],
        `X-ASRS-Client-Query ${rec.headers['x-asrs-client-query']}`);
      assert.equal(rec.headers['x-asrs-user-id'], user);
      const claims = parseClaims(rec.headers['x-asrs-user-claims']).map(([t, v]) => `${t}=${v}`).sort();
      assert.deepEqual(claims, [`asrs.s.uid=${user}`, 'role=admin'], `X-ASRS-User-Claims ${rec.headers['x-asrs-user-claims']}`);
      assertSignature(rec, keys, cid);
      for (const x of hook.of(cid)) {
        assertNoToken(x, token);
        assert.ok(!x.body.toString('latin1').includes(token), 'token in an upstream body');
      }
    } finally {
      await withTimeout(conn.stop(), T, 'direct stop').catch(() => {});
    }
  });
});

describe('upstream: timeout and unreachable upstream', () => {
  let hook;
  let suite;
  let cfg;
  before(async () => {
    hook = await startWebhook();
    const dead = await closedPort();
    cfg = writeConfig([
      '[[upstream]]',
      `url_template = ${tomlStr(`http://127.0.0.1:${dead}/dead/{event}`)}`,
      'event_pattern = "unreachable"',
      '',
    ].join('\n'));
    suite = await setupSuite({
      extraArgs: ['--config', cfg.file, '--upstream', `${hook.url}/{hub}/{category}/{event}`, '--upstream-timeout', '1'],
    });
  });
  after(async () => {
    await suite?.teardown();
    await hook?.stop();
    assert.deepEqual(hook?.errors ?? [], [], 'webhook handler errors');
    cfg?.remove();
  });

  for (const protocol of PROTOCOLS) {
    it(`${protocol}: a webhook that never answers → "Invocation failed, error: …" after --upstream-timeout`, opts, async () => {
      const c = await suite.connect({ hub: uniq(), protocol });
      const t0 = Date.now();
      const e = await rejection(c.conn.invoke('hang', 1), 'invoke hang');
      const took = Date.now() - t0;
      assert.match(e.message, /^Invocation failed, error: /, e.message);
      assert.ok(took >= 800, `rejected after ${took} ms, before the 1 s timeout`);
      await hook.waitFor((r) => r.connectionId === c.id && r.event === 'hang', 'hang request reached the webhook');
      const r = await withTimeout(c.conn.invoke('echo', 'after'), T, 'invoke echo after timeout');
      assert.deepEqual(r.arguments, ['after']);
    });

    it(`${protocol}: unreachable upstream (closed port) → "Invocation failed, error: …"`, opts, async () => {
      const c = await suite.connect({ hub: uniq(), protocol });
      const e = await rejection(c.conn.invoke('unreachable', 1), 'invoke unreachable');
      assert.match(e.message, /^Invocation failed, error: /, e.message);
      assert.equal(hook.of(c.id).filter((r) => r.event === 'unreachable').length, 0, 'the first matching template only is called');
      const r = await withTimeout(c.conn.invoke('echo', 'after'), T, 'invoke echo after unreachable');
      assert.deepEqual(r.arguments, ['after']);
    });
  }
});

describe('upstream: config-file templates, first match wins', () => {
  let hook;
  let suite;
  let cfg;
  before(async () => {
    hook = await startWebhook();
    cfg = writeConfig([
      '[[upstream]]',
      `url_template = ${tomlStr(`${hook.url}/first/{hub}/{category}/{event}`)}`,
      'event_pattern = "special"',
      '',
      '[[upstream]]',
      `url_template = ${tomlStr(`${hook.url}/second/{hub}/{category}/{event}`)}`,
      '',
    ].join('\n'));
    suite = await setupSuite({ extraArgs: ['--config', cfg.file] });
  });
  after(async () => {
    await suite?.teardown();
    await hook?.stop();
    assert.deepEqual(hook?.errors ?? [], [], 'webhook handler errors');
    cfg?.remove();
  });

  for (const protocol of PROTOCOLS) {
    it(`${protocol}: "special" goes to the first template, everything else to the catch-all`, opts, async () => {
      const hub = uniq();
      const c = await suite.connect({ hub, protocol });
      await c.conn.send('special', 's');
      assert.deepEqual((await withTimeout(c.conn.invoke('special', 1), T, 'invoke special')).arguments, [1]);
      assert.deepEqual((await withTimeout(c.conn.invoke('other', 2), T, 'invoke other')).arguments, [2]);
      const id = c.id;
      await c.stop();
      await hook.waitFor((r) => r.connectionId === id && r.event === 'disconnected', 'disconnected event');
      assert.deepEqual(hook.of(id).map((r) => r.rawPath), [
        `/second/${hub}/connections/connected`,
        `/first/${hub}/messages/special`,
        `/first/${hub}/messages/special`,
        `/second/${hub}/messages/other`,
        `/second/${hub}/connections/disconnected`,
      ]);
    });
  }
});

describe('upstream: hub_pattern lists; no matching template', () => {
  let hook;
  let suite;
  let cfg;
  const listedA = uniq('la');
  const listedB = uniq('lb');
  before(async () => {
    hook = await startWebhook();
    cfg = writeConfig([
      '[[upstream]]',
      `url_template = ${tomlStr(`${hook.url}/listed/{hub}/{category}/{event}`)}`,
      `hub_pattern = ${tomlStr(`${listedA}, ${listedB}`)}`,
      'category_pattern = "messages,connections"',
      '',
    ].join('\n'));
    suite = await setupSuite({ extraArgs: ['--config', cfg.file] });
  });
  after(async () => {
    await suite?.teardown();
    await hook?.stop();
    assert.deepEqual(hook?.errors ?? [], [], 'webhook handler errors');
    cfg?.remove();
  });

  it('a hub in the (space-separated) list matches', opts, async () => {
    for (const hub of [listedA, listedB]) {
      const c = await suite.connect({ hub });
      const r = await withTimeout(c.conn.invoke('echo', hub), T, `invoke echo on ${hub}`);
      assert.deepEqual(r.arguments, [hub]);
      const rec = await hook.waitFor((x) => x.connectionId === c.id && x.category === 'messages', 'listed echo');
      assert.equal(rec.rawPath, `/listed/${hub}/messages/echo`);
    }
  });

  for (const protocol of PROTOCOLS) {
    it(`${protocol}: no matching template: invoke rejects "No upstream is configured …", send is dropped`, opts, async () => {
      const hub = uniq('unlisted');
      const c = await suite.connect({ hub, protocol });
      await c.conn.send('echo', 'dropped');
      const e = await rejection(c.conn.invoke('echo', 1), 'invoke without upstream');
      assert.match(e.message, /^No upstream is configured/, e.message);
      assert.equal(hook.records.filter((r) => r.hub === hub || r.connectionId === c.id).length, 0, 'nothing reached the webhook for an unmatched hub');
      assert.equal(c.isClosed, false);
    });
  }
});
