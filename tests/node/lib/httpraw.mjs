// Raw HTTP access to the Server-Sent Events and Long Polling transports of the
// client endpoint (`/client/?hub=&id=`), no SignalR client library: for
// malformed-input tests and exact status codes (signalr-protocols.md §2).
import http from 'node:http';
import { clientToken } from './jwt.mjs';
import { negotiate, RS } from './raw.mjs';
import { deferred, withTimeout, T } from './wait.mjs';

export function clientUrl(endpoint, hub, id, extra = {}) {
  const q = new URLSearchParams({ hub });
  if (id !== undefined && id !== null) q.set('id', id);
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  return `${endpoint}/client/?${q}`;
}

/**
 * One HTTP request on its own connection (no pooling, so a held poll never blocks
 * another request). Resolves {status, headers, body: Buffer, text}.
 */
export function request(method, url, { headers = {}, body, timeoutMs = T } = {}) {
  const d = deferred();
  const req = http.request(url, { method, headers, agent: false }, (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => {
      const buf = Buffer.concat(chunks);
      d.resolve({ status: res.statusCode, headers: res.headers, body: buf, text: buf.toString('utf8') });
    });
    res.on('error', d.reject);
  });
  req.on('error', d.reject);
  if (body !== undefined) req.end(body);
  else req.end();
  return withTimeout(d.promise, timeoutMs, `${method} ${url}`).finally(() => req.destroy());
}

/** Negotiate a connection for `hub`; returns {id (the connection token), connectionId, token, negotiate}. */
export async function negotiateId({ endpoint, key, hub, userId, token }) {
  const tok = token ?? clientToken({ endpoint, hub, key, userId });
  const n = await negotiate(endpoint, hub, tok);
  if (n.status !== 200) throw new Error(`negotiate failed: ${n.status} ${n.text}`);
  return { id: n.json.connectionToken ?? n.json.connectionId, connectionId: n.json.connectionId, token: tok, negotiate: n.json };
}

const auth = (token) => (token ? { authorization: `Bearer ${token}` } : {});

/** A Long Polling poll (GET without `Accept: text/event-stream`). */
export function poll(endpoint, hub, id, { token, timeoutMs = T } = {}) {
  return request('GET', clientUrl(endpoint, hub, id, { _: String(Date.now()) }), { headers: auth(token), timeoutMs });
}

/** Client bytes for an SSE or Long Polling connection. */
export function send(endpoint, hub, id, body, { token, contentType = 'text/plain;charset=UTF-8' } = {}) {
  return request('POST', clientUrl(endpoint, hub, id), { headers: { ...auth(token), 'content-type': contentType }, body });
}

/** End a connection (Long Polling). */
export function del(endpoint, hub, id, { token } = {}) {
  return request('DELETE', clientUrl(endpoint, hub, id), { headers: auth(token) });
}

/** Parse SSE text into events (the joined `data:` lines of each). */
export function parseSse(text) {
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/).slice(0, -1)) {
    const data = block.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
    if (data.length) events.push(data.join('\n'));
  }
  return events;
}

/**
 * An open SSE stream. `text` accumulates the raw body, `messages` the JSON hub
 * messages (split on 0x1E) found in its events, in order.
 */
export class SseStream {
  constructor(url, { token, headers = {} } = {}) {
    this.url = url;
    this.text = '';
    this.ended = false;
    this.waiters = new Set();
    this.responseD = deferred();
    this.endD = deferred();
    this.req = http.request(url, { method: 'GET', agent: false, headers: { accept: 'text/event-stream', ...auth(token), ...headers } }, (res) => {
      this.status = res.statusCode;
      this.headers = res.headers;
      res.setEncoding('utf8');
      res.on('data', (c) => { this.text += c; this._notify(); });
      const end = () => { if (!this.ended) { this.ended = true; this.endD.resolve(); this._notify(); } };
      res.on('end', end);
      res.on('close', end);
      res.on('error', end);
      this.responseD.resolve(res);
    });
    this.req.on('error', (e) => {
      this.responseD.reject(e);
      if (!this.ended) { this.ended = true; this.endD.resolve(); this._notify(); }
    });
    this.req.end();
    this.responseD.promise.catch(() => {});
  }

