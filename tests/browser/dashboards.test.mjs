// End-to-end tests of the web dashboards in headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core). See README.md for the
// environment variables; without ALLOT_BROWSER_URL the tests start the mock
// server of this folder and use its tokens.

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.join(HERE, 'artifacts');
const MSG_AUTH = 'Your token has expired or is invalid — paste a new one';
const MSG_DENIED = 'No such tenant, or you may not see it';
const CSV_HEADER = 'tenant_id,period,metric,unit,segment_start,segment_end,tier_from,tier_to,quantity,unit_price,amount,kind,adjusts,dimensions';
// How long to wait for data that a live server (`allot demo`) is still producing.
const SETTLE_MS = Number(process.env.ALLOT_SETTLE_MS || 90_000);
/** The demo's price book with every price doubled, as a finance person would
 * paste it into the preview. */
const DOUBLED_PRICE_BOOK = [
  ['compute_seconds', '0.0800'], ['egress_bytes', '0.18'], ['storage_bytes', '0.046'],
].map(([m, p]) => `[[rates]]\nmetric = "${m}"\neffective_from = "2026-01-01"\nunit_price = "${p}"\n`).join('\n');

// axe-core, evaluated in each page through the browser's debugging protocol (so the
// dashboards' Content-Security-Policy, which allows no injected script, still holds).
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
// The WCAG 2.0, 2.1 and 2.2 success criteria of levels A and AA that axe checks.
const WCAG_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'];

let cfg;
let browser;
let mock;
const pageErrors = [];

function claimsOf(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  } catch {
    return {};
  }
}

/** The finance or tenant token with its payload's `exp` moved into the past: the
 * signature no longer matches, so any server answers 401, as for an expired one. */
function tamperedExpired(token) {
  const [head, , sig] = token.split('.');
  const claims = { ...claimsOf(token), exp: Math.floor(Date.now() / 1000) - 3600 };
  return `${head}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${sig}`;
}

async function config() {
  const env = process.env;
  if (!env.ALLOT_BROWSER_URL) {
    const { startMockServer } = await import('./mock-server.mjs');
    mock = await startMockServer();
    return {
      url: mock.url,
      financeToken: mock.tokens.finance,
      tenantToken: mock.tokens.tenant,
      expiredToken: mock.tokens.expired,
      tenantId: mock.tenantId,
      otherTenantId: mock.otherTenantId,
      noisyTenantId: mock.noisyTenant,
      expectedTenants: mock.tenants,
      month: mock.month,
      closedMonth: mock.closedMonth,
      expectAlerts: true,
      source: 'mock',
    };
  }
  const need = ['ALLOT_FINANCE_TOKEN', 'ALLOT_TENANT_TOKEN', 'ALLOT_OTHER_TENANT_ID', 'ALLOT_NOISY_TENANT_ID', 'ALLOT_EXPECTED_TENANTS'];
  const missing = need.filter((k) => !env[k]);
  if (missing.length) throw new Error(`ALLOT_BROWSER_URL is set, so these are needed too: ${missing.join(', ')}`);
  return {
    url: env.ALLOT_BROWSER_URL.endsWith('/') ? env.ALLOT_BROWSER_URL : `${env.ALLOT_BROWSER_URL}/`,
    financeToken: env.ALLOT_FINANCE_TOKEN,
    tenantToken: env.ALLOT_TENANT_TOKEN,
    expiredToken: env.ALLOT_EXPIRED_TOKEN || tamperedExpired(env.ALLOT_FINANCE_TOKEN),
    tenantId: env.ALLOT_TENANT_ID || claimsOf(env.ALLOT_TENANT_TOKEN).tenant,
    otherTenantId: env.ALLOT_OTHER_TENANT_ID,
    noisyTenantId: env.ALLOT_NOISY_TENANT_ID,
    expectedTenants: env.ALLOT_EXPECTED_TENANTS.split(',').map((s) => s.trim()).filter(Boolean),
    month: env.ALLOT_MONTH || new Date().toISOString().slice(0, 7),
    closedMonth: env.ALLOT_CLOSED_MONTH || '',
    expectAlerts: env.ALLOT_EXPECT_ALERTS === '1',
    source: 'server',
  };
}

/** A fresh tab (its own sessionStorage) with `route` opened under `token`, in the
 * light theme unless `colorScheme` says `dark`. */
async function open(route, token, { viewport = { width: 1280, height: 900 }, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, acceptDownloads: true });
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${route}: ${e.message}`));
  // Console errors other than the browser's own line for a 4xx answer (a CSP
  // violation, an unexpected exception the page caught and logged).
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(`${route}: ${m.text()}`);
  });
  const sep = route.includes('?') ? '&' : '?';
  const hash = token ? `#${route}${sep}token=${encodeURIComponent(token)}` : `#${route}`;
  await page.goto(cfg.url + hash);
  return page;
}

