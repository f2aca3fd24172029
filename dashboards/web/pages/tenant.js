// A tenant's page: status and its reasons, quota bars, its alert history, usage
// charts per metric (daily over 30 days, hourly over 48 hours) and the month's
// invoice, final or draft, with the completeness certificate of a closed month.
// #/tenant/<id>?month=YYYY-MM shows another month: its invoice, and charts
// ending at that month's end (or now, whichever is earlier).

import { loadAlerts } from '../alerts.js';
import { ApiError, get } from '../api.js';
import { chart, fillBuckets } from '../charts.js';
import { badge, h, loading, message } from '../dom.js';
import * as f from '../format.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const KNOWN_ORDER = ['compute_seconds', 'egress_bytes', 'storage_bytes'];
const iso = (ms) => new Date(ms).toISOString().replace('.000Z', 'Z');

export async function tenantPage(view, ctx, id, params) {
  const now = Date.now();
  const monthParam = params.get('month');
  const month = /^\d{4}-(0[1-9]|1[0-2])$/.test(monthParam ?? '') ? monthParam : f.isoMonth(now);
  const [, monthEnd] = f.monthBounds(month);
  const anchor = Math.min(now, monthEnd - 1);
  const base = `v1/tenants/${encodeURIComponent(id)}`;
  document.title = `${id} · allot`;
  view.dataset.testid = 'tenant-page';
  view.replaceChildren(h('h1', {}, id), loading('Loading the tenant…'));

  // Health first: a 404/403 here means no such tenant or not for this token,
  // and the page then shows that alone.
  const health = await get(`${base}/health`);
  if (!ctx.live()) return;
  const currency = health.currency;

  const dailyTo = Math.floor(anchor / DAY) * DAY + DAY;
  const dailyFrom = dailyTo - 30 * DAY;
  const hourlyTo = Math.floor(anchor / HOUR) * HOUR + HOUR;
  const hourlyFrom = hourlyTo - 48 * HOUR;

  const charts = h('section', { class: 'card', 'aria-labelledby': 'usage-h', 'data-testid': 'usage-section' },
    h('h2', { id: 'usage-h' }, 'Usage'), loading('Loading usage…'));
  const alerts = h('section', { class: 'card', 'aria-labelledby': 'alerts-h', 'data-testid': 'alerts-section' },
    h('h2', { id: 'alerts-h' }, 'Alert history'), loading('Loading alerts…'));
  const invoice = h('section', { class: 'card', 'aria-labelledby': 'invoice-h', 'data-testid': 'invoice-section' },
    h('div', { class: 'section-head' },
      h('h2', { id: 'invoice-h' }, `Invoice · ${f.monthName(month)}`),
      monthNav(id, month, now)),
    loading('Loading the invoice…'));

  view.replaceChildren(
    h('div', { class: 'page-head' },
      h('div', {},
        h('p', { class: 'crumbs' }, ctx.claims?.role === 'tenant' ? 'Your usage' : h('a', { href: '#/overview' }, '← All tenants')),
        h('h1', { 'data-testid': 'tenant-title' }, id, ' ', badge(health.status, 'tenant-status')),
        h('p', { class: 'subtitle' }, `As of ${f.dateTime(health.as_of)}`))),
    h('div', { class: 'stats' },
      stat('cost this month', f.money(health.mtd_cost, currency), 'stat-mtd'),
      stat('month-end forecast', f.money(health.forecast, currency), 'stat-forecast')),
    h('div', { class: 'grid-2' }, reasonsCard(health), quotaCard(health)),
    alerts,
    charts,
    invoice,
  );
  loadAlerts(alerts, ctx, { tenant: id, limit: 50 }, {
    withTenant: false, caption: `Alerts of ${id}, newest first`, none: 'No alert about this tenant.',
  }).catch((err) => ctx.fail(err, view));

  const usage = (from, to, bucket) => get(`${base}/usage`, { query: { from: iso(from), to: iso(to), bucket } });
  const [daily, hourly, inv] = await Promise.allSettled([
    usage(dailyFrom, dailyTo, '1d'),
    usage(hourlyFrom, hourlyTo, '1h'),
    get(`${base}/invoices/${month}`),
  ]);
  if (!ctx.live()) return;
  for (const r of [daily, hourly, inv]) {
    if (r.status === 'rejected' && r.reason instanceof ApiError && r.reason.isAuth) throw r.reason;
  }

  if (daily.status === 'rejected' || hourly.status === 'rejected') {
    const err = daily.reason ?? hourly.reason;
    charts.lastChild.replaceWith(message('error', `Usage is not available: ${err.message}`, 'usage-error'));
  } else {
    charts.lastChild.replaceWith(usageCharts(health, daily.value.points || [], hourly.value.points || [],
      { dailyFrom, dailyTo, hourlyFrom, hourlyTo }));
  }

  if (inv.status === 'rejected') {
    const err = inv.reason;
    invoice.lastChild.replaceWith(err instanceof ApiError && err.status === 404
      ? h('p', { class: 'muted', 'data-testid': 'invoice-none' }, `No invoice for ${f.monthName(month)}.`)
      : message('error', `The invoice is not available: ${err.message}`, 'invoice-error'));
  } else {
    invoice.lastChild.replaceWith(h('div', {}, invoiceStatus(inv.value), invoiceTable(inv.value)));
    if (inv.value.status === 'final') {
      const cert = h('section', { class: 'card', 'aria-labelledby': 'certificate-h', 'data-testid': 'certificate-section' },
        h('h2', { id: 'certificate-h' }, `Completeness certificate · ${f.monthName(month)}`), loading('Loading the certificate…'));
      view.append(cert);
      try {
        const data = await get(`${base}/invoices/${month}/certificate`);
        if (!ctx.live()) return;
        cert.lastChild.replaceWith(certificateTable(data));
      } catch (err) {
        if (err instanceof ApiError && err.isAuth) throw err;
        cert.lastChild.replaceWith(message('error', `The certificate is not available: ${err.message}`, 'certificate-error'));
      }
    }
  }
}

