// Finance: the month's chargeback (every tenant's invoice total, with its lines
// on demand), whether the month is closed (final) or open (draft), the margin
// per tenant, the shared-cost allocation, a what-if preview of the month under
// a proposed price book, a month picker and CSV downloads.

import { ApiError, downloadCsv, get, postText, saveCsv } from '../api.js';
import { h, loading, message, sortableTable } from '../dom.js';
import * as f from '../format.js';
import { invoiceTable } from './tenant.js';

export async function financePage(view, ctx, arg) {
  const month = /^\d{4}-(0[1-9]|1[0-2])$/.test(arg ?? '') ? arg : f.isoMonth(Date.now());
  if (month !== arg) {
    history.replaceState(null, '', `${location.pathname}${location.search}#/finance/${month}`);
  }
  document.title = `Finance ${month} · allot`;
  view.dataset.testid = 'finance-page';

  const go = (m) => {
    if (/^\d{4}-\d{2}$/.test(m)) location.hash = `#/finance/${m}`;
  };
  const picker = h('input', {
    type: 'month', id: 'month-input', value: month, 'data-testid': 'month-input', required: true,
    onchange: (ev) => go(ev.target.value),
  });
  const status = h('p', { class: 'download-status', role: 'status', 'data-testid': 'download-status' });
  const download = (kind, label) => {
    const button = h('button', { type: 'button', class: 'button', 'data-testid': `download-${kind}` }, label);
    button.addEventListener('click', async () => {
      button.disabled = true;
      status.textContent = 'Preparing the file…';
      try {
        await downloadCsv(`v1/${kind}/${month}`, `${kind}-${month}.csv`);
        status.textContent = `Saved ${kind}-${month}.csv`;
      } catch (err) {
        if (err instanceof ApiError && err.isAuth) return ctx.fail(err);
        status.textContent = err instanceof ApiError && err.status === 404
          ? `There is no ${kind} report for ${month}.`
          : `The download failed: ${err.message}`;
      } finally {
        button.disabled = false;
      }
    });
    return button;
  };
  const billingButton = download('billing', 'Chargeback CSV');
  const allocationButton = download('allocation', 'Allocation CSV');

  const chargeback = h('section', { class: 'card', 'aria-labelledby': 'chargeback-h', 'data-testid': 'chargeback-section' },
    h('h2', { id: 'chargeback-h' }, 'Chargeback'), loading('Loading invoices…'));
  const allocation = h('section', { class: 'card', 'aria-labelledby': 'allocation-h', 'data-testid': 'allocation-section' },
    h('h2', { id: 'allocation-h' }, 'Shared-cost allocation'), loading('Loading the allocation…'));
  const totals = h('div', { class: 'stats', 'data-testid': 'finance-summary' });
  const closeStatus = h('p', { class: 'close-status', 'data-testid': 'close-status' }, loading('Loading the closings…'));
  const margin = h('section', { class: 'card', 'aria-labelledby': 'margin-h', 'data-testid': 'margin-section' },
    h('h2', { id: 'margin-h' }, 'Margin per tenant'), loading('Loading the margin…'));

  view.replaceChildren(
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', {}, `Finance · ${f.monthName(month)}`),
        h('p', { class: 'subtitle' }, 'What every tenant owes for the month, and how shared costs are split')),
      h('div', { class: 'toolbar month-picker' },
        h('a', { class: 'button ghost small', href: `#/finance/${f.shiftMonth(month, -1)}`, 'data-testid': 'month-prev', 'aria-label': 'Previous month' }, '←'),
        h('label', { for: 'month-input' }, 'Month'), picker,
        h('a', { class: 'button ghost small', href: `#/finance/${f.shiftMonth(month, 1)}`, 'data-testid': 'month-next', 'aria-label': 'Next month' }, '→'))),
    h('div', { class: 'toolbar downloads' }, h('span', { class: 'muted' }, 'Download:'), billingButton, allocationButton, status),
    closeStatus,
    totals,
    chargeback,
    margin,
    allocation,
    previewSection(month, ctx),
  );

  const [billing, alloc, closings, marginData] = await Promise.allSettled([
    get(`v1/billing/${month}`), get(`v1/allocation/${month}`), get('v1/closings'), get(`v1/margin/${month}`)]);
  if (!ctx.live()) return;
  for (const r of [billing, alloc, closings, marginData]) {
    if (r.status === 'rejected' && r.reason instanceof ApiError && r.reason.isAuth) throw r.reason;
  }

  if (billing.status === 'rejected') {
    const err = billing.reason;
    if (err instanceof ApiError && err.status === 403) {
      view.replaceChildren(message('denied', 'Your token may not see finance reports.', 'denied-message'));
      return;
    }
    chargeback.lastChild.replaceWith(message('error', `Billing is not available: ${err.message}`, 'billing-error'));
  } else {
    renderChargeback(chargeback, totals, billing.value);
  }

  renderCloseStatus(closeStatus, month, closings);
  if (marginData.status === 'rejected') {
    const err = marginData.reason;
    margin.lastChild.replaceWith(err instanceof ApiError && err.status === 404
      ? h('p', { class: 'muted', 'data-testid': 'margin-missing' }, 'No margin without a shared-costs file for this month.')
      : message('error', `The margin is not available: ${err.message}`, 'margin-error'));
  } else {
    renderMargin(margin, marginData.value);
  }

  if (alloc.status === 'rejected') {
    const err = alloc.reason;
    if (err instanceof ApiError && err.status === 404) {
      allocationButton.disabled = true;
      allocation.lastChild.replaceWith(h('p', { class: 'muted', 'data-testid': 'allocation-missing' },
        `No allocation for ${f.monthName(month)}: the server has no shared-costs file for it. `,
        'Configure one to split real spend across tenants.'));
    } else {
      allocation.lastChild.replaceWith(message('error', `The allocation is not available: ${err.message}`, 'allocation-error'));
    }
  } else {
    renderAllocation(allocation, alloc.value, billing.value?.currency);
  }
}

