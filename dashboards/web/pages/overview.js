// The overview: the alerts firing now, every tenant's health, reasons,
// month-to-date cost and forecast, with noisy flags; sortable by column,
// filtered by a search box, refreshed every minute. Below it, the
// noisy-neighbour rows flagged in the last 24 h.

import { loadAlerts } from '../alerts.js';
import { get } from '../api.js';
import { badge, h, loading, sortableTable } from '../dom.js';
import * as f from '../format.js';

const RANK = { ok: 0, warning: 1, critical: 2 };
const REASON_LABEL = {
  quota_critical: 'quota exceeded',
  quota_warning: 'quota near',
  noisy_neighbour: 'noisy neighbour',
  stale: 'stale',
  rejected_events: 'rejected events',
};

const isNoisy = (t) => (t.reasons || []).some((r) => r.code === 'noisy_neighbour');
const peakQuota = (t) => (t.quota_use || []).reduce(
  (best, q) => (best === null || f.compareDecimal(q.percent, best.percent) > 0 ? q : best), null);

function reasonChips(reasons) {
  if (!reasons?.length) return h('span', { class: 'muted' }, '—');
  return h('ul', { class: 'chips', 'data-testid': 'reasons' }, reasons.map((r) => h('li', {
    class: `chip chip-${r.severity}`, title: r.message, 'data-code': r.code,
  }, REASON_LABEL[r.code] ?? r.code)));
}

function quotaCell(t) {
  const q = peakQuota(t);
  if (!q) return h('span', { class: 'muted' }, '—');
  const pct = Number(q.percent);
  const level = pct >= 100 ? 'critical' : pct >= 80 ? 'warning' : 'ok';
  return h('div', { class: 'mini-quota', title: `${f.metricLabel(q.metric)}: ${q.percent} % of quota` },
    h('span', { class: 'mini-meter', 'aria-hidden': 'true' },
      h('span', { class: `fill level-${level}`, style: { width: `${Math.min(100, pct)}%` } })),
    h('span', { class: 'mini-label' }, `${f.quantity(q.percent, 0)} % ${f.metricLabel(q.metric).toLowerCase()}`));
}

function matches(t, needle) {
  if (!needle) return true;
  const hay = [t.tenant_id, t.status, ...(t.reasons || []).flatMap((r) => [r.code, REASON_LABEL[r.code], r.message])]
    .join(' ').toLowerCase();
  return needle.toLowerCase().split(/\s+/).every((w) => hay.includes(w));
}