/** Runs `fn(page)` and keeps a screenshot of the page when it throws. */
async function withPage(name, pagePromise, fn) {
  const page = await pagePromise;
  try {
    await fn(page);
  } catch (err) {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true }).catch(() => {});
    throw err;
  } finally {
    await page.context().close();
  }
}

/** GETs the API with a token from inside the page (same origin as the dashboards). */
function api(page, apiPath, token) {
  return page.evaluate(async ([p, t]) => {
    const res = await fetch(p, { headers: { Authorization: `Bearer ${t}`, Accept: 'application/json' } });
    return { status: res.status, body: await res.json().catch(() => null) };
  }, [new URL(apiPath, cfg.url).href, token]);
}

/** Waits until `check()` holds, reloading the page between tries (for a live demo). */
async function eventually(page, check, what) {
  const deadline = Date.now() + SETTLE_MS;
  let last;
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${SETTLE_MS} ms: ${last.message}`);
    await page.waitForTimeout(3000);
    await page.reload();
  }
}

/** The WCAG A/AA rules axe finds broken in the page as it is now, one line per
 * rule and element ("color-contrast: Elements must meet minimum color contrast
 * ratio thresholds at .badge-ok (contrast 3.82 …)"); empty when there is none. */
async function accessibilityViolations(page) {
  await page.evaluate(AXE_SOURCE);
  return page.evaluate(async (tags) => {
    const result = await window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    return result.violations.flatMap((v) => v.nodes.map((n) => {
      const why = (n.failureSummary || '').split('\n').slice(1).join(' ').trim();
      return `${v.id}: ${v.help} at ${n.target.join(' ')}${why ? ` (${why})` : ''}`;
    }));
  }, WCAG_TAGS);
}

/** "1,234.56 EUR" → "1234.56". */
const moneyText = (s) => s.trim().split(/\s+/)[0].replace(/,/g, '');

/** RFC 4180 CSV → rows of fields. */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i += 1; } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i += 1;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if (field !== '' || row.length) { row.push(field); rows.push(row); }
  return rows;
}

async function downloadText(page, testid) {
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 30_000 }),
    page.getByTestId(testid).click(),
  ]);
  const chunks = [];
  for await (const chunk of await download.createReadStream()) chunks.push(chunk);
  return { name: download.suggestedFilename(), text: Buffer.concat(chunks).toString('utf8') };
}

before(async () => {
  cfg = await config();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  console.log(`# browser tests against ${cfg.url} (${cfg.source}), month ${cfg.month}`);
});

after(async () => {
  await browser?.close();
  await mock?.close();
});