function renderChargeback(section, totals, billing) {
  const cur = billing.currency;
  const invoices = billing.invoices || [];
  const stat = (label, value, testid) => h('div', { class: 'stat wide', 'data-testid': testid },
    h('span', { class: 'stat-value' }, value), h('span', { class: 'stat-label' }, label));
  totals.replaceChildren(
    stat('tenants invoiced', String(invoices.length), 'stat-invoiced'),
    stat(`subtotal (${cur})`, f.groupThousands(f.sumDecimals(invoices.map((i) => i.subtotal))), 'stat-subtotal'),
    stat(`discounts (${cur})`, f.groupThousands(f.sumDecimals(invoices.map((i) => i.discount))), 'stat-discount'),
    stat(`total (${cur})`, f.groupThousands(f.sumDecimals(invoices.map((i) => i.total))), 'stat-total'),
  );
  if (invoices.length === 0) {
    section.lastChild.replaceWith(h('p', { class: 'muted', 'data-testid': 'chargeback-none' }, 'No invoice for this month.'));
    return;
  }
  const open = new Set();
  const table = sortableTable({
    testid: 'chargeback-table',
    caption: 'Invoice totals per tenant',
    state: { key: 'tenant', dir: 'asc' },
    columns: [
      { key: 'tenant', label: 'Tenant', compare: (a, b) => a.tenant_id.localeCompare(b.tenant_id) },
      { key: 'lines', label: 'Lines', numeric: true, className: 'optional', compare: (a, b) => (a.lines?.length ?? 0) - (b.lines?.length ?? 0) },
      { key: 'subtotal', label: 'Subtotal', numeric: true, className: 'optional', compare: (a, b) => f.compareDecimal(a.subtotal, b.subtotal) },
      { key: 'discount', label: 'Discount', numeric: true, className: 'optional', compare: (a, b) => f.compareDecimal(a.discount, b.discount) },
      { key: 'total', label: 'Total', numeric: true, compare: (a, b) => f.compareDecimal(a.total, b.total) },
      { key: 'details', label: h('span', { class: 'visually-hidden' }, 'Details') },
    ],
    items: invoices,
    rowsOf: (inv) => {
      const detailId = `lines-${inv.tenant_id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
      const detail = h('tr', { class: 'detail', id: detailId, hidden: !open.has(inv.tenant_id), 'data-testid': 'chargeback-lines' },
        h('td', { colspan: 6 }, invoiceTable(inv, 'chargeback-invoice')));
      const toggle = h('button', {
        type: 'button', class: 'button ghost small', 'aria-expanded': String(open.has(inv.tenant_id)),
        'aria-controls': detailId, 'data-testid': 'toggle-lines',
        onclick: () => {
          const show = !open.has(inv.tenant_id);
          if (show) open.add(inv.tenant_id);
          else open.delete(inv.tenant_id);
          detail.hidden = !show;
          toggle.setAttribute('aria-expanded', String(show));
          toggle.textContent = show ? 'Hide lines' : 'Show lines';
        },
      }, open.has(inv.tenant_id) ? 'Hide lines' : 'Show lines');
      return [
        h('tr', { 'data-testid': 'chargeback-row', 'data-tenant-id': inv.tenant_id },
          h('th', { scope: 'row' }, h('a', { href: `#/tenant/${encodeURIComponent(inv.tenant_id)}?month=${inv.period}` }, inv.tenant_id)),
          h('td', { class: 'num optional' }, String(inv.lines?.length ?? 0)),
          h('td', { class: 'num optional' }, f.money(inv.subtotal, cur)),
          h('td', { class: 'num optional' }, inv.discount_percent && f.compareDecimal(inv.discount_percent, '0') !== 0
            ? `${f.money(inv.discount, cur)} (${f.quantity(inv.discount_percent, 4)} %)`
            : f.money(inv.discount, cur)),
          h('td', { class: 'num strong', 'data-testid': 'chargeback-total' }, f.money(inv.total, cur)),
          h('td', {}, toggle)),
        detail,
      ];
    },
    foot: (items) => h('tr', { class: 'total' },
      h('th', { scope: 'row' }, 'All tenants'),
      h('td', { class: 'optional' }),
      h('td', { class: 'num optional' }, f.money(f.sumDecimals(items.map((i) => i.subtotal)), cur)),
      h('td', { class: 'num optional' }, f.money(f.sumDecimals(items.map((i) => i.discount)), cur)),
      h('td', { class: 'num', 'data-testid': 'chargeback-grand-total' }, f.money(f.sumDecimals(items.map((i) => i.total)), cur)),
      h('td', {})),
  });
  section.lastChild.replaceWith(h('div', { class: 'table-wrap' }, table.table));
}

