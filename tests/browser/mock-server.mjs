// A stand-in for `allot serve` while developing the dashboards: serves
// dashboards/web/ at `/` and canned, deterministic JSON of the API's shapes under
// /v1, with HS256 bearer tokens checked the way the real server does (signature,
// exp, iss, aud; tenant tokens see only their tenant, 404 otherwise; finance
// reports 403 for tenant tokens).
//
//   node tests/browser/mock-server.mjs [--port 8099]
//
// prints the dashboard URL with a finance token and a tenant token. The browser
// tests start it themselves when ALLOT_BROWSER_URL is not set.
//
// Figures are made up (floats, not the exact engine): the mock is for the pages'
// layout and behaviour, never for checking amounts.

import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const WEB_ROOT = path.resolve(HERE, '../../dashboards/web');
const SECRET = 'mock-secret-not-for-production';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const GIB = 1024 ** 3;

export const TENANTS = [
  'acme', 'blue-harbor', 'cobalt', 'dunmore', 'ember-labs', 'fjord', 'globex', 'helios',
  'initech', 'juniper', 'kestrel', 'lumen', 'meridian', 'nimbus', 'orion-ai', 'pinecone',
  'quasar', 'redwood', 'sable', 'tundra',
];
export const NOISY_TENANT = 'globex';
const STALE_TENANT = 'tundra';
const REJECTING_TENANT = 'ember-labs';
const DISCOUNTS = { acme: '10', meridian: '5' };
// Prepaid credit a tenant's invoice totals are drawn from each month (as far as
// the mock goes: each month draws afresh, no balance is carried).
const CREDITS = { acme: { id: 'welcome', amount: 25 } };
// Monthly quotas in raw units (seconds, bytes).
const QUOTAS = {
  acme: { compute_seconds: 1_700_000 },
  cobalt: { compute_seconds: 900_000, egress_bytes: 400 * GIB },
  helios: { egress_bytes: 150 * GIB },
  kestrel: { compute_seconds: 5_000_000 },
  quasar: { compute_seconds: 2_000_000 },
};
const METRICS = {
  compute_seconds: { unit: 'vCPU-hour', divisor: 3600, kind: 'counter' },
  egress_bytes: { unit: 'GiB', divisor: GIB, kind: 'counter' },
  storage_bytes: { unit: 'GiB-month', divisor: GIB, kind: 'gauge' },
};

// ---- tokens ------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** An HS256 JWT as `allot token` would mint (signed with the mock's secret). */
export function mintToken({ sub = 'dev', role, tenant, ttlSeconds = 3600, secret = SECRET }) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, role, iss: 'allot', aud: 'allot', iat: now, exp: now + ttlSeconds };
  if (tenant) claims.tenant = tenant;
  const payload = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}

function verify(token) {
  const parts = String(token || '').split('.');
  if (parts.length !== 3) return null;
  const [header, payload, sig] = parts;
  let head;
  let claims;
  try {
    head = JSON.parse(Buffer.from(header, 'base64url').toString());
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
  } catch {
    return null;
  }
  if (head.alg !== 'HS256') return null;
  const want = createHmac('sha256', SECRET).update(`${header}.${payload}`).digest('base64url');
  if (want !== sig) return null;
  if (claims.iss !== 'allot' || claims.aud !== 'allot') return null;
  if (typeof claims.exp !== 'number' || claims.exp * 1000 <= Date.now()) return null;
  if (!['tenant', 'finance', 'admin'].includes(claims.role)) return null;
  if (claims.role === 'tenant' && !claims.tenant) return null;
  return claims;
}

// ---- synthetic usage ------------------------------------------------------------

function hash(...parts) {
  let x = 2166136261;
  for (const ch of parts.join('|')) {
    x ^= ch.charCodeAt(0);
    x = Math.imul(x, 16777619) >>> 0;
  }
  return x / 2 ** 32;
}

