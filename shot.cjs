const { chromium } = require('/work/main/.services/console/node_modules/playwright-core');
(async () => {
  const b = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox','--disable-gpu','--disable-background-networking'] });
  const p = await b.newPage({ viewport: { width: 1280, height: 800 } });
  await p.goto('http://127.0.0.1:18099/console');
  await p.fill('#token', 'eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsInJvbGUiOiJhZG1pbiIsImV4cCI6MTc5NTU1NzUxNH0.ytdCWEC5ObxP8n9xixW9oqAqST7-foWDluToWRbKJuY'); await p.click('#sign-in-form button[type=submit]');
  await p.waitForSelector('#results tbody tr'); await p.click('#results tr[data-order="ord-2"]'); await p.waitForTimeout(500);
  await p.screenshot({ path: '/tmp/condemo/orders.png' });
  await p.click('[data-tab="revenue"]'); await p.waitForSelector('#chart svg'); await p.screenshot({ path: '/tmp/condemo/revenue.png' });
  await p.click('[data-tab="projections"]'); await p.waitForSelector('#parked-table tr[data-parked]'); await p.screenshot({ path: '/tmp/condemo/projections.png' });
  await b.close();
})();
