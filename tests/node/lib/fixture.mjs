// Per-file fixture: one server, one negotiate app, one REST helper, and the
// clients a file opened (all stopped in teardown).
import { randomBytes } from 'node:crypto';
import { startServer } from './server.mjs';
import { startApp } from './app.mjs';
import { Rest } from './rest.mjs';
import { connect, stopAll } from './client.mjs';

let hubCounter = 0;
/** A fresh, valid, lower-case hub (or group) name so tests never share state. */
export function uniq(prefix = 'h') {
  hubCounter += 1;
  return `${prefix}${hubCounter}x${randomBytes(4).toString('hex')}`;
}

export async function setupSuite(serverOpts = {}) {
  const server = await startServer(serverOpts);
  let app;
  try {
    app = await startApp({ endpoint: server.endpoint, accessKey: server.accessKey });
  } catch (e) {
    await server.stop();
    throw e;
  }
  const rest = new Rest({ endpoint: server.endpoint, accessKey: server.accessKey });
  const clients = [];
  const raws = [];
  return {
    server,
    app,
    rest,
    endpoint: server.endpoint,
    key: server.accessKey,
    /** connect(app, opts) and remember the client for teardown */
    async connect(opts) {
      const c = await connect(app, opts);
      clients.push(c);
      return c;
    },
    /** remember a raw socket for teardown */
    track(raw) { raws.push(raw); return raw; },
    async teardown() {
      for (const r of raws) { try { r.terminate(); } catch { /* ignore */ } }
      await stopAll(clients);
      await app.stop();
      await server.stop();
    },
  };
}
