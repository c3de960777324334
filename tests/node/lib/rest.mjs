// Data-plane REST helper: mints a fresh server token per request
// (aud = request URL without query, like the newest Management SDK).
import { serverToken } from './jwt.mjs';
import { withTimeout, T } from './wait.mjs';

export const API = '2022-06-01';

/** Build a query string; values may be arrays (repeated keys, e.g. excluded). */
export function qs(query) {
  if (!query) return '';
  const p = new URLSearchParams();
  const entries = Array.isArray(query) ? query : Object.entries(query);
  for (const [k, v] of entries) {
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) for (const x of v) p.append(k, String(x));
    else p.append(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

export const enc = encodeURIComponent;

export class Rest {
  /** @param {{endpoint: string, accessKey: string}} o */
  constructor({ endpoint, accessKey }) {
    this.endpoint = endpoint;
    this.accessKey = accessKey;
  }

  /**
   * @param {string} method
   * @param {string} path path starting with `/api/...` (already percent-encoded)
   * @param {object} [o]
   * @param {object|Array} [o.query]
   * @param {any} [o.body] object → JSON; Buffer/Uint8Array → application/octet-stream; string → as is
   * @param {string} [o.contentType]
   * @param {object} [o.headers]
   * @param {string|null} [o.token] explicit token; null = send no Authorization header
   * @param {object} [o.tokenOpts] options for serverToken (aud, key, lifetimeSec, alg, ...)
   */
  async request(method, path, { query, body, contentType, headers = {}, token, tokenOpts = {}, timeoutMs = T } = {}) {
    const url = `${this.endpoint}${path}${qs(query)}`;
    const h = { ...headers };
    if (token === undefined) {
      h.authorization = `Bearer ${serverToken({ url, key: this.accessKey, ...tokenOpts })}`;
    } else if (token !== null) {
      h.authorization = `Bearer ${token}`;
    }
    let payload;
    if (body !== undefined) {
      if (typeof body === 'string') {
        payload = body;
        h['content-type'] = contentType ?? 'application/json';
      } else if (body instanceof Uint8Array) {
        payload = body;
        h['content-type'] = contentType ?? 'application/octet-stream';
      } else {
        payload = JSON.stringify(body);
        h['content-type'] = contentType ?? 'application/json; charset=utf-8';
      }
    }
    const res = await withTimeout(fetch(url, { method, headers: h, body: payload }), timeoutMs, `${method} ${path}`);
    const text = method === 'HEAD' ? '' : await withTimeout(res.text(), timeoutMs, `body of ${method} ${path}`);
    return {
      url,
      status: res.status,
      headers: res.headers,
      text,
      errorCode: res.headers.get('x-ms-error-code'),
      json() { return JSON.parse(text); },
      toString() { return `${method} ${path}${qs(query)} → ${res.status} ${res.headers.get('x-ms-error-code') ?? ''} ${text.slice(0, 300)}`; },
    };
  }

  // ---- send APIs (both families) -------------------------------------------------
  // family 'v1': /api/v1/hubs/{hub}[/...]; family '2022': /api/hubs/{hub}/...:send?api-version=

  broadcast(hub, payload, { family = '2022', excluded, apiVersion = API, query = {} } = {}) {
    if (family === 'v1') return this.request('POST', `/api/v1/hubs/${enc(hub)}`, { body: payload, query: { excluded, ...query } });
    return this.request('POST', `/api/hubs/${enc(hub)}/:send`, { body: payload, query: { excluded, 'api-version': apiVersion, ...query } });
  }

  sendToUser(hub, user, payload, { family = '2022' } = {}) {
    if (family === 'v1') return this.request('POST', `/api/v1/hubs/${enc(hub)}/users/${enc(user)}`, { body: payload });
    return this.request('POST', `/api/hubs/${enc(hub)}/users/${enc(user)}/:send`, { body: payload, query: { 'api-version': API } });
  }

  sendToConnection(hub, cid, payload, { family = '2022' } = {}) {
    if (family === 'v1') return this.request('POST', `/api/v1/hubs/${enc(hub)}/connections/${enc(cid)}`, { body: payload });
    return this.request('POST', `/api/hubs/${enc(hub)}/connections/${enc(cid)}/:send`, { body: payload, query: { 'api-version': API } });
  }

  sendToGroup(hub, group, payload, { family = '2022', excluded } = {}) {
    if (family === 'v1') return this.request('POST', `/api/v1/hubs/${enc(hub)}/groups/${enc(group)}`, { body: payload, query: { excluded } });
    return this.request('POST', `/api/hubs/${enc(hub)}/groups/${enc(group)}/:send`, { body: payload, query: { excluded, 'api-version': API } });
  }

  // ---- membership -------------------------------------------------------------

  addConnectionToGroup(hub, group, cid, { family = '2022' } = {}) {
    if (family === 'v1') return this.request('PUT', `/api/v1/hubs/${enc(hub)}/groups/${enc(group)}/connections/${enc(cid)}`);
    if (family === 'v1-alias') return this.request('PUT', `/api/v1/hubs/${enc(hub)}/connections/${enc(cid)}/groups/${enc(group)}`);
    return this.request('PUT', `/api/hubs/${enc(hub)}/groups/${enc(group)}/connections/${enc(cid)}`, { query: { 'api-version': API } });
  }

  removeConnectionFromGroup(hub, group, cid, { family = '2022' } = {}) {
    if (family === 'v1') return this.request('DELETE', `/api/v1/hubs/${enc(hub)}/groups/${enc(group)}/connections/${enc(cid)}`);
    if (family === 'v1-alias') return this.request('DELETE', `/api/v1/hubs/${enc(hub)}/connections/${enc(cid)}/groups/${enc(group)}`);
    return this.request('DELETE', `/api/hubs/${enc(hub)}/groups/${enc(group)}/connections/${enc(cid)}`, { query: { 'api-version': API } });
  }

  addUserToGroup(hub, group, user, { family = '2022', ttl } = {}) {
    if (family === 'v1') return this.request('PUT', `/api/v1/hubs/${enc(hub)}/groups/${enc(group)}/users/${enc(user)}`, { query: { ttl } });
    if (family === 'v1-alias') return this.request('PUT', `/api/v1/hubs/${enc(hub)}/users/${enc(user)}/groups/${enc(group)}`, { query: { ttl } });
    return this.request('PUT', `/api/hubs/${enc(hub)}/users/${enc(user)}/groups/${enc(group)}`, { query: { ttl, 'api-version': API } });
  }

  removeUserFromGroup(hub, group, user, { family = '2022' } = {}) {
    if (family === 'v1') return this.request('DELETE', `/api/v1/hubs/${enc(hub)}/groups/${enc(group)}/users/${enc(user)}`);
    if (family === 'v1-alias') return this.request('DELETE', `/api/v1/hubs/${enc(hub)}/users/${enc(user)}/groups/${enc(group)}`);
    return this.request('DELETE', `/api/hubs/${enc(hub)}/users/${enc(user)}/groups/${enc(group)}`, { query: { 'api-version': API } });
  }

  removeUserFromAllGroups(hub, user, { family = '2022' } = {}) {
    if (family === 'v1') return this.request('DELETE', `/api/v1/hubs/${enc(hub)}/users/${enc(user)}/groups`);
    return this.request('DELETE', `/api/hubs/${enc(hub)}/users/${enc(user)}/groups`, { query: { 'api-version': API } });
  }

  // ---- connection management ------------------------------------------------------

  closeConnection(hub, cid, { reason, family = '2022' } = {}) {
    if (family === 'v1') return this.request('DELETE', `/api/v1/hubs/${enc(hub)}/connections/${enc(cid)}`, { query: { reason } });
    return this.request('DELETE', `/api/hubs/${enc(hub)}/connections/${enc(cid)}`, { query: { reason, 'api-version': API } });
  }

  closeAll(hub, { excluded, reason } = {}) {
    return this.request('POST', `/api/hubs/${enc(hub)}/:closeConnections`, { query: { excluded, reason, 'api-version': API } });
  }

  closeGroup(hub, group, { excluded, reason } = {}) {
    return this.request('POST', `/api/hubs/${enc(hub)}/groups/${enc(group)}/:closeConnections`, { query: { excluded, reason, 'api-version': API } });
  }

  closeUser(hub, user, { excluded, reason } = {}) {
    return this.request('POST', `/api/hubs/${enc(hub)}/users/${enc(user)}/:closeConnections`, { query: { excluded, reason, 'api-version': API } });
  }
}

/** Azure PayloadMessage body. */
export function msg(target, ...args) {
  return { target, arguments: args };
}
