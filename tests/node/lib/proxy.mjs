// A tiny TCP proxy on 127.0.0.1:0 for transport-loss tests.
//
//   const p = await startProxy({ targetPort });   // p.url = http://127.0.0.1:PORT
//   p.setTarget(port)   switch the backend for connections accepted from now on
//   p.hold()            accept new connections but do not forward them (until release())
//   p.release()         forward the held connections (and every later one)
//   p.cutAll()          reset every forwarded connection, both sides, with no close handshake
//
// With no target (or a refused backend) an accepted connection is destroyed at once,
// which a client sees as a failed connect.
import net from 'node:net';
import { deferred, withTimeout, T } from './wait.mjs';

function kill(sock) {
  if (!sock || sock.destroyed) return;
  // RST instead of FIN: the peer sees the connection lost, not ended. Not on a socket still
  // connecting (resetAndDestroy() waits for a 'connect' that may never come), nor on one
  // already end()ed by pipe(): Node 20 then leaks the handle and the process never exits.
  if (typeof sock.resetAndDestroy === 'function' && !sock.connecting && !sock.writableEnded) sock.resetAndDestroy();
  else sock.destroy();
  sock.unref();
}

/**
 * @param {object} [o]
 * @param {number} [o.targetPort] backend port on 127.0.0.1 (may be set later)
 */
export async function startProxy({ targetPort } = {}) {
  let target = targetPort;
  let holding = false;
  const held = [];
  /** forwarded pairs: {client, upstream} */
  const pairs = new Set();
  let accepted = 0;
  const acceptWaiters = new Set();

  function forward(client) {
    if (client.destroyed) return;
    if (!target) { kill(client); return; }
    const upstream = net.connect({ host: '127.0.0.1', port: target });
    const pair = { client, upstream };
    pairs.add(pair);
    const done = () => {
      pairs.delete(pair);
      kill(client);
      kill(upstream);
    };
    upstream.on('error', done);
    client.on('error', done);
    upstream.on('close', done);
    client.on('close', done);
    upstream.setNoDelay(true);
    client.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
  }

  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    accepted += 1;
    client.on('error', () => {});
    for (const w of [...acceptWaiters]) {
      if (accepted >= w.n) { acceptWaiters.delete(w); w.resolve(accepted); }
    }
    if (holding) { held.push(client); return; }
    forward(client);
  });
  await new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', res);
  });
  const { port } = server.address();

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    /** connections accepted so far */
    get accepted() { return accepted; },
    /** forwarded connections currently open */
    get open() { return pairs.size; },
    /** connections accepted while holding, not yet forwarded */
    get held() { return held.length; },
    setTarget(p) { target = p; },
    hold() { holding = true; },

    release() {
      holding = false;
      for (const c of held.splice(0)) forward(c);
    },
    /** Reset every forwarded connection (both sides). Returns how many were cut. */
    cutAll() {
      const n = pairs.size;
      for (const { client, upstream } of [...pairs]) { kill(client); kill(upstream); }
      pairs.clear();
      return n;
    },
    /** Resolves once `n` connections in total have been accepted. */
    waitAccepted(n, timeoutMs = T) {
      if (accepted >= n) return Promise.resolve(accepted);
      const d = deferred();
      const w = { n, resolve: d.resolve };
      acceptWaiters.add(w);
      return withTimeout(d.promise, timeoutMs, `proxy: ${n} accepted connections (have ${accepted})`)
        .finally(() => acceptWaiters.delete(w));
    },
    async stop() {
      for (const c of held.splice(0)) kill(c);
      for (const { client, upstream } of [...pairs]) { kill(client); kill(upstream); }
      pairs.clear();
      await new Promise((res) => server.close(() => res()));
    },
  };
}
