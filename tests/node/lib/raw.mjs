// Raw WebSocket access to the client endpoint (no SignalR client library), for
// malformed-input tests and for checking exact wire frames.
import WebSocket from 'ws';
import { decode } from '@msgpack/msgpack';
import { deferred, withTimeout, T } from './wait.mjs';
import { clientToken } from './jwt.mjs';

export const RS = '\x1e';

/** POST {endpoint}/client/negotiate?hub=..&negotiateVersion=1 with a bearer token. */
export async function negotiate(endpoint, hub, token, { negotiateVersion = 1, extraQuery = '' } = {}) {
  const q = new URLSearchParams({ hub });
  if (negotiateVersion !== null) q.set('negotiateVersion', String(negotiateVersion));
  const headers = {};
  if (token !== null && token !== undefined) headers.authorization = `Bearer ${token}`;
  const res = await withTimeout(fetch(`${endpoint}/client/negotiate?${q}${extraQuery}`, { method: 'POST', headers }), T, 'negotiate');
  const text = await withTimeout(res.text(), T, 'negotiate body');
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

/** Read a VarInt length prefix (LEB128, ≤5 bytes). Returns [value, bytesUsed] or null if incomplete. */
export function readVarInt(buf, off = 0) {
  let value = 0;
  for (let i = 0; i < 5; i++) {
    if (off + i >= buf.length) return null;
    const b = buf[off + i];
    value += (b & 0x7f) * 2 ** (7 * i);
    if ((b & 0x80) === 0) return [value, i + 1];
  }
  throw new Error('VarInt longer than 5 bytes');
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

/** Frame a msgpack body with its VarInt length. */
export function frameMsgpack(body) {
  const b = Buffer.from(body);
  return Buffer.concat([writeVarInt(b.length), b]);
}

export class RawSocket {
  constructor(url, { headers = {}, protocol = 'json' } = {}) {
    this.url = url;
    this.protocol = protocol;
    this.rx = Buffer.alloc(0);
    this.handshakeDone = false;
    this.handshakeResponse = undefined;
    this.messages = [];
    this.waiters = new Set();
    this.parseError = undefined;
    this.openD = deferred();
    this.closeD = deferred();
    this.isClosed = false;
    this.ws = new WebSocket(url, { headers, maxPayload: 256 * 1024 * 1024 });
    this.ws.on('open', () => this.openD.resolve());
    this.ws.on('unexpected-response', (_req, res) => {
      const e = new Error(`websocket upgrade refused: HTTP ${res.statusCode}`);
      e.statusCode = res.statusCode;
      res.resume();
      this.openD.reject(e);
      this.isClosed = true;
      this.closeD.resolve({ code: null, reason: '', refused: res.statusCode });
    });
    this.ws.on('error', (err) => {
      this.lastError = err;
      this.openD.reject(err);
    });
    this.ws.on('message', (data, isBinary) => this._onData(Buffer.isBuffer(data) ? data : Buffer.concat(data), isBinary));
    this.ws.on('close', (code, reason) => {
      this.isClosed = true;
      this.closeD.resolve({ code, reason: reason.toString('utf8') });
      this._notify();
    });
    this.openD.promise.catch(() => {});
  }

  opened(timeoutMs = T) { return withTimeout(this.openD.promise, timeoutMs, `raw open ${this.url}`); }

  /** Resolves {code, reason} when the socket closed. */
  closed(timeoutMs = T) { return withTimeout(this.closeD.promise, timeoutMs, 'raw socket close'); }

  send(data, { binary } = {}) {
    const isBin = binary ?? (typeof data !== 'string');
    this.ws.send(data, { binary: isBin });
  }

  terminate() { this.ws.terminate(); }

  /** Problems a conforming client would choke on: wrong frame kind, WebSocket protocol errors. */
  wireProblems() {
    const p = [];
    if (this.frameKindError) p.push(this.frameKindError);
    if (this.lastError) p.push(`WebSocket error: ${this.lastError.message}`);
    return p;
  }

  _onData(buf, isBinary) {
    // ASP.NET sends Text frames for JSON and Binary frames for MessagePack; the
    // JS client rejects the other kind ("Expected a string." / "Expected an ArrayBuffer.").
    const want = this.protocol === 'msgpack';
    if (isBinary !== want && !this.frameKindError) {
      this.frameKindError = `${this.protocol} connection received a ${isBinary ? 'Binary' : 'Text'} frame: ${buf.toString('hex').slice(0, 80)}`;
    }
    this.rx = Buffer.concat([this.rx, buf]);
    try {
      this._parse();
    } catch (e) {
      this.parseError = e;
    }
    this._notify();
  }

  _parse() {
    if (!this.handshakeDone) {
      const i = this.rx.indexOf(0x1e);
      if (i < 0) return;
      const text = this.rx.subarray(0, i).toString('utf8');
      this.rx = this.rx.subarray(i + 1);
      this.handshakeResponse = JSON.parse(text);
      this.handshakeDone = true;
    }
    if (this.protocol === 'json') {
      let i;
      while ((i = this.rx.indexOf(0x1e)) >= 0) {
        const text = this.rx.subarray(0, i).toString('utf8');
        this.rx = this.rx.subarray(i + 1);
        this.messages.push(JSON.parse(text));
      }
    } else {
      for (;;) {
        const v = readVarInt(this.rx, 0);
        if (!v) return;
        const [len, used] = v;
        if (this.rx.length < used + len) return;
        const body = this.rx.subarray(used, used + len);
        this.rx = this.rx.subarray(used + len);
        this.messages.push(decode(body));
      }
    }
  }

  _notify() {
    for (const w of [...this.waiters]) w();
  }

  _waitUntil(check, timeoutMs, what) {
    const v = check();
    if (v !== undefined) return Promise.resolve(v);
    const d = deferred();
    const w = () => {
      let r;
      try { r = check(); } catch (e) { this.waiters.delete(w); d.reject(e); return; }
      if (r !== undefined) { this.waiters.delete(w); d.resolve(r); }
    };
    this.waiters.add(w);
    return withTimeout(d.promise, timeoutMs, what).finally(() => this.waiters.delete(w));
  }

  /** Send the handshake request (always JSON + 0x1E). */
  sendHandshake(protocol = this.protocol === 'msgpack' ? 'messagepack' : 'json', version = 1) {
    this.send(JSON.stringify({ protocol, version }) + RS, { binary: false });
  }

  /** Resolves with the parsed handshake response object; rejects if the socket closes first. */
  handshakeReply(timeoutMs = T) {
    return this._waitUntil(() => {
      if (this.handshakeDone) return this.handshakeResponse;
      if (this.parseError) throw this.parseError;
      if (this.isClosed) throw new Error(`socket closed before a handshake response (rx: ${JSON.stringify(this.rx.toString('utf8').slice(0, 200))})`);
      return undefined;
    }, timeoutMs, 'handshake response');
  }

  /**
   * Resolves with the first received hub message matching pred (JSON objects or
   * decoded msgpack arrays); rejects if the socket closes first.
   */
  nextMessage(pred = () => true, timeoutMs = T, what = 'hub message') {
    let idx = 0;
    return this._waitUntil(() => {
      for (; idx < this.messages.length; idx++) {
        if (pred(this.messages[idx])) return this.messages[idx];
      }
      if (this.parseError) throw this.parseError;
      if (this.isClosed) throw new Error(`socket closed while waiting for ${what}`);
      return undefined;
    }, timeoutMs, what);
  }
}

/**
 * Negotiate with a fresh client token and open a raw WebSocket for it (token in
 * the Authorization header, or in `access_token` like browsers do).
 */
export async function openRaw({ endpoint, key, hub, userId, protocol = 'json', tokenInQuery = false, token }) {
  const tok = token ?? clientToken({ endpoint, hub, key, userId });
  const n = await negotiate(endpoint, hub, tok);
  if (n.status !== 200) throw new Error(`negotiate failed: ${n.status} ${n.text}`);
  const id = n.json.connectionToken ?? n.json.connectionId;
  const q = new URLSearchParams({ hub, id });
  if (tokenInQuery) q.set('access_token', tok);
  const url = `${endpoint.replace(/^http/, 'ws')}/client/?${q}`;
  const raw = new RawSocket(url, { headers: tokenInQuery ? {} : { authorization: `Bearer ${tok}` }, protocol });
  await raw.opened();
  raw.connectionId = n.json.connectionId;
  raw.hub = hub;
  raw.negotiateResponse = n.json;
  return raw;
}

/** openRaw + successful handshake. */
export async function openRawReady(opts) {
  const raw = await openRaw(opts);
  raw.sendHandshake();
  const hs = await raw.handshakeReply();
  if (hs.error) throw new Error(`handshake failed: ${hs.error}`);
  return raw;
}
