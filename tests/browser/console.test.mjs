// The operators' console in headless Chromium against a real 3-node raft cluster (three
// `switchboard serve` processes on loopback): a wrong key gets nowhere (no console route
// answers without a session); signed in, the Cluster tab lists the 3 nodes with live numbers
// that move under a small load; the Console tab makes a REST call that a @microsoft/signalr
// client receives and shows the call it made; the Live trace tab streams a client's connect,
// messages and disconnect. Screenshots go to artifacts/browser/console-*.png.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { HubConnectionBuilder, LogLevel } from '@microsoft/signalr';
import { CHROMIUM, REPO_ROOT, START_T, SWITCHBOARD_BIN, T, freePorts, randomKey, startProcess, withTimeout } from './lib.mjs';

const ARTIFACTS = join(REPO_ROOT, 'artifacts', 'browser');
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];
const HUB = 'chat';

const b64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 token (server or client) signed with `key`. */
function token(key, claims) {
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify({ iat: now, nbf: now, exp: now + 3600, ...claims }))}`;
  return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`;
}

/** Three voters on loopback, each with its internal port (where the console is). */
async function startCluster(key) {
  const ports = await freePorts(9);
  const dirs = [];
  const voters = [1, 2, 3].map((id) => `${id}=127.0.0.1:${ports[3 + id - 1]}`).join(',');
  const nodes = await Promise.all([1, 2, 3].map(async (id) => {
    const dir = mkdtempSync(join(tmpdir(), `switchboard-console-${id}-`));
    dirs.push(dir);
    const node = await startProcess(`node ${id}`, SWITCHBOARD_BIN, [
      'serve', '--listen', `127.0.0.1:${ports[id - 1]}`, '--grpc-listen', `127.0.0.1:${ports[3 + id - 1]}`,
      '--internal-listen', `127.0.0.1:${ports[6 + id - 1]}`, '--node-id', String(id), '--voter', voters,
      '--data-dir', dir, '--access-key', key,
    ], { env: { SWITCHBOARD_CLUSTER_SECRET: 'console-test-secret', SWITCHBOARD_LOG: 'warn,openraft=off' } });
    return Object.assign(node, { id, http: `http://127.0.0.1:${ports[id - 1]}`, console: `http://127.0.0.1:${ports[6 + id - 1]}/console` });
  }));
  return { nodes, stop: async () => { await Promise.all(nodes.map((n) => n.stop())); for (const d of dirs) rmSync(d, { recursive: true, force: true }); } };
}

/** A @microsoft/signalr client of `node` as `user`, recording what it receives. */
async function client(node, key, user) {
  const url = `${node.http}/client/?hub=${HUB}`;
  const conn = new HubConnectionBuilder()
    .withUrl(url, { accessTokenFactory: () => token(key, { aud: url, 'asrs.s.uid': user }) })
    .configureLogging(LogLevel.None)
    .build();
  const received = [];
  const waiters = [];
  conn.on('newMessage', (text) => {
    received.push(text);
    for (const w of waiters.splice(0)) w();
  });
  await withTimeout(conn.start(), START_T, `client ${user} start`);
  return {
    conn,
    received,
    async expect(text) {
      const deadline = Date.now() + T;
      while (!received.includes(text)) {
        assert.ok(Date.now() < deadline, `${user} did not receive ${text}: ${JSON.stringify(received)}`);
        await withTimeout(new Promise((resolve) => waiters.push(resolve)), T, `${user} receives ${text}`);
      }
    },
  };
}

