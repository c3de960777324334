// The serverless sample in a real browser: headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core) opens the chat page of examples/function-app twice, as alice and
// as bob, against a real `switchboard serve` whose upstream is the app's webhook.
//
// Three origins: the page (the app's --page-listen port), the app's API (--listen) and
// Switchboard, so negotiate and the API calls to the app and the redirected negotiate and
// WebSocket to Switchboard are all cross-origin, with credentials (signalr-protocols.md
// pitfall 6). User ids: the page's `?user=` query makes it send `x-ms-client-principal-id`,
// the header App Service Authentication would add (see examples/function-app/static/app.js).
//
// Run: npm ci && node --test   (needs target/debug/switchboard and
// target/debug/switchboard-function-app; see scripts/test)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, REPO_ROOT, START_T, T, freePorts, randomKey, startFunctionApp, startSwitchboard,
} from './lib.mjs';

const ARTIFACTS = join(REPO_ROOT, 'artifacts', 'browser');
const HUB = 'chat';

// What the rust.md machine notes say Chromium needs here: no sandbox as root, and no
// background traffic to Google's hosts, which this network refuses. playwright-core adds
// --headless and a fresh temporary --user-data-dir itself.
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

/** One browser tab as one signed-in user, recording what crossed the network. */
async function openChat(browser, pageOrigin, user) {
  const context = await browser.newContext({ viewport: { width: 820, height: 640 } });
  const page = await context.newPage();
  const tab = { user, context, page, responses: [], sockets: [], problems: [] };
  page.setDefaultTimeout(T);
  page.on('response', (r) => tab.responses.push(r));
  page.on('websocket', (ws) => tab.sockets.push(ws.url()));
  page.on('pageerror', (e) => tab.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') tab.problems.push(`console.error: ${m.text()} (${m.location().url})`);
  });
  await page.goto(`${pageOrigin}/?user=${encodeURIComponent(user)}`);
  return tab;
}

/** Waits until a message containing `text` is in the tab's list. */
function received(tab, text) {
  return tab.page.locator('#messages li', { hasText: text }).first().waitFor({ state: 'visible', timeout: T });
}

function countReceived(tab, text) {
  return tab.page.locator('#messages li', { hasText: text }).count();
}

/** Types `text`, picks the scope and clicks Send; resolves once the app answered the POST. */
async function send(tab, text, { group } = {}) {
  const { page } = tab;
  await page.selectOption('#scope', group ? 'group' : 'all');
  if (group) await page.fill('#group', group);
  await page.fill('#message', text);
  const answered = page.waitForResponse((r) => r.url().endsWith('/api/messages') && r.request().method() === 'POST');
  await page.click('#send');
  const response = await answered;
  assert.equal(response.status(), 202, `POST /api/messages from ${tab.user}`);
}

async function membership(tab, action, group) {
  await tab.page.fill('#group', group);
  await tab.page.click(`#${action}`);
  await tab.page.locator('#group-status', { hasText: `${action === 'join' ? 'joined' : 'left'} ${group}` }).waitFor();
}

/**
 * Broadcasts a fresh marker from `tab` and waits until every tab in `all` shows it. Messages
 * sent earlier reach each connection before it, so afterwards "absent" means "not delivered".
 */
async function barrier(tab, all) {
  const marker = `barrier ${randomUUID()}`;
  await send(tab, marker);
  await Promise.all(all.map((t) => received(t, marker)));
}