/** Final (closed, with its revision) or draft (can still change). */
export function invoiceStatus(inv) {
  const final = inv.status === 'final';
  return h('p', { class: 'invoice-status', 'data-testid': 'invoice-status', 'data-status': final ? 'final' : 'draft' },
    h('span', { class: `badge ${final ? 'badge-ok' : 'badge-unknown'}` }, final ? 'final' : 'draft'), ' ',
    final
      ? `Closed ${f.dateTime(inv.closed_at)}, revision ${inv.revision} (lake version ${inv.version}): this invoice no longer changes.`
      : 'Draft: the month is open, figures change as usage arrives.');
}

function certificateTable(data) {
  const days = data.days || [];
  if (days.length === 0) {
    return h('p', { class: 'muted', 'data-testid': 'certificate-none' }, 'No events were certified for this month.');
  }
  const sources = (d) => [
    ...(d.kafka || []).map((k) => `kafka ${k.topic}/${k.partition} @${k.low}–${k.high} (${k.count})`),
    ...(d.files || []).map((x) => `file ${x.name} (${x.lines})`),
  ].join('; ');
  return h('div', {},
    h('p', { class: 'muted' }, 'Per day: the distinct events, their raw sums and the SHA-256 of their sorted lines ',
      h('code', {}, 'event_id|ts_micros|metric|value'), '. Recompute it from your own records to check the invoice.'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-testid': 'certificate-table' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Day'), h('th', { scope: 'col', class: 'num' }, 'Events'),
        h('th', { scope: 'col' }, 'Raw sums'), h('th', { scope: 'col' }, 'Digest'), h('th', { scope: 'col' }, 'Sources'))),
      h('tbody', {}, days.map((d) => h('tr', { 'data-testid': 'certificate-row', 'data-day': d.day, 'data-digest': d.digest },
        h('th', { scope: 'row' }, d.day),
        h('td', { class: 'num' }, String(d.events)),
        h('td', {}, Object.entries(d.sums || {}).map(([m, v]) => `${f.metricLabel(m)} ${v}`).join('; ')),
        h('td', { title: d.digest }, h('code', {}, `${d.digest.slice(0, 12)}…`)),
        h('td', {}, sources(d))))))));
}

function stat(label, value, testid) {
  return h('div', { class: 'stat wide', 'data-testid': testid },
    h('span', { class: 'stat-value' }, value), h('span', { class: 'stat-label' }, label));
}

function monthNav(id, month, now) {
  const link = (m, label, rel) => h('a', {
    class: 'button ghost small', rel,
    href: `#/tenant/${encodeURIComponent(id)}?month=${m}`,
  }, label);
  const next = f.shiftMonth(month, 1);
  return h('nav', { class: 'month-nav', 'aria-label': 'Invoice month' },
    link(f.shiftMonth(month, -1), '← Previous', 'prev'),
    next <= f.isoMonth(now) ? link(next, 'Next →', 'next') : null);
}