export async function overviewPage(view, ctx) {
  document.title = 'Tenants · allot';
  view.dataset.testid = 'overview-page';
  view.replaceChildren(h('h1', {}, 'Tenants'), loading('Loading tenant health…'));
  let data = await get('v1/tenants');
  if (!ctx.live()) return;

  const summary = h('div', { class: 'stats', 'data-testid': 'overview-summary' });
  const asOf = h('p', { class: 'subtitle' });
  const filter = h('input', {
    type: 'search', id: 'tenant-filter', 'data-testid': 'filter-input',
    placeholder: 'tenant, status or reason', autocomplete: 'off',
  });
  const count = h('span', { class: 'muted', 'data-testid': 'row-count', 'aria-live': 'polite' });
  const refresh = h('button', { type: 'button', class: 'button ghost', 'data-testid': 'refresh' }, 'Refresh');

  const money = (t, key, extra = '') => h('td', { class: `num ${extra}`.trim() }, f.money(t[key], t.currency || data.currency));
  const table = sortableTable({
    testid: 'overview-table',
    caption: 'Health, cost and flags of every tenant',
    state: { key: 'status', dir: 'desc' },
    empty: 'No tenant matches the filter.',
    columns: [
      { key: 'tenant', label: 'Tenant', compare: (a, b) => a.tenant_id.localeCompare(b.tenant_id) },
      {
        key: 'status', label: 'Status',
        compare: (a, b) => (RANK[a.status] ?? -1) - (RANK[b.status] ?? -1)
          || (a.reasons?.length ?? 0) - (b.reasons?.length ?? 0)
          || b.tenant_id.localeCompare(a.tenant_id),
      },
      { key: 'reasons', label: 'Reasons', className: 'optional', compare: (a, b) => (a.reasons?.length ?? 0) - (b.reasons?.length ?? 0) },
      { key: 'noisy', label: 'Noisy', className: 'optional', compare: (a, b) => Number(isNoisy(a)) - Number(isNoisy(b)) },
      { key: 'quota', label: 'Peak quota', className: 'optional', compare: (a, b) => f.compareDecimal(peakQuota(a)?.percent ?? '-1', peakQuota(b)?.percent ?? '-1') },
      { key: 'mtd_cost', label: 'Cost MTD', numeric: true, compare: (a, b) => f.compareDecimal(a.mtd_cost, b.mtd_cost) },
      { key: 'forecast', label: 'Forecast', numeric: true, className: 'optional', compare: (a, b) => f.compareDecimal(a.forecast, b.forecast) },
    ],
    items: [],
    rowsOf: (t) => [h('tr', {
      'data-testid': 'tenant-row', 'data-tenant-id': t.tenant_id, 'data-status': t.status,
      'data-noisy': String(isNoisy(t)),
    },
    h('th', { scope: 'row' }, h('a', {
      href: `#/tenant/${encodeURIComponent(t.tenant_id)}`, 'data-testid': 'tenant-link',
    }, t.tenant_id), isNoisy(t)
      ? h('span', { class: 'flag phone-only' }, h('span', { 'aria-hidden': 'true' }, ' ⚑'), h('span', { class: 'visually-hidden' }, ' noisy neighbour'))
      : null),
    h('td', {}, badge(t.status)),
    h('td', { class: 'optional' }, reasonChips(t.reasons)),
    h('td', { class: 'optional' }, isNoisy(t)
      ? h('span', {
        class: 'flag', 'data-testid': 'noisy-flag',
        title: (t.reasons.find((r) => r.code === 'noisy_neighbour') || {}).message,
      }, h('span', { 'aria-hidden': 'true' }, '⚑ '), h('span', { class: 'flag-text' }, 'Noisy'))
      : h('span', { class: 'muted' }, '—')),
    h('td', { class: 'optional' }, quotaCell(t)),
    money(t, 'mtd_cost'),
    money(t, 'forecast', 'optional'))],
    foot: (items) => h('tr', {},
      h('th', { scope: 'row', colspan: 2 }, `${items.length} tenant${items.length === 1 ? '' : 's'}`),
      h('td', { class: 'optional' }), h('td', { class: 'optional' }), h('td', { class: 'optional' }),
      h('td', { class: 'num', 'data-testid': 'total-mtd' }, f.money(f.sumDecimals(items.map((t) => t.mtd_cost)), data.currency)),
      h('td', { class: 'num optional' }, f.money(f.sumDecimals(items.map((t) => t.forecast)), data.currency))),
  });

  function show() {
    const tenants = data.tenants || [];
    const shown = tenants.filter((t) => matches(t, filter.value.trim()));
    table.update(shown);
    count.textContent = shown.length === tenants.length
      ? `${tenants.length} tenants`
      : `${shown.length} of ${tenants.length} tenants`;
    const n = (s) => tenants.filter((t) => t.status === s).length;
    const stat = (label, value, cls, testid) => h('div', { class: `stat ${cls || ''}`, 'data-testid': testid },
      h('span', { class: 'stat-value' }, String(value)), h('span', { class: 'stat-label' }, label));
    summary.replaceChildren(
      stat('tenants', tenants.length, '', 'stat-tenants'),
      stat('critical', n('critical'), n('critical') ? 'is-critical' : '', 'stat-critical'),
      stat('warning', n('warning'), n('warning') ? 'is-warning' : '', 'stat-warning'),
      stat('noisy', tenants.filter(isNoisy).length, tenants.some(isNoisy) ? 'is-warning' : '', 'stat-noisy'),
      stat(`cost this month (${data.currency ?? ''})`, f.groupThousands(f.sumDecimals(tenants.map((t) => t.mtd_cost))), 'wide', 'stat-mtd'),
      stat(`forecast (${data.currency ?? ''})`, f.groupThousands(f.sumDecimals(tenants.map((t) => t.forecast))), 'wide', 'stat-forecast'),
    );
    asOf.textContent = `Health as of ${f.dateTime(data.as_of)} · cost month to date and month-end forecast`;
  }
  filter.addEventListener('input', show);

  const alerts = h('section', { class: 'card', 'data-testid': 'alerts-section', 'aria-labelledby': 'alerts-h' },
    h('h2', { id: 'alerts-h' }, 'Firing alerts'), loading('Loading alerts…'));
  const showAlerts = () => loadAlerts(alerts, ctx, { state: 'firing', current: 'true' }, {
    withTenant: true, caption: 'Alerts firing now, newest first', none: 'No alert is firing.',
  }).catch((err) => ctx.fail(err, view));

  async function reload() {
    refresh.disabled = true;
    try {
      const next = await get('v1/tenants');
      if (!ctx.live()) return;
      data = next;
      show();
      showAlerts();
    } catch (err) {
      ctx.fail(err, view);
    } finally {
      refresh.disabled = false;
    }
  }
  refresh.addEventListener('click', reload);
  ctx.every(60_000, reload);

  const noisy = h('section', { class: 'card', 'data-testid': 'noisy-section', 'aria-labelledby': 'noisy-h' },
    h('h2', { id: 'noisy-h' }, 'Noisy neighbours in the last 24 hours'), loading());

  view.replaceChildren(
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Tenants'), asOf), refresh),
    summary,
    alerts,
    h('section', { class: 'card', 'aria-label': 'Tenants' },
      h('div', { class: 'toolbar' },
        h('label', { for: 'tenant-filter' }, 'Filter'), filter, count),
      h('div', { class: 'table-wrap' }, table.table)),
    noisy,
  );
  show();
  showAlerts();
  loadNoisy(noisy, ctx);
}