describe('serverless chat sample in headless Chromium', { timeout: 4 * START_T }, () => {
  let service;
  let app;
  let browser;
  let alice;
  let bob;
  const key = randomKey();

  before(async () => {
    const [apiPort, pagePort] = await freePorts(2);
    const pageOrigin = `http://127.0.0.1:${pagePort}`;
    service = await startSwitchboard({
      key,
      upstream: `http://127.0.0.1:${apiPort}/runtime/webhooks/signalr`,
      allowedOrigins: [pageOrigin],
    });
    app = await startFunctionApp({
      connectionString: service.connectionString,
      listen: `127.0.0.1:${apiPort}`,
      pageListen: `127.0.0.1:${pagePort}`,
    });
    assert.equal(app.pageOrigin, pageOrigin);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: START_T });
    [alice, bob] = await Promise.all([openChat(browser, pageOrigin, 'alice'), openChat(browser, pageOrigin, 'bob')]);
    for (const tab of [alice, bob]) {
      try {
        await tab.page.locator('#status[data-state="connected"]').waitFor({ timeout: START_T });
      } catch (e) {
        e.message += `\n${tab.user}: status "${await tab.page.textContent('#status')}", ${tab.problems.join('; ')}` +
          `\nswitchboard stderr:\n${service.stderr.slice(-3000)}\nfunction app stderr:\n${app.stderr.slice(-3000)}`;
        throw e;
      }
    }
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await app?.stop();
    await service?.stop();
  });

  it('both pages negotiate through the app and connect to Switchboard, cross-origin with credentials', async () => {
    const pageOrigin = app.pageOrigin;
    assert.notEqual(new URL(pageOrigin).origin, new URL(app.apiOrigin).origin);
    assert.notEqual(new URL(pageOrigin).origin, new URL(service.endpoint).origin);
    for (const tab of [alice, bob]) {
      const appNegotiate = tab.responses.find((r) => r.url().startsWith(`${app.apiOrigin}/api/negotiate`));
      const serviceNegotiate = tab.responses.find((r) => r.url().startsWith(`${service.endpoint}/client/negotiate?hub=${HUB}`));
      assert.ok(appNegotiate, `${tab.user}: no negotiate at the app; saw ${tab.responses.map((r) => r.url()).join(', ')}`);
      assert.ok(serviceNegotiate, `${tab.user}: no negotiate at Switchboard; saw ${tab.responses.map((r) => r.url()).join(', ')}`);
      for (const r of [appNegotiate, serviceNegotiate]) {
        assert.equal(r.request().method(), 'POST');
        assert.equal(r.status(), 200, r.url());
        assert.equal(await r.request().headerValue('origin'), pageOrigin, `${r.url()} is a cross-origin request`);
        const headers = await r.allHeaders();
        assert.equal(headers['access-control-allow-origin'], pageOrigin, `${r.url()} echoes the exact origin`);
        assert.equal(headers['access-control-allow-credentials'], 'true', r.url());
      }
      const redirect = await appNegotiate.json();
      assert.equal(redirect.url, `${service.endpoint}/client/?hub=${HUB}`);
      assert.equal(typeof redirect.accessToken, 'string');
      assert.ok(
        tab.sockets.some((u) => u.startsWith(`${service.endpoint.replace(/^http/, 'ws')}/client/?hub=${HUB}&id=`)),
        `${tab.user}: WebSocket to Switchboard; saw ${tab.sockets.join(', ')}`,
      );
      // Switchboard told the app's webhook, with the user id negotiate put in the token.
      await app.waitForLog(new RegExp(`connected.*user="?${tab.user}\\b`));
    }
  });

  it('a message posted by one page appears on both', async () => {
    const text = `hello from alice ${randomUUID().slice(0, 8)}`;
    await send(alice, text);
    await Promise.all([received(alice, text), received(bob, text)]);
    const line = await bob.page.locator('#messages li', { hasText: text }).textContent();
    assert.match(line, /^alice/, 'the sender is shown');
  });

  it('a group message reaches only the member page, and no longer after leaving', async () => {
    const group = `room-${randomUUID().slice(0, 6)}`;
    await membership(alice, 'join', group);
    const first = `to the group ${randomUUID().slice(0, 8)}`;
    await send(bob, first, { group });
    await received(alice, first);
    await barrier(bob, [alice, bob]);
    assert.equal(await countReceived(bob, first), 0, 'bob is not in the group');

    await membership(alice, 'leave', group);
    const second = `after leaving ${randomUUID().slice(0, 8)}`;
    await send(bob, second, { group });
    await barrier(bob, [alice, bob]);
    assert.equal(await countReceived(alice, second), 0, 'alice left the group');
    assert.equal(await countReceived(bob, second), 0);
  });

  it("invoke('echo') round-trips through the upstream webhook", async () => {
    const text = `ping ${randomUUID().slice(0, 8)}`;
    await alice.page.fill('#message', text);
    await alice.page.click('#echo');
    await alice.page.locator('#echo-result', { hasText: JSON.stringify(text) }).waitFor();
    await app.waitForLog(/invocation echo/);
  });

  it('leaves a screenshot and no page errors', async () => {
    await alice.page.fill('#message', 'typing…');
    mkdirSync(ARTIFACTS, { recursive: true });
    await alice.page.screenshot({ path: join(ARTIFACTS, 'chat.png'), fullPage: true });
    await bob.page.screenshot({ path: join(ARTIFACTS, 'chat-bob.png'), fullPage: true });
    assert.deepEqual([...alice.problems, ...bob.problems], []);
  });

  it('the webhook answers 401 to a forged or missing signature (plain fetch)', async () => {
    const connectionId = `forged-${randomUUID()}`;
    const sign = (k) => `sha256=${createHmac('sha256', k).update(connectionId).digest('hex').toUpperCase()}`;
    const post = (signature) => fetch(`${app.apiOrigin}/runtime/webhooks/signalr`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-asrs-connection-id': connectionId,
        'x-asrs-hub': HUB,
        'x-asrs-category': 'connections',
        'x-asrs-event': 'connected',
        ...(signature ? { 'x-asrs-signature': signature } : {}),
      },
      body: JSON.stringify({ type: 10 }),
      signal: AbortSignal.timeout(T),
    });
    assert.equal((await post(sign(randomKey()))).status, 401, 'signed with another key');
    assert.equal((await post(`sha256=${'0'.repeat(64)}`)).status, 401, 'made-up digest');
    assert.equal((await post(undefined)).status, 401, 'no signature');
    assert.equal((await post(sign(key))).status, 200, 'signed with the service key');
  });
});
