// Existence checks (connection / user / group / user-in-group), 200 vs 404 with
// x-ms-error-code, in HEAD and GET forms and both route families; health routes.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { API, enc } from './lib/rest.mjs';
import { TEST_TIMEOUT } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };

describe('existence checks and health', () => {
  let s;
  before(async () => { s = await setupSuite(); });
  after(async () => { await s?.teardown(); });

  /** Assert every (method, path, query) answers `status` (and the 404 code). */
  async function check(reqs, status, code) {
    for (const [method, path, query] of reqs) {
      const r = await s.rest.request(method, path, { query });
      assert.equal(r.status, status, String(r));
      if (status === 404) assert.equal(r.errorCode, code, `x-ms-error-code of ${r}`);
    }
  }
  const v = { 'api-version': API };

  it('connection exists: 200 while connected; 404 Warning.Connection.NotExisted otherwise', opts, async () => {
    const hub = uniq();
    const c = await s.connect({ hub });
    const forms = (cid) => [
      ['HEAD', `/api/hubs/${hub}/connections/${enc(cid)}`, v],
      ['HEAD', `/api/v1/hubs/${hub}/connections/${enc(cid)}`],
      ['GET', `/api/v1/hubs/${hub}/connections/${enc(cid)}`],
    ];
    await check(forms(c.id), 200);
    await check(forms('no-such-connection'), 404, 'Warning.Connection.NotExisted');
    // the same connection id is unknown in another hub
    await check([['HEAD', `/api/hubs/${uniq()}/connections/${enc(c.id)}`, v]], 404, 'Warning.Connection.NotExisted');
    await c.stop();
  });

  it('user exists: 200 while the user has a connection; 404 Warning.User.NotExisted otherwise', opts, async () => {
    const hub = uniq();
    const user = uniq('user');
    const forms = (u) => [
      ['HEAD', `/api/hubs/${hub}/users/${enc(u)}`, v],
      ['HEAD', `/api/v1/hubs/${hub}/users/${enc(u)}`],
      ['GET', `/api/v1/hubs/${hub}/users/${enc(u)}`],
    ];
    await check(forms(user), 404, 'Warning.User.NotExisted');
    const c = await s.connect({ hub, userId: user });
    await check(forms(user), 200);
    await check(forms(uniq('nobody')), 404, 'Warning.User.NotExisted');
    await c.stop();
  });

  it('group exists: 200 with ≥1 connection; 404 Warning.Group.NotExisted otherwise', opts, async () => {
    const hub = uniq();
    const group = uniq('g');
    const forms = (g) => [
      ['HEAD', `/api/hubs/${hub}/groups/${enc(g)}`, v],
      ['HEAD', `/api/v1/hubs/${hub}/groups/${enc(g)}`],
      ['GET', `/api/v1/hubs/${hub}/groups/${enc(g)}`],
    ];
    await check(forms(group), 404, 'Warning.Group.NotExisted');
    const c = await s.connect({ hub });
    assert.equal((await s.rest.addConnectionToGroup(hub, group, c.id)).status, 200);
    await check(forms(group), 200);
    assert.equal((await s.rest.removeConnectionFromGroup(hub, group, c.id)).status, 200);
    await check(forms(group), 404, 'Warning.Group.NotExisted');
    await c.stop();
  });

  it('group exists through a user membership of a connected user', opts, async () => {
    const hub = uniq();
    const group = uniq('g');
    const user = uniq('user');
    const c = await s.connect({ hub, userId: user });
    assert.equal((await s.rest.addUserToGroup(hub, group, user)).status, 200);
    await check([['HEAD', `/api/hubs/${hub}/groups/${enc(group)}`, v]], 200);
    await c.stop();
  });

  it('user in group: HEAD and GET, both families → 200 when a member; 404 Info.User.NotInGroup otherwise', opts, async () => {
    const hub = uniq();
    const group = uniq('g');
    const user = uniq('user');
    const c = await s.connect({ hub, userId: user });
    const forms = (g) => [
      ['HEAD', `/api/hubs/${hub}/users/${enc(user)}/groups/${enc(g)}`, v],
      ['GET', `/api/hubs/${hub}/users/${enc(user)}/groups/${enc(g)}`, v],
      ['HEAD', `/api/v1/hubs/${hub}/users/${enc(user)}/groups/${enc(g)}`],
      ['GET', `/api/v1/hubs/${hub}/users/${enc(user)}/groups/${enc(g)}`],
      ['HEAD', `/api/v1/hubs/${hub}/groups/${enc(g)}/users/${enc(user)}`],
      ['GET', `/api/v1/hubs/${hub}/groups/${enc(g)}/users/${enc(user)}`],
    ];
    await check(forms(group), 404, 'Info.User.NotInGroup');
    assert.equal((await s.rest.addUserToGroup(hub, group, user)).status, 200);
    await check(forms(group), 200);
    await check(forms(uniq('g')), 404, 'Info.User.NotInGroup');
    assert.equal((await s.rest.removeUserFromGroup(hub, group, user)).status, 204);
    await check(forms(group), 404, 'Info.User.NotInGroup');
    await c.stop();
  });

  it('health: HEAD /api/health?api-version=2022-06-01, HEAD and GET /api/v1/health → 200', opts, async () => {
    for (const [method, path, query] of [
      ['HEAD', '/api/health', v],
      ['HEAD', '/api/health', { 'api-version': '2024-12-01' }],
      ['HEAD', '/api/v1/health'],
      ['GET', '/api/v1/health'],
    ]) {
      const r = await s.rest.request(method, path, { query });
      assert.equal(r.status, 200, String(r));
    }
  });

  for (const apiVersion of ['2024-12-01', '2030-01-01']) {
    it(`api-version=${apiVersion} (incl. unknown newer dates) is accepted on existence checks`, opts, async () => {
      const hub = uniq();
      const c = await s.connect({ hub });
      const r = await s.rest.request('HEAD', `/api/hubs/${hub}/connections/${enc(c.id)}`, { query: { 'api-version': apiVersion } });
      assert.equal(r.status, 200, String(r));
      const r2 = await s.rest.request('HEAD', `/api/hubs/${hub}/connections/nope`, { query: { 'api-version': apiVersion } });
      assert.equal(r2.status, 404, String(r2));
      assert.equal(r2.errorCode, 'Warning.Connection.NotExisted');
      await c.stop();
    });
  }
});
