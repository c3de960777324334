// @microsoft/signalr clients on Switchboard sharing an ASP.NET Core SignalR app's Redis
// backplane: this test plays the ASP.NET server on a real redis-server (PUBLISH and SUBSCRIBE of
// the backplane's MessagePack envelopes, as the backplane digest describes them); Switchboard runs
// with --aspnet-backplane. Sends cross both ways for JSON and MessagePack clients, and a client
// result asked by the ASP.NET side is answered by a JS handler.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { encode, decode } from '@msgpack/msgpack';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { startRedis, respConnection } from './lib/resp.mjs';
import { msg } from './lib/rest.mjs';
import { writeVarInt } from './lib/upstream.mjs';
import { TEST_TIMEOUT } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };
const HUB_TYPE = 'Chat.Hubs.ChatHub';
const PEER = 'web01_0123456789abcdef0123456789abcdef';
const channel = (suffix) => `${HUB_TYPE}:${suffix}`;

/** The frames an ASP.NET server serializes for `Clients.X.SendAsync(target, ...args)`. */
function frames(target, args, invocationId) {
  const json = { type: 1, ...(invocationId ? { invocationId } : {}), target, arguments: args };
  const messagepack = Buffer.from(encode([1, {}, invocationId ?? null, target, args, []]));
  return {
    json: Buffer.from(`${JSON.stringify(json)}\x1e`),
    messagepack: Buffer.concat([writeVarInt(messagepack.length), messagepack]),
  };
}

describe('the ASP.NET backplane bridge with @microsoft/signalr clients', () => {
  let redis;
  let s;
  let publisher;
  let subscriber;

  before(async () => {
    redis = await startRedis();
    s = await setupSuite({ extraArgs: ['--aspnet-backplane', redis.url, '--aspnet-hub', `chat=${HUB_TYPE}`] });
    publisher = await respConnection(redis.port);
    subscriber = await respConnection(redis.port);
    for (const suffix of ['all', `internal:return:${PEER}`]) await subscriber.command('SUBSCRIBE', channel(suffix));
  });
  after(async () => {
    publisher?.close();
    subscriber?.close();
    await s?.teardown();
    redis?.stop();
  });

  it('an ASP.NET broadcast reaches JSON and MessagePack clients; a REST broadcast reaches the ASP.NET side', opts, async () => {
    const json = await s.connect({ hub: 'chat', protocol: 'json', userId: uniq('u') });
    const messagepack = await s.connect({ hub: 'chat', protocol: 'msgpack', userId: uniq('u') });
    const from = `from aspnet ${uniq()}`;
    const receivers = await publisher.command('PUBLISH', channel('all'), Buffer.from(encode([[], frames('msg', [from, { n: 1 }])])));
    assert.ok(receivers >= 2, 'Switchboard and the ASP.NET side listen');
    assert.deepEqual(await json.expect(from), [from, { n: 1 }]);
    assert.deepEqual(await messagepack.expect(from), [from, { n: 1 }]);

    const mine = `from switchboard ${uniq()}`;
    assert.equal((await s.rest.broadcast('chat', msg('msg', mine))).status, 202);
    // Skip the echo of this test's own two-item envelope: Switchboard's carries its origin third.
    let published;
    do {
      published = decode(await subscriber.next(channel('all')));
    } while (published.length < 3);
    const [excluded, protocols, origin] = published;
    assert.deepEqual(excluded, []);
    assert.equal(origin, 'switchboard');
    assert.deepEqual(JSON.parse(Buffer.from(protocols.json).toString().replace(/\x1e$/, '')), { type: 1, target: 'msg', arguments: [mine] });
    assert.ok(protocols.messagepack instanceof Uint8Array);
    assert.deepEqual(await json.expect(mine), [mine]);
    assert.deepEqual(await messagepack.expect(mine), [mine]);
    await json.barrier(s.rest);
    assert.equal(json.count(mine), 1, 'once, not again from the backplane');
  });

  it('an ASP.NET send to a user and a client result answered by a JS handler', opts, async () => {
    const user = uniq('alice');
    const c = await s.connect({ hub: 'chat', userId: user, configure: (conn) => conn.on('getName', (greeting) => `${greeting}, ${user}`) });
    const toUser = `to ${user}`;
    assert.equal(await publisher.command('PUBLISH', channel(`user:${user}`), Buffer.from(encode([[], frames('msg', [toUser])]))), 1);
    assert.deepEqual(await c.expect(toUser), [toUser]);

    const invocationId = 'AbCdEfGhIjKlMnOpQrStUv';
    const ask = encode([[], frames('getName', ['hello'], invocationId), invocationId, channel(`internal:return:${PEER}`)]);
    assert.equal(await publisher.command('PUBLISH', channel(`connection:${c.id}`), Buffer.from(ask)), 1);
    const [protocol, frame] = decode(await subscriber.next(channel(`internal:return:${PEER}`)));
    assert.equal(protocol, 'json');
    const completion = JSON.parse(Buffer.from(frame).toString().replace(/\x1e$/, ''));
    assert.deepEqual(completion, { type: 3, invocationId, result: `hello, ${user}` });
  });
});
