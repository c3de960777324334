// TLS on the public port with certificates made for the test: @microsoft/signalr connects over
// wss, Server-Sent Events and Long Polling on https (in a process that trusts the test CA) and
// gets a message sent over the https REST API; plain HTTP to the port gets nothing; a renewed
// certificate is served after SIGHUP without a restart; bad certificate settings exit 64.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, copyFileSync, rmSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { connect as tcpConnect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, binaryPath } from './lib/server.mjs';
import { makeCa } from './lib/tls.mjs';
import { deferred, withTimeout, T, TEST_TIMEOUT } from './lib/wait.mjs';

const opts = { timeout: TEST_TIMEOUT };
const here = dirname(fileURLToPath(import.meta.url));

/** The certificate the port presents, checked against `ca`: its subject CN, or the TLS error. */
function presented(port, ca) {
  const done = deferred();
  const socket = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(ca), servername: 'localhost' }, () => {
    done.resolve(socket.getPeerCertificate().subject.CN);
    socket.end();
  });
  socket.once('error', (e) => done.resolve(`error: ${e.code ?? e.message}`));
  return withTimeout(done.promise, T, 'TLS handshake');
}

describe('TLS on the public port', () => {
  let pki;
  let files;
  let server;
  before(async () => {
    pki = makeCa();
    files = pki.issue('first');
    server = await startServer({ extraArgs: ['--tls-cert', files.cert, '--tls-key', files.key] });
  });
  after(async () => {
    await server?.stop();
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
  });

  it('the connection string names the https endpoint', () => {
    assert.match(server.endpoint, /^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it('@microsoft/signalr works on every transport and protocol over TLS, REST too', opts, async () => {
    const child = spawn(process.execPath, [join(here, 'lib', 'tls-client.mjs'), server.endpoint, server.accessKey], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: pki.ca },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const code = await withTimeout(new Promise((resolve) => child.once('exit', resolve)), 60000, 'the TLS client');
    assert.equal(code, 0, err);
    const results = JSON.parse(out.trim().split('\n').pop());
    assert.equal(results.length, 5);
    for (const r of results) {
      assert.deepEqual(r, { transport: r.transport, protocol: r.protocol, status: 202, first: 'over tls', length: 70000 }, JSON.stringify(r));
    }
  });

  it('plain HTTP to the TLS port gets no answer, and the port keeps serving', opts, async () => {
    const done = deferred();
    let answer = '';
    const socket = tcpConnect({ host: '127.0.0.1', port: server.port }, () => {
      socket.write('GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    socket.on('data', (d) => { answer += d.toString('latin1'); });
    socket.on('close', () => done.resolve());
    socket.on('error', () => done.resolve());
    await withTimeout(done.promise, T, 'the plain socket closes');
    assert.ok(!answer.includes('HTTP/1.1 200'), answer);
    assert.equal(await presented(server.port, pki.ca), 'first');
  });

  it('a renewed certificate is served after SIGHUP, without a restart', opts, async () => {
    const renewed = pki.issue('renewed');
    copyFileSync(renewed.cert, files.cert);
    copyFileSync(renewed.key, files.key);
    server.child.kill('SIGHUP');
    const deadline = Date.now() + T;
    let name = await presented(server.port, pki.ca);
    while (name !== 'renewed' && Date.now() < deadline) name = await presented(server.port, pki.ca);
    assert.equal(name, 'renewed');
  });

  it('bad certificate settings exit 64 with one clear line', () => {
    const other = pki.issue('other');
    for (const [args, expected] of [
      [['--tls-cert', files.cert], /--tls-cert and --tls-key go together/],
      [['--tls-cert', files.cert, '--tls-key', other.key], /does not fit the certificate/],
      [['--tls-cert', '/nonexistent.crt', '--tls-key', other.key], /cannot read \/nonexistent.crt/],
      [['--tls-cert', pki.ca + '.missing', '--tls-key', files.cert], /cannot read/],
      [['--tls-cert', other.key, '--tls-key', other.key], /holds no certificate|not PEM/],
    ]) {
      const run = spawnSync(binaryPath(), ['serve', '--listen', '127.0.0.1:0', '--access-key', 'k', ...args], { encoding: 'utf8', timeout: 10000 });
      assert.equal(run.status, 64, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, expected);
    }
  });
});
