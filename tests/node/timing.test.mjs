// Keep-alive and handshake timeout (15 s each, specs/signalr-protocols.md §3, §6).
// These cases wait ~15 s, so they run concurrently with each other.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { openRaw, openRawReady } from './lib/raw.mjs';
import { TEST_TIMEOUT } from './lib/wait.mjs';

const SLACK_MS = 4000;

describe('keep-alive and handshake timeout', { concurrency: true }, () => {
  let s;
  before(async () => { s = await setupSuite(); });
  after(async () => { await s?.teardown(); });

  for (const protocol of ['json', 'msgpack']) {
    it(`an idle ${protocol} connection gets a Ping within 15 s`, { timeout: TEST_TIMEOUT }, async () => {
      let raw;
      if (protocol === 'json') {
        raw = s.track(await openRawReady({ endpoint: s.endpoint, key: s.key, hub: uniq() }));
      } else {
        raw = s.track(await openRaw({ endpoint: s.endpoint, key: s.key, hub: uniq(), protocol: 'msgpack' }));
        raw.sendHandshake('messagepack', 1);
        assert.deepEqual(await raw.handshakeReply(), {});
      }
      const t0 = Date.now();
      const ping = await raw.nextMessage((m) => (Array.isArray(m) ? m[0] === 6 : m.type === 6), 15000 + SLACK_MS, 'Ping');
      if (protocol === 'json') assert.deepEqual(ping, { type: 6 });
      else assert.deepEqual(ping, [6]);
      assert.ok(Date.now() - t0 <= 15000 + SLACK_MS);
      assert.equal(raw.isClosed, false);
      assert.deepEqual(raw.wireProblems(), []);
      raw.terminate();
    });
  }

  it('a connection that never sends its handshake is closed after ~15 s', { timeout: TEST_TIMEOUT }, async () => {
    const raw = s.track(await openRaw({ endpoint: s.endpoint, key: s.key, hub: uniq() }));
    const t0 = Date.now();
    await raw.closed(15000 + SLACK_MS);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 10000, `closed too early (${elapsed} ms)`);
    if (raw.handshakeDone) {
      assert.equal(typeof raw.handshakeResponse.error, 'string', JSON.stringify(raw.handshakeResponse));
    }
  });

  it('a real client stays connected past the 30 s client timeout window (server pings)', { timeout: TEST_TIMEOUT }, async () => {
    // The JS client drops the connection if it receives nothing for 30 s; the
    // server's pings must prevent that. Use a shorter client timeout (16 s) to
    // keep the test short: a 15 s ping interval still satisfies it.
    const hub = uniq();
    const c = await s.connect({
      hub,
      configure(conn) {
        conn.serverTimeoutInMilliseconds = 16000 + SLACK_MS;
        conn.keepAliveIntervalInMilliseconds = 60000; // client pings don't matter here
      },
    });
    // Waiting out the window is the point of this test: onclose must NOT fire.
    const closedEarly = await c.closed(19000 + SLACK_MS).then(() => true, () => false);
    assert.equal(closedEarly, false, `client closed: ${c.closeError?.message}`);
    await c.stop();
  });
});
