// The chat page: the client side of the serverless flow.
//
// 1. `withUrl(apiBase)`: the SignalR client POSTs `${apiBase}/negotiate` to the function app,
//    which answers {url, accessToken}; the client follows that redirect to Switchboard.
// 2. Messages and group changes go through the app's HTTP API (POST /api/messages,
//    /api/groups/{group}/join|leave), which calls Switchboard's REST API.
// 3. `connection.invoke('echo', text)` goes to Switchboard, which calls the app's upstream
//    webhook; the webhook's answer is the invocation's result.
//
// `?user=alice` stands in for App Service Authentication: with no real front end signing users
// in, the page itself sends the `x-ms-client-principal-id` header such a front end would add.
// Anyone can claim any name this way, so a real deployment must set that header server-side.
/* global signalR */
'use strict';

const config = window.FUNCTION_APP;
const user = new URLSearchParams(location.search).get('user') || '';
const identity = user ? { 'x-ms-client-principal-id': user } : {};
const $ = (id) => document.getElementById(id);

function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
}

function addMessage(message) {
  const item = document.createElement('li');
  const m = typeof message === 'object' && message !== null ? message : { text: String(message) };
  if (m.group) {
    const tag = document.createElement('span');
    tag.className = 'tag';
    tag.textContent = m.group;
    item.append(tag);
  }
  const sender = document.createElement('span');
  sender.className = 'sender';
  sender.textContent = m.sender || 'anonymous';
  item.append(sender, document.createTextNode(m.text ?? ''));
  $('messages').append(item);
}

/** POST JSON to the function app; credentials included, as App Service Authentication's cookie would be. */
async function api(path, body) {
  const response = await fetch(config.apiBase + path, {
    method: 'POST',
    credentials: 'include',
    headers: { 'content-type': 'application/json', ...identity },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
}

const connection = new signalR.HubConnectionBuilder()
  .withUrl(config.apiBase, { headers: identity })
  .withAutomaticReconnect()
  .configureLogging(signalR.LogLevel.Warning)
  .build();

connection.on('newMessage', addMessage);
connection.onreconnecting(() => setStatus('connecting', 'reconnecting…'));
connection.onreconnected(() => setStatus('connected', `connected as ${user || 'anonymous'} (${connection.connectionId})`));
connection.onclose((error) => setStatus('disconnected', `disconnected${error ? `: ${error.message}` : ''}`));

async function run(button, action) {
  button.disabled = true;
  try {
    await action();
  } catch (error) {
    console.error(error);
    setStatus('error', error.message);
  } finally {
    button.disabled = false;
  }
}

$('send').addEventListener('click', () => run($('send'), async () => {
  const text = $('message').value.trim();
  if (!text) return;
  const group = $('scope').value === 'group' ? $('group').value.trim() : undefined;
  const message = { sender: user || 'anonymous', text, ...(group ? { group } : {}) };
  await api('/messages', { target: 'newMessage', arguments: [message], ...(group ? { group } : {}) });
  $('message').value = '';
}));

$('echo').addEventListener('click', () => run($('echo'), async () => {
  const result = await connection.invoke('echo', $('message').value);
  $('echo-result').textContent = JSON.stringify(result);
}));

for (const action of ['join', 'leave']) {
  $(action).addEventListener('click', () => run($(action), async () => {
    const group = $('group').value.trim();
    await api(`/groups/${encodeURIComponent(group)}/${action}`, { connectionId: connection.connectionId });
    $('group-status').textContent = `${action === 'join' ? 'joined' : 'left'} ${group}`;
  }));
}

$('message').addEventListener('keydown', (event) => {
  if (event.key === 'Enter') $('send').click();
});

(async () => {
  try {
    await connection.start();
    setStatus('connected', `connected as ${user || 'anonymous'} (${connection.connectionId})`);
    for (const id of ['send', 'echo', 'join', 'leave']) $(id).disabled = false;
  } catch (error) {
    console.error(error);
    setStatus('error', `could not connect: ${error.message}`);
  }
})();
