// Tiny DOM helpers: build elements without innerHTML (every text from the API is
// set as text, never parsed as markup), and sortable tables.

/**
 * h('a', { href: '#/', class: 'x', 'data-testid': 'y', onclick: fn }, 'text', child)
 * Attributes: `class`, `data-*`/`aria-*`/others as attributes, `on*` functions as
 * listeners, `hidden`/`disabled`/`checked`/`value` as properties. Children: nodes,
 * strings, numbers, arrays; null, undefined and false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      node.addEventListener(k.slice(2), v);
    } else if (k === 'hidden' || k === 'disabled' || k === 'checked' || k === 'value') {
      node[k] = v;
    } else if (k === 'style' && typeof v === 'object') {
      Object.assign(node.style, v);
    } else {
      node.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** A message box: kind is 'error', 'denied', 'info' or 'warning'. */
export function message(kind, text, testid, ...extra) {
  return h('div', {
    class: `message message-${kind}`,
    role: kind === 'info' ? 'status' : 'alert',
    'data-testid': testid,
  }, h('p', {}, text), ...extra);
}

/**
 * A table whose column headers sort it.
 *
 * columns: [{ key, label, compare?(a, b), numeric?, className? }] (no compare: not sortable)
 * rowsOf(item): the <tr> elements of one item (one, or more for detail rows)
 * state: { key, dir: 'asc' | 'desc' }; onSort(state) is told of every change.
 * foot(items): an optional <tr> for the table foot; empty: text when no item.
 */
export function sortableTable({ testid, caption, columns, items, rowsOf, state, onSort, foot, empty }) {
  const table = h('table', { class: 'data', 'data-testid': testid });
  if (caption) table.append(h('caption', { class: 'visually-hidden' }, caption));
  const headRow = h('tr');
  const tbody = h('tbody');
  const tfoot = h('tfoot');
  table.append(h('thead', {}, headRow), tbody, tfoot);
  let current = items;

  const headers = columns.map((col) => {
    const th = h('th', { scope: 'col', class: [col.numeric ? 'num' : '', col.className ?? ''].join(' ').trim() || null });
    if (col.sortable === false || !col.compare) {
      th.append(col.label);
    } else {
      th.append(h('button', {
        type: 'button',
        class: 'sort',
        'data-testid': `sort-${col.key}`,
        onclick: () => {
          state = {
            key: col.key,
            dir: state.key === col.key && state.dir === 'asc' ? 'desc' : 'asc',
          };
          onSort?.(state);
          draw();
        },
      }, col.label, h('span', { class: 'sort-mark', 'aria-hidden': 'true' })));
    }
    headRow.append(th);
    return th;
  });

  function draw() {
    const col = columns.find((c) => c.key === state.key && c.compare);
    const sorted = [...current];
    if (col) {
      const sign = state.dir === 'desc' ? -1 : 1;
      sorted.sort((a, b) => sign * col.compare(a, b));
    }
    columns.forEach((c, i) => {
      const active = col && c.key === col.key;
      if (active) headers[i].setAttribute('aria-sort', state.dir === 'asc' ? 'ascending' : 'descending');
      else headers[i].removeAttribute('aria-sort');
    });
    tbody.replaceChildren(...sorted.flatMap((item) => rowsOf(item)));
    if (sorted.length === 0 && empty) {
      tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: columns.length }, empty)));
    }
    tfoot.replaceChildren(...(foot && sorted.length ? [foot(sorted)].flat().filter(Boolean) : []));
  }

  draw();
  return {
    table,
    update(items2) {
      current = items2;
      draw();
    },
  };
}

/** A placeholder while data loads. */
export function loading(text = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), text);
}

/** A status badge: ok, warning or critical. */
export function badge(status, testid = 'status-badge') {
  const s = ['ok', 'warning', 'critical'].includes(status) ? status : 'unknown';
  return h('span', { class: `badge badge-${s}`, 'data-testid': testid, 'data-status': s }, s);
}
