// Group membership through REST, seen by real clients: connection↔group in
// both route families plus the v1 alias, group sends with `excluded`, removal,
// and persistent user↔group membership with and without `ttl`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { msg, enc, API } from './lib/rest.mjs';
import { TEST_TIMEOUT } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };

describe('connection ↔ group membership', () => {
  let s;
  before(async () => { s = await setupSuite(); });
  after(async () => { await s?.teardown(); });

  for (const family of ['2022', 'v1', 'v1-alias']) {
    it(`add (${family}) → group send reaches members only; remove (${family}) → no longer`, opts, async () => {
      const hub = uniq();
      const group = uniq('g');
      const a = await s.connect({ hub, protocol: 'json' });
      const b = await s.connect({ hub, protocol: 'msgpack' });
      const c = await s.connect({ hub, protocol: 'json' });
      for (const x of [a, b]) {
        const r = await s.rest.addConnectionToGroup(hub, group, x.id, { family });
        assert.equal(r.status, 200, String(r));
      }
      // group send through both families
      let r = await s.rest.sendToGroup(hub, group, msg('msg', 'g1', 'payload'), { family: '2022' });
      assert.equal(r.status, 202, String(r));
      r = await s.rest.sendToGroup(hub, group, msg('msg', 'g2'), { family: 'v1' });
      assert.equal(r.status, 202, String(r));
      assert.deepEqual(await a.expect('g1'), ['g1', 'payload']);
      assert.deepEqual(await b.expect('g1'), ['g1', 'payload']);
      await a.expect('g2');
      await b.expect('g2');
      await c.barrier(s.rest);
      assert.equal(c.count('g1') + c.count('g2'), 0, 'non-member received a group message');

      r = await s.rest.removeConnectionFromGroup(hub, group, a.id, { family });
      assert.equal(r.status, 200, String(r));
      r = await s.rest.sendToGroup(hub, group, msg('msg', 'g3'));
      assert.equal(r.status, 202, String(r));
      await b.expect('g3');
      await a.barrier(s.rest);
      assert.equal(a.count('g3'), 0, 'removed connection still received a group message');
      await Promise.all([a.stop(), b.stop(), c.stop()]);
    });
  }

  for (const family of ['2022', 'v1']) {
    it(`group send (${family}) with excluded skips the excluded members`, opts, async () => {
      const hub = uniq();
      const group = uniq('g');
      const a = await s.connect({ hub });
      const b = await s.connect({ hub, protocol: 'msgpack' });
      const c = await s.connect({ hub });
      for (const x of [a, b, c]) assert.equal((await s.rest.addConnectionToGroup(hub, group, x.id)).status, 200);
      let r = await s.rest.sendToGroup(hub, group, msg('msg', 'gx1'), { family, excluded: [a.id] });
      assert.equal(r.status, 202, String(r));
      r = await s.rest.sendToGroup(hub, group, msg('msg', 'gx2'), { family, excluded: [a.id, c.id] });
      assert.equal(r.status, 202, String(r));
      await b.expect('gx1');
      await c.expect('gx1');
      await b.expect('gx2');
      await a.barrier(s.rest);
      await c.barrier(s.rest);
      assert.equal(a.count('gx1') + a.count('gx2'), 0);
      assert.equal(c.count('gx2'), 0);
      await Promise.all([a.stop(), b.stop(), c.stop()]);
    });
  }

  it('DELETE /api/hubs/h/connections/c/groups removes the connection from all its groups', opts, async () => {
    const hub = uniq();
    const [g1, g2] = [uniq('g'), uniq('g')];
    const a = await s.connect({ hub });
    const b = await s.connect({ hub });
    for (const g of [g1, g2]) for (const x of [a, b]) assert.equal((await s.rest.addConnectionToGroup(hub, g, x.id)).status, 200);
    const r = await s.rest.request('DELETE', `/api/hubs/${hub}/connections/${enc(a.id)}/groups`, { query: { 'api-version': API } });
    assert.equal(r.status, 200, String(r));
    for (const g of [g1, g2]) assert.equal((await s.rest.sendToGroup(hub, g, msg('msg', `all-${g}`))).status, 202);
    await b.expect(`all-${g1}`);
    await b.expect(`all-${g2}`);
    await a.barrier(s.rest);
    assert.equal(a.count(`all-${g1}`) + a.count(`all-${g2}`), 0);
    await Promise.all([a.stop(), b.stop()]);
  });

  for (const family of ['2022', 'v1']) {
    it(`adding an unknown connection to a group (${family}) → 404 Error.Connection.NotExisted`, opts, async () => {
      const r = await s.rest.addConnectionToGroup(uniq(), uniq('g'), 'no-such-connection', { family });
      assert.equal(r.status, 404, String(r));
      assert.equal(r.errorCode, 'Error.Connection.NotExisted', String(r));
    });
  }

  it('removing a non-member connection from a group answers 200', opts, async () => {
    const hub = uniq();
    const a = await s.connect({ hub });
    const r = await s.rest.removeConnectionFromGroup(hub, uniq('g'), a.id);
    assert.equal(r.status, 200, String(r));
    await a.stop();
  });

  for (const group of ['team/red', 'grüppe mit leerzeichen', 'a.b-c_d~e!*()\'', 'x'.repeat(1024)]) {
    it(`percent-encoded group name ${JSON.stringify(group.length > 40 ? `${group.slice(0, 8)}…(${group.length})` : group)} works end to end`, opts, async () => {
      const hub = uniq();
      const a = await s.connect({ hub });
      let r = await s.rest.addConnectionToGroup(hub, group, a.id);
      assert.equal(r.status, 200, String(r));
      r = await s.rest.sendToGroup(hub, group, msg('msg', 'enc-group'));
      assert.equal(r.status, 202, String(r));
      await a.expect('enc-group');
      await a.stop();
    });
  }

  it('connection↔group membership dies with the connection', opts, async () => {
    const hub = uniq();
    const group = uniq('g');
    const a = await s.connect({ hub });
    assert.equal((await s.rest.addConnectionToGroup(hub, group, a.id)).status, 200);
    const r0 = await s.rest.request('HEAD', `/api/hubs/${hub}/groups/${group}`, { query: { 'api-version': API } });
    assert.equal(r0.status, 200, String(r0));
    await a.stop();
    const b = await s.connect({ hub });
    assert.equal((await s.rest.sendToGroup(hub, group, msg('msg', 'after-death'))).status, 202);
    await b.barrier(s.rest);
    assert.equal(b.count('after-death'), 0);
    await b.stop();
  });
});

