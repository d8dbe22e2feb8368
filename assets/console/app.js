// orderflow console: a small page over the public HTTP API (no framework, no CDN, served from the binary).
// Everything it shows comes from the documented routes, with the signed-in user's bearer token.
'use strict';

const TOKEN_KEY = 'orderflow.token';
const LIVE_EVERY_MS = 2000;

const $ = (selector) => document.querySelector(selector);
const state = { token: sessionStorage.getItem(TOKEN_KEY), tab: 'orders', cursor: null, paged: false, timer: null, detail: null };

// ---- API ------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? `${problem.title}: ${problem.detail}` : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!response.ok) {
    if (response.status === 401) signOut('Your token was refused (missing, invalid or expired): sign in again.');
    throw new ApiError(response.status, json);
  }
  return json;
}

// ---- small helpers ---------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
  return node;
}

// Amounts are integer minor units (docs/api.md §1); shown with two decimals, as most currencies have.
const money = (minor, currency) => `${(Number(minor) / 100).toFixed(2)}${currency ? ' ' + currency : ''}`;
const when = (iso) => (iso ? new Date(iso).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '');

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
  state.token = token.trim();
  try {
    // Any authenticated route tells whether the token is good: a search for one order.
    await api('GET', '/orders?limit=1');
  } catch (error) {
    state.token = null;
    notice(error.message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, state.token);
  showSignedIn();
}

function signOut(message) {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopLive();
  $('#sign-in').hidden = false;
  $('#tabs').hidden = true;
  $('#who').hidden = true;
  document.querySelectorAll('.tab').forEach((t) => { t.hidden = true; });
  if (message) notice(message);
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
  document.querySelectorAll('[data-tab="revenue"], [data-tab="projections"]').forEach((b) => { b.hidden = !admin; });
  show('orders');
}

function show(tab) {
  state.tab = tab;
  document.querySelectorAll('#tabs button').forEach((b) => b.classList.toggle('active', b.dataset.tab === tab));
  document.querySelectorAll('.tab').forEach((t) => { t.hidden = t.id !== tab; });
  stopLive();
  if (tab === 'orders') search(true).catch(failed);
  if (tab === 'revenue') revenue().catch(failed);
  if (tab === 'projections') projections().catch(failed);
  startLive();
}

// Every few seconds the visible tab is read again, so results follow the projections as they catch up.
function startLive() {
  stopLive();
  state.timer = setInterval(() => {
    if (document.hidden || !state.token) return;
    if (state.tab === 'orders' && $('#live').checked) {
      // Only the first page is refreshed: a list the user paged through stays as it is.
      if (!state.paged) search(true, true).catch(failed);
      if (state.detail) detail(state.detail, true).catch(failed);
    }
    if (state.tab === 'projections') projections().catch(failed);
  }, LIVE_EVERY_MS);
}

