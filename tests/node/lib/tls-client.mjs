// Run as its own process with NODE_EXTRA_CA_CERTS naming the test CA (Node reads it only at
// start): connects @microsoft/signalr to an https endpoint on every transport and protocol,
// sends to itself over the https REST API, and prints one JSON line with what happened.
//   node tls-client.mjs <endpoint> <access key>
import { HubConnectionBuilder, HttpTransportType, LogLevel } from '@microsoft/signalr';
import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';
import { clientToken, serverToken } from './jwt.mjs';
import { withTimeout, T } from './wait.mjs';

const [endpoint, key] = process.argv.slice(2);
const results = [];
for (const [transport, protocol] of [
  ['WebSockets', 'json'], ['WebSockets', 'msgpack'], ['ServerSentEvents', 'json'], ['LongPolling', 'json'], ['LongPolling', 'msgpack'],
]) {
  const hub = `tls${transport.toLowerCase()}${protocol}`;
  let builder = new HubConnectionBuilder()
    .withUrl(`${endpoint}/client/?hub=${hub}`, {
      transport: HttpTransportType[transport],
      accessTokenFactory: () => clientToken({ endpoint, hub, key, userId: 'u1' }),
    })
    .configureLogging(LogLevel.None);
  if (protocol === 'msgpack') builder = builder.withHubProtocol(new MessagePackHubProtocol());
  const conn = builder.build();
  const received = new Promise((resolve) => conn.on('msg', (...args) => resolve(args)));
  try {
    await withTimeout(conn.start(), T, `${transport} ${protocol} start`);
    const url = `${endpoint}/api/hubs/${hub}/users/u1/:send`;
    const res = await fetch(`${url}?api-version=2022-06-01`, {
      method: 'POST',
      headers: { authorization: `Bearer ${serverToken({ url, key })}`, 'content-type': 'application/json' },
      body: JSON.stringify({ target: 'msg', arguments: ['over tls', 'x'.repeat(70000)] }),
    });
    const args = await withTimeout(received, T, `${transport} ${protocol} message`);
    results.push({ transport, protocol, status: res.status, first: args[0], length: args[1].length });
  } catch (e) {
    results.push({ transport, protocol, error: String(e?.message ?? e) });
  } finally {
    await conn.stop().catch(() => {});
  }
}
console.log(JSON.stringify(results));