function reasonsCard(health) {
  const reasons = health.reasons || [];
  return h('section', { class: 'card', 'aria-labelledby': 'reasons-h' },
    h('h2', { id: 'reasons-h' }, 'Status'),
    reasons.length === 0
      ? h('p', { class: 'all-good', 'data-testid': 'reasons-none' }, 'All good: nothing to look at.')
      : h('ul', { class: 'reason-list', 'data-testid': 'reasons-list' }, reasons.map((r) => h('li', {
        'data-testid': 'reason', 'data-code': r.code,
      }, badge(r.severity, 'reason-severity'), ' ', h('span', {}, r.message)))));
}

function quotaCard(health) {
  const quotas = health.quota_use || [];
  return h('section', { class: 'card', 'aria-labelledby': 'quota-h', 'data-testid': 'quota-section' },
    h('h2', { id: 'quota-h' }, 'Quotas this month'),
    quotas.length === 0
      ? h('p', { class: 'muted', 'data-testid': 'quota-none' }, 'No quota is set for this tenant.')
      : quotas.map((q) => {
        const pct = Number(q.percent);
        const level = pct >= 100 ? 'critical' : pct >= 80 ? 'warning' : 'ok';
        const label = `${f.metricLabel(q.metric)} quota`;
        return h('div', { class: 'quota', 'data-testid': 'quota-bar', 'data-metric': q.metric, 'data-percent': q.percent },
          h('div', { class: 'quota-head' },
            h('span', { class: 'quota-name' }, f.metricLabel(q.metric)),
            h('span', { class: `quota-pct level-text-${level}` }, f.percent(q.percent))),
          h('div', {
            class: 'meter', role: 'meter', 'aria-label': label,
            'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(Math.min(100, pct)),
            'aria-valuetext': `${q.percent} %`,
          }, h('div', { class: `fill level-${level}`, style: { width: `${Math.min(100, Math.max(0, pct))}%` } })),
          h('p', { class: 'quota-foot', title: `${q.used} of ${q.quota} (raw units)` },
            `${f.rawAmount(q.metric, q.used)} used of ${f.rawAmount(q.metric, q.quota)}`));
      }));
}

