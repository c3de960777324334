// A tiny test "function app": POST /api/negotiate answers the Azure-style
// redirect {url, accessToken} exactly as the seed's negotiate function (the
// SignalRConnectionInfo input binding) does, so the real client follows it to
// the service.
//
// Client base URL: `${app.url}/api?hub=<hub>[&userId=<u>]`; the client POSTs
// `${app.url}/api/negotiate?hub=<hub>[&userId=<u>]&negotiateVersion=1`.
// User id: header `x-ms-client-principal-id` (App Service auth), else the
// `userId` query param, else anonymous.
import { createServer } from 'node:http';
import { clientToken } from './jwt.mjs';

/**
 * @param {object} o
 * @param {string} o.endpoint service endpoint
 * @param {string} o.accessKey key used to sign client tokens
 * @param {string} [o.defaultHub='chat']
 * @param {string} [o.userClaim='asrs.s.uid'] claim carrying the user id
 */
export async function startApp({ endpoint, accessKey, defaultHub = 'chat', userClaim = 'asrs.s.uid' }) {
  const requests = [];
  const server = createServer((req, res) => {
    const u = new URL(req.url, 'http://app.invalid');
    requests.push({ method: req.method, path: u.pathname, query: Object.fromEntries(u.searchParams), headers: req.headers });
    req.resume();
    if (u.pathname !== '/api/negotiate') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { 'content-type': 'text/plain' }).end('method not allowed');
      return;
    }
    const answer = () => {
      const hub = (u.searchParams.get('hub') || defaultHub).toLowerCase();
      const userId = req.headers['x-ms-client-principal-id'] || u.searchParams.get('userId') || undefined;
      const body = JSON.stringify({
        url: `${endpoint}/client/?hub=${hub}`,
        accessToken: clientToken({ endpoint, hub, key: accessKey, userId, userClaim }),
      });
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    };
    if (holding) held.push(answer);
    else answer();
  });
  // holdNegotiate(): negotiate requests wait (unanswered) until releaseNegotiate().
  let holding = false;
  const held = [];
  await new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', res);
  });
  const { port } = server.address();
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    requests,
    /** Base URL handed to HubConnectionBuilder.withUrl. */
    hubUrl(hub, userId) {
      const q = new URLSearchParams({ hub });
      if (userId !== undefined) q.set('userId', userId);
      return `${url}/api?${q}`;
    },
    /** Leave negotiate requests unanswered until releaseNegotiate(). */
    holdNegotiate() { holding = true; },
    releaseNegotiate() {
      holding = false;
      for (const answer of held.splice(0)) answer();
    },
    /** Negotiate requests waiting for releaseNegotiate(). */
    get heldNegotiates() { return held.length; },
    async stop() {
      held.splice(0);
      server.closeAllConnections?.();
      await new Promise((res) => server.close(() => res()));
    },
  };
}
