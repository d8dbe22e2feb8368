// orderflow console: a small page over the public HTTP API (no framework, no CDN, served from the binary).
// Everything it shows comes from the documented routes, with the signed-in user's bearer token. The revenue
// chart is drawn by uPlot (uplot.js, vendored from npm and served from the binary like this file).
//
// One rule keeps a shared tab honest: everything the page holds belongs to one *session* (one sign-in). Signing
// out ends it: the timers stop, the requests still in flight are aborted, and a response that arrives anyway is
// dropped because it carries the old session's number; every list, detail, chart and form is emptied. The next
// user starts from the same blank page as after a reload.
'use strict';

const TOKEN_KEY = 'orderflow.token';
const LIVE_EVERY_MS = 2000;
const DAY_MS = 86400000;

const $ = (selector) => document.querySelector(selector);

function blankState() {
  return {
    token: null, tab: 'orders', cursor: null, paged: false, timer: null, detail: null, auditCursor: null,
    auditPaged: false, charts: new Map(), rebuilding: new Set(), latest: {},
  };
}
let state = blankState();
let session = 0;
let aborter = new AbortController();

// ---- API ------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? `${problem.title}: ${problem.detail}` : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// A response for a session that has ended (or for a request a newer one replaced): nobody may see it.
class Stale extends Error {}

async function api(method, path, body) {
  const mine = session;
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response, text;
  try {
    response = await fetch(path, {
      method, headers, signal: aborter.signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
    text = await response.text();
  } catch (error) {
    if (mine !== session) throw new Stale();
    throw error;
  }
  if (mine !== session) throw new Stale();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!response.ok) {
    if (response.status === 401) signOut('Your token was refused (missing, invalid or expired): sign in again.');
    throw new ApiError(response.status, json);
  }
  return json;
}

// The newest call of a kind wins: an older answer that arrives after a newer request was sent is dropped.
function ticket(kind) {
  state.latest[kind] = (state.latest[kind] || 0) + 1;
  const mine = state.latest[kind];
  const mySession = session;
  return () => { if (mySession !== session || state.latest[kind] !== mine) throw new Stale(); };
}

// ---- small helpers ---------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
  return node;
}

// Amounts are integer minor units (docs/api.md §1); shown with two decimals, as most currencies have.
const money = (minor, currency) => `${(Number(minor) / 100).toFixed(2)}${currency ? ' ' + currency : ''}`;
// Times are shown in UTC everywhere, in one format: 2026-01-31 14:05:09Z.
const when = (iso) => (iso ? new Date(iso).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '');
const nowUtc = () => new Date().toISOString().slice(11, 19) + 'Z';

let noticeTimer = null;
function notice(message, kind = 'error') {
  const box = $('#notice');
  box.textContent = message;
  box.className = kind;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

function failed(error) {
  if (error instanceof Stale || (error && error.name === 'AbortError')) return;
  if (error instanceof ApiError && error.status === 401) return;
  notice(error.message || String(error));
}

// The token's claims, for display only: the server checks the signature, the page never trusts these.
function claims(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload));
  } catch {
    return {};
  }
}

// ---- sign in / out ----------------------------------------------------------------------------------------

