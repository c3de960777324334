// Node lifecycle seen by clients: user↔group membership survives a restart on
// the same data dir (DESIGN G6), and SIGTERM tells clients to reconnect
// (Close with allowReconnect: true) and exits in its grace period (G9).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, randomKey } from './lib/server.mjs';
import { Rest, msg } from './lib/rest.mjs';
import { startApp } from './lib/app.mjs';
import { connect } from './lib/client.mjs';
import { openRaw } from './lib/raw.mjs';
import { uniq } from './lib/fixture.mjs';
import { TEST_TIMEOUT } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };

async function node(dataDir, key) {
  const server = await startServer({ dataDir, keys: [key] });
  const app = await startApp({ endpoint: server.endpoint, accessKey: key });
  const rest = new Rest({ endpoint: server.endpoint, accessKey: key });
  return { server, app, rest };
}

describe('node lifecycle', () => {
  it('user↔group membership survives a restart on the same data dir; removed ones stay removed', opts, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-durable-'));
    const key = randomKey();
    const hub = uniq();
    const group = uniq('g');
    const [kept, removed, zero] = [uniq('kept'), uniq('removed'), uniq('zero')];
    let n;
    try {
      n = await node(dataDir, key);
      assert.equal((await n.rest.addUserToGroup(hub, group, kept)).status, 200);
      assert.equal((await n.rest.addUserToGroup(hub, group, removed)).status, 200);
      assert.equal((await n.rest.addUserToGroup(hub, group, zero, { ttl: 0 })).status, 200);
      assert.equal((await n.rest.removeUserFromGroup(hub, group, removed)).status, 204);
      await n.app.stop();
      const exit = await n.server.stop();
      assert.equal(exit.forced, false, 'SIGTERM did not stop the node');

      n = await node(dataDir, key);
      const a = await connect(n.app, { hub, userId: kept });
      const b = await connect(n.app, { hub, userId: removed, protocol: 'msgpack' });
      const z = await connect(n.app, { hub, userId: zero });
      assert.equal((await n.rest.sendToGroup(hub, group, msg('msg', 'durable'))).status, 202);
      await a.expect('durable');
      await b.barrier(n.rest);
      await z.barrier(n.rest);
      assert.equal(b.count('durable'), 0, 'a removed membership came back after restart');
      assert.equal(z.count('durable'), 0, 'a ttl=0 membership became persistent');
      const r = await n.rest.request('GET', `/api/hubs/${hub}/users/${kept}/groups/${group}`, { query: { 'api-version': '2022-06-01' } });
      assert.equal(r.status, 200, String(r));
      await Promise.all([a.stop(), b.stop(), z.stop()]);
    } finally {
      await n?.app.stop().catch(() => {});
      await n?.server.stop().catch(() => {});
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('SIGTERM: clients get Close with allowReconnect: true, the real client starts reconnecting, the node exits 0 within its grace', opts, async () => {
    const server = await startServer();
    const app = await startApp({ endpoint: server.endpoint, accessKey: server.accessKey });
    let c;
    let raw;
    try {
      const hub = uniq();
      c = await connect(app, { hub, reconnectDelays: [60000] });
      raw = await openRaw({ endpoint: server.endpoint, key: server.accessKey, hub });
      raw.sendHandshake();
      assert.deepEqual(await raw.handshakeReply(), {});
      const exitP = server.stop({ graceMs: 15000 });
      const close = await raw.nextMessage((m) => m.type === 7, TEST_TIMEOUT / 4, 'Close message on SIGTERM');
      assert.equal(close.allowReconnect, true, `Close message: ${JSON.stringify(close)}`);
      await c.reconnecting(TEST_TIMEOUT / 4);
      const exit = await exitP;
      assert.equal(exit.forced, false, 'node did not exit within its grace period');
      assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}`);
    } finally {
      raw?.terminate();
      await c?.stop();
      await app.stop();
      await server.stop();
    }
  });
});