/** Raw usage of a counter in the hour starting at `t` (0 when the tenant was silent). */
function hourly(tenant, metric, t, now) {
  if (t >= now) return 0;
  if (tenant === STALE_TENANT && t >= now - 3 * HOUR) return 0;
  const i = TENANTS.indexOf(tenant);
  const hourOfDay = new Date(t).getUTCHours();
  const weekday = new Date(t).getUTCDay();
  const daily = 0.55 + 0.45 * Math.sin(((hourOfDay - 8) / 24) * 2 * Math.PI);
  const weekly = weekday === 0 || weekday === 6 ? 0.6 : 1;
  const jitter = 0.8 + 0.4 * hash(tenant, metric, t);
  let spike = 1;
  if (tenant === NOISY_TENANT && metric === 'compute_seconds' && t >= now - 20 * HOUR && t < now - 16 * HOUR) spike = 9;
  const base = metric === 'compute_seconds' ? 600 + 350 * (i % 7) : (0.15 + 0.1 * (i % 5)) * GIB;
  return base * daily * weekly * jitter * spike;
}

/** Storage level (bytes) of a tenant at instant t: grows slowly. */
function storageLevel(tenant, t) {
  const i = TENANTS.indexOf(tenant);
  return (40 + 15 * (i % 6)) * GIB * (1 + (t / DAY) * 0.0004 % 0.3) * (0.97 + 0.06 * hash(tenant, Math.floor(t / DAY)));
}

function rawUsage(tenant, metric, from, to, now) {
  if (METRICS[metric].kind === 'gauge') {
    const end = Math.min(to, now);
    if (end <= from) return 0;
    return storageLevel(tenant, (from + end) / 2) * ((end - from) / (to - from));
  }
  let sum = 0;
  for (let t = Math.floor(from / HOUR) * HOUR; t < to; t += HOUR) sum += hourly(tenant, metric, t, now);
  return sum;
}

const q12 = (v) => v.toFixed(12);
const iso = (ms) => new Date(ms).toISOString().replace('.000Z', 'Z');
const monthStart = (period) => {
  const [y, m] = period.split('-').map(Number);
  return [Date.UTC(y, m - 1, 1), Date.UTC(y, m, 1)];
};
const isoMonth = (ms) => new Date(ms).toISOString().slice(0, 7);
const cents = (v) => (Math.round(v * 100) / 100).toFixed(2);

// ---- reports --------------------------------------------------------------------

/** The month before `now`'s, which the mock treats as closed (restated once). */
function closedMonth(now) {
  return isoMonth(monthStart(isoMonth(now))[0] - 1);
}

function closings(now) {
  const month = closedMonth(now);
  const at = monthStart(isoMonth(now))[0];
  return [
    { month, revision: '0', closed_at: iso(at + 2 * HOUR), who: 'finance-dev', reason: '', usage_version: '41', config_sha256: 'a'.repeat(64), tenant_days: '620' },
    { month, revision: '1', closed_at: iso(at + 30 * HOUR), who: 'finance-dev', reason: 'late events', usage_version: '57', config_sha256: 'a'.repeat(64), tenant_days: '620' },
  ];
}

function certificate(tenant, period, now) {
  const [start, end] = monthStart(period);
  const newest = closings(now).at(-1);
  const days = [];
  for (let t = start; t < end; t += DAY) {
    const events = Math.round(hourly(tenant, 'compute_seconds', t + 12 * HOUR, now) / 10) + 24;
    days.push({
      tenant_id: tenant, day: iso(t).slice(0, 10), events,
      sums: { compute_seconds: `${(events * 10).toFixed(9)}` },
      digest: Array.from({ length: 64 }, (_, i) => '0123456789abcdef'[(i * 7 + events + t / DAY) % 16]).join(''),
      kafka: [{ topic: 'usage', partition: 0, low: events * 3, high: events * 5, count: events }], files: [],
    });
  }
  return { tenant_id: tenant, period, status: 'closed', revision: Number(newest.revision), closed_at: newest.closed_at, version: Number(newest.usage_version), days };
}

