// The Switchboard console: plain browser JavaScript, no build step, no third-party code.
// Every call goes to /console/api/… on the same origin with the session cookie.
'use strict';

const $ = (selector) => document.querySelector(selector);
const API_VERSION = '2022-06-01';
let selectedNode = null;
let refreshTimer = null;
let traceSource = null;

async function api(path, options = {}) {
  const response = await fetch(`/console/api/${path}`, {
    credentials: 'same-origin',
    headers: options.body ? { 'content-type': 'application/json' } : {},
    ...options,
  });
  if (response.status === 401) {
    showLogin();
    throw new Error('signed out');
  }
  return response.json();
}

function showLogin(message = '') {
  stopRefresh();
  $('#tabs').hidden = true;
  for (const tab of document.querySelectorAll('.tab')) tab.hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message;
}

function showApp() {
  $('#login').hidden = true;
  $('#tabs').hidden = false;
  showTab('cluster');
}

function showTab(name) {
  for (const button of document.querySelectorAll('#tabs [data-tab]')) {
    button.classList.toggle('active', button.dataset.tab === name);
  }
  for (const tab of document.querySelectorAll('.tab')) tab.hidden = tab.id !== name;
  stopRefresh();
  if (name === 'cluster') refresh(refreshCluster);
  if (name === 'hubs') refresh(refreshHubs);
}

function refresh(load) {
  load().catch(() => {});
  refreshTimer = setInterval(() => load().catch(() => {}), 2000);
}

function stopRefresh() {
  if (refreshTimer) clearInterval(refreshTimer);
  refreshTimer = null;
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text ?? '–';
  if (className) td.className = className;
  return td;
}

const number = (value, digits = 0) => (typeof value === 'number' ? value.toFixed(digits) : '–');
const megabytes = (bytes) => (typeof bytes === 'number' ? `${(bytes / 1048576).toFixed(1)} MB` : '–');

async function refreshCluster() {
  const overview = await api('overview');
  const body = $('#nodes tbody');
  body.replaceChildren();
  const up = overview.nodes.filter((n) => n.state !== 'down').length;
  $('#cluster-summary').textContent = `${up} of ${overview.nodes.length} up` +
    (overview.leader ? `, leader ${overview.leader}, term ${overview.term}` : '');
  if (selectedNode === null || !overview.nodes.some((n) => n.id === selectedNode)) {
    const withStats = overview.nodes.find((n) => n.stats);
    selectedNode = withStats ? withStats.id : null;
  }
  for (const node of overview.nodes) {
    const stats = node.stats || {};
    const last = (stats.history || []).at(-1) || {};
    const raft = stats.raft ? `${stats.raft.term} / ${stats.raft.leader ?? '–'} / ${stats.raft.applied_index ?? '–'}` : (node.applied_index != null ? `– / – / ${node.applied_index}` : '–');
    const row = document.createElement('tr');
    row.dataset.node = node.id;
    row.classList.toggle('selected', node.id === selectedNode);
    const state = stats.draining ? 'draining' : node.state;
    row.append(
      cell(String(node.id)),
      cell((node.roles || []).join(', ')),
      cell(state, `state-${state}`),
      cell(node.client_url),
      cell(raft),
      cell(stats.connections != null ? String(stats.connections) : '–'),
      cell(number(last.messages_in_per_second, 1)),
      cell(number(last.delivered_per_second, 1)),
      cell(number(last.rest_per_second, 1)),
      cell(megabytes(stats.process?.memory_bytes)),
      cell(typeof last.cpu_percent === 'number' ? `${last.cpu_percent.toFixed(0)} %` : '–'),
    );
    row.addEventListener('click', () => { selectedNode = node.id; refreshCluster().catch(() => {}); });
    body.append(row);
  }
  const chosen = overview.nodes.find((n) => n.id === selectedNode);
  $('#chart-node').textContent = chosen ? String(chosen.id) : '–';
  const history = chosen?.stats?.history || [];
  chart('#chart-connections', history.map((s) => s.connections));
  chart('#chart-delivered', history.map((s) => s.delivered_per_second));
  chart('#chart-rest', history.map((s) => s.rest_per_second));
  chart('#chart-p99', history.map((s) => s.rest_p99_ms));
}

