// Bad input gets the documented answer and harms nothing (DESIGN G8): after
// every case, two already-connected real clients (JSON and MessagePack) still
// receive a broadcast.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { encode } from '@msgpack/msgpack';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { clientToken, nowSec, signJwt } from './lib/jwt.mjs';
import { randomKey } from './lib/server.mjs';
import { negotiate, openRaw, openRawReady, frameMsgpack, RS } from './lib/raw.mjs';
import { msg, API, enc } from './lib/rest.mjs';
import { TEST_TIMEOUT } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };
const OVERSIZE = Number(process.env.SWITCHBOARD_TEST_OVERSIZE_BYTES || 2 * 1024 * 1024);

describe('bad input is refused as documented while other clients carry on', () => {
  let s;
  let sentinelHub;
  let sj;
  let sm;
  let seq = 0;

  before(async () => {
    s = await setupSuite();
    sentinelHub = uniq('sentinel');
    sj = await s.connect({ hub: sentinelHub, protocol: 'json', name: 'sentinel-json' });
    sm = await s.connect({ hub: sentinelHub, protocol: 'msgpack', name: 'sentinel-msgpack' });
  });
  after(async () => { await s?.teardown(); });

  // The sentinels must still be connected and receiving after every case.
  afterEach(async () => {
    if (!s) return;
    seq += 1;
    const tag = `alive-${seq}`;
    const r = await s.rest.broadcast(sentinelHub, msg('msg', tag));
    assert.equal(r.status, 202, `sentinel broadcast: ${r}`);
    await sj.expect(tag);
    await sm.expect(tag);
    assert.equal(sj.isClosed || sm.isClosed, false, 'a sentinel connection was closed');
  });

  /** The socket must close; anything received before must be an error, never a success. */
  async function expectHandshakeRefused(raw, errorPattern) {
    if (errorPattern) {
      const reply = await raw.handshakeReply();
      assert.equal(typeof reply.error, 'string', `handshake reply without error: ${JSON.stringify(reply)}`);
      assert.match(reply.error, errorPattern);
      assert.ok(!('type' in reply));
    }
    await raw.closed();
    if (raw.handshakeDone) {
      assert.ok(raw.handshakeResponse && typeof raw.handshakeResponse.error === 'string' && raw.handshakeResponse.error.length > 0,
        `a malformed handshake got a non-error reply: ${JSON.stringify(raw.handshakeResponse)}`);
    }
  }

  /**
   * After a bad frame post-handshake the server closes that connection cleanly:
   * a WebSocket close frame (not an abrupt 1006), frames of the right kind, and
   * a Close message, if sent, carrying an error.
   */
  async function expectConnectionClosed(raw, { allowAbrupt = false } = {}) {
    const { code } = await raw.closed();
    const problems = raw.wireProblems().filter((p) => !(allowAbrupt && /ECONNRESET|EPIPE/.test(p)));
    assert.deepEqual(problems, [], 'the server violated the wire protocol while closing');
    if (!allowAbrupt) assert.notEqual(code, 1006, 'connection dropped without a WebSocket close frame');
    const closeMsg = raw.messages.find((m) => (Array.isArray(m) ? m[0] === 7 : m.type === 7));
    if (closeMsg) {
      const error = Array.isArray(closeMsg) ? closeMsg[1] : closeMsg.error;
      assert.equal(typeof error, 'string', `Close message without error: ${JSON.stringify(closeMsg)}`);
    }
  }

  const open = (extra = {}) => openRaw({ endpoint: s.endpoint, key: s.key, hub: uniq(), ...extra }).then((r) => s.track(r));

  // ---- handshake -------------------------------------------------------------------------

  it('garbage handshake → error or close, never success', opts, async () => {
    const raw = await open();
    raw.send(`this is not json at all${RS}`);
    await expectHandshakeRefused(raw);
  });

  it('binary garbage handshake → error or close, never success', opts, async () => {
    const raw = await open();
    raw.send(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x1e]), { binary: true });
    await expectHandshakeRefused(raw);
  });

  it('handshake JSON without protocol → error or close, never success', opts, async () => {
    const raw = await open();
    raw.send(`{"version":1}${RS}`);
    await expectHandshakeRefused(raw);
  });

  it('unknown protocol {"protocol":"foo","version":1} → handshake error response naming it, then close', opts, async () => {
    const raw = await open();
    raw.sendHandshake('foo', 1);
    await expectHandshakeRefused(raw, /foo/);
  });

  it('handshake version 99 → handshake error response, then close', opts, async () => {
    const raw = await open();
    raw.sendHandshake('json', 99);
    await expectHandshakeRefused(raw, /99/);
  });

  it('handshake version 2 (stateful-reconnect clients) is accepted', opts, async () => {
    const raw = await open();
    raw.sendHandshake('json', 2);
    assert.deepEqual(await raw.handshakeReply(), {});
    raw.terminate();
  });

  it('a hub message trailing the handshake in the same frame is parsed (Ping after handshake)', opts, async () => {
    const raw = await open();
    raw.send(`{"protocol":"json","version":1}${RS}{"type":6}${RS}`);
    assert.deepEqual(await raw.handshakeReply(), {});
    // still open and addressable
    const r = await s.rest.sendToConnection(raw.hub, raw.connectionId, msg('msg', 'trail'));
    assert.equal(r.status, 202);
    const m = await raw.nextMessage((x) => x.type === 1);
    assert.deepEqual(m.arguments, ['trail']);
    raw.terminate();
  });

  // ---- frames after a good handshake ---------------------------------------------------

  it('JSON protocol: a garbage frame after the handshake closes that connection only', opts, async () => {
    const raw = s.track(await openRawReady({ endpoint: s.endpoint, key: s.key, hub: uniq() }));
    raw.send(`{this is : not json]${RS}`);
    await expectConnectionClosed(raw);
  });

  it('JSON protocol: a JSON value that is not a hub message closes that connection only', opts, async () => {
    const raw = s.track(await openRawReady({ endpoint: s.endpoint, key: s.key, hub: uniq() }));
    raw.send(`[1,2,3]${RS}`);
    await expectConnectionClosed(raw);
  });

  it('MessagePack protocol: an undecodable frame closes that connection only', opts, async () => {
    const raw = s.track(await openRaw({ endpoint: s.endpoint, key: s.key, hub: uniq(), protocol: 'msgpack' }));
    raw.sendHandshake('messagepack', 1);
    assert.deepEqual(await raw.handshakeReply(), {});
    raw.send(frameMsgpack(Buffer.from([0xc1, 0xc1, 0xc1])), { binary: true });
    await expectConnectionClosed(raw);
  });

  it('MessagePack protocol: a body that is not an array closes that connection only', opts, async () => {
    const raw = s.track(await openRaw({ endpoint: s.endpoint, key: s.key, hub: uniq(), protocol: 'msgpack' }));
    raw.sendHandshake('messagepack', 1);
    assert.deepEqual(await raw.handshakeReply(), {});
    raw.send(frameMsgpack(encode('not an array')), { binary: true });
    await expectConnectionClosed(raw);
  });

  it('MessagePack protocol: a 6-byte VarInt length closes that connection only', opts, async () => {
    const raw = s.track(await openRaw({ endpoint: s.endpoint, key: s.key, hub: uniq(), protocol: 'msgpack' }));
    raw.sendHandshake('messagepack', 1);
    assert.deepEqual(await raw.handshakeReply(), {});
    raw.send(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00]), { binary: true });
    await expectConnectionClosed(raw);
  });

  it(`a single frame over the size limit (${OVERSIZE} bytes) closes that connection`, opts, async () => {
    const raw = s.track(await openRawReady({ endpoint: s.endpoint, key: s.key, hub: uniq() }));
    const big = JSON.stringify({ type: 1, target: 'x', arguments: ['y'.repeat(OVERSIZE)] }) + RS;
    raw.send(big);
    // The server stops reading mid-frame, so the close frame may be lost to a TCP reset.
    await expectConnectionClosed(raw, { allowAbrupt: true });
  });

  it(`an unterminated message growing past the size limit (${OVERSIZE} bytes in 64 KiB frames) closes that connection`, opts, async () => {
    const raw = s.track(await openRawReady({ endpoint: s.endpoint, key: s.key, hub: uniq() }));
    raw.send('{"type":1,"target":"x","arguments":["');
    const chunk = 'z'.repeat(64 * 1024);
    for (let sent = 0; sent < OVERSIZE && !raw.isClosed; sent += chunk.length) {
      raw.send(chunk);
    }
    await expectConnectionClosed(raw);
  });

  // ---- tokens ------------------------------------------------------------------------------

  it('bad client tokens → negotiate 401 (expired, wrong audience, other hub, wrong key, alg none)', opts, async () => {
    const hub = uniq();
    const base = { endpoint: s.endpoint, hub, key: s.key };
    const cases = {
      expired: clientToken({ ...base, lifetimeSec: -60 }),
      'wrong audience': clientToken({ ...base, aud: 'http://wrong.example/client/?hub=' + hub }),
      'other hub': clientToken({ ...base, aud: `${s.endpoint}/client/?hub=someotherhub` }),
      'wrong key': clientToken({ ...base, key: randomKey() }),
      'alg none': signJwt({ aud: `${s.endpoint}/client/?hub=${hub}`, exp: nowSec() + 600 }, '', { alg: 'none' }),
    };
    for (const [label, tok] of Object.entries(cases)) {
      const n = await negotiate(s.endpoint, hub, tok);
      assert.equal(n.status, 401, `${label}: ${n.status} ${n.text}`);
    }
  });

  it('REST with no token / a bad token → 401', opts, async () => {
    const hub = uniq();
    let r = await s.rest.broadcast(hub, msg('msg', 'x'), { family: 'v1' });
    assert.equal(r.status, 202, String(r)); // control
    r = await s.rest.request('POST', `/api/v1/hubs/${hub}`, { body: msg('msg', 'x'), token: null });
    assert.equal(r.status, 401, String(r));
    r = await s.rest.request('POST', `/api/v1/hubs/${hub}`, { body: msg('msg', 'x'), token: 'eyJhbGciOiJIUzI1NiJ9.e30.bad' });
    assert.equal(r.status, 401, String(r));
    r = await s.rest.request('POST', `/api/v1/hubs/${hub}`, { body: msg('msg', 'x'), tokenOpts: { key: randomKey() } });
    assert.equal(r.status, 401, String(r));
  });

  // ---- names ----------------------------------------------------------------------------

  const badHubs = ['1abc', 'a'.repeat(129), 'a-b', 'a b', '_abc', 'ab$c'];
  for (const hub of badHubs) {
    const label = hub.length > 20 ? `${hub.length} chars` : JSON.stringify(hub);
    it(`invalid hub name ${label} → 400 on both route families`, opts, async () => {
      const reqs = [
        ['POST', `/api/v1/hubs/${enc(hub)}`, undefined, msg('msg', 'x')],
        ['POST', `/api/hubs/${enc(hub)}/:send`, { 'api-version': API }, msg('msg', 'x')],
        ['POST', `/api/hubs/${enc(hub)}/users/u/:send`, { 'api-version': API }, msg('msg', 'x')],
        ['PUT', `/api/hubs/${enc(hub)}/users/u/groups/g`, { 'api-version': API }],
        ['HEAD', `/api/hubs/${enc(hub)}/connections/c`, { 'api-version': API }],
      ];
      for (const [method, path, query, body] of reqs) {
        const r = await s.rest.request(method, path, { query, body });
        assert.equal(r.status, 400, String(r));
      }
    });
  }

  it('valid hub name edge cases (128 chars, allowed punctuation) are accepted', opts, async () => {
    for (const hub of ['a'.repeat(128), 'A1_`,.[]z']) {
      const r = await s.rest.broadcast(hub, msg('msg', 'x'));
      assert.equal(r.status, 202, String(r));
    }
  });

  it('invalid application name → 400', opts, async () => {
    const r = await s.rest.broadcast('chat', msg('msg', 'x'), { query: { application: '1app' } });
    assert.equal(r.status, 400, String(r));
  });

  const badGroups = [['whitespace-only', '   '], ['1025 chars', 'g'.repeat(1025)]];
  for (const [label, group] of badGroups) {
    it(`invalid group name (${label}) → 400`, opts, async () => {
      const hub = uniq();
      const reqs = [
        ['POST', `/api/hubs/${hub}/groups/${enc(group)}/:send`, { 'api-version': API }, msg('msg', 'x')],
        ['POST', `/api/v1/hubs/${hub}/groups/${enc(group)}`, undefined, msg('msg', 'x')],
        ['PUT', `/api/hubs/${hub}/groups/${enc(group)}/connections/c`, { 'api-version': API }],
        ['PUT', `/api/hubs/${hub}/users/u/groups/${enc(group)}`, { 'api-version': API }],
      ];
      for (const [method, path, query, body] of reqs) {
        const r = await s.rest.request(method, path, { query, body });
        assert.equal(r.status, 400, String(r));
      }
    });
  }

  // ---- bodies ---------------------------------------------------------------------------

  it('REST bodies over 1 MB → 413 (JSON and octet-stream, both families)', opts, async () => {
    const hub = uniq();
    const bigJson = JSON.stringify(msg('msg', 'x'.repeat(1024 * 1024 + 1024)));
    const bigBin = Buffer.from(encode({ json: Buffer.alloc(1024 * 1024 + 1024, 0x20) }));
    const reqs = [
      ['POST', `/api/hubs/${hub}/:send`, { 'api-version': API }, bigJson],
      ['POST', `/api/v1/hubs/${hub}`, undefined, bigJson],
      ['POST', `/api/hubs/${hub}/groups/g/:send`, { 'api-version': API }, bigJson],
      ['POST', `/api/hubs/${hub}/:send`, { 'api-version': API }, bigBin],
    ];
    for (const [method, path, query, body] of reqs) {
      const r = await s.rest.request(method, path, { query, body });
      assert.equal(r.status, 413, String(r));
    }
  });

  it('REST body just under 1 MB is accepted', opts, async () => {
    const r = await s.rest.broadcast(uniq(), msg('msg', 'x'.repeat(1000 * 1000 - 100)));
    assert.equal(r.status, 202, String(r));
  });

  it('malformed send payloads → 400 (bad JSON, missing target, empty target, bad octet-stream)', opts, async () => {
    const hub = uniq();
    const cases = [
      ['bad JSON', '{"target": "x", "arguments": [1,'],
      ['missing target', JSON.stringify({ arguments: [1] })],
      ['empty target', JSON.stringify({ target: '', arguments: [] })],
      ['bad octet-stream', Buffer.from([0xc1, 0xff, 0x00])],
    ];
    for (const [label, body] of cases) {
      for (const [path, query] of [[`/api/hubs/${hub}/:send`, { 'api-version': API }], [`/api/v1/hubs/${hub}`, undefined]]) {
        if (label === 'bad octet-stream' && path.startsWith('/api/v1')) continue;
        const r = await s.rest.request('POST', path, { query, body });
        assert.equal(r.status, 400, `${label}: ${r}`);
      }
    }
  });
});
