// Node lifecycle seen by clients: SIGTERM tells clients to reconnect
// (Close with allowReconnect: true) and exits in its grace period (G9).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { startApp } from './lib/app.mjs';
import { connect } from './lib/client.mjs';
import { openRaw } from './lib/raw.mjs';
import { uniq } from './lib/fixture.mjs';
import { TEST_TIMEOUT } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };

describe('node lifecycle', () => {
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
