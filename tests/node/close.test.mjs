// Closing connections through REST: single connection with a reason (the JS
// client's onclose error carries it), and :closeConnections for hub, group and
// user with `excluded`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { openRaw, openRawReady } from './lib/raw.mjs';
import { TEST_TIMEOUT } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };

describe('closing connections via REST', () => {
  let s;
  before(async () => { s = await setupSuite(); });
  after(async () => { await s?.teardown(); });

  for (const protocol of ['json', 'msgpack']) {
    for (const family of ['2022', 'v1']) {
      it(`DELETE connection (${family}) with reason: ${protocol} client's onclose error contains the reason`, opts, async () => {
        const hub = uniq();
        const victim = await s.connect({ hub, protocol });
        const bystander = await s.connect({ hub, protocol });
        const reason = `bye now ${family} ünïcode`;
        const r = await s.rest.closeConnection(hub, victim.id, { reason, family });
        if (family === '2022') assert.equal(r.status, 200, String(r));
        else assert.ok(r.status === 200 || r.status === 202, String(r));
        const err = await victim.closed();
        assert.ok(err instanceof Error, `onclose got no error (got ${err})`);
        assert.ok(err.message.includes(reason), `onclose error "${err.message}" lacks the reason`);
        await bystander.barrier(s.rest);
        assert.equal(bystander.isClosed, false);
        await bystander.stop();
      });
    }
  }

  it('DELETE connection without reason closes it (onclose fires)', opts, async () => {
    const hub = uniq();
    const c = await s.connect({ hub });
    const r = await s.rest.closeConnection(hub, c.id);
    assert.equal(r.status, 200, String(r));
    await c.closed();
  });

  it('DELETE of an unknown connection → 200, or 404 with Warning.Connection.NotExisted', opts, async () => {
    const r = await s.rest.closeConnection(uniq(), 'no-such-connection');
    if (r.status === 404) assert.equal(r.errorCode, 'Warning.Connection.NotExisted', String(r));
    else assert.equal(r.status, 200, String(r));
  });

  it('the Close message on the wire (JSON) carries `error` = reason (`allowReconnect` boolean or omitted = false)', opts, async () => {
    const hub = uniq();
    const raw = s.track(await openRawReady({ endpoint: s.endpoint, key: s.key, hub }));
    const r = await s.rest.closeConnection(hub, raw.connectionId, { reason: 'wire-reason' });
    assert.equal(r.status, 200, String(r));
    const close = await raw.nextMessage((m) => m.type === 7, undefined, 'Close message');
    assert.equal(close.error, 'wire-reason');
    // ASP.NET writes allowReconnect only when true; omitted means false.
    assert.ok(close.allowReconnect === undefined || typeof close.allowReconnect === 'boolean', `Close message: ${JSON.stringify(close)}`);
    const { code } = await raw.closed();
    assert.deepEqual(raw.wireProblems(), []);
    assert.equal(code, 1000, 'WebSocket should end with a normal closure after a Close message');
  });

  it('the Close message on the wire (MessagePack) is [7, reason, allowReconnect?] in a Binary frame', opts, async () => {
    const hub = uniq();
    const raw = s.track(await openRaw({ endpoint: s.endpoint, key: s.key, hub, protocol: 'msgpack' }));
    raw.sendHandshake('messagepack', 1);
    assert.deepEqual(await raw.handshakeReply(), {});
    const r = await s.rest.closeConnection(hub, raw.connectionId, { reason: 'wire-reason' });
    assert.equal(r.status, 200, String(r));
    const close = await raw.nextMessage((m) => Array.isArray(m) && m[0] === 7, undefined, 'Close message');
    assert.equal(close[1], 'wire-reason');
    assert.ok(close.length === 2 || typeof close[2] === 'boolean', `Close message: ${JSON.stringify(close)}`);
    const { code } = await raw.closed();
    assert.deepEqual(raw.wireProblems(), []);
    assert.equal(code, 1000);
  });

  it(':closeConnections (hub) closes everyone except `excluded`', opts, async () => {
    const hub = uniq();
    const otherHub = uniq();
    const a = await s.connect({ hub });
    const b = await s.connect({ hub, protocol: 'msgpack' });
    const c = await s.connect({ hub, protocol: 'msgpack' });
    const d = await s.connect({ hub });
    const o = await s.connect({ hub: otherHub });
    const r = await s.rest.closeAll(hub, { excluded: [b.id, d.id], reason: 'hub-close' });
    assert.equal(r.status, 204, String(r));
    for (const x of [a, c]) {
      const err = await x.closed();
      assert.ok(err && err.message.includes('hub-close'), `onclose error: ${err?.message}`);
    }
    for (const x of [b, d, o]) {
      await x.barrier(s.rest);
      assert.equal(x.isClosed, false, `${x.name} was closed`);
    }
    await Promise.all([b.stop(), d.stop(), o.stop()]);
  });

  it(':closeConnections (group) closes the group members except `excluded`', opts, async () => {
    const hub = uniq();
    const group = uniq('g');
    const a = await s.connect({ hub });
    const b = await s.connect({ hub });
    const c = await s.connect({ hub, protocol: 'msgpack' });
    const outside = await s.connect({ hub });
    for (const x of [a, b, c]) assert.equal((await s.rest.addConnectionToGroup(hub, group, x.id)).status, 200);
    const r = await s.rest.closeGroup(hub, group, { excluded: [b.id], reason: 'group-close' });
    assert.equal(r.status, 204, String(r));
    for (const x of [a, c]) {
      const err = await x.closed();
      assert.ok(err && err.message.includes('group-close'), `onclose error: ${err?.message}`);
    }
    for (const x of [b, outside]) {
      await x.barrier(s.rest);
      assert.equal(x.isClosed, false, `${x.name} was closed`);
    }
    await Promise.all([b.stop(), outside.stop()]);
  });

  it(':closeConnections (user) closes that user\'s connections except `excluded`', opts, async () => {
    const hub = uniq();
    const user = uniq('user');
    const a = await s.connect({ hub, userId: user });
    const b = await s.connect({ hub, userId: user, protocol: 'msgpack' });
    const c = await s.connect({ hub, userId: user });
    const other = await s.connect({ hub, userId: uniq('other') });
    const r = await s.rest.closeUser(hub, user, { excluded: [c.id], reason: 'user-close' });
    assert.equal(r.status, 204, String(r));
    for (const x of [a, b]) {
      const err = await x.closed();
      assert.ok(err && err.message.includes('user-close'), `onclose error: ${err?.message}`);
    }
    for (const x of [c, other]) {
      await x.barrier(s.rest);
      assert.equal(x.isClosed, false, `${x.name} was closed`);
    }
    await Promise.all([c.stop(), other.stop()]);
  });

  it(':closeConnections on an empty hub / group / user answers 204', opts, async () => {
    const hub = uniq();
    assert.equal((await s.rest.closeAll(hub)).status, 204);
    assert.equal((await s.rest.closeGroup(hub, uniq('g'))).status, 204);
    assert.equal((await s.rest.closeUser(hub, uniq('user'))).status, 204);
  });
});