  /** Resolves once the status and headers arrived. */
  async response(timeoutMs = T) {
    await withTimeout(this.responseD.promise, timeoutMs, `SSE response ${this.url}`);
    return this;
  }

  get events() { return parseSse(this.text); }

  /** Hub messages (JSON) carried by the events so far; the first is the handshake response. */
  get messages() {
    const out = [];
    for (const e of this.events) {
      for (const part of e.split(RS)) {
        if (part === '') continue;
        try { out.push(JSON.parse(part)); } catch { out.push({ unparsable: part }); }
      }
    }
    return out;
  }

  _notify() { for (const w of [...this.waiters]) w(); }

  /** Resolves with the first hub message matching pred; rejects if the stream ends first. */
  nextMessage(pred, timeoutMs = T, what = 'SSE message') {
    const check = () => {
      const m = this.messages.find(pred);
      if (m) return { m };
      if (this.ended) return { err: new Error(`SSE stream ended while waiting for ${what}; body: ${JSON.stringify(this.text.slice(0, 500))}`) };
      return undefined;
    };
    const first = check();
    if (first) return first.err ? Promise.reject(first.err) : Promise.resolve(first.m);
    const d = deferred();
    const w = () => { const r = check(); if (r) { this.waiters.delete(w); if (r.err) d.reject(r.err); else d.resolve(r.m); } };
    this.waiters.add(w);
    return withTimeout(d.promise, timeoutMs, what).finally(() => this.waiters.delete(w));
  }

  /** Resolves when the server ended the stream. */
  waitEnd(timeoutMs = T) { return withTimeout(this.endD.promise, timeoutMs, `SSE stream end ${this.url}`); }

  close() { this.req.destroy(); }
}

/** Negotiate, open an SSE stream and complete the JSON handshake. */
export async function openSse({ endpoint, key, hub, userId, handshake = { protocol: 'json', version: 1 } }) {
  const n = await negotiateId({ endpoint, key, hub, userId });
  const stream = new SseStream(clientUrl(endpoint, hub, n.id), { token: n.token });
  await stream.response();
  if (stream.status !== 200) throw new Error(`SSE GET → ${stream.status} ${stream.text}`);
  const r = await send(endpoint, hub, n.id, JSON.stringify(handshake) + RS);
  if (r.status !== 200) throw new Error(`handshake POST → ${r.status} ${r.text}`);
  Object.assign(stream, { id: n.id, connectionId: n.connectionId, token: n.token, hub, endpoint });
  return stream;
}

/**
 * Negotiate and start a Long Polling connection: the first poll (200, empty, at once),
 * the JSON handshake by POST, then the poll that returns the handshake response.
 */
export async function openLp({ endpoint, key, hub, userId }) {
  const n = await negotiateId({ endpoint, key, hub, userId });
  const first = await poll(endpoint, hub, n.id, { token: n.token });
  if (first.status !== 200 || first.body.length !== 0) throw new Error(`first poll → ${first.status} ${first.text}`);
  const r = await send(endpoint, hub, n.id, JSON.stringify({ protocol: 'json', version: 1 }) + RS);
  if (r.status !== 200) throw new Error(`handshake POST → ${r.status} ${r.text}`);
  const hs = await poll(endpoint, hub, n.id);
  if (hs.status !== 200 || !hs.text.startsWith('{}' + RS)) throw new Error(`handshake poll → ${hs.status} ${JSON.stringify(hs.text)}`);
  return { id: n.id, connectionId: n.connectionId, token: n.token, hub, endpoint };
}

/** Split a JSON-protocol body into hub messages. */
export function jsonMessages(text) {
  return text.split(RS).filter((p) => p !== '').map((p) => JSON.parse(p));
}
