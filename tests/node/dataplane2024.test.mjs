// The data plane Azure added after 2022-06-01, with real clients: a client connects with a token
// from `:generateToken`; `GET …/groups/{group}/connections` pages through the group's real
// connections (the swagger's `{"value":[{connectionId,userId}],"nextLink"}`); `:execute` with an
// OData filter reaches exactly the clients it matches, JSON and MessagePack alike; the
// presence extensions count what is connected.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { enc, msg } from './lib/rest.mjs';
import { TEST_TIMEOUT, eventually } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };
const API = '2024-12-01';

describe('the 2024-12-01 data plane with real clients', () => {
  let s;
  before(async () => { s = await setupSuite(); });
  after(async () => { await s?.teardown(); });

  const call = (method, path, options = {}) =>
    s.rest.request(method, path, { ...options, query: { 'api-version': API, ...options.query } });

  it(':generateToken mints a token a client connects with (as the user, until it expires)', opts, async () => {
    const hub = uniq();
    const r = await call('POST', `/api/hubs/${hub}/:generateToken`, { query: { userId: 'alice', minutesToExpire: 5 } });
    assert.equal(r.status, 200, String(r));
    const { token } = r.json();
    assert.equal(typeof token, 'string');
    const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
    assert.ok(claims.exp - claims.iat <= 5 * 60 && claims.exp - claims.iat > 4 * 60, JSON.stringify(claims));
    const c = await s.connect({ hub, url: `${s.endpoint}/client/?hub=${hub}`, accessTokenFactory: () => token });
    assert.equal((await s.rest.sendToUser(hub, 'alice', msg('msg', 'for-alice'))).status, 202);
    await c.expect('for-alice');
    const bad = await call('POST', `/api/hubs/${hub}/:generateToken`, { query: { minutesToExpire: 0 } });
    assert.equal(bad.status, 400, String(bad));
  });

  it('a group listing pages through its connections; counts and presence agree', opts, async () => {
    const hub = uniq();
    const group = 'room';
    const clients = [];
    for (const [userId, protocol] of [['u1', 'json'], ['u2', 'msgpack'], [undefined, 'json'], ['u1', 'msgpack'], ['u3', 'json']]) {
      const c = await s.connect({ hub, userId, protocol });
      assert.equal((await s.rest.addConnectionToGroup(hub, group, c.id)).status, 200);
      clients.push(c);
    }
    const outsider = await s.connect({ hub, userId: 'u9' });
    const seen = [];
    let path = `/api/hubs/${hub}/groups/${group}/connections`;
    let query = { maxpagesize: 2 };
    for (let pages = 0; ; pages++) {
      assert.ok(pages < 5, 'the listing ends');
      const r = await call('GET', path, { query });
      assert.equal(r.status, 200, String(r));
      const page = r.json();
      assert.ok(page.value.length <= 2);
      seen.push(...page.value);
      if (!page.nextLink) break;
      const next = new URL(page.nextLink);
      assert.equal(next.origin, s.endpoint, 'an absolute nextLink on this endpoint');
      path = next.pathname;
      query = Object.fromEntries(next.searchParams);
    }
    const expected = clients.map((c) => (c.userId ? { connectionId: c.id, userId: c.userId } : { connectionId: c.id }));
    const byId = (a, b) => a.connectionId.localeCompare(b.connectionId);
    assert.deepEqual([...seen].sort(byId), [...expected].sort(byId));
    assert.ok(!seen.some((x) => x.connectionId === outsider.id));
    const count = async (p) => (await call('GET', p)).json().count;
    assert.equal(await count(`/api/hubs/${hub}/:count`), 6);
    assert.equal(await count(`/api/hubs/${hub}/groups/${group}/:count`), 5);
    assert.equal(await count(`/api/hubs/${hub}/users/u1/:count`), 2);
    const u1 = (await call('GET', `/api/hubs/${hub}/users/u1/connections`)).json().value.map((x) => x.connectionId).sort();
    assert.deepEqual(u1, [clients[0].id, clients[3].id].sort());
    // stop() does not wait for the server's answer to the close, so the server may count the
    // client a moment longer.
    await clients[0].conn.stop();
    await eventually(async () => (await count(`/api/hubs/${hub}/groups/${group}/:count`)) === 4, 'a client that left is gone from the group');
    assert.equal(await count(`/api/hubs/${hub}/users/u1/:count`), 1);
  });

  it(':execute reaches exactly the clients the filter matches, in both protocols', opts, async () => {
    const hub = uniq();
    const a = await s.connect({ hub, userId: 'listener-a', protocol: 'json' });
    const b = await s.connect({ hub, userId: 'listener-b', protocol: 'msgpack' });
    const other = await s.connect({ hub, userId: 'someone', protocol: 'msgpack' });
    const grouped = await s.connect({ hub, protocol: 'json' });
    assert.equal((await s.rest.addConnectionToGroup(hub, 'vip', grouped.id)).status, 200);
    const filter = "startswith(userId, 'listener-') or 'vip' in groups";
    const commands = [
      { type: 'SendMessage', message: { target: 'msg', arguments: ['executed', { n: 1 }] } },
      { type: 'JoinGroup', group: 'matched' },
    ];
    const r = await call('POST', `/api/hubs/${hub}/:execute`, { query: { filter }, body: commands });
    assert.equal(r.status, 202, String(r));
    for (const c of [a, b, grouped]) assert.deepEqual(await c.expect('executed'), ['executed', { n: 1 }]);
    // Every matched client joined `matched`; the other one did not and got nothing.
    assert.equal((await s.rest.request('POST', `/api/hubs/${hub}/groups/matched/:send`, { query: { 'api-version': API }, body: msg('msg', 'to-matched') })).status, 202);
    for (const c of [a, b, grouped]) await c.expect('to-matched');
    await other.barrier(s.rest);
    assert.equal(other.count('executed') + other.count('to-matched'), 0, 'the unmatched client got nothing');

    const bad = await call('POST', `/api/hubs/${hub}/:execute`, { query: { filter: "userId eq 'x' and" }, body: commands });
    assert.equal(bad.status, 400, String(bad));
    assert.match(bad.text, /17/, 'the error names the position');
    const closing = await call('POST', `/api/hubs/${enc(hub)}/:execute`, {
      query: { filter: "userId eq 'someone'" },
      body: [{ type: 'CloseConnection', reason: 'bye' }],
    });
    assert.equal(closing.status, 202);
    const error = await other.closed();
    assert.match(String(error?.message), /bye/);
    await a.barrier(s.rest);
  });
});
