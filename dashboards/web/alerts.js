// Alerts as `GET /v1/alerts` lists them (docs/reference.md#alerts-api): the
// overview's firing alerts of every tenant and a tenant page's own history, one
// table drawn the same way for both.

import { ApiError, get } from './api.js';
import { h, message } from './dom.js';
import * as f from './format.js';

/** What a rule's figure means, by kind: `value` and `threshold` as the API gives them. */
const FIGURE = {
  quota: (v) => `${v} %`,
  spend: (v) => v,
  forecast: (v) => v,
  health: (v) => v,
  noisy: (v) => (v === '1' ? 'flagged' : 'not flagged'),
  silent: (v) => `${v} h silent`,
  rejected: (v) => `${v} rejected / h`,
};

const OUTCOME_LABEL = { delivered: 'delivered', pending: 'pending', given_up: 'given up' };
const OUTCOME_CLASS = { delivered: 'chip', pending: 'chip chip-warning', given_up: 'chip chip-critical' };

function figure(alert) {
  const show = FIGURE[alert.kind] ?? ((v) => v);
  // A noisy flag has no threshold to show: it is raised or not.
  return h('span', {}, show(String(alert.value)), alert.kind === 'noisy'
    ? null
    : h('span', { class: 'muted' }, ` (fires at ${show(String(alert.threshold))})`));
}

function stateBadge(state) {
  const firing = state === 'firing';
  return h('span', {
    class: `badge ${firing ? 'badge-critical' : 'badge-ok'}`, 'data-testid': 'alert-state', 'data-state': state,
  }, firing ? 'firing' : 'resolved');
}

function deliveries(alert) {
  const list = alert.deliveries || [];
  if (list.length === 0) return h('span', { class: 'muted' }, '—');
  return h('ul', { class: 'chips' }, list.map((d) => h('li', {
    class: OUTCOME_CLASS[d.outcome] ?? 'chip', 'data-testid': 'alert-delivery', 'data-outcome': d.outcome,
    title: d.last_error ? `last error: ${d.last_error}` : (d.next_attempt_at ? `next attempt ${f.dateTime(d.next_attempt_at)}` : ''),
  }, `${d.channel}: ${OUTCOME_LABEL[d.outcome] ?? d.outcome}`)));
}

function tenantCell(alert) {
  if (alert.tenant_id === '*') return h('td', {}, 'all tenants');
  return h('td', {}, h('a', { href: `#/tenant/${encodeURIComponent(alert.tenant_id)}` }, alert.tenant_id));
}

/** The table of `alerts`; with `withTenant` a tenant column (the overview), else
 * a state column (a tenant's history). */
function alertTable(alerts, { withTenant, caption }) {
  const heads = ['When', 'Rule', withTenant ? 'Tenant' : 'State', 'Figure', 'Delivery'];
  return h('table', { class: 'data', 'data-testid': withTenant ? 'firing-alerts' : 'alert-history' },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, h('tr', {}, heads.map((label, i) => h('th', { scope: 'col', class: i === 4 ? 'optional' : null }, label)))),
    h('tbody', {}, alerts.map((a) => h('tr', {
      'data-testid': 'alert-row', 'data-key': a.key, 'data-tenant-id': a.tenant_id, 'data-state': a.state,
    },
    h('td', { class: 'nowrap' }, f.dateTime(a.as_of)),
    h('th', { scope: 'row' }, a.rule, h('span', { class: 'muted' }, ` · ${a.kind}`),
      (a.reasons || []).length
        ? h('ul', { class: 'chips' }, a.reasons.map((r) => h('li', { class: `chip chip-${r.severity}`, title: r.message }, r.code)))
        : null),
    withTenant ? tenantCell(a) : h('td', {}, stateBadge(a.state)),
    h('td', {}, figure(a)),
    h('td', { class: 'optional' }, deliveries(a))))));
}

/**
 * Fills `section` (whose last child is a placeholder) with the alerts `query`
 * selects. A server without the alerts API or refusing this token says so in
 * the section; an expired token is thrown, so the page asks for a new one.
 */
export async function loadAlerts(section, ctx, query, { withTenant, caption, none }) {
  let alerts;
  try {
    alerts = (await get('v1/alerts', { query })).alerts || [];
  } catch (err) {
    if (err instanceof ApiError && err.isAuth) throw err;
    if (!ctx.live()) return;
    section.lastChild.replaceWith(message('error', `Alerts are not available: ${err.message}`, 'alerts-error'));
    return;
  }
  if (!ctx.live()) return;
  section.lastChild.replaceWith(alerts.length === 0
    ? h('p', { class: 'muted', 'data-testid': 'alerts-none' }, none)
    : h('div', { class: 'table-wrap' }, alertTable(alerts, { withTenant, caption })));
}
