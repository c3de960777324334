// @microsoft/signalr client wrapper: connects through the test app's negotiate
// redirect over WebSockets (JSON or MessagePack), records every invocation it
// receives and lets tests wait for them with bounded timeouts.
import { HubConnectionBuilder, HttpTransportType, LogLevel } from '@microsoft/signalr';
import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';
import { randomUUID } from 'node:crypto';
import { deferred, withTimeout, T } from './wait.mjs';
import { msg } from './rest.mjs';

/** Handler names registered on every client (the JS client matches them case-insensitively). */
export const TARGETS = ['msg', 'barrier', 'other'];

class TestLogger {
  constructor(name) { this.name = name; this.lines = []; }
  log(level, message) {
    this.lines.push(`[${LogLevel[level]}] ${message}`);
    if (this.lines.length > 500) this.lines.shift();
    if (process.env.SWITCHBOARD_TEST_VERBOSE) process.stderr.write(`[client ${this.name}] [${LogLevel[level]}] ${message}\n`);
  }
}

export class TestClient {
  constructor(conn, { name, protocol, hub, userId, logger }) {
    this.conn = conn;
    this.name = name;
    this.protocol = protocol;
    this.hub = hub;
    this.userId = userId;
    this.logger = logger;
    /** @type {{target: string, args: any[]}[]} */
    this.inbox = [];
    this.waiters = new Set();
    this.closedDeferred = deferred();
    this.isClosed = false;
    for (const t of TARGETS) {
      conn.on(t, (...args) => this._push(t, args));
    }
    this.reconnectingDeferred = deferred();
    this.reconnectedDeferred = deferred();
    /** every onreconnecting error / onreconnected id, in order */
    this.reconnectingEvents = [];
    this.reconnectedEvents = [];
    conn.onreconnecting((err) => { this.reconnectingEvents.push(err); this.reconnectingDeferred.resolve(err); });
    conn.onreconnected((id) => { this.reconnectedEvents.push(id); this.reconnectedDeferred.resolve(id); });
    conn.onclose((err) => {
      this.isClosed = true;
      this.closeError = err;
      this.closedDeferred.resolve(err);
    });
  }

  get id() { return this.conn.connectionId; }

  _push(target, args) {
    const m = { target, args };
    this.inbox.push(m);
    for (const w of [...this.waiters]) {
      if (w.pred(m)) { this.waiters.delete(w); w.resolve(m); }
    }
  }

  /** Wait for (and return) the first received message matching pred, past or future. */
  waitFor(pred, { timeoutMs = T, what = 'message' } = {}) {
    const hit = this.inbox.find(pred);
    if (hit) return Promise.resolve(hit);
    const d = deferred();
    const w = { pred, resolve: d.resolve };
    this.waiters.add(w);
    return withTimeout(d.promise, timeoutMs, `${this.name}: ${what}`).finally(() => this.waiters.delete(w));
  }

  /** Wait for a `msg` whose first argument equals `tag`; returns its argument list. */
  async expect(tag, opts = {}) {
    const m = await this.waitFor((x) => x.target === 'msg' && x.args[0] === tag, { what: `msg "${tag}"`, ...opts });
    return m.args;
  }

  /** Number of received `msg`s whose first argument equals tag. */
  count(tag) {
    return this.inbox.filter((x) => x.target === 'msg' && x.args[0] === tag).length;
  }

  /**
   * Delivery barrier: send a marker to this connection and wait for it. Sends
   * answered 202 earlier reach the connection before it (ordered delivery, G4),
   * so afterwards "not received" means "not delivered" without any sleep.
   */
  async barrier(rest) {
    const nonce = randomUUID();
    const r = await rest.sendToConnection(this.hub, this.id, msg('barrier', nonce));
    if (r.status !== 202) throw new Error(`barrier send failed: ${r}`);
    await this.waitFor((x) => x.target === 'barrier' && x.args[0] === nonce, { what: 'barrier' });
  }

