// A scratch redis-server and a minimal RESP2 client (PUBLISH, SUBSCRIBE), so a test can play an
// ASP.NET server on its Redis backplane: binary payloads in and out, no client library.
import { spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { deferred, withTimeout, T } from './wait.mjs';

/** `redis-server` (Debian's, installed by scripts/test) on a free loopback port, no persistence. */
export async function startRedis() {
  const port = await new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => { const { port: p } = probe.address(); probe.close(() => resolve(p)); });
  });
  const bin = process.env.SWITCHBOARD_REDIS_SERVER || 'redis-server';
  const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const ready = deferred();
  let output = '';
  child.stdout.on('data', (d) => { output += d; if (output.includes('Ready to accept connections')) ready.resolve(); });
  child.once('exit', (code) => ready.reject(new Error(`redis-server exited (${code}): ${output}`)));
  await withTimeout(ready.promise, T, 'redis-server start');
  return { port, url: `redis://127.0.0.1:${port}`, stop: () => child.kill('SIGKILL') };
}

/** One RESP2 connection: `command(...)` for requests, `messages` for pub/sub pushes. */
export async function respConnection(port) {
  const socket = connect(port, '127.0.0.1');
  await withTimeout(new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); }), T, 'connect to redis');
  let buffer = Buffer.alloc(0);
  const replies = [];
  const waiters = [];
  const pushes = [];
  const pushWaiters = [];
  socket.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      const parsed = parse(buffer, 0);
      if (!parsed) break;
      buffer = buffer.subarray(parsed.end);
      const value = parsed.value;
      if (Array.isArray(value) && value[0]?.toString() === 'message') {
        const message = { channel: value[1].toString(), payload: value[2] };
        const waiter = pushWaiters.findIndex((w) => w.channel === message.channel);
        if (waiter >= 0) pushWaiters.splice(waiter, 1)[0].resolve(message.payload);
        else pushes.push(message);
      } else if (waiters.length) {
        waiters.shift().resolve(value);
      } else {
        replies.push(value);
      }
    }
  });
  const send = (args) => {
    const parts = [Buffer.from(`*${args.length}\r\n`)];
    for (const arg of args) {
      const bytes = Buffer.isBuffer(arg) || arg instanceof Uint8Array ? Buffer.from(arg) : Buffer.from(String(arg));
      parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
    }
    socket.write(Buffer.concat(parts));
  };
  return {
    /** Sends a command; resolves with its reply. */
    command(...args) {
      const reply = deferred();
      waiters.push(reply);
      send(args);
      return withTimeout(reply.promise, T, `redis ${args[0]}`);
    },
    /** The next message published on `channel` after subscribing (past or future). */
    next(channel) {
      const at = pushes.findIndex((m) => m.channel === channel);
      if (at >= 0) return Promise.resolve(pushes.splice(at, 1)[0].payload);
      const got = deferred();
      pushWaiters.push({ channel, resolve: got.resolve });
      return withTimeout(got.promise, T, `a message on ${channel}`);
    },
    close() { socket.destroy(); },
  };
}

/** One RESP2 value at `at`, or null when the buffer holds only part of it. */
function parse(buffer, at) {
  const line = buffer.indexOf('\r\n', at);
  if (line < 0) return null;
  const head = buffer.toString('latin1', at + 1, line);
  switch (String.fromCharCode(buffer[at])) {
    case '+': case '-': return { value: head, end: line + 2 };
    case ':': return { value: Number(head), end: line + 2 };
    case '$': {
      const n = Number(head);
      if (n < 0) return { value: null, end: line + 2 };
      if (buffer.length < line + 2 + n + 2) return null;
      return { value: buffer.subarray(line + 2, line + 2 + n), end: line + 2 + n + 2 };
    }
    case '*': {
      const n = Number(head);
      const items = [];
      let end = line + 2;
      for (let i = 0; i < n; i++) {
        const item = parse(buffer, end);
        if (!item) return null;
        items.push(item.value);
        end = item.end;
      }
      return { value: items, end };
    }
    default: throw new Error(`not RESP: ${head}`);
  }
}