function renderAllocation(section, data, currency) {
  const rows = data.rows || [];
  if (rows.length === 0) {
    section.lastChild.replaceWith(h('p', { class: 'muted', 'data-testid': 'allocation-none' }, 'No shared cost for this month.'));
    return;
  }
  const pools = [...new Set(rows.map((r) => r.pool))];
  const poolTotals = h('ul', { class: 'chips pools', 'data-testid': 'allocation-pools' }, pools.map((p) => h('li', { class: 'chip' },
    `${p}: ${f.money(f.sumDecimals(rows.filter((r) => r.pool === p).map((r) => r.amount)), currency)}`)));
  const table = sortableTable({
    testid: 'allocation-table',
    caption: 'Shared costs split across tenants by usage',
    state: { key: 'pool', dir: 'asc' },
    columns: [
      { key: 'pool', label: 'Pool', compare: (a, b) => a.pool.localeCompare(b.pool) || a.tenant_id.localeCompare(b.tenant_id) },
      { key: 'tenant', label: 'Tenant', compare: (a, b) => a.tenant_id.localeCompare(b.tenant_id) || a.pool.localeCompare(b.pool) },
      { key: 'driver', label: 'Driver quantity', numeric: true, className: 'optional', compare: (a, b) => f.compareDecimal(a.driver_quantity, b.driver_quantity) },
      { key: 'share', label: 'Share', numeric: true, compare: (a, b) => f.compareDecimal(a.share, b.share) },
      { key: 'amount', label: 'Amount', numeric: true, compare: (a, b) => f.compareDecimal(a.amount, b.amount) },
    ],
    items: rows,
    rowsOf: (r) => [h('tr', { 'data-testid': 'allocation-row', 'data-pool': r.pool, 'data-tenant-id': r.tenant_id },
      h('td', {}, r.pool),
      h('th', { scope: 'row' }, r.tenant_id === '__unallocated__'
        ? h('span', { class: 'muted' }, 'unallocated')
        : h('a', { href: `#/tenant/${encodeURIComponent(r.tenant_id)}?month=${r.period}` }, r.tenant_id)),
      h('td', { class: 'num optional', title: r.driver_quantity }, f.quantity(r.driver_quantity)),
      h('td', { class: 'num', title: r.share }, f.percent(f.shareToPercent(r.share), 2)),
      h('td', { class: 'num' }, f.money(r.amount, currency)))],
    foot: (items) => h('tr', { class: 'total' },
      h('th', { scope: 'row', colspan: 3 }, 'Allocated'),
      h('td', { class: 'optional' }),
      h('td', { class: 'num', 'data-testid': 'allocation-total' }, f.money(f.sumDecimals(items.map((r) => r.amount)), currency))),
  });
  section.lastChild.replaceWith(h('div', {}, poolTotals, h('div', { class: 'table-wrap' }, table.table)));
}