async function signIn(token) {
  endSession();
  state.token = token.trim();
  try {
    // Any authenticated route tells whether the token is good: a search for one order.
    await api('GET', '/orders?limit=1');
  } catch (error) {
    if (error instanceof Stale) return;
    state.token = null;
    notice(error.message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $('#token').value = '';
  showSignedIn();
}

// Ends the session: timers, requests in flight and everything shown or remembered for the previous user.
function endSession() {
  session += 1;
  aborter.abort();
  aborter = new AbortController();
  clearInterval(state.timer);
  for (const { plot } of state.charts.values()) plot.destroy();
  state = blankState();
  for (const id of ['#results tbody', '#detail-fields', '#timeline', '#revenue-table tbody', '#chart',
    '#projection-table tbody', '#parked-table tbody', '#audit-table tbody']) $(id).replaceChildren();
  $('#detail-id').textContent = '';
  $('#order-detail').hidden = true;
  $('#more').hidden = true;
  $('#audit-more').hidden = true;
  $('#search-summary').textContent = '';
  $('#revenue-summary').textContent = '';
  $('#search-form').reset();
  $('#revenue-form').reset();
}

function signOut(message) {
  endSession();
  sessionStorage.removeItem(TOKEN_KEY);
  $('#sign-in').hidden = false;
  $('#tabs').hidden = true;
  $('#who').hidden = true;
  $('#who-name').textContent = '';
  document.querySelectorAll('.tab').forEach((t) => { t.hidden = true; });
  if (message) notice(message);
  else $('#notice').hidden = true;
}

function showSignedIn() {
  const c = claims(state.token);
  $('#who-name').textContent = c.sub ? `${c.sub} (${c.role})` : 'signed in';
  $('#sign-in').hidden = true;
  $('#notice').hidden = true;
  $('#tabs').hidden = false;
  $('#who').hidden = false;
  // Revenue and the admin routes are admin-only: a customer sees their orders only.
  const admin = !c.role || c.role === 'admin';
  document.querySelectorAll('#tabs button.admin').forEach((b) => { b.hidden = !admin; });
  show('orders');
}

const loaders = {
  orders: (quiet) => {
    // Only the first page is refreshed: a list the user paged through stays as it is.
    const list = quiet && (state.paged || !$('#live').checked) ? Promise.resolve() : search(true, quiet);
    const open = state.detail && (!quiet || $('#live').checked) ? detail(state.detail, true) : Promise.resolve();
    return Promise.all([list, open]);
  },
  revenue: (quiet) => revenue(quiet),
  projections: () => projections(),
  audit: (quiet) => (quiet && state.auditPaged ? Promise.resolve() : audit(true)),
};

function show(tab) {
  state.tab = tab;
  document.querySelectorAll('#tabs button').forEach((b) => b.classList.toggle('active', b.dataset.tab === tab));
  document.querySelectorAll('.tab').forEach((t) => { t.hidden = t.id !== tab; });
  loaders[tab](false).catch(failed);
  startLive();
}

// Every few seconds the visible tab is read again, so it follows the projections as they catch up.
function startLive() {
  clearInterval(state.timer);
  const mine = session;
  state.timer = setInterval(() => {
    if (mine !== session || document.hidden || !state.token) return;
    loaders[state.tab](true).catch(failed);
  }, LIVE_EVERY_MS);
}

// ---- orders ----------------------------------------------------------------------------------------------

function searchQuery(cursor) {
  const params = new URLSearchParams();
  const set = (key, value) => { if (value) params.set(key, value); };
  set('q', $('#q').value.trim());
  set('customerId', $('#customer').value.trim());
  set('status', $('#status').value);
  set('sort', $('#sort').value);
  params.set('limit', '20');
  set('cursor', cursor);
  return `/orders?${params}`;
}

async function search(fresh, quiet) {
  const current = ticket('search');
  const page = await api('GET', searchQuery(fresh ? null : state.cursor));
  current();
  state.paged = !fresh;
  const body = $('#results tbody');
  if (fresh) body.replaceChildren();
  for (const order of page.orders) {
    body.append(el('tr', {
      'data-order': order.orderId, class: `clickable${order.orderId === state.detail ? ' selected' : ''}`,
      tabindex: 0, onclick: () => select(order.orderId),
      onkeydown: (e) => { if (e.key === 'Enter') select(order.orderId); },
    },
    el('td', {}, el('code', {}, order.orderId)),
    el('td', {}, order.customerId),
    el('td', {}, el('span', { class: `status ${order.status}` }, order.status)),
    el('td', { class: 'num' }, money(order.total, order.currency)),
    el('td', { class: 'num' }, order.version),
    el('td', {}, when(order.placedAt))));
  }
  state.cursor = page.nextCursor;
  $('#more').hidden = !page.nextCursor;
  const shown = body.children.length;
  $('#search-summary').textContent =
    `${shown} shown of about ${page.estimatedTotal} matching` + (quiet ? ` · refreshed ${nowUtc()}` : '');
}

function markSelected() {
  document.querySelectorAll('#results tbody tr').forEach((r) => {
    r.classList.toggle('selected', r.dataset.order === state.detail);
    r.setAttribute('aria-selected', String(r.dataset.order === state.detail));
  });
}

function select(id) {
  state.detail = id;
  markSelected();
  detail(id, false).catch(failed);
}

function clearDetail() {
  state.detail = null;
  ticket('detail');
  $('#order-detail').hidden = true;
  $('#detail-id').textContent = '';
  $('#detail-fields').replaceChildren();
  $('#timeline').replaceChildren();
  markSelected();
}

// What an event's data says, as label/value pairs formatted like the rest of the page.
function eventFields(data, currency) {
  const rows = [];
  for (const [key, value] of Object.entries(data || {})) {
    if (value === null || value === undefined || value === '') continue;
    if (key === 'items' && Array.isArray(value)) {
      rows.push(['items', value.map((i) => `${i.quantity} × ${i.name} (${i.sku}) at ${money(i.unitPrice, currency)}`).join(', ')]);
    } else if (/^(total|amount|refund|unitPrice)$/.test(key) && typeof value === 'number') {
      rows.push([key, money(value, currency)]);
    } else if (/At$/.test(key)) {
      rows.push([key, when(value)]);
    } else {
      rows.push([key, typeof value === 'object' ? JSON.stringify(value) : String(value)]);
    }
  }
  return rows;
}

async function detail(id, quiet) {
  const current = ticket('detail');
  const path = `/orders/${encodeURIComponent(id)}`;
  const [order, history] = await Promise.all([api('GET', path), api('GET', `${path}/history`)]);
  current();
  if (state.detail !== id) return;
  $('#order-detail').hidden = false;
  $('#detail-id').textContent = id;
  const fields = $('#detail-fields');
  fields.replaceChildren();
  const rows = [
    ['Status', order.status], ['Customer', order.customerId], ['Total', money(order.total, order.currency)],
    ['Version', order.version], ['Placed', when(order.placedAt)], ['Paid', when(order.paidAt)],
    ['Payment', order.paymentId], ['Shipped', when(order.shippedAt)],
    ['Carrier', order.carrier && `${order.carrier} ${order.trackingNumber}`],
    ['Cancelled', when(order.cancelledAt)], ['Reason', order.cancelReason],
    ['Refund', order.refund !== undefined && order.refund !== null ? money(order.refund, order.currency) : ''],
  ];
  for (const [name, value] of rows) {
    if (value === undefined || value === null || value === '') continue;
    fields.append(el('dt', {}, name), el('dd', {}, value));
  }
  fields.append(el('dt', {}, 'Items'), el('dd', {}, order.items.map((i) => `${i.quantity} × ${i.name} (${i.sku})`).join(', ')));
  const timeline = $('#timeline');
  timeline.replaceChildren();
  for (const event of history.events) {
    const dl = el('dl', { class: 'event-data' });
    for (const [name, value] of eventFields(event.data, order.currency)) dl.append(el('dt', {}, name), el('dd', {}, value));
    timeline.append(el('li', { class: 'event' },
      el('strong', {}, event.type), el('span', { class: 'muted' }, ` v${event.version} · ${when(event.occurredAt)}`), dl));
  }
  if (!quiet) $('#order-detail').scrollIntoView({ block: 'nearest' });
}

// ---- revenue ---------------------------------------------------------------------------------------------

const isoDay = (date) => date.toISOString().slice(0, 10);
const PALETTE = { gross: 'rgba(47, 111, 222, 0.30)', grossLine: '#2f6fde', net: '#1d2330' };

async function revenue(quiet) {
  if (!$('#to').value) $('#to').value = isoDay(new Date());
  if (!$('#from').value) $('#from').value = isoDay(new Date(Date.now() - 29 * DAY_MS));
  const from = $('#from').value;
  const to = $('#to').value;
  const params = new URLSearchParams({ from, to });
  const currency = $('#currency').value.trim().toUpperCase();
  if (currency) params.set('currency', currency);
  const current = ticket('revenue');
  const { days } = await api('GET', `/revenue/daily?${params}`);
  current();
  const body = $('#revenue-table tbody');
  body.replaceChildren();
  for (const d of days) {
    body.append(el('tr', {},
      el('td', {}, d.date), el('td', {}, d.currency),
      el('td', { class: 'num' }, money(d.grossRevenue)), el('td', { class: 'num' }, money(d.refunds)),
      el('td', { class: 'num' }, money(d.netRevenue)), el('td', { class: 'num' }, d.paidOrders),
      el('td', { class: 'num' }, d.cancelledOrders)));
  }
  $('#revenue-summary').textContent = `${from} to ${to} (UTC days)` + (quiet ? ` · refreshed ${nowUtc()}` : '');
  charts(days, from, to);
}

// Every UTC day of the range, as uPlot's x values (seconds), so days without activity are gaps, not skipped.
function dayAxis(from, to) {
  const xs = [];
  const start = Date.parse(`${from}T00:00:00Z`);
  const end = Date.parse(`${to}T00:00:00Z`);
  for (let t = start; t <= end && xs.length < 400; t += DAY_MS) xs.push(t / 1000);
  return xs;
}

// One chart per currency (amounts in different currencies share no axis): gross as a wide light bar, net as a
// narrow dark bar on the same scale, so the scale fits both; a day without activity has no bar.
function charts(days, from, to) {
  const box = $('#chart');
  const xs = dayAxis(from, to);
  const byCurrency = new Map();
  for (const d of days) {
    if (!byCurrency.has(d.currency)) byCurrency.set(d.currency, new Map());
    byCurrency.get(d.currency).set(d.date, d);
  }
  const currencies = [...byCurrency.keys()].sort();
  const key = `${from}/${to}/${currencies.join(',')}`;
  if (state.chartKey !== key) {
    for (const { plot } of state.charts.values()) plot.destroy();
    state.charts.clear();
    box.replaceChildren();
    state.chartKey = key;
  }
  if (currencies.length === 0) {
    box.replaceChildren(el('p', { class: 'muted' }, 'No revenue in this range.'));
    return;
  }
  for (const cur of currencies) {
    const perDay = byCurrency.get(cur);
    const pick = (field) => xs.map((x) => {
      const d = perDay.get(isoDay(new Date(x * 1000)));
      return d ? d[field] / 100 : null;
    });
    const data = [xs, pick('grossRevenue'), pick('netRevenue')];
    const existing = state.charts.get(cur);
    if (existing) {
      existing.plot.setData(data);
      continue;
    }
    const panel = el('figure', { class: 'chart-panel', 'data-currency': cur },
      el('figcaption', {}, `${cur}: gross and net revenue per UTC day`));
    box.append(panel);
    const plot = new uPlot(chartOptions(cur, panel.clientWidth), data, panel);
    state.charts.set(cur, { plot, panel });
  }
}

function chartOptions(currency, width) {
  const amount = (v) => (v === null || v === undefined ? '–' : `${v.toFixed(2)} ${currency}`);
  const bars = (size) => uPlot.paths.bars({ size: [size, 60], align: 0 });
  return {
    width: Math.max(280, width),
    height: 220,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    scales: {
      // Half a day either side, so the first and last bars are whole.
      x: { time: true, range: (u, min, max) => [min - 43200, max + 43200] },
      y: { range: (u, min, max) => [Math.min(0, min ?? 0), Math.max(1, max ?? 1) * 1.05] },
    },
    axes: [
      { label: 'Day (UTC)', space: 70, values: dayLabels },
      { label: `Revenue (${currency})`, size: 70, values: amountLabels },
    ],
    series: [
      { label: 'Day', value: '{YYYY}-{MM}-{DD}' },
      { label: 'Gross', fill: PALETTE.gross, stroke: PALETTE.grossLine, width: 1, paths: bars(0.8), points: { show: false }, value: (u, v) => amount(v) },
      { label: 'Net', fill: PALETTE.net, stroke: PALETTE.net, width: 0, paths: bars(0.35), points: { show: false }, value: (u, v) => amount(v) },
    ],
  };
}

// x labels: a day ("Mar 7") while ticks are days apart, a month ("Mar 2026") once they are a month or more apart;
// uPlot spaces the ticks so that labels never overlap, from 1 to 366 days.
function dayLabels(u, splits, axis, space, increment) {
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  return splits.map((ts) => {
    const d = new Date(ts * 1000);
    return increment >= 28 * 86400
      ? `${months[d.getUTCMonth()]} ${d.getUTCFullYear()}`
      : `${months[d.getUTCMonth()]} ${d.getUTCDate()}`;
  });
}

// y labels in major units, all with the same number of decimals: none once the step is a whole unit.
function amountLabels(u, splits, axis, space, increment) {
  const decimals = increment >= 1 ? 0 : 2;
  return splits.map((v) => v.toFixed(decimals));
}

function resizeCharts() {
  for (const { plot, panel } of state.charts.values()) plot.setSize({ width: Math.max(280, panel.clientWidth), height: 220 });
}

// ---- projections and parked events ------------------------------------------------------------------------

async function projections() {
  const current = ticket('projections');
  const [list, parked] = await Promise.all([api('GET', '/admin/projections'), api('GET', '/admin/parked')]);
  current();
  const body = $('#projection-table tbody');
  body.replaceChildren();
  for (const p of list) {
    const running = Boolean(p.rebuild) || p.status === 'rebuilding' || state.rebuilding.has(p.name);
    const progress = p.rebuild
      ? el('span', { class: 'progress' },
        el('progress', { max: Math.max(1, p.rebuild.target), value: Math.min(p.rebuild.position, p.rebuild.target) }),
        ` ${p.rebuild.position} / ${p.rebuild.target}`)
      : '';
    body.append(el('tr', { 'data-projection': p.name },
      el('td', {}, p.name), el('td', {}, el('span', { class: `status ${p.status}` }, p.status), progress),
      el('td', { class: 'num' }, p.position), el('td', { class: 'num' }, Number(p.lagSeconds).toFixed(3)),
      el('td', { class: 'num' }, p.restarts), el('td', { class: 'num' }, p.parked),
      // The Streams bridge (distributed profile) has a row too, but no view to rebuild.
      el('td', {}, p.name === 'bridge' ? '' : el('button', {
        type: 'button', class: 'rebuild', disabled: running, title: running ? 'A rebuild is running' : undefined,
        onclick: () => rebuild(p.name),
      }, running ? 'Rebuilding…' : 'Rebuild'))));
  }
  // Only the first parked event of an order (per view) can be replayed or discarded: the ones behind it wait.
  const first = new Map();
  for (const p of parked) {
    const k = `${p.projection}\u0000${p.event.orderId}`;
    if (!first.has(k) || p.event.version < first.get(k).event.version) first.set(k, p);
  }
  const parkedBody = $('#parked-table tbody');
  parkedBody.replaceChildren();
  if (parked.length === 0) parkedBody.append(el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'Nothing parked.')));
  for (const p of parked) {
    const head = first.get(`${p.projection}\u0000${p.event.orderId}`);
    const actions = head === p
      ? [el('button', { type: 'button', class: 'replay', onclick: () => parkedAction('POST', p, 'replay') }, 'Replay'),
        el('button', { type: 'button', class: 'discard', onclick: () => parkedAction('DELETE', p, 'discard') }, 'Discard')]
      : [el('span', { class: 'muted waiting' }, `waits for v${head.event.version}`)];
    parkedBody.append(el('tr', { 'data-parked': p.id },
      el('td', {}, p.projection), el('td', {}, el('code', {}, p.event.orderId)),
      el('td', {}, `${p.event.type} v${p.event.version}`), el('td', { class: 'num' }, p.attempts),
      el('td', { class: 'error-text' }, p.error), el('td', {}, when(p.parkedAt)),
      el('td', { class: 'actions' }, ...actions)));
  }
}