function invoice(tenant, period, now) {
  const [start, end] = monthStart(period);
  const until = Math.min(end, now);
  const lines = [];
  const line = (metric, quantity, price, tierFrom = '', tierTo = '') => {
    if (!(quantity > 0)) return;
    lines.push({
      tenant_id: tenant, period, metric, unit: METRICS[metric].unit,
      segment_start: iso(start), segment_end: iso(end), tier_from: tierFrom, tier_to: tierTo,
      quantity: q12(quantity), unit_price: price, amount: cents(quantity * Number(price)), kind: 'usage', adjusts: '', dimensions: '',
    });
  };
  if (until > start) {
    line('compute_seconds', rawUsage(tenant, 'compute_seconds', start, until, now) / 3600, '0.045');
    const egress = rawUsage(tenant, 'egress_bytes', start, until, now) / GIB;
    line('egress_bytes', Math.min(egress, 100), '0.09', '0', '100');
    line('egress_bytes', Math.max(0, egress - 100), '0.07', '100', '');
    const level = rawUsage(tenant, 'storage_bytes', start, until, now) / GIB;
    line('storage_bytes', (level * (until - start)) / (end - start), '0.023');
  }
  const subtotal = lines.reduce((s, l) => s + Number(l.amount), 0); // usage lines only, so far
  const pct = DISCOUNTS[tenant] ?? '0';
  const discount = -Math.round(subtotal * Number(pct)) / 100;
  const due = Number(cents(subtotal + discount));
  const grant = CREDITS[tenant];
  const drawn = grant && lines.length > 0 ? Math.min(grant.amount, due) : 0;
  if (drawn > 0) {
    lines.push({
      tenant_id: tenant, period, metric: '', unit: '', segment_start: '', segment_end: '', tier_from: '', tier_to: '',
      quantity: '', unit_price: '', amount: cents(-drawn), kind: 'credit', adjusts: grant.id, dimensions: '',
    });
  }
  const inv = {
    tenant_id: tenant, period, currency: 'EUR', status: 'draft', lines,
    subtotal: cents(subtotal), discount_percent: pct, discount: cents(discount) === '-0.00' ? '0.00' : cents(discount),
    total: cents(due - drawn),
  };
  if (drawn > 0) inv.credits = cents(-drawn);
  if (period === closedMonth(now)) {
    const newest = closings(now).at(-1);
    Object.assign(inv, { status: 'final', revision: Number(newest.revision), closed_at: newest.closed_at, version: Number(newest.usage_version) });
  }
  return inv;
}

function margin(period, now) {
  const invoices = TENANTS.map((t) => invoice(t, period, now));
  const alloc = allocation(period, now);
  const rows = [];
  const cost = (t) => alloc.rows.filter((r) => r.tenant_id === t).reduce((s, r) => s + Number(r.amount), 0);
  for (const inv of invoices) {
    const revenue = Number(inv.total);
    const c = cost(inv.tenant_id);
    rows.push({
      tenant_id: inv.tenant_id, revenue: cents(revenue), cost: cents(c), margin: cents(revenue - c),
      margin_pct: revenue ? (((revenue - c) / revenue) * 100).toFixed(2) : '',
    });
  }
  rows.push({ tenant_id: '__unallocated__', revenue: '0.00', cost: '12.50', margin: '-12.50', margin_pct: '' });
  rows.sort((a, b) => a.tenant_id.localeCompare(b.tenant_id));
  return { period, status: period === closedMonth(now) ? 'final' : 'draft', currency: 'EUR', rows };
}

function health(tenant, now) {
  const period = isoMonth(now);
  const [start, end] = monthStart(period);
  const inv = invoice(tenant, period, now);
  const reasons = [];
  const quotaUse = [];
  for (const [metric, quota] of Object.entries(QUOTAS[tenant] || {})) {
    const used = rawUsage(tenant, metric, start, now, now);
    const pct = Math.floor((used * 10000) / quota) / 100;
    quotaUse.push({ metric, used: String(Math.round(used)), quota: String(quota), percent: pct.toFixed(2) });
    if (pct >= 100) reasons.push({ code: 'quota_critical', severity: 'critical', message: `${metric} at ${pct.toFixed(2)} % of its monthly quota` });
    else if (pct >= 80) reasons.push({ code: 'quota_warning', severity: 'warning', message: `${metric} at ${pct.toFixed(2)} % of its monthly quota` });
  }
  if (tenant === NOISY_TENANT) {
    reasons.push({ code: 'noisy_neighbour', severity: 'warning', message: 'flagged as a noisy neighbour 4 times in the last 24 h (compute_seconds)' });
  }
  if (tenant === STALE_TENANT) {
    reasons.push({ code: 'stale', severity: 'warning', message: 'no event for 3h after events in the last 24 h' });
  }
  if (tenant === REJECTING_TENANT) {
    reasons.push({ code: 'rejected_events', severity: 'warning', message: '2.40 % of its events were rejected in the last 24 h (31 of 1290)' });
  }
  const status = reasons.some((r) => r.severity === 'critical') ? 'critical' : reasons.length ? 'warning' : 'ok';
  const elapsed = now - start;
  return {
    tenant_id: tenant, as_of: iso(now), status, reasons, quota_use: quotaUse, currency: 'EUR',
    mtd_cost: inv.total, forecast: cents((Number(inv.total) * (end - start)) / Math.max(1, elapsed)),
  };
}