function renderCloseStatus(node, month, closings) {
  if (closings.status === 'rejected') {
    node.replaceChildren(`Closings are not available: ${closings.reason.message}`);
    return;
  }
  const revisions = (closings.value.closings || []).filter((c) => c.month === month);
  const newest = revisions[revisions.length - 1];
  node.dataset.status = newest ? 'closed' : 'open';
  node.replaceChildren(newest
    ? h('span', {}, h('span', { class: 'badge badge-ok', 'data-testid': 'close-badge' }, 'closed'), ' ',
      `Final since ${f.dateTime(newest.closed_at)} by ${newest.who}, revision ${newest.revision}`,
      newest.reason ? ` (${newest.reason})` : '', `; ${newest.tenant_days} tenant-days certified.`)
    : h('span', {}, h('span', { class: 'badge badge-unknown', 'data-testid': 'close-badge' }, 'open'), ' ',
      'Draft: invoices change until the month is closed (allot close).'));
}

function renderMargin(section, data) {
  const rows = data.rows || [];
  const cur = data.currency;
  if (rows.length === 0) {
    section.lastChild.replaceWith(h('p', { class: 'muted', 'data-testid': 'margin-none' }, 'No revenue or cost for this month.'));
    return;
  }
  // A bar per tenant: revenue and cost side by side, on one scale.
  const largest = Math.max(...rows.flatMap((r) => [Math.abs(Number(r.revenue)), Math.abs(Number(r.cost))]), 0.01);
  const bar = (value, kind) => h('div', {
    class: `margin-bar margin-bar-${kind}`, title: `${kind} ${value}`,
    style: { width: `${Math.min(100, (Math.abs(Number(value)) / largest) * 100)}%` },
  });
  const chart = h('div', { class: 'margin-chart', role: 'img', 'aria-label': 'Revenue and cost per tenant', 'data-testid': 'margin-chart' },
    rows.map((r) => h('div', { class: 'margin-chart-row', 'data-testid': 'margin-bar', 'data-tenant-id': r.tenant_id },
      h('span', { class: 'margin-chart-label' }, r.tenant_id === '__unallocated__' ? 'unallocated' : r.tenant_id),
      h('div', { class: 'margin-chart-bars' }, bar(r.revenue, 'revenue'), bar(r.cost, 'cost')))));
  const table = h('table', { class: 'data', 'data-testid': 'margin-table' },
    h('caption', { class: 'visually-hidden' }, 'Revenue, cost and margin per tenant'),
    h('thead', {}, h('tr', {}, ['Tenant', 'Revenue', 'Cost', 'Margin', 'Margin %'].map((c, i) =>
      h('th', { scope: 'col', class: i ? 'num' : null }, c)))),
    h('tbody', {}, rows.map((r) => h('tr', { 'data-testid': 'margin-row', 'data-tenant-id': r.tenant_id },
      h('th', { scope: 'row' }, r.tenant_id === '__unallocated__' ? h('span', { class: 'muted' }, 'unallocated') : r.tenant_id),
      h('td', { class: 'num' }, f.money(r.revenue, cur)),
      h('td', { class: 'num' }, f.money(r.cost, cur)),
      h('td', { class: 'num', 'data-testid': 'margin-value' }, f.money(r.margin, cur)),
      h('td', { class: 'num' }, r.margin_pct === '' ? '—' : `${r.margin_pct} %`)))));
  section.lastChild.replaceWith(h('div', {},
    h('p', { class: 'muted' }, data.status === 'final' ? 'Frozen figures of the closed month.' : 'Draft figures of the open month.'),
    chart, h('div', { class: 'table-wrap' }, table)));
}