/** A polyline of `values` (oldest first) scaled to the chart, with its maximum written. */
function chart(selector, values) {
  const svg = $(selector);
  svg.replaceChildren();
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? 300 / (values.length - 1) : 0;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(75 - (v / max) * 65).toFixed(1)}`).join(' ');
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', points);
  const label = document.createElementNS('http://www.w3.org/2000/svg', 'text');
  label.setAttribute('x', '2');
  label.setAttribute('y', '9');
  label.textContent = `max ${number(max, max < 10 ? 1 : 0)}, now ${number(values.at(-1), 1)}`;
  svg.append(line, label);
}

async function refreshHubs() {
  const { hubs } = await api('hubs');
  const body = $('#hub-table tbody');
  body.replaceChildren();
  for (const hub of hubs) {
    const kinds = Object.entries(hub.by_kind).map(([kind, n]) => `${kind}: ${n}`).join(', ');
    const row = document.createElement('tr');
    row.append(cell(hub.hub), cell(String(hub.here)), cell(kinds || '–'), cell(hub.cluster != null ? String(hub.cluster) : '–'));
    body.append(row);
  }
}

/** The REST call an action of the console form makes: [method, path, body]. */
function restCall() {
  const hub = encodeURIComponent($('#rest-hub').value.trim());
  const who = encodeURIComponent($('#rest-who').value.trim());
  const group = encodeURIComponent($('#rest-group').value.trim());
  let args;
  try {
    args = JSON.parse($('#rest-arguments').value || '[]');
  } catch (e) {
    throw new Error(`the arguments are not JSON: ${e.message}`);
  }
  const message = { target: $('#rest-target').value.trim(), arguments: args };
  const base = `/api/hubs/${hub}`;
  const q = `?api-version=${API_VERSION}`;
  switch ($('#action').value) {
    case 'send-all': return ['POST', `${base}/:send${q}`, message];
    case 'send-user': return ['POST', `${base}/users/${who}/:send${q}`, message];
    case 'send-group': return ['POST', `${base}/groups/${group}/:send${q}`, message];
    case 'send-connection': return ['POST', `${base}/connections/${who}/:send${q}`, message];
    case 'add-user-group': return ['PUT', `${base}/users/${who}/groups/${group}${q}`];
    case 'remove-user-group': return ['DELETE', `${base}/users/${who}/groups/${group}${q}`];
    case 'add-connection-group': return ['PUT', `${base}/groups/${group}/connections/${who}${q}`];
    case 'remove-connection-group': return ['DELETE', `${base}/groups/${group}/connections/${who}${q}`];
    case 'close-all': return ['POST', `${base}/:closeConnections${q}`];
    case 'close-user': return ['POST', `${base}/users/${who}/:closeConnections${q}`];
    case 'close-connection': return ['DELETE', `${base}/connections/${who}${q}`];
    default: throw new Error('unknown action');
  }
}

async function runRest(event) {
  event.preventDefault();
  let method, path, body;
  try {
    [method, path, body] = restCall();
  } catch (e) {
    $('#rest-answer').textContent = e.message;
    return;
  }
  const result = await api('rest', { method: 'POST', body: JSON.stringify({ method, path, body }) });
  const request = result.request;
  $('#rest-call').textContent = `${request.method} ${request.url}\nAuthorization: Bearer <a token for ${request.url.split('?')[0]}>` +
    (request.body ? `\nContent-Type: application/json\n\n${JSON.stringify(request.body, null, 2)}` : '');
  $('#rest-answer').textContent = `${result.status}\n${typeof result.answer === 'string' ? result.answer : JSON.stringify(result.answer, null, 2)}`;
}

async function runLookup(event) {
  event.preventDefault();
  const query = new URLSearchParams({ hub: $('#lookup-hub').value.trim(), kind: $('#lookup-kind').value, id: $('#lookup-id').value.trim() });
  const result = await api(`lookup?${query}`);
  $('#lookup-result').textContent = JSON.stringify(result, null, 2);
}

function toggleTrace(event) {
  event.preventDefault();
  if (traceSource) {
    traceSource.close();
    traceSource = null;
    $('#trace-toggle').textContent = 'Start';
    $('#trace-status').textContent = 'stopped';
    return;
  }
  const query = new URLSearchParams({ hub: $('#trace-hub').value.trim() });
  const connection = $('#trace-connection').value.trim();
  if (connection) query.set('connection', connection);
  traceSource = new EventSource(`/console/api/trace?${query}`);
  traceSource.onopen = () => { $('#trace-status').textContent = `watching ${query.get('hub')}${connection ? ` / ${connection}` : ''}`; };
  traceSource.onerror = () => { $('#trace-status').textContent = 'the trace stream was interrupted; it reconnects by itself'; };
  traceSource.onmessage = (message) => {
    const event = JSON.parse(message.data);
    const row = document.createElement('tr');
    row.dataset.kind = event.kind;
    const detail = event.skipped_before ? `${event.detail} (${event.skipped_before} events skipped before)` : event.detail;
    row.append(
      cell(new Date(event.at_ms).toISOString().slice(11, 23)), cell(event.connection), cell(event.kind),
      cell(detail), cell(event.bytes != null ? String(event.bytes) : ''), cell(event.ms != null ? String(event.ms) : ''),
    );
    const body = $('#trace-events tbody');
    body.prepend(row);
    while (body.children.length > 500) body.lastChild.remove();
  };
  $('#trace-toggle').textContent = 'Stop';
}

$('#login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const response = await fetch('/console/api/login', {
    method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ key: $('#key').value }),
  });
  if (response.ok) {
    $('#key').value = '';
    showApp();
  } else {
    showLogin((await response.json()).error || 'sign-in failed');
  }
});
$('#sign-out').addEventListener('click', async () => {
  await fetch('/console/api/logout', { method: 'POST', credentials: 'same-origin' });
  if (traceSource) traceSource.close();
  traceSource = null;
  showLogin();
});
for (const button of document.querySelectorAll('#tabs [data-tab]')) {
  button.addEventListener('click', () => showTab(button.dataset.tab));
}
$('#rest-form').addEventListener('submit', (event) => { runRest(event).catch((e) => { $('#rest-answer').textContent = e.message; }); });
$('#lookup-form').addEventListener('submit', (event) => { runLookup(event).catch((e) => { $('#lookup-result').textContent = e.message; }); });
$('#trace-form').addEventListener('submit', toggleTrace);
$('#trace-clear').addEventListener('click', () => $('#trace-events tbody').replaceChildren());

// Signed in already (the cookie outlives a reload)?
api('overview').then(showApp, () => {});