function usage(tenant, from, to, bucket, metric, now) {
  const width = bucket === '1d' ? DAY : HOUR;
  const points = [];
  for (const [m, spec] of Object.entries(METRICS)) {
    if (metric && metric !== m) continue;
    for (let t = from; t < to; t += width) {
      const end = Math.min(t + width, to);
      let raw = rawUsage(tenant, m, t, end, now);
      if (spec.kind === 'gauge') raw = t < now ? storageLevel(tenant, t) : 0;
      if (raw > 0) {
        points.push({ metric: m, unit: spec.unit, bucket_start: iso(t), raw: q12(raw), quantity: q12(raw / spec.divisor) });
      }
    }
  }
  return { tenant_id: tenant, from: iso(from), to: iso(to), bucket, points };
}

function allocation(period, now) {
  const [start, end] = monthStart(period);
  const until = Math.min(end, now);
  const pools = [
    { pool: 'kubernetes', amount: 18250.0, driver: 'compute_seconds' },
    { pool: 'network', amount: 3120.55, driver: 'egress_bytes' },
  ];
  const rows = [];
  for (const p of pools) {
    const q = TENANTS.map((t) => [t, rawUsage(t, p.driver, start, until, now) / METRICS[p.driver].divisor]);
    const total = q.reduce((s, [, v]) => s + v, 0);
    let left = Math.round(p.amount * 100);
    q.forEach(([t, v], i) => {
      const share = total ? v / total : 0;
      const c = i === q.length - 1 ? left : Math.floor(p.amount * 100 * share);
      left -= c;
      rows.push({ period, pool: p.pool, tenant_id: t, driver_quantity: q12(v), share: share.toFixed(6), amount: (c / 100).toFixed(2) });
    });
  }
  return { period, rows };
}

function noisy(from, to, metric, all, now) {
  const rows = [];
  for (let t = Math.floor(from / HOUR) * HOUR; t < to; t += HOUR) {
    if (metric && metric !== 'compute_seconds') continue;
    const usages = TENANTS.map((x) => [x, hourly(x, 'compute_seconds', t, now)]);
    const total = usages.reduce((s, [, v]) => s + v, 0);
    for (const [tenant, u] of usages) {
      const share = total ? u / total : 0;
      const flagged = tenant === NOISY_TENANT && share >= 0.3;
      if (!flagged && !all) continue;
      if (u === 0) continue;
      const row = {
        metric: 'compute_seconds', bucket_start: iso(t), tenant_id: tenant, usage: q12(u), share: share.toFixed(6),
        baseline_mean: q12(u / (flagged ? 9 : 1)), baseline_stddev: q12(u / 20), z: flagged ? '24.7' : '0.3',
        active_tenants: usages.filter(([, v]) => v > 0).length,
      };
      if (all) row.flagged = flagged;
      rows.push(row);
    }
  }
  return { rows };
}

/** The alert notices of the mock's rules, newest first, as `GET /v1/alerts`
 * lists them: firing and resolved ones, a rule over all tenants together (`*`),
 * and deliveries delivered, pending and given up. */
