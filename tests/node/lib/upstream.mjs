// A tiny upstream webhook ("the application") for azure-serverless.md §5: it
// records every POST the service makes (headers, raw body, arrival order) and
// answers by event name, in the client's protocol:
//
//   hang       never answers (kept in `hanging` until released or stop())
//   fail500    500            status404  404
//   empty200   200, no body   nocontent  204
//   garbage    200 "not json"
//   unframed   200, a JSON completion without its 0x1E terminator (JSON clients)
//   wrongproto 200, a completion framed in the *other* protocol
//   huge       200, a valid completion larger than 1 MiB
//   anything else: an invocation (has invocationId) gets 200 + a completion whose
//   result is {target, arguments, connectionId}; a send gets 200 empty.
// Connection events (`connections` category) get 200 empty.
import { createServer } from 'node:http';
import { createHmac } from 'node:crypto';
import { encode, decode } from '@msgpack/msgpack';
import { deferred, withTimeout, T } from './wait.mjs';

export const RS = '\x1e';
export const JSON_TYPE = 'application/json';
export const MSGPACK_TYPE = 'application/x-msgpack';

/** Expected X-ASRS-Signature entries: `sha256=<hex HMAC-SHA256(key UTF-8, connectionId)>` per key. */
export function expectedSignatures(keys, connectionId) {
  return keys.map((k) => `sha256=${createHmac('sha256', Buffer.from(k, 'utf8')).update(connectionId, 'utf8').digest('hex')}`);
}

/** Parse `type: value, type: value` into [[type, value], ...] (the trigger's parser). */
export function parseClaims(header) {
  if (!header) return [];
  return header.split(', ').map((part) => {
    const i = part.indexOf(': ');
    return i < 0 ? [part, ''] : [part.slice(0, i), part.slice(i + 2)];
  });
}