// What-if pricing: the month priced under a price book pasted as TOML (the
// [[rates]] and [tenants.*] of an allot.toml), per tenant, with a CSV download.
function previewSection(month, ctx) {
  const book = h('textarea', {
    id: 'preview-book', rows: 8, spellcheck: 'false', 'data-testid': 'preview-book',
    placeholder: '[[rates]]\nmetric = "compute_seconds"\neffective_from = "2026-01-01"\nunit_price = "0.0350"',
  });
  const result = h('div', { 'data-testid': 'preview-result', 'aria-live': 'polite' });
  const run = async (accept) => {
    try {
      return await postText('v1/preview', book.value, { query: { month }, accept });
    } catch (err) {
      if (err instanceof ApiError && err.isAuth) ctx.fail(err);
      result.replaceChildren(message('error', `The preview failed: ${err.message}`, 'preview-error'));
      return null;
    }
  };
  const show = h('button', { type: 'button', class: 'button', 'data-testid': 'preview-run' }, 'Preview');
  show.addEventListener('click', async () => {
    show.disabled = true;
    result.replaceChildren(loading('Pricing the month…'));
    const data = await run('application/json');
    show.disabled = false;
    if (data) renderPreview(result, data);
  });
  const csv = h('button', { type: 'button', class: 'button ghost', 'data-testid': 'download-preview' }, 'Preview CSV');
  csv.addEventListener('click', async () => {
    const text = await run('text/csv');
    if (text !== null) saveCsv(text, `preview-${month}.csv`);
  });
  return h('section', { class: 'card', 'aria-labelledby': 'preview-h', 'data-testid': 'preview-section' },
    h('h2', { id: 'preview-h' }, 'What-if pricing'),
    h('p', { class: 'muted' }, `${f.monthName(month)} under a proposed price book: paste its [[rates]] and [tenants.*] sections.`),
    h('label', { for: 'preview-book' }, 'Proposed price book (TOML)'), book,
    h('div', { class: 'toolbar' }, show, csv),
    result);
}

function renderPreview(target, data) {
  const rows = data.rows || [];
  if (rows.length === 0) {
    target.replaceChildren(h('p', { class: 'muted', 'data-testid': 'preview-none' }, 'No invoice for this month under either price book.'));
    return;
  }
  const cur = data.currency;
  const table = h('table', { class: 'data', 'data-testid': 'preview-table' },
    h('caption', { class: 'visually-hidden' }, 'Actual and proposed totals per tenant'),
    h('thead', {}, h('tr', {}, ['Tenant', 'Actual', 'Proposed', 'Difference'].map((c, i) =>
      h('th', { scope: 'col', class: i ? 'num' : null }, c)))),
    h('tbody', {}, rows.map((r) => h('tr', { 'data-testid': 'preview-row', 'data-tenant-id': r.tenant_id },
      h('th', { scope: 'row' }, r.tenant_id),
      h('td', { class: 'num' }, f.money(r.actual_total, cur)),
      h('td', { class: 'num' }, f.money(r.proposed_total, cur)),
      h('td', { class: 'num', 'data-testid': 'preview-difference' }, f.money(r.difference, cur))))));
  target.replaceChildren(h('div', { class: 'table-wrap' }, table));
}
