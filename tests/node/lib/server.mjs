// Start/stop the switchboard binary for a test file.
//
//   switchboard serve --listen 127.0.0.1:0 --access-key KEY [--access-key KEY2]
//                     --data-dir DIR [--allowed-origin ORIGIN]...
// prints exactly one line on stdout once it listens:
//   Endpoint=http://127.0.0.1:PORT;AccessKey=KEY;Version=1.0;
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withTimeout } from './wait.mjs';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function binaryPath() {
  return process.env.SWITCHBOARD_BIN || join(REPO_ROOT, 'target', 'debug', 'switchboard');
}

export function randomKey() {
  // 44 chars like an Azure key; plain ASCII so the "raw UTF-8 bytes" rule is unambiguous.
  return randomBytes(33).toString('base64').replace(/[+/=]/g, 'x');
}

/**
 * Parse an Azure SignalR connection string (keys case-insensitive, split on ';',
 * each part split at the first '=').
 */
export function parseConnectionString(cs) {
  const out = {};
  for (const part of cs.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    out[part.slice(0, i).trim().toLowerCase()] = part.slice(i + 1).trim();
  }
  if (!out.endpoint) throw new Error(`connection string without Endpoint: ${cs}`);
  const endpoint = out.endpoint.replace(/\/+$/, '');
  return { endpoint, accessKey: out.accesskey, version: out.version, raw: out };
}

const live = new Set();
process.once('exit', () => {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * @param {object} [o]
 * @param {string[]} [o.keys] access keys (first is primary); random if absent
 * @param {string[]} [o.allowedOrigins]
 * @param {string[]} [o.extraArgs]
 * @param {object} [o.env]
 * @param {string} [o.dataDir] reuse this data dir (kept at stop); default: a fresh temp dir removed at stop
 * @param {number} [o.readyTimeoutMs=30000]
 */
export async function startServer({ keys, allowedOrigins = [], extraArgs = [], env = {}, dataDir: givenDataDir, readyTimeoutMs = 30000 } = {}) {
  const bin = binaryPath();
  if (!existsSync(bin)) {
    throw new Error(`switchboard binary not found at ${bin} (build it with: cargo build -p switchboard-server, or set SWITCHBOARD_BIN)`);
  }
  const accessKeys = keys ?? [randomKey()];
  const dataDir = givenDataDir ?? mkdtempSync(join(tmpdir(), 'switchboard-test-'));
  const removeDataDir = () => { if (!givenDataDir) rmSync(dataDir, { recursive: true, force: true }); };
  const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir];
  // SWITCHBOARD_TEST_REDIS=redis://…: the whole suite runs on the Redis engine (every send and
  // membership goes through Redis). The prefix follows the data dir, so a restart on the same
  // dir finds its memberships and two servers never share state.
  if (process.env.SWITCHBOARD_TEST_REDIS) {
    const prefix = `sb-${dataDir.split('/').pop().replace(/[^A-Za-z0-9_.-]/g, '')}`;
    args.push('--engine', 'redis', '--redis', process.env.SWITCHBOARD_TEST_REDIS, '--redis-prefix', prefix);
  }
  for (const k of accessKeys) args.push('--access-key', k);
  for (const o of allowedOrigins) args.push('--allowed-origin', o);
  args.push(...extraArgs);

  const child = spawn(bin, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);

  let stderr = '';
  let stdout = '';
  const echoLogs = !!process.env.SWITCHBOARD_TEST_VERBOSE;
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
    if (echoLogs) process.stderr.write(d);
  });

  const exited = new Promise((res) => child.once('exit', (code, signal) => { live.delete(child); res({ code, signal }); }));

  const ready = new Promise((res, rej) => {
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      stdout += d;
      const nl = stdout.indexOf('\n');
      if (nl >= 0) res(stdout.slice(0, nl).trim());
    });
    child.once('error', rej);
    exited.then(({ code, signal }) => rej(new Error(`switchboard exited before ready (code ${code}, signal ${signal})\nstderr:\n${stderr.slice(-4000)}`)));
  });

  let line;
  try {
    line = await withTimeout(ready, readyTimeoutMs, 'switchboard did not print its connection string');
  } catch (e) {
    child.kill('SIGKILL');
    removeDataDir();
    e.message += `\nstderr:\n${stderr.slice(-4000)}`;
    throw e;
  }

  const parsed = parseConnectionString(line);
  let stopped = false;
  const server = {
    connectionString: line,
    endpoint: parsed.endpoint,
    accessKey: parsed.accessKey,
    keys: accessKeys,
    port: Number(new URL(parsed.endpoint).port),
    dataDir,
    child,
    exited,
    get stderr() { return stderr; },
    get stdout() { return stdout; },
    /** SIGTERM, wait for exit (SIGKILL after graceMs); resolves {code, signal, forced}. */
    async stop({ graceMs = 20000 } = {}) {
      if (stopped) return exited;
      stopped = true;
      let forced = false;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        try {
          await withTimeout(exited, graceMs, 'switchboard did not exit on SIGTERM');
        } catch {
          forced = true;
          child.kill('SIGKILL');
          await withTimeout(exited, 5000, 'switchboard did not exit on SIGKILL').catch(() => {});
        }
      }
      removeDataDir();
      return { ...(await exited), forced };
    },
  };
  return server;
}
