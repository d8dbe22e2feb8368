// End-to-end test of the admin console in headless Chromium (playwright-core, Debian's /usr/bin/chromium).
// Run by tests/api/console.rs, which starts orderflow, seeds orders (one paid, one parked by the poison hook)
// and checks the server side afterwards. Input by env:
//   CONSOLE_URL      the service's base URL          ADMIN_TOKEN  an admin bearer token
//   PAID_ORDER       an order placed and paid        PAID_AMOUNT  its total (minor units)
//   POISON_ORDER     an order whose events are parked in both views
//   LIVE_ORDER       an id for an order this script places while the console watches
//   SCREENSHOT       where to write a screenshot of the page
//   CHART_SCREENSHOT where to write a screenshot of a 30-day, 3-currency revenue chart
//   ALICE_TOKEN      a customer token for alice   ALICE_ORDER  one of alice's orders   BOB_ORDER  one of bob's
//   PLAYWRIGHT_PREFIX the npm prefix where playwright-core is installed (scripts/services.sh: .services/console)
// Exits 0 when every check passed; otherwise prints the failed check and exits 1.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
// ESM ignores NODE_PATH: load playwright-core from the prefix it was installed in.
const { chromium } = createRequire(path.join(path.resolve(env('PLAYWRIGHT_PREFIX')), 'package.json'))('playwright-core');
const base = env('CONSOLE_URL');
const admin = env('ADMIN_TOKEN');
const paid = env('PAID_ORDER');
const paidAmount = Number(env('PAID_AMOUNT'));
const poison = env('POISON_ORDER');
const live = env('LIVE_ORDER');
const aliceToken = env('ALICE_TOKEN');
const aliceOrder = env('ALICE_ORDER');
const bobOrder = env('BOB_ORDER');
const LIVE_WAIT = 3500; // past the held response and at least one more 2 s refresh
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const post = (p, body) => fetch(`${base}${p}`, {
  method: 'POST', headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const step = (name) => console.log(`console e2e: ${name}`);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.setDefaultTimeout(15000);

  step('the page loads from the binary, with a strict CSP');
  const response = await page.goto(`${base}/console`);
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-security-policy'] || '', /script-src 'self'/);
  await page.waitForSelector('#sign-in:not([hidden])');

  step('a bad token is refused and the page stays signed out');
  await page.fill('#token', 'not-a-jwt');
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForSelector('#notice:not([hidden])');
  assert.match(await page.textContent('#notice'), /Unauthorized|token/i);
  assert.equal(await page.isVisible('#tabs'), false);

  step('sign in as admin');
  await page.fill('#token', admin);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForSelector('#tabs:not([hidden])');
  assert.match(await page.textContent('#who-name'), /\(admin\)/);

  step('orders list shows the seeded paid order');
  await page.waitForSelector(`#results tr[data-order="${paid}"]`);
  assert.match(await page.textContent(`#results tr[data-order="${paid}"]`), /paid/);

  step('a text search narrows the list, and a new matching order appears without another click');
  await page.fill('#q', 'zeppelin');
  await page.click('#search-form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#search-summary').textContent.startsWith('0 shown'));
  const placed = await fetch(`${base}/orders`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ orderId: live, customerId: 'c-live', currency: 'EUR',
      items: [{ sku: 'ZP-1', name: 'Zeppelin model', quantity: 1, unitPrice: 4200 }] }),
  });
  assert.equal(placed.status, 201);
  await page.waitForSelector(`#results tr[data-order="${live}"]`, { timeout: 20000 });
  assert.equal(await page.locator('#results tbody tr').count(), 1);

  step("an order's timeline comes from its history");
  await page.fill('#q', '');
  await page.click('#search-form button[type=submit]');
  await page.click(`#results tr[data-order="${paid}"]`);
  await page.waitForSelector('#order-detail:not([hidden])');
  await page.waitForFunction((id) => document.querySelector('#detail-id').textContent === id, paid);
  const timeline = await page.locator('#timeline li strong').allTextContents();
  assert.deepEqual(timeline, ['OrderPlaced', 'PaymentConfirmed']);
  assert.equal(await page.textContent('#detail-id'), paid);
  assert.equal(await page.getAttribute('#results tr.selected', 'data-order'), paid, 'the selected row is highlighted');

  step('the timeline is formatted like the rest: amounts with their currency, times in UTC, no raw JSON');
  const events = await page.locator('#timeline li').allTextContents();
  const amount = `${(paidAmount / 100).toFixed(2)} EUR`;
  assert.ok(events[0].includes(amount) && events[1].includes(amount), events.join(' | '));
  assert.ok(events.every((e) => /\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ/.test(e) && !/[{"]/.test(e)), events.join(' | '));
  assert.ok(await page.locator('#order-detail').isVisible() && await page.locator('#order-detail').evaluate(
    (d) => d.getBoundingClientRect().top < window.innerHeight), 'the detail is in view');

  step('revenue: a chart per currency and the table hold the payment');
  await page.click('[data-tab="revenue"]');
  await page.waitForSelector('#chart .chart-panel[data-currency="EUR"] .uplot canvas');
  const gross = await page.locator('#revenue-table tbody tr td:nth-child(3)').allTextContents();
  const total = gross.reduce((sum, text) => sum + Math.round(Number.parseFloat(text) * 100), 0);
  assert.ok(total >= paidAmount, `gross revenue ${total} < ${paidAmount}`);
  assert.match(await page.textContent('#chart .chart-panel[data-currency="EUR"] .u-legend'), /Gross[\s\S]*Net/);

  step('the revenue tab refreshes: a payment in another currency gets its own chart without a click');
  const gbp = `${live}-gbp`;
  assert.equal((await post('/orders', { orderId: gbp, customerId: 'c-live', currency: 'GBP',
    items: [{ sku: 'TEA-1', name: 'Tea tin', quantity: 1, unitPrice: 900 }] })).status, 201);
  assert.equal((await post(`/orders/${gbp}/confirm-payment`, { paymentId: `pay-${gbp}`, amount: 900 })).status, 200);
  await page.waitForSelector('#chart .chart-panel[data-currency="GBP"] .uplot canvas', { timeout: 20000 });

  step('a 30-day, 3-currency chart: a panel per currency, gaps for quiet days (screenshot)');
  const end = new Date(Date.UTC(2026, 2, 30));
  const day = (i) => new Date(end.getTime() - (29 - i) * 86400000).toISOString().slice(0, 10);
  const synthetic = [];
  for (let i = 0; i < 30; i++) {
    for (const [currency, scale, quiet] of [['EUR', 120000, 7], ['GBP', 40000, 4], ['USD', 900000, 5]]) {
      if (i % quiet === 3) continue; // a day without activity: left out, as the API does
      const grossRevenue = Math.round(scale * (1 + Math.sin(i / 3) * 0.5 + (i % 5) / 10));
      const refunds = i % 6 === 0 ? Math.round(grossRevenue * 0.4) : 0;
      synthetic.push({ date: day(i), currency, grossRevenue, refunds, netRevenue: grossRevenue - refunds,
        paidOrders: 3 + (i % 4), cancelledOrders: refunds ? 1 : 0 });
    }
  }
  await page.route('**/revenue/daily?**', (route) => route.fulfill({
    status: 200, contentType: 'application/json', body: JSON.stringify({ days: synthetic }),
  }));
  await page.fill('#from', day(0));
  await page.fill('#to', day(29));
  await page.click('#revenue-form button[type=submit]');
  await page.waitForFunction(() => ['EUR', 'GBP', 'USD'].every(
    (c) => document.querySelector(`#chart .chart-panel[data-currency="${c}"] .uplot canvas`)));
  assert.equal(await page.locator('#chart .chart-panel').count(), 3);
  await sleep(300);
  await page.locator('#chart').screenshot({ path: process.env.CHART_SCREENSHOT });

  step("366 days (the API's limit) still draw, with month labels");
  const yearStart = new Date(end.getTime() - 365 * 86400000).toISOString().slice(0, 10);
  await page.fill('#from', yearStart);
  await page.click('#revenue-form button[type=submit]');
  await page.waitForFunction((from) => document.querySelector('#revenue-summary').textContent.startsWith(from), yearStart);
  assert.equal(await page.locator('#chart .chart-panel .uplot').count(), 3);
  if (process.env.YEAR_SCREENSHOT) await page.locator('#chart').screenshot({ path: process.env.YEAR_SCREENSHOT });
  await page.unroute('**/revenue/daily?**');
  await page.fill('#from', '');
  await page.fill('#to', '');

  step('projections: status, lag and the parked events of the poisoned order');
  await page.click('[data-tab="projections"]');
  await page.waitForSelector('#projection-table tr[data-projection="search"]');
  await page.waitForSelector('#projection-table tr[data-projection="revenue"]');
  const all = page.locator('#parked-table tr[data-parked]');
  const rows = page.locator('#parked-table tr[data-parked]:has(button.replay)');
  await page.waitForFunction((id) => [...document.querySelectorAll('#parked-table tr[data-parked]')]
    .filter((r) => r.textContent.includes(id)).length >= 4, poison);
  const before = await all.count();

  step('replay and discard appear only on the first parked event of an order');
  assert.equal(await rows.count(), 2, 'one head per view');
  assert.equal(await page.locator('#parked-table tr[data-parked] .waiting').count(), before - 2);
  for (const text of await rows.allTextContents()) assert.match(text, /OrderPlaced v1/);

  step('replay of a still-poisoned event fails visibly and keeps it parked');
  await rows.first().locator('button.replay').click();
  await page.waitForFunction(() => /failed again/i.test(document.querySelector('#notice:not([hidden])')?.textContent));
  assert.equal(await all.count(), before);

  step('discard removes one parked event (after a confirmation)');
  page.once('dialog', (dialog) => dialog.accept());
  await rows.first().locator('button.discard').click();
  await page.waitForFunction((n) => document.querySelectorAll('#parked-table tr[data-parked]').length === n - 1, before);

  step('rebuild asks first, then shows its progress and cannot be started twice');
  let asked = '';
  page.once('dialog', (dialog) => { asked = dialog.message(); dialog.dismiss(); });
  await page.click('#projection-table tr[data-projection="search"] button.rebuild');
  await sleep(300);
  assert.match(asked, /Rebuild the search view/);
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('#projection-table tr[data-projection="search"] button.rebuild');
  await page.waitForFunction(() => /Rebuilding search/.test(document.querySelector('#notice')?.textContent));
  // Either it is still running (disabled, with position/target) or it already finished (enabled again).
  const cell = page.locator('#projection-table tr[data-projection="search"]');
  if (await cell.locator('progress').count()) {
    assert.ok(await cell.locator('button.rebuild').isDisabled());
    assert.match(await cell.textContent(), /\d+ \/ \d+/);
  }

  step('the audit log lists the discard and the rebuild');
  await page.click('[data-tab="audit"]');
  await page.waitForSelector('#audit-table tr[data-audit]');
  const audit = (await page.locator('#audit-table tbody').textContent());
  assert.match(audit, /parked\.discard/);
  assert.match(audit, /parked\.replay/);
  await page.waitForFunction(() => /projection\.rebuild/.test(document.querySelector('#audit-table tbody').textContent));

  step("sign-out clears everything: alice, in the same tab, never sees bob's order nor fetches it");
  await page.click('[data-tab="orders"]');
  await page.fill('#customer', 'bob');
  await page.click('#search-form button[type=submit]');
  await page.click(`#results tr[data-order="${bobOrder}"]`);
  await page.waitForFunction((id) => document.querySelector('#detail-id').textContent === id, bobOrder);
  // Hold bob's next refresh in flight so that its answer arrives after the sign-out.
  await page.route(`**/orders/${bobOrder}**`, async (route) => { await sleep(1500); await route.continue().catch(() => {}); });
  await page.waitForRequest((r) => r.url().includes(bobOrder));
  await sleep(200); // the order and its history are asked for together: both are now held
  const requests = [];
  page.on('request', (r) => requests.push({ url: r.url(), auth: r.headers().authorization || '' }));
  await page.click('#sign-out');
  await page.waitForSelector('#sign-in:not([hidden])');
  assert.equal(await page.inputValue('#customer'), '', 'filters are cleared');
  await page.fill('#token', aliceToken);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForSelector(`#results tr[data-order="${aliceOrder}"]`);
  assert.match(await page.textContent('#who-name'), /alice \(customer\)/);
  await sleep(LIVE_WAIT);
  assert.equal(await page.isVisible('#order-detail'), false, 'no order is open');
  assert.equal(await page.textContent('#detail-id'), '');
  assert.equal(await page.locator('#timeline li').count(), 0);
  assert.equal(await page.locator('#results tr.selected').count(), 0);
  const listed = await page.locator('#results tbody tr').evaluateAll((rs) => rs.map((r) => r.dataset.order));
  assert.ok(listed.length >= 1 && !listed.includes(bobOrder), listed.join(','));
  assert.equal(await page.textContent('body').then((t) => t.includes(bobOrder)), false, "bob's id is nowhere on the page");
  assert.deepEqual(requests.filter((r) => r.url.includes(bobOrder)), [], 'no request for bob\'s order after sign-out');
  assert.ok(requests.length > 0 && requests.every((r) => r.auth === '' || r.auth === `Bearer ${aliceToken}`),
    JSON.stringify(requests.map((r) => r.auth.slice(0, 20))));
  assert.ok(await page.locator('[data-tab="revenue"]').isHidden() && await page.locator('[data-tab="audit"]').isHidden());
  await page.unroute(`**/orders/${bobOrder}**`);

  step('usable at 420 px: nothing wider than the screen, the selected order above the list');
  await page.setViewportSize({ width: 420, height: 800 });
  await page.click(`#results tr[data-order="${aliceOrder}"]`);
  await page.waitForFunction((id) => document.querySelector('#detail-id').textContent === id, aliceOrder);
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 420), 'no horizontal scrolling');
  const [detailTop, listTop] = await page.evaluate(() => ['#order-detail', '#results'].map(
    (s) => document.querySelector(s).getBoundingClientRect().top));
  assert.ok(detailTop < listTop && detailTop < 800, `detail at ${detailTop}, list at ${listTop}`);
  if (process.env.NARROW_SCREENSHOT) await page.screenshot({ path: process.env.NARROW_SCREENSHOT });
  await page.setViewportSize({ width: 1280, height: 900 });

  step('the page renders: a screenshot with real content');
  await page.waitForSelector('#results tbody tr');
  const png = await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  // Draw the screenshot into a canvas and count its colours: a blank or unstyled page has a handful.
  const colours = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = img.width;
    canvas.height = img.height;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, img.width, img.height).data;
    const seen = new Set();
    for (let i = 0; i < data.length; i += 4 * 7) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    return { width: img.width, height: img.height, distinct: seen.size };
  }, png.toString('base64'));
  assert.ok(colours.width >= 1200 && colours.height >= 600, JSON.stringify(colours));
  assert.ok(colours.distinct >= 30, `the screenshot has only ${colours.distinct} colours`);

  assert.deepEqual(consoleErrors.filter((e) => !/status of (401|409)/.test(e)), [], 'browser console errors');
  step('all checks passed');
} catch (error) {
  console.error(`console e2e FAILED: ${error.stack || error}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