function alertLog(now) {
  const at = (hoursAgo) => iso(now - hoursAgo * HOUR);
  const notice = (hoursAgo, rule, kind, tenant, state, value, threshold, crossing, deliveries, reasons = []) => ({
    key: `${rule}/${tenant}/${crossing}${state === 'resolved' ? '/resolved' : ''}`, rule, kind, tenant_id: tenant, state,
    value, threshold, as_of: at(hoursAgo), lake_version: 400 - Math.round(hoursAgo), reasons,
    recorded_at: at(hoursAgo - 0.01), deliveries,
  });
  const delivered = (channel) => ({ channel, outcome: 'delivered', attempts: 1, last_error: null, next_attempt_at: null });
  const log = [
    notice(0.5, 'compute-quota-90', 'quota', 'cobalt', 'firing', '96.40', '90', 2, [delivered('cs-webhook')]),
    notice(1, 'noisy-compute', 'noisy', NOISY_TENANT, 'firing', '1', '1', 1, [
      delivered('cs-webhook'),
      { channel: 'cs-slack', outcome: 'pending', attempts: 3, last_error: 'HTTP 503', next_attempt_at: at(-0.1) },
    ]),
    notice(2, 'silent-2h', 'silent', STALE_TENANT, 'firing', '3', '2', 1, [
      { channel: 'cs-webhook', outcome: 'given_up', attempts: 14, last_error: 'connection refused', next_attempt_at: null },
    ]),
    notice(3, 'health-warning', 'health', REJECTING_TENANT, 'firing', 'warning', 'warning', 1, [delivered('cs-webhook')],
      [{ code: 'rejected_events', severity: 'warning', message: '2.40 % of its events were rejected in the last 24 h (31 of 1290)' }]),
    notice(5, 'forecast-total', 'forecast', '*', 'firing', '251200.00', '200000', 1, [delivered('finance-webhook')]),
    notice(8, 'acme-budget', 'spend', 'acme', 'firing', '1520.40', '1500', 1, [delivered('cs-webhook')]),
    notice(30, 'compute-quota-90', 'quota', 'acme', 'resolved', '84.10', '90', 1, [delivered('cs-webhook')]),
    notice(50, 'compute-quota-90', 'quota', 'acme', 'firing', '91.00', '90', 1, [delivered('cs-webhook')]),
    notice(60, 'compute-quota-90', 'quota', 'cobalt', 'resolved', '80.00', '90', 1, [delivered('cs-webhook')]),
    notice(90, 'compute-quota-90', 'quota', 'cobalt', 'firing', '90.20', '90', 1, [delivered('cs-webhook')]),
  ];
  // `current`: the last notice of each (rule, tenant).
  const seen = new Set();
  for (const a of log) {
    const pair = `${a.rule}/${a.tenant_id}`;
    a.current = !seen.has(pair);
    seen.add(pair);
  }
  return log;
}

const BILLING_COLUMNS = ['tenant_id', 'period', 'metric', 'unit', 'segment_start', 'segment_end', 'tier_from', 'tier_to', 'quantity', 'unit_price', 'amount', 'kind', 'adjusts', 'dimensions'];

function billingCsv(invoices) {
  const out = [BILLING_COLUMNS.join(',')];
  for (const inv of invoices) {
    for (const l of inv.lines) out.push(BILLING_COLUMNS.map((c) => l[c]).join(','));
    for (const k of ['subtotal', 'discount', 'credits', 'total']) {
      if (inv[k] == null) continue;
      const row = { tenant_id: inv.tenant_id, period: inv.period, metric: k, amount: inv[k] };
      out.push(BILLING_COLUMNS.map((c) => row[c] ?? '').join(','));
    }
  }
  return `${out.join('\n')}\n`;
}

function allocationCsv(data) {
  const cols = ['period', 'pool', 'tenant_id', 'driver_quantity', 'share', 'amount'];
  return `${[cols.join(','), ...data.rows.map((r) => cols.map((c) => r[c]).join(','))].join('\n')}\n`;
}

// ---- HTTP -----------------------------------------------------------------------

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.json': 'application/json', '.png': 'image/png', '.ico': 'image/x-icon',
};

function send(res, status, body, type = 'application/json', headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store', ...headers });
  res.end(text);
}
const error = (res, status, code, message, headers) => send(res, status, { error: { code, message } }, 'application/json', headers);

export const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
  + "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const MONTH_RE = /^\d{4}-(0[1-9]|1[0-2])$/;

async function serveStatic(req, res, pathname) {
  const rel = pathname === '/' ? 'index.html' : decodeURIComponent(pathname.slice(1));
  const file = path.resolve(WEB_ROOT, rel);
  if (!file.startsWith(WEB_ROOT + path.sep)) return error(res, 404, 'not_found', 'no such file');
  try {
    const body = await readFile(file);
    res.writeHead(200, {
      'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
      'Cache-Control': 'no-cache',
      // The strictest policy the pages work under; the real server can send the same.
      'Content-Security-Policy': CSP,
      'X-Content-Type-Options': 'nosniff',
    });
    res.end(body);
  } catch {
    error(res, 404, 'not_found', 'no such file');
  }
}