  /** Resolves with the onclose error (or undefined) once the connection closed. */
  closed(timeoutMs = T) {
    return withTimeout(this.closedDeferred.promise, timeoutMs, `${this.name}: onclose`);
  }

  /** Resolves with the error passed to onreconnecting (automatic reconnect must be enabled). */
  reconnecting(timeoutMs = T) {
    return withTimeout(this.reconnectingDeferred.promise, timeoutMs, `${this.name}: onreconnecting`);
  }

  /** Resolves with the new connection id passed to onreconnected. */
  reconnected(timeoutMs = T) {
    return withTimeout(this.reconnectedDeferred.promise, timeoutMs, `${this.name}: onreconnected`);
  }

  /** Name of the transport class the underlying HttpConnection uses (e.g. 'LongPollingTransport'). */
  get transportName() {
    return this.conn.connection?.transport?.constructor?.name;
  }

  async stop() {
    if (this.isClosed) return;
    await withTimeout(this.conn.stop(), T, `${this.name}: stop`).catch(() => {});
  }
}

/**
 * Connect a real @microsoft/signalr client through the app's negotiate redirect.
 * @param {object} app from startApp
 * @param {object} o
 * @param {string} o.hub
 * @param {string} [o.userId] passed as the `userId` query param of the app URL
 * @param {string} [o.principal] passed as header x-ms-client-principal-id
 * @param {'json'|'msgpack'} [o.protocol='json']
 * @param {string} [o.name]
 * @param {(conn: import('@microsoft/signalr').HubConnection) => void} [o.configure] called before start()
 * @param {number[]} [o.reconnectDelays] enable withAutomaticReconnect(delays)
 * @param {'WebSockets'|'ServerSentEvents'|'LongPolling'|number} [o.transport='WebSockets'] transport(s) the client may use
 * @param {boolean|object} [o.statefulReconnect] enable withStatefulReconnect(options)
 * @param {string} [o.url] connect to this URL instead of the app's (e.g. the service's /client/?hub=)
 * @param {() => string} [o.accessTokenFactory]
 */
export async function connect(app, { hub, userId, principal, protocol = 'json', name, configure, reconnectDelays, transport = 'WebSockets', statefulReconnect, url, accessTokenFactory } = {}) {
  const transportType = typeof transport === 'number' ? transport : HttpTransportType[transport];
  if (transportType === undefined) throw new Error(`unknown transport ${transport}`);
  const tname = transport === 'WebSockets' ? '' : `${transport}:`;
  const logger = new TestLogger(name ?? `${tname}${protocol}:${hub}:${userId ?? principal ?? 'anon'}`);
  const headers = principal ? { 'x-ms-client-principal-id': principal } : {};
  const httpOptions = { transport: transportType, headers };
  if (accessTokenFactory) httpOptions.accessTokenFactory = accessTokenFactory;
  let b = new HubConnectionBuilder()
    .withUrl(url ?? app.hubUrl(hub, userId), httpOptions)
    .configureLogging(logger);
  if (protocol === 'msgpack') b = b.withHubProtocol(new MessagePackHubProtocol());
  if (reconnectDelays) b = b.withAutomaticReconnect(reconnectDelays);
  if (statefulReconnect) b = b.withStatefulReconnect(statefulReconnect === true ? undefined : statefulReconnect);
  const conn = b.build();
  if (configure) configure(conn);
  const c = new TestClient(conn, { name: logger.name, protocol, hub, userId: userId ?? principal, logger });
  try {
    await withTimeout(conn.start(), T, `${logger.name}: start`);
  } catch (e) {
    e.message += `\nclient log:\n${logger.lines.slice(-20).join('\n')}`;
    throw e;
  }
  if (!c.id) throw new Error(`${logger.name}: no connectionId after start`);
  return c;
}

/** Stop many clients (ignores errors). */
export async function stopAll(clients) {
  await Promise.all(clients.filter(Boolean).map((c) => c.stop()));
}
