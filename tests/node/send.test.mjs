// Real @microsoft/signalr clients (JSON and MessagePack, WebSockets) connected
// through the negotiate redirect receive REST sends: broadcast, user,
// connection, with and without `excluded`, in both route families.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { encode } from '@msgpack/msgpack';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { msg } from './lib/rest.mjs';
import { frameMsgpack, RS } from './lib/raw.mjs';
import { TEST_TIMEOUT } from './lib/wait.mjs';

const PROTOCOLS = ['json', 'msgpack'];

describe('send APIs reach real clients', () => {
  let s;
  before(async () => { s = await setupSuite(); });
  after(async () => { await s?.teardown(); });

  it('the client followed the app negotiate redirect', { timeout: TEST_TIMEOUT }, async () => {
    const hub = uniq();
    const before = s.app.requests.length;
    const c = await s.connect({ hub });
    const reqs = s.app.requests.slice(before);
    assert.equal(reqs.length, 1, 'exactly one negotiate call on the app');
    assert.equal(reqs[0].method, 'POST');
    assert.equal(reqs[0].path, '/api/negotiate');
    assert.equal(reqs[0].query.hub, hub);
    assert.match(c.id, /\S/);
    await c.stop();
  });

  for (const protocol of PROTOCOLS) {
    for (const family of ['v1', '2022']) {
      it(`broadcast (${family}) reaches every ${protocol} client of the hub, not other hubs`, { timeout: TEST_TIMEOUT }, async () => {
        const hub = uniq();
        const otherHub = uniq();
        const a = await s.connect({ hub, protocol });
        const b = await s.connect({ hub, protocol: protocol === 'json' ? 'msgpack' : 'json' });
        const o = await s.connect({ hub: otherHub, protocol });
        const r = await s.rest.broadcast(hub, msg('msg', 'hello', 42), { family });
        assert.equal(r.status, 202, String(r));
        assert.deepEqual(await a.expect('hello'), ['hello', 42]);
        assert.deepEqual(await b.expect('hello'), ['hello', 42]);
        await o.barrier(s.rest);
        assert.equal(o.count('hello'), 0, 'a client of another hub got the broadcast');
        await Promise.all([a.stop(), b.stop(), o.stop()]);
      });
    }
  }

  for (const family of ['v1', '2022']) {
    it(`broadcast (${family}) with excluded skips exactly the excluded connections`, { timeout: TEST_TIMEOUT }, async () => {
      const hub = uniq();
      const a = await s.connect({ hub, protocol: 'json' });
      const b = await s.connect({ hub, protocol: 'msgpack' });
      const c = await s.connect({ hub, protocol: 'json' });
      let r = await s.rest.broadcast(hub, msg('msg', 'ex1'), { family, excluded: [a.id] });
      assert.equal(r.status, 202, String(r));
      r = await s.rest.broadcast(hub, msg('msg', 'ex2'), { family, excluded: [a.id, b.id] });
      assert.equal(r.status, 202, String(r));
      await b.expect('ex1');
      await c.expect('ex1');
      await c.expect('ex2');
      await a.barrier(s.rest);
      await b.barrier(s.rest);
      assert.equal(a.count('ex1'), 0, 'excluded connection received ex1');
      assert.equal(a.count('ex2'), 0, 'excluded connection received ex2');
      assert.equal(b.count('ex2'), 0, 'second excluded connection received ex2');
      await Promise.all([a.stop(), b.stop(), c.stop()]);
    });
  }

  for (const family of ['v1', '2022']) {
    it(`send to user (${family}) reaches all of that user's connections and only them`, { timeout: TEST_TIMEOUT }, async () => {
      const hub = uniq();
      const u1 = await s.connect({ hub, userId: 'alice', protocol: 'json' });
      const u2 = await s.connect({ hub, principal: 'alice', protocol: 'msgpack' }); // via x-ms-client-principal-id
      const other = await s.connect({ hub, userId: 'bob' });
      const anon = await s.connect({ hub });
      const r = await s.rest.sendToUser(hub, 'alice', msg('msg', 'to-alice', { n: 1 }), { family });
      assert.equal(r.status, 202, String(r));
      assert.deepEqual(await u1.expect('to-alice'), ['to-alice', { n: 1 }]);
      assert.deepEqual(await u2.expect('to-alice'), ['to-alice', { n: 1 }]);
      await other.barrier(s.rest);
      await anon.barrier(s.rest);
      assert.equal(other.count('to-alice'), 0);
      assert.equal(anon.count('to-alice'), 0);
      await Promise.all([u1.stop(), u2.stop(), other.stop(), anon.stop()]);
    });
  }

  it('send to a user with no connection is accepted (202)', { timeout: TEST_TIMEOUT }, async () => {
    const r = await s.rest.sendToUser(uniq(), 'nobody', msg('msg', 'x'));
    assert.equal(r.status, 202, String(r));
  });

  for (const protocol of PROTOCOLS) {
    for (const family of ['v1', '2022']) {
      it(`send to connection (${family}) reaches only that ${protocol} connection`, { timeout: TEST_TIMEOUT }, async () => {
        const hub = uniq();
        const a = await s.connect({ hub, protocol });
        const b = await s.connect({ hub, protocol });
        const r = await s.rest.sendToConnection(hub, a.id, msg('msg', 'only-a', [1, [2, [3]]]), { family });
        assert.equal(r.status, 202, String(r));
        assert.deepEqual(await a.expect('only-a'), ['only-a', [1, [2, [3]]]]);
        await b.barrier(s.rest);
        assert.equal(b.count('only-a'), 0);
        await Promise.all([a.stop(), b.stop()]);
      });
    }
  }

  it('send to an unknown connection is accepted (202, fire-and-forget)', { timeout: TEST_TIMEOUT }, async () => {
    const r = await s.rest.sendToConnection(uniq(), 'no-such-connection', msg('msg', 'x'));
    assert.equal(r.status, 202, String(r));
  });

  for (const apiVersion of ['2022-11-01', '2024-12-01', '2031-05-01']) {
    it(`api-version=${apiVersion} is accepted on the 2022 routes`, { timeout: TEST_TIMEOUT }, async () => {
      const hub = uniq();
      const a = await s.connect({ hub });
      const r = await s.rest.broadcast(hub, msg('msg', `v-${apiVersion}`), { apiVersion });
      assert.equal(r.status, 202, String(r));
      await a.expect(`v-${apiVersion}`);
      await a.stop();
    });
  }

  it('PascalCase payload keys {"Target","Arguments"} (Management SDK style) are accepted', { timeout: TEST_TIMEOUT }, async () => {
    const hub = uniq();
    const j = await s.connect({ hub, protocol: 'json' });
    const m = await s.connect({ hub, protocol: 'msgpack' });
    const r = await s.rest.broadcast(hub, { Target: 'msg', Arguments: ['pascal', { Nested: true }] });
    assert.equal(r.status, 202, String(r));
    assert.deepEqual(await j.expect('pascal'), ['pascal', { Nested: true }]);
    assert.deepEqual(await m.expect('pascal'), ['pascal', { Nested: true }]);
    await Promise.all([j.stop(), m.stop()]);
  });

  it('payload without arguments delivers an empty argument list', { timeout: TEST_TIMEOUT }, async () => {
    const hub = uniq();
    const j = await s.connect({ hub, protocol: 'json' });
    const m = await s.connect({ hub, protocol: 'msgpack' });
    const r = await s.rest.broadcast(hub, { target: 'other' });
    assert.equal(r.status, 202, String(r));
    for (const c of [j, m]) {
      const got = await c.waitFor((x) => x.target === 'other', { what: 'other()' });
      assert.deepEqual(got.args, []);
    }
    await Promise.all([j.stop(), m.stop()]);
  });

  it('application/octet-stream multi-protocol payload: each client gets the frame of its protocol', { timeout: TEST_TIMEOUT }, async () => {
    const hub = uniq();
    const j = await s.connect({ hub, protocol: 'json' });
    const m = await s.connect({ hub, protocol: 'msgpack' });
    const jsonFrame = Buffer.from(JSON.stringify({ type: 1, target: 'msg', arguments: ['multi', 'from-json', { k: [1, 2] }] }) + RS, 'utf8');
    const mpFrame = frameMsgpack(encode([1, {}, null, 'msg', ['multi', 'from-msgpack', { k: [1, 2] }], []]));
    const body = Buffer.from(encode({ json: jsonFrame, messagepack: mpFrame }));
    const r = await s.rest.broadcast(hub, body);
    assert.equal(r.status, 202, String(r));
    assert.deepEqual(await j.expect('multi'), ['multi', 'from-json', { k: [1, 2] }]);
    assert.deepEqual(await m.expect('multi'), ['multi', 'from-msgpack', { k: [1, 2] }]);
    await Promise.all([j.stop(), m.stop()]);
  });

  it('application/octet-stream payload also works for user, connection and group sends', { timeout: TEST_TIMEOUT }, async () => {
    const hub = uniq();
    const group = uniq('g');
    const m = await s.connect({ hub, protocol: 'msgpack', userId: 'octo' });
    const j = await s.connect({ hub, protocol: 'json', userId: 'octo' });
    for (const c of [m, j]) {
      const r = await s.rest.addConnectionToGroup(hub, group, c.id);
      assert.equal(r.status, 200, String(r));
    }
    const body = (tag) => Buffer.from(encode({
      json: Buffer.from(JSON.stringify({ type: 1, target: 'msg', arguments: [tag, 'j'] }) + RS),
      messagepack: frameMsgpack(encode([1, {}, null, 'msg', [tag, 'm'], []])),
    }));
    assert.equal((await s.rest.sendToUser(hub, 'octo', body('bin-user'))).status, 202);
    assert.equal((await s.rest.sendToConnection(hub, m.id, body('bin-conn'))).status, 202);
    assert.equal((await s.rest.sendToConnection(hub, j.id, body('bin-conn'))).status, 202);
    assert.equal((await s.rest.sendToGroup(hub, group, body('bin-group'))).status, 202);
    for (const tag of ['bin-user', 'bin-conn', 'bin-group']) {
      assert.deepEqual(await m.expect(tag), [tag, 'm']);
      assert.deepEqual(await j.expect(tag), [tag, 'j']);
    }
    await Promise.all([j.stop(), m.stop()]);
  });

  it('JSON arguments (objects, numbers, nested arrays, unicode) arrive intact at MessagePack and JSON clients', { timeout: TEST_TIMEOUT }, async () => {
    const hub = uniq();
    const m = await s.connect({ hub, protocol: 'msgpack' });
    const j = await s.connect({ hub, protocol: 'json' });
    const args = [
      'types',
      { str: 'x', int: 7, neg: -12345, big: 9007199254740991, negbig: -9007199254740991, u32: 4294967295, float: 3.25, negfloat: -0.5, t: true, f: false, nil: null },
      [1, [2, [3, [4, []]]], {}, [{ a: [{ b: 'c' }] }]],
      'héllo wörld — 你好 — 🎉👍🏽 — \u0000\u001e\u001f "quoted" \\ back / slash \n newline',
      { 'ключ': 'значение', '🔑': ['🎈'], '': 'empty key' },
      0, -1, 1.5e300, 123456789.125,
      [], {}, '',
    ];
    const r = await s.rest.broadcast(hub, msg('msg', ...args));
    assert.equal(r.status, 202, String(r));
    assert.deepEqual(await m.expect('types'), args);
    assert.deepEqual(await j.expect('types'), args);
    await Promise.all([j.stop(), m.stop()]);
  });

  it('hub names are case-insensitive on REST (client on "abc…", REST to "ABC…")', { timeout: TEST_TIMEOUT }, async () => {
    const hub = uniq('hub');
    const c = await s.connect({ hub });
    const r = await s.rest.broadcast(hub.toUpperCase(), msg('msg', 'upper'));
    assert.equal(r.status, 202, String(r));
    await c.expect('upper');
    await c.stop();
  });

  it('`application` query prefixes the hub: /api/hubs/chat/:send?application=app → clients of hub app_chat', { timeout: TEST_TIMEOUT }, async () => {
    const app = uniq('app');
    const hub = uniq('chat');
    const prefixed = await s.connect({ hub: `${app}_${hub}` });
    const plain = await s.connect({ hub });
    const r = await s.rest.broadcast(hub, msg('msg', 'with-app'), { query: { application: app } });
    assert.equal(r.status, 202, String(r));
    await prefixed.expect('with-app');
    await plain.barrier(s.rest);
    assert.equal(plain.count('with-app'), 0, 'un-prefixed hub received an application-scoped send');
    await Promise.all([prefixed.stop(), plain.stop()]);
  });

  it('messages from consecutive REST sends arrive in order', { timeout: TEST_TIMEOUT }, async () => {
    const hub = uniq();
    const j = await s.connect({ hub, protocol: 'json' });
    const m = await s.connect({ hub, protocol: 'msgpack' });
    for (let i = 0; i < 20; i++) {
      const r = await s.rest.broadcast(hub, msg('msg', 'seq', i), { family: i % 2 ? 'v1' : '2022' });
      assert.equal(r.status, 202, String(r));
    }
    for (const c of [j, m]) {
      await c.waitFor(() => c.count('seq') === 20, { what: '20 seq msgs' });
      assert.deepEqual(c.inbox.filter((x) => x.args[0] === 'seq').map((x) => x.args[1]), [...Array(20).keys()]);
    }
    await Promise.all([j.stop(), m.stop()]);
  });

  it('a large (~512 KB) argument reaches both protocols', { timeout: TEST_TIMEOUT }, async () => {
    const hub = uniq();
    const j = await s.connect({ hub, protocol: 'json' });
    const m = await s.connect({ hub, protocol: 'msgpack' });
    const big = 'x'.repeat(512 * 1024);
    const r = await s.rest.broadcast(hub, msg('msg', 'big', big));
    assert.equal(r.status, 202, String(r));
    assert.equal((await j.expect('big'))[1].length, big.length);
    assert.equal((await m.expect('big'))[1].length, big.length);
    await Promise.all([j.stop(), m.stop()]);
  });
});
