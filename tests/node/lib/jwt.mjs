// Independent HS256/HS512 JWT signer (node:crypto only, no JWT library).
//
// Azure SignalR rules (specs/azure-serverless.md §2.1, §3): HMAC over
// base64url(header) "." base64url(payload), key = the access key's raw UTF-8
// bytes (never base64-decoded).
import { createHmac, randomUUID } from 'node:crypto';

const HASH = { HS256: 'sha256', HS512: 'sha512' };

export function b64url(input) {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input, 'utf8');
  return buf.toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

export function nowSec() {
  return Math.floor(Date.now() / 1000);
}

/**
 * Sign a JWT.
 * @param {object} payload claims
 * @param {string|Buffer} key access key (a string is used as its UTF-8 bytes)
 * @param {object} [opts]
 * @param {'HS256'|'HS512'|'none'} [opts.alg='HS256'] `none` produces an unsigned token
 * @param {object} [opts.header] extra/overriding header fields (e.g. kid)
 */
export function signJwt(payload, key, { alg = 'HS256', header = {} } = {}) {
  const head = { alg, typ: 'JWT', ...header };
  const signingInput = `${b64url(JSON.stringify(head))}.${b64url(JSON.stringify(payload))}`;
  if (alg === 'none') return `${signingInput}.`;
  const hash = HASH[alg];
  if (!hash) throw new Error(`unsupported alg ${alg}`);
  const k = Buffer.isBuffer(key) ? key : Buffer.from(key, 'utf8');
  const sig = createHmac(hash, k).update(signingInput).digest();
  return `${signingInput}.${b64url(sig)}`;
}

export function decodeJwt(token) {
  const [h, p] = token.split('.');
  const dec = (s) => JSON.parse(Buffer.from(s.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8'));
  return { header: dec(h), payload: dec(p) };
}

/** Client-token audience, as the Azure SDK / docs sample builds it. */
export function clientAudience(endpoint, hub) {
  return `${endpoint}/client/?hub=${hub}`;
}

/**
 * Client access token (what a negotiate function returns).
 * @param {object} o
 * @param {string} o.endpoint service endpoint (no trailing slash)
 * @param {string} o.hub
 * @param {string} o.key access key
 * @param {string} [o.userId] user id, written to the claim named by `userClaim`
 * @param {string} [o.userClaim='asrs.s.uid'] `asrs.s.uid` | `nameid` | `sub`
 * @param {number} [o.lifetimeSec=3600]
 * @param {string} [o.aud] override the audience
 * @param {object} [o.claims] extra claims (override everything)
 * @param {string} [o.alg]
 */
export function clientToken({ endpoint, hub, key, userId, userClaim = 'asrs.s.uid', lifetimeSec = 3600, aud, claims = {}, alg = 'HS256', header }) {
  const now = nowSec();
  const payload = { nbf: now, exp: now + lifetimeSec, iat: now, aud: aud ?? clientAudience(endpoint, hub) };
  if (userId !== undefined && userId !== null && userId !== '') payload[userClaim] = userId;
  Object.assign(payload, claims);
  return signJwt(payload, key, { alg, header });
}

/**
 * Server (REST) token. `aud` defaults to the request URL without query.
 */
export function serverToken({ url, key, lifetimeSec = 3600, aud, claims = {}, alg = 'HS256', header }) {
  const now = nowSec();
  const u = new URL(url);
  const payload = {
    nbf: now,
    exp: now + lifetimeSec,
    iat: now,
    aud: aud ?? `${u.origin}${u.pathname}`,
    nameid: `switchboard-tests_${randomUUID()}`,
  };
  Object.assign(payload, claims);
  return signJwt(payload, key, { alg, header });
}
