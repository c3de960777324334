// Process and wait helpers for the browser suite: a real `switchboard serve`, the sample
// function app (examples/function-app) and bounded waits on their output. Nothing here
// sleeps to synchronize: every wait is on an event, with a timeout.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(HERE, '..', '..');

const SCALE = Number(process.env.SWITCHBOARD_TEST_TIMEOUT_SCALE || 1);
/** Default bound on one wait (ms). */
export const T = Math.round(10000 * SCALE);
/** Bound on process start-up and browser launch (ms). */
export const START_T = Math.round(30000 * SCALE);

export const SWITCHBOARD_BIN = process.env.SWITCHBOARD_BIN || join(REPO_ROOT, 'target', 'debug', 'switchboard');
export const FUNCTION_APP_BIN =
  process.env.FUNCTION_APP_BIN || join(REPO_ROOT, 'target', 'debug', 'switchboard-function-app');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const SIGNALR_JS = join(HERE, 'node_modules', '@microsoft', 'signalr', 'dist', 'browser', 'signalr.min.js');

export class TimeoutError extends Error {}

/** Race `promise` against a timer; rejects with TimeoutError(`what`). */
export function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new TimeoutError(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

export function randomKey() {
  return randomBytes(33).toString('base64').replace(/[+/=]/g, 'x');
}

/**
 * `count` distinct free loopback ports, held open together so they differ, then released.
 * (The function app and switchboard each need the other's address at start-up, so one side
 * has to be told a port before it binds.)
 */
export async function freePorts(count) {
  const servers = [];
  try {
    for (let i = 0; i < count; i++) {
      const s = createServer();
      servers.push(s);
      await new Promise((res, rej) => { s.once('error', rej); s.listen(0, '127.0.0.1', res); });
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((res) => s.close(res))));
  }
}

const live = new Set();
process.once('exit', () => {
  for (const child of live) {
    try { child.kill('SIGKILL'); } catch { /* gone */ }
  }
});

/**
 * Spawns `bin args`, resolves once its first stdout line is out, and keeps stderr for
 * `waitForLog`. `name` labels errors.
 */
export async function startProcess(name, bin, args, { env = {} } = {}) {
  if (!existsSync(bin)) throw new Error(`${name}: ${bin} not found (run cargo build first, or set the *_BIN variable)`);
  const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let stdout = '';
  let stderr = '';
  const logWaiters = new Set();
  const verbose = !!process.env.SWITCHBOARD_TEST_VERBOSE;
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr += d;
    if (verbose) process.stderr.write(`[${name}] ${d}`);
    for (const w of [...logWaiters]) {
      const m = stderr.match(w.re);
      if (m) { logWaiters.delete(w); w.resolve(m); }
    }
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
    exited.then(({ code, signal }) => rej(new Error(`${name} exited before it was ready (code ${code}, signal ${signal})`)));
  });
  let line;
  try {
    line = await withTimeout(ready, START_T, `${name} did not print its ready line`);
  } catch (e) {
    child.kill('SIGKILL');
    e.message += `\n${name} stderr:\n${stderr.slice(-4000)}`;
    throw e;
  }
  return {
    name,
    line,
    child,
    get stderr() { return stderr; },
    /** Resolves with the match once stderr (so far or later) matches `re`. */
    waitForLog(re, ms = T) {
      const m = stderr.match(re);
      if (m) return Promise.resolve(m);
      let w;
      const p = new Promise((resolve) => { w = { re, resolve }; logWaiters.add(w); });
      return withTimeout(p, ms, `${name} log ${re}`).finally(() => logWaiters.delete(w));
    },
    /** SIGTERM, then SIGKILL if it has not exited within the grace period. */
    async stop(graceMs = 10000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        try {
          await withTimeout(exited, graceMs, `${name} exit on SIGTERM`);
        } catch {
          child.kill('SIGKILL');
          await withTimeout(exited, 5000, `${name} exit on SIGKILL`).catch(() => {});
        }
      }
      return exited;
    },
  };
}

/**
 * `switchboard serve` on a free port with a known key and the given upstream and allowed
 * origins. Its ready line is the connection string.
 */
export async function startSwitchboard({ key, upstream, allowedOrigins = [] }) {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-browser-'));
  const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--access-key', key, '--upstream', upstream];
  for (const o of allowedOrigins) args.push('--allowed-origin', o);
  const proc = await startProcess('switchboard', SWITCHBOARD_BIN, args);
  const endpoint = /Endpoint=([^;]+)/.exec(proc.line)?.[1]?.replace(/\/+$/, '');
  if (!endpoint) throw new Error(`unexpected switchboard ready line: ${proc.line}`);
  const stop = proc.stop.bind(proc);
  return Object.assign(proc, {
    connectionString: proc.line,
    endpoint,
    async stop() {
      const r = await stop();
      rmSync(dataDir, { recursive: true, force: true });
      return r;
    },
  });
}

/** The sample function app; its ready line is `api=http://… page=http://…`. */
export async function startFunctionApp({ connectionString, listen, pageListen }) {
  const args = ['--listen', listen, '--page-listen', pageListen, '--signalr-js', SIGNALR_JS];
  const proc = await startProcess('function-app', FUNCTION_APP_BIN, args, {
    env: { SWITCHBOARD_CONNECTION_STRING: connectionString, RUST_LOG: 'info' },
  });
  const m = /api=(\S+) page=(\S+)/.exec(proc.line);
  if (!m) throw new Error(`unexpected function app ready line: ${proc.line}`);
  return Object.assign(proc, { apiOrigin: m[1], pageOrigin: m[2] });
}