/** options.allocationMonths: months that have a costs file (others answer 404). */
function handler(options) {
  const log = options.log ?? (() => {});
  return async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const p = url.pathname;
    log(`${req.method} ${p}${url.search}`);
    const isPreview = p === '/v1/preview' && req.method === 'POST';
    if (req.method !== 'GET' && !isPreview) return error(res, 405, 'method_not_allowed', 'GET only');
    if (p === '/healthz' || p === '/readyz') return send(res, 200, 'ok', 'text/plain');
    if (!p.startsWith('/v1/')) return serveStatic(req, res, p);

    const auth = req.headers.authorization || '';
    const claims = auth.startsWith('Bearer ') ? verify(auth.slice(7)) : null;
    if (!claims) return error(res, 401, 'unauthorized', 'missing, expired or invalid token');
    const now = Date.now();
    const csv = (req.headers.accept || '').includes('text/csv');
    const seg = p.split('/').filter(Boolean).map(decodeURIComponent); // ['v1', …]
    const ownOnly = claims.role === 'tenant';
    const visible = (t) => TENANTS.includes(t) && (!ownOnly || t === claims.tenant);
    const financeOnly = () => {
      if (ownOnly) error(res, 403, 'forbidden', 'this role may not read this report');
      return ownOnly;
    };

    if (seg[1] === 'tenants' && seg.length === 2) {
      const tenants = TENANTS.filter(visible).map((t) => health(t, now));
      return send(res, 200, { as_of: iso(now), currency: 'EUR', tenants });
    }
    if (seg[1] === 'tenants' && seg.length >= 4) {
      const tenant = seg[2];
      if (!visible(tenant)) return error(res, 404, 'not_found', 'no such tenant');
      if (seg[3] === 'health' && seg.length === 4) return send(res, 200, health(tenant, now));
      if (seg[3] === 'usage' && seg.length === 4) {
        const from = Date.parse(url.searchParams.get('from'));
        const to = Date.parse(url.searchParams.get('to'));
        const bucket = url.searchParams.get('bucket') || '1h';
        const metric = url.searchParams.get('metric');
        if (!Number.isFinite(from) || !Number.isFinite(to) || to <= from || !['1h', '1d'].includes(bucket)) {
          return error(res, 400, 'bad_request', 'from, to (RFC 3339) and bucket 1h|1d are required');
        }
        if (metric && !METRICS[metric]) return error(res, 400, 'bad_request', 'unknown metric');
        return send(res, 200, usage(tenant, from, to, bucket, metric, now));
      }
      if (seg[3] === 'invoices' && seg.length === 6 && seg[5] === 'certificate') {
        if (!MONTH_RE.test(seg[4])) return error(res, 400, 'bad_request', 'month must be YYYY-MM');
        if (seg[4] !== closedMonth(now)) return send(res, 200, { tenant_id: tenant, period: seg[4], status: 'open', days: [] });
        return send(res, 200, certificate(tenant, seg[4], now));
      }
      if (seg[3] === 'invoices' && seg.length === 5) {
        if (!MONTH_RE.test(seg[4])) return error(res, 400, 'bad_request', 'month must be YYYY-MM');
        const inv = invoice(tenant, seg[4], now);
        return csv ? send(res, 200, billingCsv([inv]), 'text/csv') : send(res, 200, inv);
      }
    }
    if (isPreview) {
      // The mock reads no TOML: a book with [[rates]] doubles every total.
      if (financeOnly()) return undefined;
      const month = url.searchParams.get('month') ?? '';
      if (!MONTH_RE.test(month)) return error(res, 400, 'bad_request', 'give one month or one range of months');
      let body = '';
      for await (const chunk of req) body += chunk;
      if (!body.includes('[[rates]]')) return error(res, 400, 'bad_request', 'config key `(syntax)`: no [[rates]]');
      const rows = TENANTS.map((t) => invoice(t, month, now)).filter((i) => i.lines.length > 0).map((i) => ({
        tenant_id: i.tenant_id, period: month, actual_total: i.total,
        proposed_total: cents(2 * Number(i.total)), difference: i.total,
      }));
      if (!csv) return send(res, 200, { currency: 'EUR', rows });
      const cols = ['tenant_id', 'period', 'actual_total', 'proposed_total', 'difference'];
      return send(res, 200, [cols.join(','), ...rows.map((r) => cols.map((c) => r[c]).join(','))].join('\n') + '\n', 'text/csv');
    }
    if (seg[1] === 'billing' && seg.length === 3) {
      if (financeOnly()) return undefined;
      if (!MONTH_RE.test(seg[2])) return error(res, 400, 'bad_request', 'month must be YYYY-MM');
      const invoices = TENANTS.map((t) => invoice(t, seg[2], now)).filter((i) => i.lines.length > 0);
      return csv
        ? send(res, 200, billingCsv(invoices), 'text/csv')
        : send(res, 200, { period: seg[2], currency: 'EUR', invoices });
    }
    if (seg[1] === 'allocation' && seg.length === 3) {
      if (financeOnly()) return undefined;
      if (!MONTH_RE.test(seg[2])) return error(res, 400, 'bad_request', 'month must be YYYY-MM');
      const months = options.allocationMonths ?? [isoMonth(now), isoMonth(monthStart(isoMonth(now))[0] - 1)];
      if (!months.includes(seg[2])) return error(res, 404, 'not_found', 'no costs file is configured for this month');
      const data = allocation(seg[2], now);
      return csv ? send(res, 200, allocationCsv(data), 'text/csv') : send(res, 200, data);
    }
    if (seg[1] === 'closings' && seg.length === 2) {
      if (financeOnly()) return undefined;
      return send(res, 200, { closings: closings(now) });
    }
    if (seg[1] === 'margin' && seg.length === 3) {
      if (financeOnly()) return undefined;
      if (!MONTH_RE.test(seg[2])) return error(res, 400, 'bad_request', 'month must be YYYY-MM');
      const months = options.allocationMonths ?? [isoMonth(now), closedMonth(now)];
      if (!months.includes(seg[2])) return error(res, 404, 'not_found', 'no costs file is configured for this month');
      return send(res, 200, margin(seg[2], now));
    }
    if (seg[1] === 'alerts' && seg.length === 2) {
      const q = url.searchParams;
      const tenant = q.get('tenant');
      if (tenant && !visible(tenant)) return error(res, 404, 'not_found', 'no such tenant');
      const state = q.get('state');
      if (state && !['firing', 'resolved'].includes(state)) return error(res, 400, 'bad_request', 'state must be firing or resolved');
      const limit = q.has('limit') ? Number(q.get('limit')) : 100;
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) return error(res, 400, 'bad_request', 'limit must be 1 to 1000');
      const list = alertLog(now).filter((a) => (ownOnly ? a.tenant_id === claims.tenant : true)
        && (!tenant || a.tenant_id === tenant)
        && (!state || a.state === state)
        && (q.get('current') !== 'true' || a.current));
      return send(res, 200, { alerts: list.slice(0, limit) });
    }
    if (seg[1] === 'noisy-neighbors' && seg.length === 2) {
      if (financeOnly()) return undefined;
      const from = Date.parse(url.searchParams.get('from'));
      const to = Date.parse(url.searchParams.get('to'));
      if (!Number.isFinite(from) || !Number.isFinite(to) || to <= from) {
        return error(res, 400, 'bad_request', 'from and to (RFC 3339) are required');
      }
      return send(res, 200, noisy(from, to, url.searchParams.get('metric'), url.searchParams.get('all') === 'true', now));
    }
    return error(res, 404, 'not_found', 'no such resource');
  };
}