async function parkedAction(method, parked, what) {
  if (what === 'discard' && !confirm(`Discard ${parked.event.type} v${parked.event.version} of ${parked.event.orderId}? The view will never apply it.`)) return;
  const path = `/admin/parked/${encodeURIComponent(parked.id)}${what === 'replay' ? '/replay' : ''}`;
  try {
    await api(method, path);
    notice(`${what === 'replay' ? 'Replayed' : 'Discarded'} ${parked.event.type} v${parked.event.version} of ${parked.event.orderId}.`, 'ok');
  } catch (error) {
    failed(error);
  }
  await projections().catch(failed);
}

async function rebuild(name) {
  if (!confirm(`Rebuild the ${name} view from the write model? Queries keep using the old view until the new one is complete.`)) return;
  state.rebuilding.add(name);
  const mine = state.rebuilding;
  await projections().catch(failed);
  try {
    await api('POST', `/admin/projections/${encodeURIComponent(name)}/rebuild`);
    notice(`Rebuilding ${name}: queries keep using the old view until the new one is complete.`, 'ok');
  } catch (error) {
    failed(error);
  } finally {
    // From here on the server's `rebuild` progress says whether it is still running.
    mine.delete(name);
  }
  await projections().catch(failed);
}

// ---- audit log -------------------------------------------------------------------------------------------