export function writeVarInt(n) {
  const out = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

/** Length-prefixed MessagePack frame of `value`. */
export function msgpackFrame(value) {
  const body = Buffer.from(encode(value));
  return Buffer.concat([writeVarInt(body.length), body]);
}

/** A complete framed Completion carrying `result`, in `protocol` ('json' | 'msgpack'). */
export function completionFrame(protocol, invocationId, result) {
  if (protocol === 'msgpack') return msgpackFrame([3, {}, invocationId, 3, result]);
  return Buffer.from(JSON.stringify({ type: 3, invocationId, result }) + RS, 'utf8');
}

/** Media type without parameters, lower-cased. */
export function mediaType(headers) {
  return String(headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
}

/**
 * Decode a recorded `messages` body into {type, invocationId, target, arguments}
 * according to its Content-Type. Throws if the body is not exactly one bare
 * invocation (JSON object without 0x1E; one MessagePack array without prefix).
 */
export function decodeInvocation(rec) {
  const ct = mediaType(rec.headers);
  if (ct === JSON_TYPE) {
    const text = rec.body.toString('utf8');
    if (text.includes(RS)) throw new Error(`JSON upstream body contains the 0x1E separator: ${JSON.stringify(text)}`);
    const o = JSON.parse(text);
    return { type: o.type, invocationId: o.invocationId, target: o.target, arguments: o.arguments, raw: o };
  }
  if (ct === MSGPACK_TYPE) {
    const a = decode(rec.body); // throws on trailing bytes, so a length prefix would not decode as one array
    if (!Array.isArray(a)) throw new Error(`MessagePack upstream body is not an array: ${JSON.stringify(a)}`);
    return { type: a[0], headers: a[1], invocationId: a[2], target: a[3], arguments: a[4], raw: a };
  }
  throw new Error(`unexpected upstream Content-Type ${JSON.stringify(rec.headers['content-type'])}`);
}

function protocolOf(rec) {
  return mediaType(rec.headers) === MSGPACK_TYPE ? 'msgpack' : 'json';
}

function defaultReply(rec, res, hook) {
  const send = (status, body = '', type = 'text/plain') => {
    if (status === 204 || body.length === 0) res.writeHead(status).end();
    else res.writeHead(status, { 'content-type': type }).end(body);
  };
  if (rec.category !== 'messages') return send(200);
  const inv = decodeInvocation(rec);
  const proto = protocolOf(rec);
  const ctype = proto === 'msgpack' ? MSGPACK_TYPE : JSON_TYPE;
  const id = inv.invocationId;
  switch (rec.event) {
    case 'hang':
      hook.hanging.push({ rec, res });
      return undefined;
    case 'fail500': return send(500, 'boom');
    case 'status404': return send(404, 'nope');
    case 'empty200': return send(200);
    case 'nocontent': return send(204);
    case 'garbage': return send(200, 'not json');
    case 'unframed': return send(200, JSON.stringify({ type: 3, invocationId: id, result: 'x' }), JSON_TYPE);
    case 'wrongproto': return send(200, completionFrame(proto === 'json' ? 'msgpack' : 'json', id, 'x'), ctype);
    case 'huge': return send(200, completionFrame(proto, id, 'x'.repeat((1 << 20) + 4096)), ctype);
    default:
      if (id === undefined || id === null) return send(200);
      return send(200, completionFrame(proto, id, { target: inv.target, arguments: inv.arguments, connectionId: rec.connectionId }), ctype);
  }
}

/**
 * @param {object} [o]
 * @param {(rec, res, hook) => boolean|void} [o.route] custom handler; return true when it answered
 */
export async function startWebhook({ route } = {}) {
  const records = [];
  const waiters = new Set();
  let seq = 0;
  const hook = {
    records,
    /** [{rec, res}] of requests left unanswered (`hang`). */
    hanging: [],
    url: '',
    /** Requests whose handling threw (a test-side bug surfaced on stop). */
    errors: [],
    /** First record (past or future) matching pred. */
    waitFor(pred, what = 'upstream request', timeoutMs = T) {
      const hit = records.find(pred);
      if (hit) return Promise.resolve(hit);
      const d = deferred();
      const w = { pred, resolve: d.resolve };
      waiters.add(w);
      return withTimeout(d.promise, timeoutMs, what).finally(() => waiters.delete(w));
    },
    /** Records of one connection, in arrival order. */
    of(connectionId) { return records.filter((r) => r.connectionId === connectionId); },
    /** Answer the hanging requests matching pred with `answer(rec, res)`. */
    release(pred, answer) {
      const keep = [];
      for (const h of hook.hanging) {
        if (pred(h.rec)) answer(h.rec, h.res); else keep.push(h);
      }
      hook.hanging = keep;
    },
  };
  const server = createServer((req, res) => {
    const chunks = [];
    res.on('error', () => {});
    req.on('error', () => {});
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const u = new URL(req.url, 'http://upstream.invalid');
      const h = req.headers;
      const rec = {
        seq: seq++,
        at: Date.now(),
        method: req.method,
        url: req.url,
        path: u.pathname,
        rawPath: req.url.split('?')[0],
        query: u.search,
        headers: h,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks),
        connectionId: h['x-asrs-connection-id'],
        hub: h['x-asrs-hub'],
        category: h['x-asrs-category'],
        event: h['x-asrs-event'],
      };
      records.push(rec);
      try {
        if (!(route && route(rec, res, hook))) defaultReply(rec, res, hook);
      } catch (e) {
        hook.errors.push(e);
        if (!res.headersSent) res.writeHead(599).end(String(e));
      }
      for (const w of [...waiters]) {
        if (w.pred(rec)) { waiters.delete(w); w.resolve(rec); }
      }
    });
  });
  await new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', res);
  });
  hook.port = server.address().port;
  hook.url = `http://127.0.0.1:${hook.port}`;
  hook.stop = async () => {
    for (const { res } of hook.hanging) { try { res.destroy(); } catch { /* gone */ } }
    hook.hanging = [];
    server.closeAllConnections?.();
    await withTimeout(new Promise((r) => server.close(() => r())), T, 'webhook close').catch(() => {});
  };
  return hook;
}

/** A local port nothing listens on (bound, then closed). */
export async function closedPort() {
  const s = createServer();
  await new Promise((res, rej) => { s.once('error', rej); s.listen(0, '127.0.0.1', res); });
  const { port } = s.address();
  await new Promise((r) => s.close(() => r()));
  return port;
}