async function loadNoisy(section, ctx) {
  const hour = 3_600_000;
  const to = Math.ceil(Date.now() / hour) * hour;
  const iso = (ms) => new Date(ms).toISOString().replace('.000Z', 'Z');
  let rows;
  try {
    rows = (await get('v1/noisy-neighbors', { query: { from: iso(to - 24 * hour), to: iso(to) } })).rows || [];
  } catch (err) {
    if (!ctx.live()) return;
    section.lastChild.replaceWith(h('p', { class: 'muted' }, `Not available (${err.message}).`));
    return;
  }
  if (!ctx.live()) return;
  if (rows.length === 0) {
    section.lastChild.replaceWith(h('p', { class: 'muted', 'data-testid': 'noisy-none' }, 'No tenant was flagged.'));
    return;
  }
  rows.sort((a, b) => Date.parse(b.bucket_start) - Date.parse(a.bucket_start));
  const table = sortableTable({
    testid: 'noisy-table',
    caption: 'Flagged noisy-neighbour buckets',
    state: { key: 'bucket', dir: 'desc' },
    columns: [
      { key: 'bucket', label: 'Hour', compare: (a, b) => Date.parse(a.bucket_start) - Date.parse(b.bucket_start) },
      { key: 'tenant', label: 'Tenant', compare: (a, b) => a.tenant_id.localeCompare(b.tenant_id) },
      { key: 'metric', label: 'Metric', className: 'optional', compare: (a, b) => a.metric.localeCompare(b.metric) },
      { key: 'share', label: 'Share', numeric: true, compare: (a, b) => f.compareDecimal(a.share, b.share) },
      { key: 'z', label: 'z-score', numeric: true, compare: (a, b) => (a.z === 'inf' ? Infinity : Number(a.z)) - (b.z === 'inf' ? Infinity : Number(b.z)) },
      { key: 'active', label: 'Active tenants', numeric: true, className: 'optional', compare: (a, b) => Number(a.active_tenants) - Number(b.active_tenants) },
    ],
    items: rows.slice(0, 50),
    rowsOf: (r) => [h('tr', { 'data-testid': 'noisy-row', 'data-tenant-id': r.tenant_id },
      h('td', { class: 'nowrap' }, f.dateTime(r.bucket_start)),
      h('th', { scope: 'row' }, h('a', { href: `#/tenant/${encodeURIComponent(r.tenant_id)}` }, r.tenant_id)),
      h('td', { class: 'optional' }, f.metricLabel(r.metric)),
      h('td', { class: 'num' }, f.percent(f.shareToPercent(r.share))),
      h('td', { class: 'num' }, /inf/i.test(String(r.z)) ? '∞' : f.quantity(String(r.z), 1)),
      h('td', { class: 'num optional' }, String(r.active_tenants)))],
  });
  section.lastChild.replaceWith(h('div', { class: 'table-wrap' }, table.table));
}
