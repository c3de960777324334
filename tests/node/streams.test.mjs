// Server-to-client streams in serverless mode, with the real client: `connection.stream(...)`
// reaches the upstream as a StreamInvocation (type 4, with its invocation id); the app answers
// 200 and then feeds the stream through `POST …/connections/{id}/streams/{invocationId}/:send`
// (bare JSON items, in order, `completed=true` on the last) and ends it with `:complete`
// (`reason=` for an error; idempotent). A client's cancel reaches the upstream as a
// CancelInvocation and ends the stream: further items are refused with 404. Uploads (a Subject
// argument) are refused with a clear error. Every transport, both protocols.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Subject } from '@microsoft/signalr';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { serverToken } from './lib/jwt.mjs';
import { startWebhook, decodeInvocation } from './lib/upstream.mjs';
import { deferred, withTimeout, T, TEST_TIMEOUT } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };
const API = '2024-12-01';

/** POSTs a stream route with a fresh server token. */
async function streamCall(endpoint, key, hub, connectionId, streamId, verb, { body, query = '', apiVersion = API } = {}) {
  const path = `/api/hubs/${hub}/connections/${encodeURIComponent(connectionId)}/streams/${encodeURIComponent(streamId)}/${verb}`;
  const url = `${endpoint}${path}`;
  const headers = { authorization: `Bearer ${serverToken({ url, key })}`, 'content-type': 'application/json; charset=utf-8' };
  const version = apiVersion ? `api-version=${apiVersion}` : '';
  const res = await fetch(`${url}?${[version, query].filter(Boolean).join('&')}`, { method: 'POST', headers, body });
  return { status: res.status, errorCode: res.headers.get('x-ms-error-code'), text: await res.text() };
}

/** Collects a client stream: resolves with its items when it completes, rejects with its error. */
function collect(stream) {
  const items = [];
  const done = deferred();
  const subscription = stream.subscribe({
    next: (item) => items.push(item),
    complete: () => done.resolve(items),
    error: (e) => done.reject(Object.assign(e, { items })),
  });
  return { items, subscription, done: withTimeout(done.promise, T, 'stream end') };
}