describe('tokens', () => {
  test('a token in the URL fragment is kept for the tab and removed from the address bar', { timeout: 60_000 }, async () => {
    await withPage('token-fragment', (async () => {
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${cfg.url}#token=${encodeURIComponent(cfg.financeToken)}`);
      return page;
    })(), async (page) => {
      await page.getByTestId('overview-table').waitFor();
      assert.ok(!page.url().includes('token='), `the address bar still holds the token: ${page.url()}`);
      assert.match(page.url(), /#\/overview$/);
      const stored = await page.evaluate(() => sessionStorage.getItem('allot.token'));
      assert.equal(stored, cfg.financeToken);
    });
  });

  test('an expired token shows the expired message and the token form', { timeout: 60_000 }, async () => {
    await withPage('expired-token', open('/overview', cfg.expiredToken), async (page) => {
      const msg = page.getByTestId('auth-message');
      await msg.waitFor();
      assert.equal((await msg.textContent()).trim(), MSG_AUTH);
      await page.getByTestId('token-form').waitFor();
      assert.equal(await page.getByTestId('tenant-row').count(), 0);
      assert.equal(await page.evaluate(() => sessionStorage.getItem('allot.token')), null, 'the bad token is forgotten');
      // Pasting a good token opens the dashboards.
      await page.getByLabel('Access token').fill(cfg.financeToken);
      await page.getByTestId('token-submit').click();
      await page.getByTestId('overview-table').waitFor();
    });
  });

  test('a malformed token shows the same message', { timeout: 60_000 }, async () => {
    await withPage('garbage-token', open('/overview', 'not-a-token'), async (page) => {
      const msg = page.getByTestId('auth-message');
      await msg.waitFor();
      assert.equal((await msg.textContent()).trim(), MSG_AUTH);
    });
  });
});

describe('overview', () => {
  test('lists exactly the expected tenants and flags the noisy one', { timeout: SETTLE_MS + 60_000 }, async () => {
    await withPage('overview', open('/overview', cfg.financeToken), async (page) => {
      await eventually(page, async () => {
        await page.getByTestId('overview-table').waitFor({ timeout: 15_000 });
        const ids = await page.getByTestId('tenant-row').evaluateAll((rows) => rows.map((r) => r.dataset.tenantId));
        assert.deepEqual([...ids].sort(), [...cfg.expectedTenants].sort());
        const noisy = page.locator(`[data-testid="tenant-row"][data-tenant-id="${cfg.noisyTenantId}"]`);
        assert.equal(await noisy.getByTestId('noisy-flag').count(), 1, `${cfg.noisyTenantId} is not flagged`);
      }, 'the overview listing the expected tenants with the noisy one flagged');

      // Every flag stands for a noisy_neighbour reason.
      const flagged = await page.locator('[data-testid="tenant-row"]:has([data-testid="noisy-flag"])')
        .evaluateAll((rows) => rows.map((r) => [r.dataset.tenantId, !!r.querySelector('[data-code="noisy_neighbour"]')]));
      assert.ok(flagged.length >= 1);
      for (const [id, hasReason] of flagged) assert.ok(hasReason, `${id} is flagged without the reason`);
      // Each row has a status badge.
      const badges = await page.getByTestId('status-badge').evaluateAll((b) => b.map((x) => x.dataset.status));
      assert.equal(badges.length, cfg.expectedTenants.length);
      for (const s of badges) assert.ok(['ok', 'warning', 'critical'].includes(s), s);
    });
  });

  test('sorts by a clicked column header and filters by the search box', { timeout: 60_000 }, async () => {
    await withPage('overview-sort', open('/overview', cfg.financeToken), async (page) => {
      const table = page.getByTestId('overview-table');
      await table.waitFor();
      const ids = () => page.getByTestId('tenant-row').evaluateAll((rows) => rows.map((r) => r.dataset.tenantId));
      await table.getByTestId('sort-tenant').click();
      const asc = await ids();
      assert.deepEqual(asc, [...asc].sort((a, b) => a.localeCompare(b)));
      assert.equal(await table.locator('th:has([data-testid="sort-tenant"])').getAttribute('aria-sort'), 'ascending');
      await table.getByTestId('sort-tenant').click();
      assert.deepEqual(await ids(), [...asc].reverse());

      await table.getByTestId('sort-mtd_cost').click();
      const costs = await page.locator('[data-testid="tenant-row"] td:nth-last-child(2)').allTextContents();
      const values = costs.map((c) => Number(moneyText(c)));
      assert.deepEqual(values, [...values].sort((a, b) => a - b), 'cost ascending');

      await page.getByTestId('filter-input').fill(cfg.noisyTenantId);
      const filtered = await ids();
      assert.ok(filtered.includes(cfg.noisyTenantId));
      for (const id of filtered) assert.ok(id.includes(cfg.noisyTenantId), id);
      await page.getByTestId('filter-input').fill('no-tenant-is-called-this');
      assert.equal(await page.getByTestId('tenant-row').count(), 0);
    });
  });
});

describe('tenant page', () => {
  test('a tenant token lands on its own page, with charts, quota bars and the invoice', { timeout: SETTLE_MS + 60_000 }, async () => {
    await withPage('tenant-page', open('/', cfg.tenantToken), async (page) => {
      await page.getByTestId('tenant-title').waitFor();
      assert.match(page.url(), new RegExp(`#/tenant/${encodeURIComponent(cfg.tenantId)}$`));
      assert.equal(await page.getByTestId('nav-overview').count(), 0, 'a tenant sees no overview link');

      if (cfg.month !== new Date().toISOString().slice(0, 7)) {
        await page.evaluate((m) => { location.hash += `?month=${m}`; }, cfg.month);
      }
      await eventually(page, async () => {
        await page.getByTestId('metric-usage').first().waitFor({ timeout: 15_000 });
        const daily = page.locator('[data-testid^="chart-daily-"] svg');
        const hourly = page.locator('[data-testid^="chart-hourly-"] svg');
        assert.ok(await daily.count() >= 1, 'no daily chart');
        assert.equal(await hourly.count(), await daily.count(), 'a daily and an hourly chart per metric');
        assert.ok(await page.locator('[data-testid^="chart-daily-"] [data-testid="chart-point"]').count() > 0, 'daily charts have no data point');
        assert.ok(await page.locator('[data-testid^="chart-hourly-"] [data-testid="chart-point"]').count() > 0, 'hourly charts have no data point');
      }, 'the tenant charts having data points');
      // Charts have axes with labels.
      const ticks = await page.locator('[data-testid^="chart-daily-"] .axis-x text').count();
      assert.ok(ticks >= 2, 'x axis labels');
      assert.ok(await page.locator('[data-testid^="chart-daily-"] .axis-y text').count() >= 2, 'y axis labels');

      // Quota bars, reasons and status as the API's health answer says. The demo's
      // traffic is live, so quota use moves between the page's load and the API
      // call: read the page, ask the API at once, and reload until both agree.
      await eventually(page, async () => {
        await page.getByTestId('tenant-status').waitFor({ timeout: 15_000 });
        const health = await api(page, `v1/tenants/${encodeURIComponent(cfg.tenantId)}/health`, cfg.tenantToken);
        assert.equal(health.status, 200);
        const quotas = health.body.quota_use || [];
        assert.equal(await page.getByTestId('quota-bar').count(), quotas.length);
        if (quotas.length === 0) await page.getByTestId('quota-none').waitFor();
        for (const q of quotas) {
          const bar = page.locator(`[data-testid="quota-bar"][data-metric="${q.metric}"]`);
          assert.equal(await bar.getAttribute('data-percent'), q.percent);
          const width = await bar.locator('.fill').evaluate((e) => e.getBoundingClientRect().width);
          if (Number(q.percent) > 0) assert.ok(width > 0, `${q.metric} bar is empty`);
        }
        const codes = await page.getByTestId('reason').evaluateAll((r) => r.map((x) => x.dataset.code));
        assert.deepEqual(codes, (health.body.reasons || []).map((r) => r.code));
        assert.equal(await page.getByTestId('tenant-status').getAttribute('data-status'), health.body.status);
      }, 'the page showing the API\'s health');

      // The month's invoice, with the API's total. The demo's traffic is live, so the
      // month's total moves between the page's load and the API call: read the page,
      // ask the API at once, and reload until both saw the same data.
      await eventually(page, async () => {
        await page.getByTestId('invoice-table').waitFor({ timeout: 15_000 });
        const shown = moneyText(await page.getByTestId('invoice-total').textContent());
        const lines = await page.getByTestId('invoice-line').count();
        const inv = await api(page, `v1/tenants/${encodeURIComponent(cfg.tenantId)}/invoices/${cfg.month}`, cfg.tenantToken);
        assert.equal(inv.status, 200);
        assert.equal(shown, inv.body.total);
        assert.equal(lines, inv.body.lines.length);
        // Each prepaid credit draw is a line naming its grant, summed in the footer.
        const draws = inv.body.lines.filter((l) => l.kind === 'credit');
        const labels = await page.getByTestId('invoice-line').evaluateAll((r) => r.map((x) => x.querySelector('th').textContent));
        for (const d of draws) assert.ok(labels.includes(`Credit · ${d.adjusts}`), `no line for grant ${d.adjusts}: ${labels}`);
        assert.equal(await page.getByTestId('invoice-credits').count(), inv.body.credits == null ? 0 : 1);
        if (inv.body.credits != null) {
          assert.equal(moneyText(await page.getByTestId('invoice-credits').locator('td').textContent()), inv.body.credits);
        }
        if (cfg.source === 'mock') assert.ok(draws.length > 0, 'the mock\'s tenant draws on its credit');
      }, 'the page showing the API\'s invoice');
    });
  });

  test('a finance token opens any tenant page', { timeout: 60_000 }, async () => {
    await withPage('tenant-page-finance', open(`/tenant/${encodeURIComponent(cfg.noisyTenantId)}`, cfg.financeToken), async (page) => {
      await page.getByTestId('tenant-title').waitFor();
      await page.getByTestId('usage-section').locator('[data-testid="metric-usage"], [data-testid="usage-none"]').first().waitFor();
      assert.equal(await page.getByTestId('denied-message').count(), 0);
    });
  });

  test('a tenant token cannot open another tenant\'s page', { timeout: 60_000 }, async () => {
    const other = cfg.otherTenantId;
    await withPage('tenant-denied', open(`/tenant/${encodeURIComponent(other)}`, cfg.tenantToken), async (page) => {
      const denied = page.getByTestId('denied-message');
      await denied.waitFor();
      assert.equal((await denied.textContent()).trim(), MSG_DENIED);
      for (const id of ['tenant-title', 'tenant-status', 'quota-bar', 'chart-point', 'invoice-table', 'reason']) {
        assert.equal(await page.getByTestId(id).count(), 0, `${id} is shown`);
      }
      const text = await page.locator('main').textContent();
      assert.ok(!/EUR|USD|vCPU|GiB/.test(text), `the page shows data: ${text}`);
    });
  });

  test('a missing tenant shows the same message', { timeout: 60_000 }, async () => {
    await withPage('tenant-missing', open('/tenant/no-such-tenant-x9', cfg.financeToken), async (page) => {
      const denied = page.getByTestId('denied-message');
      await denied.waitFor();
      assert.equal((await denied.textContent()).trim(), MSG_DENIED);
    });
  });

  test('a tenant token cannot open the finance page', { timeout: 60_000 }, async () => {
    await withPage('finance-denied', open(`/finance/${cfg.month}`, cfg.tenantToken), async (page) => {
      await page.getByTestId('denied-message').waitFor();
      assert.equal(await page.getByTestId('chargeback-row').count(), 0);
    });
  });
});

describe('alerts', () => {
  /** The alert rows of the page's table `testid`: [key, tenant, state] each. */
  const alertRows = (page, testid) => page.locator(`[data-testid="${testid}"] [data-testid="alert-row"]`)
    .evaluateAll((rows) => rows.map((r) => [r.dataset.key, r.dataset.tenantId, r.dataset.state]));

  test('the overview shows the alerts firing now, as the API lists them', { timeout: SETTLE_MS + 60_000 }, async () => {
    await withPage('overview-alerts', open('/overview', cfg.financeToken), async (page) => {
      let firing;
      await eventually(page, async () => {
        await page.getByTestId('alerts-section')
          .locator('[data-testid="firing-alerts"], [data-testid="alerts-none"]').first().waitFor({ timeout: 15_000 });
        const answer = await api(page, 'v1/alerts?state=firing&current=true', cfg.financeToken);
        assert.equal(answer.status, 200);
        firing = answer.body.alerts;
        if (cfg.expectAlerts) assert.ok(firing.length > 0, 'no alert fires');
        assert.deepEqual(await alertRows(page, 'firing-alerts'), firing.map((a) => [a.key, a.tenant_id, 'firing']));
        if (firing.length === 0) assert.equal(await page.getByTestId('alerts-none').count(), 1);
      }, 'the overview showing the API\'s firing alerts');
      for (const a of firing) {
        const row = page.locator(`[data-testid="alert-row"][data-key="${a.key}"]`);
        assert.equal(await row.getByTestId('alert-delivery').count(), a.deliveries.length, `${a.key}: its deliveries`);
        const outcomes = await row.getByTestId('alert-delivery').evaluateAll((d) => d.map((x) => x.dataset.outcome));
        assert.deepEqual(outcomes, a.deliveries.map((d) => d.outcome));
        const links = await row.locator('a').count();
        assert.equal(links, a.tenant_id === '*' ? 0 : 1, `${a.key}: a link to its tenant's page`);
      }
      // A firing alert's link opens its tenant's page, whose history has it.
      const linked = firing.find((a) => a.tenant_id !== '*');
      if (!linked) return;
      await page.locator(`[data-testid="alert-row"][data-key="${linked.key}"] a`).click();
      await page.waitForURL(new RegExp(`#/tenant/${encodeURIComponent(linked.tenant_id)}$`));
      await page.locator(`[data-testid="alert-history"] [data-testid="alert-row"][data-key="${linked.key}"]`).waitFor();
    });
  });

  test('a tenant page shows its own alert history and nobody else\'s', { timeout: SETTLE_MS + 60_000 }, async () => {
    await withPage('tenant-alerts', open(`/tenant/${encodeURIComponent(cfg.tenantId)}`, cfg.tenantToken), async (page) => {
      await eventually(page, async () => {
        await page.getByTestId('alerts-section')
          .locator('[data-testid="alert-history"], [data-testid="alerts-none"]').first().waitFor({ timeout: 15_000 });
        const answer = await api(page, `v1/alerts?tenant=${encodeURIComponent(cfg.tenantId)}&limit=50`, cfg.tenantToken);
        assert.equal(answer.status, 200);
        const history = answer.body.alerts;
        if (cfg.expectAlerts) assert.ok(history.length > 0, `${cfg.tenantId} has no alert`);
        const rows = await alertRows(page, 'alert-history');
        assert.deepEqual(rows, history.map((a) => [a.key, a.tenant_id, a.state]));
        for (const [, tenant] of rows) assert.equal(tenant, cfg.tenantId);
        const states = await page.getByTestId('alert-state').evaluateAll((b) => b.map((x) => x.dataset.state));
        assert.deepEqual(states, history.map((a) => a.state));
      }, 'the tenant page showing the API\'s alert history');
      // Another tenant's alerts are not this token's to read.
      const other = await api(page, `v1/alerts?tenant=${encodeURIComponent(cfg.otherTenantId)}`, cfg.tenantToken);
      assert.equal(other.status, 404);
    });
  });
});

describe('finance page', () => {
  test('shows the chargeback and downloads its CSV with one total row per tenant', { timeout: SETTLE_MS + 90_000 }, async () => {
    await withPage('finance', open(`/finance/${cfg.month}`, cfg.financeToken), async (page) => {
      const billing = await api(page, `v1/billing/${cfg.month}`, cfg.financeToken);
      assert.equal(billing.status, 200);
      await eventually(page, async () => {
        await page.getByTestId('chargeback-table').waitFor({ timeout: 15_000 });
        assert.ok(await page.getByTestId('chargeback-row').count() > 0, 'no invoice row');
      }, 'the chargeback listing invoices');
      // Lines open on demand.
      await page.getByTestId('toggle-lines').first().click();
      await page.getByTestId('chargeback-invoice').first().waitFor();

      // The demo's traffic is live, so totals move between the page's load and the
      // download: read the table, download at once, and reload until both saw the
      // same data.
      let csv;
      let perTenant;
      await eventually(page, async () => {
        await page.getByTestId('chargeback-table').waitFor({ timeout: 15_000 });
        const rows = await page.getByTestId('chargeback-row').evaluateAll((r) => r.map((x) => [
          x.dataset.tenantId, x.querySelector('[data-testid="chargeback-total"]').textContent,
        ]));
        const shown = new Map(rows.map(([id, total]) => [id, moneyText(total)]));
        const { name, text } = await downloadText(page, 'download-billing');
        assert.equal(name, `billing-${cfg.month}.csv`);
        csv = parseCsv(text);
        assert.equal(csv[0].join(','), CSV_HEADER);
        const totals = csv.slice(1).filter((r) => r[2] === 'total');
        perTenant = new Map();
        for (const r of totals) perTenant.set(r[0], (perTenant.get(r[0]) ?? 0) + 1);
        for (const [id, n] of perTenant) assert.equal(n, 1, `${id} has ${n} total rows`);
        assert.deepEqual([...perTenant.keys()].sort(), [...shown.keys()].sort(), 'the CSV and the table list the same tenants');
        for (const r of totals) {
          assert.equal(r[1], cfg.month);
          assert.equal(r[10], shown.get(r[0]), `${r[0]}: total in the CSV and on the page`);
        }
      }, 'the page and its CSV showing the same totals');
      for (const kind of ['subtotal', 'discount']) {
        assert.equal(csv.slice(1).filter((r) => r[2] === kind).length, perTenant.size, `${kind} rows`);
      }
      assert.ok(csv.slice(1).every((r) => r.length === 14), 'every row has 14 fields');
      assert.equal(perTenant.size, (billing.body.invoices || []).length);
    });
  });

  test('shows the allocation, or says that there is none', { timeout: 60_000 }, async () => {
    await withPage('allocation', open(`/finance/${cfg.month}`, cfg.financeToken), async (page) => {
      const answer = await api(page, `v1/allocation/${cfg.month}`, cfg.financeToken);
      if (answer.status === 404) {
        await page.getByTestId('allocation-missing').waitFor();
        assert.ok(await page.getByTestId('download-allocation').isDisabled());
        return;
      }
      assert.equal(answer.status, 200);
      const rows = answer.body.rows || [];
      if (rows.length === 0) return page.getByTestId('allocation-none').waitFor();
      await page.getByTestId('allocation-table').waitFor();
      assert.equal(await page.getByTestId('allocation-row').count(), rows.length);
      const { name, text } = await downloadText(page, 'download-allocation');
      assert.equal(name, `allocation-${cfg.month}.csv`);
      const csv = parseCsv(text);
      assert.equal(csv[0].join(','), 'period,pool,tenant_id,driver_quantity,share,amount');
      assert.equal(csv.length - 1, rows.length);
    });
  });

  test('previews the month under a proposed price book and downloads it', { timeout: 90_000 }, async () => {
    await withPage('preview', open(`/finance/${cfg.month}`, cfg.financeToken), async (page) => {
      await page.getByTestId('preview-section').waitFor();
      // A malformed book is refused with the server's message.
      await page.getByTestId('preview-book').fill('[[rates]\n');
      await page.getByTestId('preview-run').click();
      await page.getByTestId('preview-error').waitFor();
      assert.match(await page.getByTestId('preview-error').innerText(), /syntax/);
      // Every price doubled: the page shows what the API answers, row for row.
      const book = DOUBLED_PRICE_BOOK;
      await page.getByTestId('preview-book').fill(book);
      await page.getByTestId('preview-run').click();
      // The demo keeps ingesting, so figures move between two requests; the
      // tenants do not. Each shown difference is an increase.
      const answer = await page.evaluate(async ({ month, token, body }) => {
        const res = await fetch(`v1/preview?month=${month}`, { method: 'POST', body, headers: { Authorization: `Bearer ${token}` } });
        return { status: res.status, body: await res.json() };
      }, { month: cfg.month, token: cfg.financeToken, body: book });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      const rows = answer.body.rows;
      if (rows.length === 0) return page.getByTestId('preview-none').waitFor();
      await page.getByTestId('preview-table').waitFor();
      assert.equal(await page.getByTestId('preview-row').count(), rows.length);
      for (const r of rows) {
        const shown = await page.locator(`[data-testid="preview-row"][data-tenant-id="${r.tenant_id}"] [data-testid="preview-difference"]`).innerText();
        const difference = Number(shown.replace(/[^0-9.-]/g, ''));
        assert.ok(Number.isFinite(difference) && difference >= 0, `${r.tenant_id}: ${shown}`);
      }
      const { name, text } = await downloadText(page, 'download-preview');
      assert.equal(name, `preview-${cfg.month}.csv`);
      const csv = parseCsv(text);
      assert.equal(csv[0].join(','), 'tenant_id,period,actual_total,proposed_total,difference');
      assert.deepEqual(csv.slice(1).map((r) => r[0]).sort(), rows.map((r) => r.tenant_id).sort());
    });
  });

  test('the month picker moves to another month', { timeout: 60_000 }, async () => {
    await withPage('month-picker', open(`/finance/${cfg.month}`, cfg.financeToken), async (page) => {
      await page.getByTestId('month-input').waitFor();
      assert.equal(await page.getByTestId('month-input').inputValue(), cfg.month);
      await page.getByTestId('month-prev').click();
      const [y, m] = cfg.month.split('-').map(Number);
      const prev = new Date(Date.UTC(y, m - 2, 1)).toISOString().slice(0, 7);
      await page.waitForURL(new RegExp(`#/finance/${prev}$`));
      await page.locator('[data-testid="chargeback-table"], [data-testid="chargeback-none"], [data-testid="billing-error"]').first().waitFor();
      assert.equal(await page.getByTestId('month-input').inputValue(), prev);
    });
  });
});

describe('period close', () => {
  test('an open month is a draft on the finance and tenant pages', { timeout: SETTLE_MS + 60_000 }, async () => {
    let closed = false;
    await withPage('open-month', open(`/finance/${cfg.month}`, cfg.financeToken), async (page) => {
      const answer = await api(page, 'v1/closings', cfg.financeToken);
      assert.equal(answer.status, 200);
      closed = (answer.body.closings || []).some((c) => c.month === cfg.month);
      if (closed) return;
      await page.locator('[data-testid="close-status"][data-status="open"]').waitFor();
      assert.equal(await page.getByTestId('close-badge').textContent(), 'open');
    });
    if (closed) return;
    await withPage('draft-invoice', open(`/tenant/${encodeURIComponent(cfg.tenantId)}?month=${cfg.month}`, cfg.tenantToken), async (page) => {
      await page.locator('[data-testid="invoice-status"][data-status="draft"]').waitFor({ timeout: SETTLE_MS });
      assert.equal(await page.getByTestId('certificate-section').count(), 0, 'no certificate for an open month');
    });
  });

  test('a closed month shows its revision and the margin per tenant', { timeout: 60_000 }, async (t) => {
    if (!cfg.closedMonth) return t.skip('no closed month (set ALLOT_CLOSED_MONTH)');
    await withPage('closed-month', open(`/finance/${cfg.closedMonth}`, cfg.financeToken), async (page) => {
      const closings = await api(page, 'v1/closings', cfg.financeToken);
      const newest = (closings.body.closings || []).filter((c) => c.month === cfg.closedMonth).at(-1);
      assert.ok(newest, 'the closings list the month');
      await page.locator('[data-testid="close-status"][data-status="closed"]').waitFor();
      assert.match(await page.getByTestId('close-status').textContent(), new RegExp(`revision ${newest.revision}`));
      const margin = await api(page, `v1/margin/${cfg.closedMonth}`, cfg.financeToken);
      if (margin.status === 404) return page.getByTestId('margin-missing').waitFor();
      assert.equal(margin.body.status, 'final');
      await page.getByTestId('margin-chart').waitFor();
      assert.equal(await page.getByTestId('margin-bar').count(), margin.body.rows.length);
      assert.equal(await page.getByTestId('margin-row').count(), margin.body.rows.length);
      const shown = await page.getByTestId('margin-row').evaluateAll((rows) => rows.map((r) => r.dataset.tenantId));
      assert.deepEqual(shown, margin.body.rows.map((r) => r.tenant_id));
    });
  });

  test('a closed month\'s invoice is final, with its certificate', { timeout: 60_000 }, async (t) => {
    if (!cfg.closedMonth) return t.skip('no closed month (set ALLOT_CLOSED_MONTH)');
    await withPage('final-invoice', open(`/tenant/${encodeURIComponent(cfg.tenantId)}?month=${cfg.closedMonth}`, cfg.tenantToken), async (page) => {
      const inv = await api(page, `v1/tenants/${encodeURIComponent(cfg.tenantId)}/invoices/${cfg.closedMonth}`, cfg.tenantToken);
      assert.equal(inv.body.status, 'final');
      await page.locator('[data-testid="invoice-status"][data-status="final"]').waitFor();
      assert.match(await page.getByTestId('invoice-status').textContent(), new RegExp(`revision ${inv.body.revision}`));
      const cert = await api(page, `v1/tenants/${encodeURIComponent(cfg.tenantId)}/invoices/${cfg.closedMonth}/certificate`, cfg.tenantToken);
      assert.equal(cert.status, 200);
      await page.getByTestId('certificate-table').waitFor();
      assert.equal(await page.getByTestId('certificate-row').count(), cert.body.days.length);
      const digests = await page.getByTestId('certificate-row').evaluateAll((rows) => rows.map((r) => r.dataset.digest));
      assert.deepEqual(digests, cert.body.days.map((d) => d.digest));
      // Another tenant's certificate is not there for this token.
      const other = await api(page, `v1/tenants/${encodeURIComponent(cfg.otherTenantId)}/invoices/${cfg.closedMonth}/certificate`, cfg.tenantToken);
      assert.equal(other.status, 404);
    });
  });
});

/** Waits until `page` has drawn everything it loads (no "Loading…" line left). */
async function settled(page) {
  const deadline = Date.now() + SETTLE_MS;
  while (await page.locator('.loading').count() > 0) {
    if (Date.now() > deadline) throw new Error(`the page was still loading after ${SETTLE_MS} ms`);
    await page.waitForTimeout(200);
  }
}

/** Runs a what-if preview of `book` on the finance page and waits for its answer. */
async function runPreview(page, book, answer) {
  await page.getByTestId('preview-section').waitFor({ timeout: SETTLE_MS });
  await page.getByTestId('preview-book').fill(book);
  await page.getByTestId('preview-run').click();
  await page.locator(answer).first().waitFor({ timeout: SETTLE_MS });
}

// Every page and state the dashboards draw, each opened as a person would and
// checked by axe once it is drawn, in the light and the dark theme.
const ACCESSIBILITY_PAGES = [
  { name: 'sign-in form', route: () => '/', token: () => null, ready: (p) => p.getByTestId('token-form').waitFor() },
  { name: 'expired token', route: () => '/overview', token: () => cfg.expiredToken, ready: (p) => p.getByTestId('auth-message').waitFor() },
  {
    name: 'overview', route: () => '/overview', token: () => cfg.financeToken,
    ready: (p) => p.getByTestId('tenant-row').first().waitFor({ timeout: SETTLE_MS }),
  },
  {
    name: 'overview on a phone', route: () => '/overview', token: () => cfg.financeToken, viewport: { width: 390, height: 844 },
    ready: (p) => p.getByTestId('tenant-row').first().waitFor({ timeout: SETTLE_MS }),
  },
  {
    name: 'own tenant page', route: () => `/tenant/${encodeURIComponent(cfg.tenantId)}`, token: () => cfg.tenantToken,
    ready: async (p) => {
      await p.getByTestId('invoice-table').waitFor({ timeout: SETTLE_MS });
      await p.getByTestId('metric-usage').first().waitFor({ timeout: SETTLE_MS });
    },
  },
  {
    name: 'noisy tenant page', route: () => `/tenant/${encodeURIComponent(cfg.noisyTenantId)}`, token: () => cfg.financeToken,
    ready: (p) => p.getByTestId('reason').first().waitFor({ timeout: SETTLE_MS }),
  },
  {
    name: 'another tenant denied', route: () => `/tenant/${encodeURIComponent(cfg.otherTenantId)}`, token: () => cfg.tenantToken,
    ready: (p) => p.getByTestId('denied-message').waitFor(),
  },
  {
    name: 'finance page with invoice lines open', route: () => `/finance/${cfg.month}`, token: () => cfg.financeToken,
    ready: async (p) => {
      await p.getByTestId('chargeback-row').first().waitFor({ timeout: SETTLE_MS });
      await p.getByTestId('toggle-lines').first().click();
      await p.getByTestId('chargeback-invoice').first().waitFor();
    },
  },
  {
    name: 'finance page with a what-if preview', route: () => `/finance/${cfg.month}`, token: () => cfg.financeToken,
    ready: (p) => runPreview(p, DOUBLED_PRICE_BOOK, '[data-testid="preview-table"], [data-testid="preview-none"]'),
  },
  {
    name: 'finance page with a refused preview', route: () => `/finance/${cfg.month}`, token: () => cfg.financeToken,
    ready: (p) => runPreview(p, '[[rates]\n', '[data-testid="preview-error"]'),
  },
  {
    name: 'closed month', closed: true, route: () => `/finance/${cfg.closedMonth}`, token: () => cfg.financeToken,
    ready: (p) => p.locator('[data-testid="close-status"][data-status="closed"]').waitFor(),
  },
  {
    name: 'final invoice with its certificate', closed: true,
    route: () => `/tenant/${encodeURIComponent(cfg.tenantId)}?month=${cfg.closedMonth}`, token: () => cfg.tenantToken,
    ready: (p) => p.getByTestId('certificate-table').waitFor(),
  },
];

describe('accessibility (axe-core, WCAG 2 A and AA)', () => {
  for (const colorScheme of ['light', 'dark']) {
    for (const spec of ACCESSIBILITY_PAGES) {
      test(`${spec.name}, ${colorScheme} theme`, { timeout: SETTLE_MS + 60_000 }, async (t) => {
        if (spec.closed && !cfg.closedMonth) return t.skip('no closed month (set ALLOT_CLOSED_MONTH)');
        const name = `axe-${spec.name.replace(/\W+/g, '-')}-${colorScheme}`;
        await withPage(name, open(spec.route(), spec.token(), { viewport: spec.viewport, colorScheme }), async (page) => {
          await spec.ready(page);
          await settled(page);
          const violations = await accessibilityViolations(page);
          assert.deepEqual(violations, [], `${violations.length} accessibility violations:\n${violations.join('\n')}`);
        });
      });
    }
  }
});

describe('layout', () => {
  test('the overview and a tenant page fit a phone screen without page errors', { timeout: 60_000 }, async () => {
    await withPage('phone', open(`/tenant/${encodeURIComponent(cfg.tenantId)}`, cfg.financeToken, { viewport: { width: 390, height: 844 } }), async (page) => {
      await page.getByTestId('tenant-title').waitFor();
      await page.getByTestId('usage-section').locator('[data-testid="metric-usage"], [data-testid="usage-none"]').first().waitFor();
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 1, `the page is ${overflow}px wider than the screen`);
    });
    assert.deepEqual(pageErrors, [], 'JavaScript errors in the pages');
  });
});
