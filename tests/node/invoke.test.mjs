// Client results (`POST /api/hubs/{hub}/connections/{id}/:invoke`) with the real client: the
// handler's return value travels back to the REST caller, in the Management SDK's shape
// (`Accept: application/octet-stream` → X-Protocol + the client's framed Completion) and in the
// swagger's (`{"result": …}`), for JSON and MessagePack clients; errors, unknown connections and
// a client that leaves before answering.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setupSuite, uniq } from './lib/fixture.mjs';
import { serverToken } from './lib/jwt.mjs';
import { TEST_TIMEOUT } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };
const API = '2024-12-01';

/** POSTs `:invoke` with a fresh server token; the body is read as bytes. */
async function invoke(s, hub, connectionId, payload, { sdk = false } = {}) {
  const url = `${s.endpoint}/api/hubs/${hub}/connections/${encodeURIComponent(connectionId)}/:invoke`;
  const headers = {
    authorization: `Bearer ${serverToken({ url, key: s.key })}`,
    'content-type': 'application/json; charset=utf-8',
  };
  if (sdk) headers.accept = 'application/octet-stream';
  const res = await fetch(`${url}?api-version=${API}`, { method: 'POST', headers, body: JSON.stringify(payload) });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, protocol: res.headers.get('x-protocol'), errorCode: res.headers.get('x-ms-error-code'), bytes };
}

describe('client results (:invoke)', () => {
  let s;
  before(async () => { s = await setupSuite(); });
  after(async () => { await s?.teardown(); });

  for (const protocol of ['json', 'msgpack']) {
    it(`${protocol}: the handler's value comes back, in the SDK's and the swagger's shape`, opts, async () => {
      const hub = uniq();
      const seen = [];
      const c = await s.connect({
        hub,
        protocol,
        configure: (conn) => conn.on('getName', (greeting, n) => { seen.push([greeting, n]); return { name: 'bob', n: n + 1 }; }),
      });
      const swagger = await invoke(s, hub, c.id, { target: 'getName', arguments: ['hello', 41] });
      assert.equal(swagger.status, 200, swagger.bytes.toString());
      assert.deepEqual(JSON.parse(swagger.bytes.toString()), { result: { name: 'bob', n: 42 } });

      // The newest Management SDK sends PascalCase names and reads the Completion itself.
      const sdk = await invoke(s, hub, c.id, { Target: 'getName', Arguments: ['again', 1] }, { sdk: true });
      assert.equal(sdk.status, 200, sdk.bytes.toString());
      if (protocol === 'json') {
        assert.equal(sdk.protocol, 'json');
        assert.equal(sdk.bytes.at(-1), 0x1e, 'a JSON record, separator included');
        const completion = JSON.parse(sdk.bytes.subarray(0, -1).toString());
        assert.equal(completion.type, 3);
        assert.equal(typeof completion.invocationId, 'string');
        assert.deepEqual(completion.result, { name: 'bob', n: 2 });
      } else {
        assert.equal(sdk.protocol, 'messagepack');
        assert.equal(sdk.bytes[0], sdk.bytes.length - 1, 'one length-prefixed MessagePack message');
        assert.ok(sdk.bytes.includes(Buffer.from('\xa3bob', 'latin1')), sdk.bytes.toString('hex'));
      }
      assert.deepEqual(seen, [['hello', 41], ['again', 1]]);
    });
  }

  it('a handler that throws: the SDK gets the error completion, others a 500 with the error', opts, async () => {
    const hub = uniq();
    const c = await s.connect({ hub, configure: (conn) => conn.on('fail', () => { throw new Error('nope'); }) });
    const swagger = await invoke(s, hub, c.id, { target: 'fail', arguments: [] });
    assert.equal(swagger.status, 500);
    assert.equal(swagger.errorCode, 'Error.Invocation.Failed');
    assert.match(swagger.bytes.toString(), /nope/);
    const sdk = await invoke(s, hub, c.id, { target: 'fail', arguments: [] }, { sdk: true });
    assert.equal(sdk.status, 200);
    assert.match(JSON.parse(sdk.bytes.subarray(0, -1).toString()).error, /nope/);
  });

  it('an unknown connection is 404; a client that leaves before answering is a 500', opts, async () => {
    const hub = uniq();
    const missing = await invoke(s, hub, 'no-such-connection', { target: 'x', arguments: [] });
    assert.equal(missing.status, 404);
    assert.equal(missing.errorCode, 'Error.Connection.NotExisted');

    let asked;
    const askedPromise = new Promise((resolve) => { asked = resolve; });
    const c = await s.connect({ hub, configure: (conn) => conn.on('slow', () => { asked(); return new Promise(() => {}); }) });
    const pending = invoke(s, hub, c.id, { target: 'slow', arguments: [] });
    await askedPromise;
    await c.conn.stop();
    const gone = await pending;
    assert.equal(gone.status, 500);
    assert.equal(gone.errorCode, 'Error.Invocation.Disconnected');
    assert.match(gone.bytes.toString(), /is disconnected/);
  });
});