describe('server-to-client streams', () => {
  let s;
  let hook;
  /** What the app's stream generators saw: `${connectionId}/${invocationId}` → {cancelled, refused}. */
  const generators = new Map();
  /** Every generator run, settled (its failures are in hook.errors). */
  const running = [];

  before(async () => {
    // The app: a StreamInvocation is answered 200 at once; a generator then feeds the stream
    // over REST, as an app with the Management SDK does.
    hook = await startWebhook({
      route: (rec, res) => {
        if (rec.category !== 'messages') return false;
        const inv = decodeInvocation(rec);
        if (inv.type === 5) {
          generators.get(`${rec.connectionId}/${inv.invocationId}`)?.cancelled.resolve(rec);
          res.writeHead(200).end();
          return true;
        }
        if (inv.type !== 4) return false;
        if (rec.event === 'broken') {
          res.writeHead(500).end('boom');
          return true;
        }
        res.writeHead(200).end();
        const state = { cancelled: deferred(), refused: deferred() };
        generators.set(`${rec.connectionId}/${inv.invocationId}`, state);
        running.push(feed(rec, inv, state).catch((e) => hook.errors.push(e)));
        return true;
      },
    });
    s = await setupSuite({ extraArgs: ['--upstream', `${hook.url}/{hub}/{category}/{event}`] });
  });
  after(async () => {
    // A generator may still be repeating its :complete after its client saw the end.
    await withTimeout(Promise.all(running), T, 'the generators finish');
    await s?.teardown();
    await hook?.stop();
    assert.deepEqual(hook?.errors ?? [], [], 'app errors');
  });

  /** One generator per stream target. */
  async function feed(rec, inv, state) {
    const post = (verb, options) => streamCall(s.endpoint, s.key, rec.hub, rec.connectionId, inv.invocationId, verb, options);
    const expect = async (call, status) => {
      const r = await call;
      if (r.status !== status) throw new Error(`${inv.target}: expected ${status}, got ${r.status} ${r.text}`);
      return r;
    };
    const [n] = inv.arguments;
    switch (inv.target) {
      case 'count': // items, then :complete (twice: the SDK may retry it)
        for (let i = 0; i < n; i++) await expect(post(':send', { body: JSON.stringify({ i, s: 'ü' }) }), 202);
        await expect(post(':complete'), 202);
        await expect(post(':complete'), 202);
        break;
      case 'countLast': // the last item ends the stream
        for (let i = 0; i < n; i++) {
          await expect(post(':send', { body: String(i), query: i === n - 1 ? 'completed=true' : 'completed=false' }), 202);
        }
        await expect(post(':send', { body: '99' }), 404); // after the end
        break;
      case 'fails':
        await expect(post(':send', { body: '"first"' }), 202);
        await expect(post(':complete', { query: 'reason=the%20source%20failed' }), 202);
        break;
      case 'forever': // until the client cancels: then items are refused
        for (let i = 0; i < 1000; i++) {
          const r = await post(':send', { body: String(i) });
          if (r.status === 404) {
            assert.equal(r.errorCode, 'Error.Stream.NotExisted');
            state.refused.resolve(i);
            return;
          }
          if (r.status !== 202) throw new Error(`forever: ${r.status} ${r.text}`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        throw new Error('forever: the cancel never ended the stream');
      default:
        throw new Error(`no generator for ${inv.target}`);
    }
  }

  for (const transport of ['WebSockets', 'ServerSentEvents', 'LongPolling']) {
    for (const protocol of transport === 'ServerSentEvents' ? ['json'] : ['json', 'msgpack']) {
      it(`${transport} ${protocol}: items arrive in order and the stream completes`, opts, async () => {
        const hub = uniq();
        const c = await s.connect({ hub, protocol, transport });
        const { done } = collect(c.conn.stream('count', 25));
        const items = await done;
        assert.deepEqual(items, Array.from({ length: 25 }, (_, i) => ({ i, s: 'ü' })));
        const rec = await hook.waitFor((r) => r.connectionId === c.id && r.event === 'count', 'the stream invocation upstream');
        const inv = decodeInvocation(rec);
        assert.equal(inv.type, 4);
        assert.equal(typeof inv.invocationId, 'string');
        assert.deepEqual(inv.arguments, [25]);
        assert.equal(rec.category, 'messages');
      });
    }
  }

  it('completed=true ends the stream with its item; an error reason reaches the client', opts, async () => {
    const hub = uniq();
    const c = await s.connect({ hub, protocol: 'msgpack' });
    assert.deepEqual(await collect(c.conn.stream('countLast', 3)).done, [0, 1, 2]);
    const failing = collect(c.conn.stream('fails'));
    const error = await failing.done.then(() => null, (e) => e);
    assert.ok(error, 'the stream fails');
    assert.match(error.message, /the source failed/);
    assert.deepEqual(error.items, ['first']);
  });

  it('a client cancel reaches the upstream and ends the stream', opts, async () => {
    const hub = uniq();
    const c = await s.connect({ hub });
    const got = deferred();
    const subscription = c.conn.stream('forever').subscribe({
      next: (item) => { if (item >= 2) got.resolve(); },
      complete: () => {},
      error: () => {},
    });
    await withTimeout(got.promise, T, 'a few items');
    subscription.dispose();
    const rec = await hook.waitFor((r) => r.connectionId === c.id && r.event === 'forever' && decodeInvocation(r).type === 5, 'the cancel upstream');
    const stream = [...generators.entries()].find(([k]) => k.startsWith(`${c.id}/`));
    assert.ok(stream, 'the generator ran');
    assert.equal(decodeInvocation(rec).invocationId, stream[0].split('/')[1]);
    await withTimeout(stream[1].refused.promise, T, 'items refused after the cancel');
    // The connection is unharmed: another stream on it works.
    assert.deepEqual(await collect(c.conn.stream('count', 2)).done, [{ i: 0, s: 'ü' }, { i: 1, s: 'ü' }]);
  });

  it('an upstream that refuses the stream invocation errors the stream', opts, async () => {
    const c = await s.connect({ hub: uniq() });
    const error = await collect(c.conn.stream('broken')).done.then(() => null, (e) => e);
    assert.match(String(error?.message), /status code 500/);
  });

  it('uploads (a Subject argument) are refused clearly', opts, async () => {
    const c = await s.connect({ hub: uniq() });
    const subject = new Subject();
    const answer = c.conn.invoke('upload', subject);
    subject.next(1);
    subject.complete();
    await assert.rejects(withTimeout(answer, T, 'upload answer'), /Client-to-server streams are not supported/);
    assert.deepEqual(await collect(c.conn.stream('count', 1)).done, [{ i: 0, s: 'ü' }], 'the connection goes on');
  });

  it('bad stream calls get clear errors', opts, async () => {
    const hub = uniq();
    const c = await s.connect({ hub });
    const call = (streamId, verb, options) => streamCall(s.endpoint, s.key, hub, c.id, streamId, verb, options);
    assert.equal((await call('nope', ':send', { body: '1' })).status, 404, 'no such stream');
    assert.equal((await call('nope', ':complete')).status, 202, ':complete is idempotent');
    const missing = await streamCall(s.endpoint, s.key, hub, 'no-such.1', 's', ':send', { body: '1' });
    assert.deepEqual([missing.status, missing.errorCode], [404, 'Error.Stream.NotExisted']);
    for (const [label, streamId, options] of [
      ['invalid JSON item', 's', { body: '{"a":' }],
      ['two values', 's', { body: '1 2' }],
      ['a 101-character stream id', 'x'.repeat(101), { body: '1' }],
      ['a blank stream id', '  ', { body: '1' }],
      ['completed=maybe', 's', { body: '1', query: 'completed=maybe' }],
      ['no api-version', 's', { body: '1', apiVersion: '' }],
      ['a number no MessagePack client can take', 's', { body: '1e400' }],
    ]) {
      const r = await call(streamId, ':send', options);
      assert.equal(r.status, 400, `${label}: ${r.status} ${r.text}`);
    }
    assert.deepEqual(await collect(c.conn.stream('count', 1)).done, [{ i: 0, s: 'ü' }], 'the connection is unharmed');
  });
});
