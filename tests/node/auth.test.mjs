// Client and server (REST) tokens: accepted as the Azure SDKs make them,
// refused with 401 otherwise.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { HubConnectionBuilder, HttpTransportType, LogLevel } from '@microsoft/signalr';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { randomKey, binaryPath } from './lib/server.mjs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { clientToken, serverToken, signJwt, nowSec } from './lib/jwt.mjs';
import { negotiate, openRaw, RawSocket } from './lib/raw.mjs';
import { msg, API } from './lib/rest.mjs';
import { TEST_TIMEOUT, T, withTimeout } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };

describe('client tokens on negotiate', () => {
  let s;
  let key2;
  before(async () => {
    key2 = randomKey();
    s = await setupSuite({ keys: [randomKey(), key2] });
  });
  after(async () => { await s?.teardown(); });

  function good(hub, extra = {}) {
    return clientToken({ endpoint: s.endpoint, hub, key: s.key, ...extra });
  }

  it('negotiate answers the documented shape (v1: connectionId, connectionToken, WebSockets Text+Binary)', opts, async () => {
    const hub = uniq();
    const n = await negotiate(s.endpoint, hub, good(hub));
    assert.equal(n.status, 200, n.text);
    assert.equal(n.json.negotiateVersion, 1);
    assert.equal(typeof n.json.connectionId, 'string');
    assert.equal(typeof n.json.connectionToken, 'string');
    assert.ok(!('ProtocolVersion' in n.json));
    const ws = n.json.availableTransports.find((t) => t.transport === 'WebSockets');
    assert.ok(ws, JSON.stringify(n.json));
    assert.deepEqual([...ws.transferFormats].sort(), ['Binary', 'Text']);
  });

  it('negotiate without negotiateVersion answers version 0 (integer) without connectionToken', opts, async () => {
    const hub = uniq();
    const n = await negotiate(s.endpoint, hub, good(hub), { negotiateVersion: null });
    assert.equal(n.status, 200, n.text);
    assert.equal(n.json.negotiateVersion, 0);
    assert.ok(!('connectionToken' in n.json), n.text);
  });

  const accepted = {
    'HS256 with asrs.s.uid': (hub) => good(hub, { userId: 'u1' }),
    'HS512': (hub) => good(hub, { alg: 'HS512', userId: 'u1' }),
    'signed with the secondary key': (hub) => clientToken({ endpoint: s.endpoint, hub, key: key2 }),
    'unknown kid (SDK writes key.GetHashCode())': (hub) => good(hub, { header: { kid: '471202371' } }),
    'user in nameid': (hub) => good(hub, { userId: 'u1', userClaim: 'nameid' }),
    'user in sub': (hub) => good(hub, { userId: 'u1', userClaim: 'sub' }),
    'anonymous (no user claim)': (hub) => good(hub),
    'aud without the port (older SDKs drop it)': (hub) => good(hub, { aud: `http://127.0.0.1/client/?hub=${hub}` }),
    'aud hub in different case': (hub) => good(hub, { aud: `${s.endpoint}/client/?hub=${hub.toUpperCase()}` }),
    'no nbf/iat, only aud+exp': (hub) => signJwt({ aud: `${s.endpoint}/client/?hub=${hub}`, exp: nowSec() + 600 }, s.key),
  };
  for (const [label, make] of Object.entries(accepted)) {
    it(`accepted: ${label}`, opts, async () => {
      const hub = uniq();
      const n = await negotiate(s.endpoint, hub, make(hub));
      assert.equal(n.status, 200, `${n.status} ${n.text}`);
      assert.ok(n.json.connectionId, n.text);
    });
  }

  const refused = {
    'expired': (hub) => good(hub, { lifetimeSec: -120 }),
    'wrong audience (other host)': (hub) => good(hub, { aud: `http://other.example/client/?hub=${hub}` }),
    'wrong audience (REST path)': (hub) => good(hub, { aud: `${s.endpoint}/api/v1/hubs/${hub}` }),
    'other hub': (hub) => good(hub, { aud: `${s.endpoint}/client/?hub=${hub}other` }),
    'wrong key': (hub) => clientToken({ endpoint: s.endpoint, hub, key: randomKey() }),
    'key base64-decoded instead of raw UTF-8 bytes': (hub) => {
      const payload = { aud: `${s.endpoint}/client/?hub=${hub}`, exp: nowSec() + 600 };
      return signJwt(payload, Buffer.from(s.key, 'base64'));
    },
    'alg none': (hub) => good(hub, { alg: 'none' }),
    'alg none with a copied signature': (hub) => {
      const t = good(hub);
      const [, p, sig] = t.split('.');
      const h = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
      return `${h}.${p}.${sig}`;
    },
    'tampered payload': (hub) => {
      const [h, , sig] = good(hub).split('.');
      const p = Buffer.from(JSON.stringify({ aud: `${s.endpoint}/client/?hub=${hub}`, exp: nowSec() + 9999, 'asrs.s.uid': 'admin' })).toString('base64url');
      return `${h}.${p}.${sig}`;
    },
    'no exp': (hub) => signJwt({ aud: `${s.endpoint}/client/?hub=${hub}` }, s.key),
    'garbage': () => 'not.a.jwt',
    'empty bearer': () => '',
  };
  for (const [label, make] of Object.entries(refused)) {
    it(`negotiate → 401: ${label}`, opts, async () => {
      const hub = uniq();
      const n = await negotiate(s.endpoint, hub, make(hub));
      assert.equal(n.status, 401, `${n.status} ${n.text}`);
    });
  }

  it('negotiate → 401: no Authorization header', opts, async () => {
    const n = await negotiate(s.endpoint, uniq(), null);
    assert.equal(n.status, 401, `${n.status} ${n.text}`);
  });

  it('the real client fails to start against a negotiate that hands out an expired token', opts, async () => {
    const hub = uniq();
    const conn = new HubConnectionBuilder()
      .withUrl(`${s.endpoint}/client/?hub=${hub}`, {
        transport: HttpTransportType.WebSockets,
        accessTokenFactory: () => good(hub, { lifetimeSec: -120 }),
      })
      .configureLogging(LogLevel.None)
      .build();
    await assert.rejects(withTimeout(conn.start(), T, 'start'), (e) => /401|Unauthorized/i.test(String(e?.message ?? e)));
  });

  it('the real client connects directly (no app) with an accessTokenFactory', opts, async () => {
    const hub = uniq();
    const conn = new HubConnectionBuilder()
      .withUrl(`${s.endpoint}/client/?hub=${hub}`, {
        transport: HttpTransportType.WebSockets,
        accessTokenFactory: () => good(hub, { userId: 'direct' }),
      })
      .configureLogging(LogLevel.None)
      .build();
    const got = new Promise((res) => conn.on('msg', (...a) => res(a)));
    await withTimeout(conn.start(), T, 'start');
    assert.equal((await s.rest.sendToUser(hub, 'direct', msg('msg', 'direct-hi'))).status, 202);
    assert.deepEqual(await withTimeout(got, T, 'msg'), ['direct-hi']);
    await conn.stop();
  });

  it('`switchboard token --connection-string CS --hub H --user U` mints a client token negotiate accepts', opts, async () => {
    const hub = uniq();
    const user = uniq('cli');
    const { stdout } = await promisify(execFile)(binaryPath(), ['token', '--connection-string', s.server.connectionString, '--hub', hub, '--user', user], { timeout: T });
    const tok = stdout.trim();
    assert.match(tok, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    const raw = s.track(await openRaw({ endpoint: s.endpoint, key: s.key, hub, token: tok }));
    raw.sendHandshake();
    assert.deepEqual(await raw.handshakeReply(), {});
    assert.equal((await s.rest.sendToUser(hub, user, msg('msg', 'cli-token'))).status, 202);
    const m = await raw.nextMessage((x) => x.type === 1 && x.target === 'msg');
    assert.deepEqual(m.arguments, ['cli-token']);
    raw.terminate();
  });

  it('user id claims nameid and sub address the connection as that user', opts, async () => {
    for (const userClaim of ['nameid', 'sub']) {
      const hub = uniq();
      const user = uniq('user');
      const raw = s.track(await openRaw({ endpoint: s.endpoint, key: s.key, hub, token: good(hub, { userId: user, userClaim }) }));
      raw.sendHandshake();
      assert.deepEqual(await raw.handshakeReply(), {});
      assert.equal((await s.rest.sendToUser(hub, user, msg('msg', userClaim))).status, 202);
      const m = await raw.nextMessage((x) => x.type === 1 && x.target === 'msg');
      assert.deepEqual(m.arguments, [userClaim]);
      raw.terminate();
    }
  });

  it('WebSocket accepts the token from the access_token query (browser style)', opts, async () => {
    const hub = uniq();
    const raw = s.track(await openRaw({ endpoint: s.endpoint, key: s.key, hub, tokenInQuery: true }));
    raw.sendHandshake();
    assert.deepEqual(await raw.handshakeReply(), {});
    raw.terminate();
  });

  it('WebSocket with an unknown id → 404; without any token → 401', opts, async () => {
    const hub = uniq();
    const tok = good(hub);
    const ws = s.endpoint.replace(/^http/, 'ws');
    const unknown = new RawSocket(`${ws}/client/?hub=${hub}&id=does-not-exist`, { headers: { authorization: `Bearer ${tok}` } });
    await assert.rejects(unknown.opened(), (e) => e.statusCode === 404);
    const n = await negotiate(s.endpoint, hub, tok);
    const noTok = new RawSocket(`${ws}/client/?hub=${hub}&id=${encodeURIComponent(n.json.connectionToken)}`);
    await assert.rejects(noTok.opened(), (e) => e.statusCode === 401);
    const noTokNoId = new RawSocket(`${ws}/client/?hub=${hub}`);
    await assert.rejects(noTokNoId.opened(), (e) => e.statusCode === 401);
  });
});

describe('server tokens on REST', () => {
  let s;
  let key2;
  before(async () => {
    key2 = randomKey();
    s = await setupSuite({ keys: [randomKey(), key2] });
  });
  after(async () => { await s?.teardown(); });

  const path = (hub) => `/api/hubs/${hub}/:send`;
  const q = { 'api-version': API };
  const body = msg('msg', 'x');

  it('accepted: aud = URL without query (newest SDK)', opts, async () => {
    const r = await s.rest.request('POST', path(uniq()), { query: q, body });
    assert.equal(r.status, 202, String(r));
  });

  it('accepted: aud with ?api-version and without port (SDK 1.2x)', opts, async () => {
    const hub = uniq();
    const r = await s.rest.request('POST', path(hub), { query: q, body, tokenOpts: { aud: `http://127.0.0.1${path(hub)}?api-version=${API}` } });
    assert.equal(r.status, 202, String(r));
  });

  it('accepted: v1 aud without port (Dapr / legacy SDK)', opts, async () => {
    const hub = uniq();
    const r = await s.rest.request('POST', `/api/v1/hubs/${hub}`, { body, tokenOpts: { aud: `http://127.0.0.1/api/v1/hubs/${hub}` } });
    assert.equal(r.status, 202, String(r));
  });

  it('accepted: HS512, secondary key', opts, async () => {
    let r = await s.rest.request('POST', path(uniq()), { query: q, body, tokenOpts: { alg: 'HS512' } });
    assert.equal(r.status, 202, String(r));
    r = await s.rest.request('POST', path(uniq()), { query: q, body, tokenOpts: { key: key2 } });
    assert.equal(r.status, 202, String(r));
  });

  const refused = {
    'no Authorization header': () => ({ token: null }),
    'garbage token': () => ({ token: 'garbage' }),
    'wrong key': () => ({ tokenOpts: { key: randomKey() } }),
    'expired': () => ({ tokenOpts: { lifetimeSec: -120 } }),
    'alg none': () => ({ tokenOpts: { alg: 'none' } }),
    'aud of another hub': (hub) => ({ tokenOpts: { aud: `${s.endpoint}/api/hubs/${hub}other/:send` } }),
    'aud of a client token': (hub) => ({ tokenOpts: { aud: `${s.endpoint}/client/?hub=${hub}` } }),
  };
  for (const [label, make] of Object.entries(refused)) {
    it(`REST → 401: ${label}`, opts, async () => {
      const hub = uniq();
      const r = await s.rest.request('POST', path(hub), { query: q, body, ...make(hub) });
      assert.equal(r.status, 401, String(r));
    });
  }

  it('REST → 401 on management and existence routes too (no token)', opts, async () => {
    const hub = uniq();
    for (const [method, p] of [
      ['PUT', `/api/hubs/${hub}/groups/g/connections/c`],
      ['HEAD', `/api/hubs/${hub}/connections/c`],
      ['DELETE', `/api/hubs/${hub}/connections/c`],
      ['POST', `/api/v1/hubs/${hub}`],
      ['POST', `/api/hubs/${hub}/:closeConnections`],
    ]) {
      const r = await s.rest.request(method, p, { query: q, token: null, body: method === 'POST' ? body : undefined });
      assert.equal(r.status, 401, String(r));
    }
  });

  it('a client token is not a valid server token, even signed with the right key', opts, async () => {
    const hub = uniq();
    const tok = clientToken({ endpoint: s.endpoint, hub, key: s.key });
    const r = await s.rest.request('POST', path(hub), { query: q, body, token: tok });
    assert.equal(r.status, 401, String(r));
  });

  it('server token: the client-side negotiate refuses a REST-audience token', opts, async () => {
    const hub = uniq();
    const tok = serverToken({ url: `${s.endpoint}/api/v1/hubs/${hub}`, key: s.key });
    const n = await negotiate(s.endpoint, hub, tok);
    assert.equal(n.status, 401, n.text);
  });
});