function stopLive() {
  clearInterval(state.timer);
  state.timer = null;
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
  const page = await api('GET', searchQuery(fresh ? null : state.cursor));
  state.paged = !fresh;
  const body = $('#results tbody');
  if (fresh) body.replaceChildren();
  for (const order of page.orders) {
    body.append(el('tr', { 'data-order': order.orderId, class: 'clickable', onclick: () => detail(order.orderId).catch(failed) },
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
    `${shown} shown of about ${page.estimatedTotal} matching` + (quiet ? ` · refreshed ${new Date().toLocaleTimeString()}` : '');
}

async function detail(id, quiet) {
  const path = `/orders/${encodeURIComponent(id)}`;
  const [order, history] = await Promise.all([api('GET', path), api('GET', `${path}/history`)]);
  state.detail = id;
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
    timeline.append(el('li', { class: 'event' },
      el('strong', {}, event.type), ` v${event.version} · ${when(event.occurredAt)}`,
      el('pre', {}, JSON.stringify(event.data, null, 2))));
  }
  if (!quiet) $('#order-detail').scrollIntoView({ behavior: 'smooth', block: 'nearest' });
}

// ---- revenue ---------------------------------------------------------------------------------------------

const isoDay = (date) => date.toISOString().slice(0, 10);

async function revenue() {
  if (!$('#to').value) $('#to').value = isoDay(new Date());
  if (!$('#from').value) $('#from').value = isoDay(new Date(Date.now() - 29 * 86400000));
  const params = new URLSearchParams({ from: $('#from').value, to: $('#to').value });
  const currency = $('#currency').value.trim().toUpperCase();
  if (currency) params.set('currency', currency);
  const { days } = await api('GET', `/revenue/daily?${params}`);
  const body = $('#revenue-table tbody');
  body.replaceChildren();
  for (const d of days) {
    body.append(el('tr', {},
      el('td', {}, d.date), el('td', {}, d.currency),
      el('td', { class: 'num' }, money(d.grossRevenue)), el('td', { class: 'num' }, money(d.refunds)),
      el('td', { class: 'num' }, money(d.netRevenue)), el('td', { class: 'num' }, d.paidOrders),
      el('td', { class: 'num' }, d.cancelledOrders)));
  }
  chart(days);
}

// A bar per day and currency (net revenue), drawn as inline SVG.
function chart(days) {
  const box = $('#chart');
  box.replaceChildren();
  if (days.length === 0) {
    box.append(el('p', { class: 'muted' }, 'No revenue in this range.'));
    return;
  }
  const ns = 'http://www.w3.org/2000/svg';
  const svg = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const width = 720, height = 240, left = 70, bottom = 40, top = 10;
  const max = Math.max(1, ...days.map((d) => Math.max(d.netRevenue, d.grossRevenue)));
  const step = (width - left) / days.length;
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', class: 'chart' });
  root.append(svg('title', {}, 'Net revenue per day'));
  for (let i = 0; i <= 4; i++) {
    const y = top + ((height - top - bottom) * i) / 4;
    root.append(svg('line', { x1: left, x2: width, y1: y, y2: y, class: 'grid' }));
    root.append(svg('text', { x: left - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, money((max * (4 - i)) / 4)));
  }
  days.forEach((d, i) => {
    const h = ((height - top - bottom) * Math.max(0, d.netRevenue)) / max;
    const w = Math.max(1, Math.min(48, step * 0.7));
    const x = left + i * step + (step - w) / 2;
    const bar = svg('rect', { x, y: height - bottom - h, width: w, height: h, class: 'bar' });
    bar.append(svg('title', {}, `${d.date} ${d.currency}: net ${money(d.netRevenue, d.currency)}`));
    root.append(bar);
    root.append(svg('text', { x: x + w / 2, y: height - bottom + 16, class: 'axis', 'text-anchor': 'middle' },
      `${d.date.slice(5)} ${d.currency}`));
  });
  box.append(root);
}

// ---- projections and parked events ------------------------------------------------------------------------

async function projections() {
  const [list, parked] = await Promise.all([api('GET', '/admin/projections'), api('GET', '/admin/parked')]);
  const body = $('#projection-table tbody');
  body.replaceChildren();
  for (const p of list) {
    body.append(el('tr', { 'data-projection': p.name },
      el('td', {}, p.name), el('td', {}, el('span', { class: `status ${p.status}` }, p.status)),
      el('td', { class: 'num' }, p.position), el('td', { class: 'num' }, Number(p.lagSeconds).toFixed(3)),
      el('td', { class: 'num' }, p.restarts), el('td', { class: 'num' }, p.parked),
      // The Streams bridge (distributed profile) has a row too, but no view to rebuild.
      el('td', {}, p.name === 'bridge' ? '' : el('button', { type: 'button', onclick: () => rebuild(p.name) }, 'Rebuild'))));
  }
  const parkedBody = $('#parked-table tbody');
  parkedBody.replaceChildren();
  if (parked.length === 0) parkedBody.append(el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'Nothing parked.')));
  for (const p of parked) {
    parkedBody.append(el('tr', { 'data-parked': p.id },
      el('td', {}, p.projection), el('td', {}, el('code', {}, p.event.orderId)),
      el('td', {}, `${p.event.type} v${p.event.version}`), el('td', { class: 'num' }, p.attempts),
      el('td', { class: 'error-text' }, p.error), el('td', {}, when(p.parkedAt)),
      el('td', { class: 'actions' },
        el('button', { type: 'button', class: 'replay', onclick: () => parkedAction('POST', p, 'replay') }, 'Replay'),
        el('button', { type: 'button', class: 'discard', onclick: () => parkedAction('DELETE', p, 'discard') }, 'Discard'))));
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
  try {
    await api('POST', `/admin/projections/${encodeURIComponent(name)}/rebuild`);
    notice(`Rebuilding ${name}: queries keep using the old view until the new one is complete.`, 'ok');
  } catch (error) {
    failed(error);
  }
  await projections().catch(failed);
}

// ---- wiring ----------------------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('#sign-in-form').addEventListener('submit', (e) => { e.preventDefault(); signIn($('#token').value); });
  $('#sign-out').addEventListener('click', () => signOut());
  document.querySelectorAll('#tabs button').forEach((b) => b.addEventListener('click', () => show(b.dataset.tab)));
  $('#search-form').addEventListener('submit', (e) => { e.preventDefault(); state.detail = null; $('#order-detail').hidden = true; search(true).catch(failed); });
  $('#more').addEventListener('click', () => search(false).catch(failed));
  $('#revenue-form').addEventListener('submit', (e) => { e.preventDefault(); revenue().catch(failed); });
  if (state.token) showSignedIn();
});