async function broadcast(node, key, text) {
  const url = `${node.http}/api/hubs/${HUB}/:send`;
  const response = await fetch(`${url}?api-version=2022-06-01`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token(key, { aud: url })}`, 'content-type': 'application/json' },
    body: JSON.stringify({ target: 'newMessage', arguments: [text] }),
  });
  assert.equal(response.status, 202);
}

describe('the console in headless Chromium', { timeout: 6 * START_T }, () => {
  const key = randomKey();
  let cluster;
  let browser;
  let page;
  const problems = [];

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    cluster = await startCluster(key);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: START_T });
    page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    page.setDefaultTimeout(T);
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    await page.goto(cluster.nodes[0].console);
  });
  after(async () => {
    await browser?.close();
    await cluster?.stop();
    assert.deepEqual(problems, [], 'errors in the page');
  });

  it('no console route answers without a session; a wrong key is refused', async () => {
    const base = cluster.nodes[0].console;
    const forged = `switchboard_console=${Math.floor(Date.now() / 1000) + 3600}.${'0'.repeat(64)}`;
    for (const [method, path, body] of [
      ['GET', '/api/overview'], ['GET', '/api/hubs'], ['GET', `/api/lookup?hub=${HUB}&kind=user&id=u`],
      ['POST', '/api/rest', { method: 'POST', path: `/api/hubs/${HUB}/:send?api-version=2022-06-01`, body: { target: 't' } }],
      ['GET', `/api/trace?hub=${HUB}`],
    ]) {
      for (const cookie of [undefined, forged]) {
        const headers = { 'content-type': 'application/json', ...(cookie ? { cookie } : {}) };
        const response = await fetch(`${base}${path}`, { method, headers, body: body && JSON.stringify(body) });
        assert.equal(response.status, 401, `${method} ${path} with ${cookie ? 'a forged' : 'no'} session`);
      }
    }
    await page.fill('#key', 'not-the-key');
    await page.click('#sign-in');
    await page.locator('#login-error', { hasText: 'not an access key' }).waitFor();
    assert.equal(await page.isVisible('#tabs'), false);
  });

  it('the cluster tab shows the 3 nodes with numbers moving under load', async () => {
    await page.fill('#key', key);
    await page.click('#sign-in');
    await page.locator('#nodes tbody tr').nth(2).waitFor();
    assert.equal(await page.locator('#nodes tbody tr').count(), 3);
    await page.locator('#nodes tbody td.state-leader').waitFor();
    await page.locator('#cluster-summary', { hasText: '3 of 3 up' }).waitFor();
    // A client on node 2 and broadcasts through node 3 until node 2's delivered/s shows them.
    const watcher = await client(cluster.nodes[1], key, 'watcher');
    try {
      const moving = page.waitForFunction(() => {
        const row = document.querySelector('#nodes tr[data-node="2"]');
        return row && Number(row.children[7].textContent) > 0 && Number(row.children[5].textContent) >= 1;
      }, null, { timeout: 4 * T });
      let sent = 0;
      let done = false;
      moving.then(() => { done = true; }, () => { done = true; });
      while (!done && sent < 200) {
        await broadcast(cluster.nodes[2], key, `load ${sent++}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await moving;
      await watcher.expect('load 0');
      await page.click('#nodes tr[data-node="2"]');
      await page.locator('#chart-node', { hasText: '2' }).waitFor();
      assert.ok((await page.getAttribute('#chart-delivered polyline', 'points')).length > 0, 'a delivered chart');
      await page.screenshot({ path: join(ARTIFACTS, 'console-cluster.png'), fullPage: true });
    } finally {
      await watcher.conn.stop();
    }
  });

  it('the console tab makes a REST call a client receives, and shows the call', async () => {
    const alice = await client(cluster.nodes[2], key, 'alice');
    try {
      await page.click('#tabs [data-tab="console"]');
      await page.selectOption('#action', 'send-user');
      await page.fill('#rest-hub', HUB);
      await page.fill('#rest-who', 'alice');
      await page.fill('#rest-target', 'newMessage');
      const text = `from the console ${randomUUID()}`;
      await page.fill('#rest-arguments', JSON.stringify([text]));
      await page.click('#run');
      await alice.expect(text);
      await page.locator('#rest-call', { hasText: `POST ${cluster.nodes[0].http}/api/hubs/chat/users/alice/:send?api-version=2022-06-01` }).waitFor();
      await page.locator('#rest-answer', { hasText: '202' }).waitFor();
      await page.click('#tabs [data-tab="hubs"]');
      await page.fill('#lookup-hub', HUB);
      await page.selectOption('#lookup-kind', 'user');
      await page.fill('#lookup-id', 'alice');
      await page.click('#lookup-form button');
      await page.locator('#lookup-result', { hasText: alice.conn.connectionId }).waitFor();
      assert.match(await page.textContent('#lookup-result'), /"node": 3/, 'alice lives on node 3');
      await page.screenshot({ path: join(ARTIFACTS, 'console-console.png'), fullPage: true });
    } finally {
      await alice.conn.stop();
    }
  });

  it('the live trace streams a client connecting, receiving, invoking and leaving', async () => {
    await page.click('#tabs [data-tab="trace"]');
    await page.fill('#trace-hub', HUB);
    await page.click('#trace-toggle');
    await page.locator('#trace-status', { hasText: 'watching chat' }).waitFor();
    const bob = await client(cluster.nodes[0], key, 'bob');
    const id = bob.conn.connectionId;
    await page.locator(`#trace-events tr[data-kind="connected"]`, { hasText: id }).waitFor();
    await broadcast(cluster.nodes[1], key, 'traced');
    await bob.expect('traced');
    await page.locator(`#trace-events tr[data-kind="message-out"]`, { hasText: id }).waitFor();
    await bob.conn.send('hello', 'world');
    await page.locator(`#trace-events tr[data-kind="message-in"]`, { hasText: 'hello' }).waitFor();
    await bob.conn.stop();
    await page.locator(`#trace-events tr[data-kind="disconnected"]`, { hasText: id }).waitFor();
    await page.screenshot({ path: join(ARTIFACTS, 'console-trace.png'), fullPage: true });
    await page.click('#trace-toggle');
    await page.click('#sign-out');
    await page.locator('#login').waitFor();
    assert.equal(await page.isVisible('#tabs'), false, 'signed out');
  });
});