describe('user ↔ group membership', () => {
  let s;
  before(async () => { s = await setupSuite(); });
  after(async () => { await s?.teardown(); });

  for (const [label, ttl] of [['no ttl', undefined], ['ttl=3600', 3600]]) {
    it(`PUT user→group (${label}): current connections join, and a connection made AFTER joins automatically`, opts, async () => {
      const hub = uniq();
      const group = uniq('g');
      const user = uniq('user');
      const u1 = await s.connect({ hub, userId: user, protocol: 'json' });
      const other = await s.connect({ hub, userId: uniq('other') });
      const r = await s.rest.addUserToGroup(hub, group, user, { ttl });
      assert.equal(r.status, 200, String(r));
      assert.equal((await s.rest.sendToGroup(hub, group, msg('msg', 'ug1'))).status, 202);
      await u1.expect('ug1');
      const u2 = await s.connect({ hub, userId: user, protocol: 'msgpack' });
      assert.equal((await s.rest.sendToGroup(hub, group, msg('msg', 'ug2'))).status, 202);
      await u1.expect('ug2');
      await u2.expect('ug2');
      await other.barrier(s.rest);
      assert.equal(other.count('ug1') + other.count('ug2'), 0, 'another user received a group message');
      await Promise.all([u1.stop(), u2.stop(), other.stop()]);
    });
  }

  it('PUT user→group while the user has no connection: its first connection joins', opts, async () => {
    const hub = uniq();
    const group = uniq('g');
    const user = uniq('user');
    const r = await s.rest.addUserToGroup(hub, group, user);
    assert.equal(r.status, 200, String(r));
    const u = await s.connect({ hub, userId: user });
    assert.equal((await s.rest.sendToGroup(hub, group, msg('msg', 'late-join'))).status, 202);
    await u.expect('late-join');
    await u.stop();
  });

  it('ttl=0 adds only the current connections: a later connection of the user does not join', opts, async () => {
    const hub = uniq();
    const group = uniq('g');
    const user = uniq('user');
    const u1 = await s.connect({ hub, userId: user });
    const r = await s.rest.addUserToGroup(hub, group, user, { ttl: 0 });
    assert.equal(r.status, 200, String(r));
    const u2 = await s.connect({ hub, userId: user, protocol: 'msgpack' });
    assert.equal((await s.rest.sendToGroup(hub, group, msg('msg', 'ttl0'))).status, 202);
    await u1.expect('ttl0');
    await u2.barrier(s.rest);
    assert.equal(u2.count('ttl0'), 0, 'a connection made after a ttl=0 membership joined the group');
    await Promise.all([u1.stop(), u2.stop()]);
  });

  for (const family of ['v1', 'v1-alias']) {
    it(`v1 PUT user→group (${family}) answers 202 and works; DELETE (${family}) answers 202 and removes`, opts, async () => {
      const hub = uniq();
      const group = uniq('g');
      const user = uniq('user');
      const u1 = await s.connect({ hub, userId: user });
      let r = await s.rest.addUserToGroup(hub, group, user, { family });
      assert.equal(r.status, 202, String(r));
      const u2 = await s.connect({ hub, userId: user });
      assert.equal((await s.rest.sendToGroup(hub, group, msg('msg', 'v1ug'), { family: 'v1' })).status, 202);
      await u1.expect('v1ug');
      await u2.expect('v1ug');
      r = await s.rest.removeUserFromGroup(hub, group, user, { family });
      assert.equal(r.status, 202, String(r));
      assert.equal((await s.rest.sendToGroup(hub, group, msg('msg', 'v1ug-after'))).status, 202);
      await u1.barrier(s.rest);
      await u2.barrier(s.rest);
      assert.equal(u1.count('v1ug-after') + u2.count('v1ug-after'), 0);
      await Promise.all([u1.stop(), u2.stop()]);
    });
  }

  it('DELETE user from group (2022) → 204; its connections leave and new ones do not join', opts, async () => {
    const hub = uniq();
    const group = uniq('g');
    const user = uniq('user');
    const stay = await s.connect({ hub, userId: uniq('stay') });
    const u1 = await s.connect({ hub, userId: user });
    assert.equal((await s.rest.addUserToGroup(hub, group, user)).status, 200);
    assert.equal((await s.rest.addUserToGroup(hub, group, stay.userId)).status, 200);
    const r = await s.rest.removeUserFromGroup(hub, group, user);
    assert.equal(r.status, 204, String(r));
    const u2 = await s.connect({ hub, userId: user });
    assert.equal((await s.rest.sendToGroup(hub, group, msg('msg', 'gone'))).status, 202);
    await stay.expect('gone');
    await u1.barrier(s.rest);
    await u2.barrier(s.rest);
    assert.equal(u1.count('gone') + u2.count('gone'), 0, 'removed user still receives group messages');
    await Promise.all([stay.stop(), u1.stop(), u2.stop()]);
  });

  for (const family of ['2022', 'v1']) {
    it(`DELETE user from all groups (${family}) removes every membership`, opts, async () => {
      const hub = uniq();
      const [g1, g2] = [uniq('g'), uniq('g')];
      const user = uniq('user');
      const u = await s.connect({ hub, userId: user });
      for (const g of [g1, g2]) assert.equal((await s.rest.addUserToGroup(hub, g, user)).status, 200);
      const r = await s.rest.removeUserFromAllGroups(hub, user, { family });
      if (family === '2022') assert.equal(r.status, 204, String(r));
      else assert.ok(r.status === 200 || r.status === 202, String(r));
      const later = await s.connect({ hub, userId: user });
      for (const g of [g1, g2]) assert.equal((await s.rest.sendToGroup(hub, g, msg('msg', 'none'))).status, 202);
      await u.barrier(s.rest);
      await later.barrier(s.rest);
      assert.equal(u.count('none') + later.count('none'), 0);
      await Promise.all([u.stop(), later.stop()]);
    });
  }

  it('user membership applies per hub', opts, async () => {
    const [hubA, hubB] = [uniq(), uniq()];
    const group = uniq('g');
    const user = uniq('user');
    const a = await s.connect({ hub: hubA, userId: user });
    const b = await s.connect({ hub: hubB, userId: user });
    assert.equal((await s.rest.addUserToGroup(hubA, group, user)).status, 200);
    assert.equal((await s.rest.sendToGroup(hubB, group, msg('msg', 'hub-b'))).status, 202);
    assert.equal((await s.rest.sendToGroup(hubA, group, msg('msg', 'hub-a'))).status, 202);
    await a.expect('hub-a');
    await b.barrier(s.rest);
    assert.equal(b.count('hub-b'), 0);
    await Promise.all([a.stop(), b.stop()]);
  });
});
