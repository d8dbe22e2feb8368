// End-to-end test of the admin console in headless Chromium (playwright-core, Debian's /usr/bin/chromium).
// Run by tests/api/console.rs, which starts orderflow, seeds orders (one paid, one parked by the poison hook)
// and checks the server side afterwards. Input by env:
//   CONSOLE_URL      the service's base URL          ADMIN_TOKEN  an admin bearer token
//   PAID_ORDER       an order placed and paid        PAID_AMOUNT  its total (minor units)
//   POISON_ORDER     an order whose events are parked in both views
//   LIVE_ORDER       an id for an order this script places while the console watches
//   SCREENSHOT       where to write a screenshot of the page
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
  const timeline = await page.locator('#timeline li strong').allTextContents();
  assert.deepEqual(timeline, ['OrderPlaced', 'PaymentConfirmed']);
  assert.equal(await page.textContent('#detail-id'), paid);

  step('revenue: a bar per day and the table hold the payment');
  await page.click('[data-tab="revenue"]');
  await page.waitForSelector('#chart svg rect.bar');
  const gross = await page.locator('#revenue-table tbody tr td:nth-child(3)').allTextContents();
  const total = gross.reduce((sum, text) => sum + Math.round(Number.parseFloat(text) * 100), 0);
  assert.ok(total >= paidAmount, `gross revenue ${total} < ${paidAmount}`);

  step('projections: status, lag and the parked events of the poisoned order');
  await page.click('[data-tab="projections"]');
  await page.waitForSelector('#projection-table tr[data-projection="search"]');
  await page.waitForSelector('#projection-table tr[data-projection="revenue"]');
  const rows = page.locator('#parked-table tr[data-parked]');
  await page.waitForFunction((id) => [...document.querySelectorAll('#parked-table tr[data-parked]')]
    .filter((r) => r.textContent.includes(id)).length >= 2, poison);
  const before = await rows.count();

  step('replay of a still-poisoned event fails visibly and keeps it parked');
  await rows.first().locator('button.replay').click();
  await page.waitForFunction(() => /failed again/i.test(document.querySelector('#notice:not([hidden])')?.textContent));
  assert.equal(await rows.count(), before);

  step('discard removes one parked event (after a confirmation)');
  page.once('dialog', (dialog) => dialog.accept());
  await rows.first().locator('button.discard').click();
  await page.waitForFunction((n) => document.querySelectorAll('#parked-table tr[data-parked]').length === n - 1, before);

  step('the page renders: a screenshot with real content');
  await page.click('[data-tab="orders"]');
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