async function audit(fresh) {
  const params = new URLSearchParams({ limit: '50' });
  if (!fresh && state.auditCursor) params.set('cursor', state.auditCursor);
  const current = ticket('audit');
  const page = await api('GET', `/admin/audit?${params}`);
  current();
  state.auditPaged = !fresh;
  const body = $('#audit-table tbody');
  if (fresh) body.replaceChildren();
  for (const e of page.entries) {
    const detailText = Object.entries(e.detail || {}).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' · ');
    body.append(el('tr', { 'data-audit': e.id },
      el('td', {}, when(e.at)), el('td', {}, e.actor), el('td', {}, el('code', {}, e.action)),
      el('td', {}, el('code', {}, e.target)),
      el('td', { class: e.outcome === 'ok' ? 'ok-text' : 'error-text' }, e.outcome),
      el('td', { class: 'muted' }, detailText)));
  }
  if (body.children.length === 0) body.append(el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'No admin actions yet.')));
  state.auditCursor = page.nextCursor;
  $('#audit-more').hidden = !page.nextCursor;
}

// ---- wiring ----------------------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('#sign-in-form').addEventListener('submit', (e) => { e.preventDefault(); signIn($('#token').value); });
  $('#sign-out').addEventListener('click', () => signOut());
  document.querySelectorAll('#tabs button').forEach((b) => b.addEventListener('click', () => show(b.dataset.tab)));
  $('#search-form').addEventListener('submit', (e) => { e.preventDefault(); clearDetail(); search(true).catch(failed); });
  $('#more').addEventListener('click', () => search(false).catch(failed));
  $('#close-detail').addEventListener('click', () => clearDetail());
  $('#revenue-form').addEventListener('submit', (e) => { e.preventDefault(); revenue().catch(failed); });
  $('#audit-more').addEventListener('click', () => audit(false).catch(failed));
  let resizing = null;
  window.addEventListener('resize', () => { clearTimeout(resizing); resizing = setTimeout(resizeCharts, 100); });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    state.token = saved;
    showSignedIn();
  }
});