function usageCharts(health, dailyPoints, hourlyPoints, w) {
  const metrics = new Set([...dailyPoints, ...hourlyPoints].map((p) => p.metric));
  for (const q of health.quota_use || []) metrics.add(q.metric);
  const ordered = [...metrics].sort((a, b) => {
    const ia = KNOWN_ORDER.indexOf(a);
    const ib = KNOWN_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  if (ordered.length === 0) {
    return h('p', { class: 'muted', 'data-testid': 'usage-none' }, 'No usage in the last 30 days.');
  }
  return h('div', { class: 'metric-list' }, ordered.map((metric) => {
    const d = dailyPoints.filter((p) => p.metric === metric);
    const hr = hourlyPoints.filter((p) => p.metric === metric);
    const unit = f.chartUnit((d[0] || hr[0])?.unit ?? '');
    const gauge = /-month$/.test((d[0] || hr[0])?.unit ?? '');
    const what = gauge ? 'average level' : 'per';
    return h('article', { class: 'metric', 'data-testid': 'metric-usage', 'data-metric': metric },
      h('h3', {}, f.metricLabel(metric), ' ', h('span', { class: 'muted' }, unit ? `(${unit})` : '')),
      h('div', { class: 'chart-pair' },
        chart({
          kind: 'bar',
          buckets: fillBuckets(d, w.dailyFrom, w.dailyTo, DAY),
          title: gauge ? `Daily ${what}, last 30 days` : 'Per day, last 30 days',
          unit,
          xLabel: (ms) => f.shortDay(ms),
          tickKey: (ms) => Math.floor(ms / DAY),
          tickSteps: [1, 2, 3, 5, 7, 14],
          tipLabel: (ms) => f.isoDay(ms),
          testid: `chart-daily-${metric}`,
        }),
        chart({
          kind: 'line',
          buckets: fillBuckets(hr, w.hourlyFrom, w.hourlyTo, HOUR),
          title: gauge ? `Hourly ${what}, last 48 hours` : 'Per hour, last 48 hours',
          unit,
          xLabel: (ms) => (new Date(ms).getUTCHours() === 0 ? f.shortDay(ms) : f.hourOfDay(ms)),
          tickKey: (ms) => Math.floor(ms / HOUR),
          tickSteps: [1, 2, 3, 4, 6, 12, 24],
          tipLabel: (ms) => f.dateTime(ms),
          testid: `chart-hourly-${metric}`,
        })));
  }));
}

/** What a line is, in its first column: a metric, the commitment true-up, a
 * credit draw naming its grant, or an adjustment naming the month it adjusts. */
function lineLabel(l) {
  if (l.kind === 'commitment_true_up') return 'Commitment true-up';
  if (l.kind === 'credit') return `Credit · ${l.adjusts}`;
  if (l.kind !== 'adjustment') return f.metricLabel(l.metric);
  if (l.metric === 'credit') return `Credit ${String(l.dimensions || '').replace(/^grant=/, '')} · adjusts ${l.adjusts}`;
  if (l.metric === 'commitment_true_up') return `Commitment true-up · adjusts ${l.adjusts}`;
  return l.metric ? `${f.metricLabel(l.metric)} · adjusts ${l.adjusts}` : `Discount · adjusts ${l.adjusts}`;
}

/** An invoice as a table: its lines (adjustment lines marked), then subtotal,
 * discount, credits, adjustments and total. */
export function invoiceTable(inv, testid = 'invoice-table') {
  const lines = inv.lines || [];
  const fullMonth = (l) => {
    if (!l.segment_start) return true; // a true-up or a credit: no segment
    const [s, e] = f.monthBounds(l.period || inv.period);
    return Date.parse(l.segment_start) === s && Date.parse(l.segment_end) === e;
  };
  const tier = (l) => (l.tier_from === '' && l.tier_to === '') || (l.tier_from == null && l.tier_to == null)
    ? 'flat'
    : l.tier_to === '' || l.tier_to == null ? `${f.quantity(l.tier_from)} +` : `${f.quantity(l.tier_from)} – ${f.quantity(l.tier_to)}`;
  const cur = inv.currency;
  // The period column only when a rate changed inside the month (segments).
  const showPeriod = lines.some((l) => !fullMonth(l));
  const cols = showPeriod ? 6 : 5;
  return h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-testid': testid, 'data-tenant-id': inv.tenant_id },
    h('caption', { class: 'visually-hidden' }, `Invoice of ${inv.tenant_id} for ${inv.period}`),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Metric'),
      showPeriod ? h('th', { scope: 'col' }, 'Period') : null,
      h('th', { scope: 'col' }, 'Tier'),
      h('th', { scope: 'col', class: 'num' }, 'Quantity'),
      h('th', { scope: 'col', class: 'num' }, 'Unit price'),
      h('th', { scope: 'col', class: 'num' }, 'Amount'))),
    h('tbody', {}, lines.length === 0
      ? h('tr', { class: 'empty' }, h('td', { colspan: cols }, 'No billable usage.'))
      : lines.map((l) => h('tr', {
        'data-testid': l.kind === 'adjustment' ? 'invoice-adjustment' : 'invoice-line',
        'data-metric': l.metric, class: l.kind === 'adjustment' ? 'adjustment' : null,
      },
        h('th', { scope: 'row' }, lineLabel(l)),
        showPeriod ? h('td', {}, !l.segment_start ? '' : fullMonth(l) ? 'whole month' : `${f.dateTime(l.segment_start)} → ${f.dateTime(l.segment_end)}`) : null,
        h('td', {}, l.quantity ? tier(l) : ''),
        h('td', { class: 'num', title: l.quantity }, l.quantity ? `${f.quantity(l.quantity)} ${l.unit}` : ''),
        h('td', { class: 'num' }, l.quantity ? f.money(l.unit_price, cur) : ''),
        h('td', { class: 'num' }, f.money(l.amount, cur))))),
    h('tfoot', {},
      h('tr', {}, h('th', { scope: 'row', colspan: cols - 1 }, 'Subtotal'), h('td', { class: 'num' }, f.money(inv.subtotal, cur))),
      h('tr', {}, h('th', { scope: 'row', colspan: cols - 1 }, `Discount (${f.quantity(inv.discount_percent, 4)} %)`),
        h('td', { class: 'num' }, f.money(inv.discount, cur))),
      inv.credits != null
        ? h('tr', { 'data-testid': 'invoice-credits' }, h('th', { scope: 'row', colspan: cols - 1 }, 'Prepaid credit'),
          h('td', { class: 'num' }, f.money(inv.credits, cur)))
        : null,
      inv.adjustments != null
        ? h('tr', { 'data-testid': 'invoice-adjustments' }, h('th', { scope: 'row', colspan: cols - 1 }, 'Adjustments of earlier months'),
          h('td', { class: 'num' }, f.money(inv.adjustments, cur)))
        : null,
      h('tr', { class: 'total' }, h('th', { scope: 'row', colspan: cols - 1 }, 'Total'),
        h('td', { class: 'num', 'data-testid': 'invoice-total' }, f.money(inv.total, cur))))));
}