/** Starts the mock; answers { url, close(), tokens, tenants, noisyTenant, month, … }. */
export async function startMockServer({ port = 0, host = '127.0.0.1', ...options } = {}) {
  const server = http.createServer(handler(options));
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const url = `http://${host}:${server.address().port}/`;
  return {
    url,
    tenants: [...TENANTS],
    noisyTenant: NOISY_TENANT,
    month: isoMonth(Date.now()),
    closedMonth: closedMonth(Date.now()),
    tokens: {
      finance: mintToken({ sub: 'finance-dev', role: 'finance' }),
      admin: mintToken({ sub: 'admin-dev', role: 'admin' }),
      tenant: mintToken({ sub: 'acme-dev', role: 'tenant', tenant: 'acme' }),
      expired: mintToken({ sub: 'finance-dev', role: 'finance', ttlSeconds: -120 }),
    },
    tenantId: 'acme',
    otherTenantId: 'globex',
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--port');
  const port = i > 0 ? Number(process.argv[i + 1]) : 8099;
  const mock = await startMockServer({ port, log: process.env.MOCK_LOG ? console.log : undefined });
  console.log(`allot mock API and dashboards at ${mock.url}`);
  console.log(`finance: ${mock.url}#token=${mock.tokens.finance}`);
  console.log(`tenant ${mock.tenantId}: ${mock.url}#token=${mock.tokens.tenant}`);
  console.log(`expired: ${mock.url}#token=${mock.tokens.expired}`);
}
