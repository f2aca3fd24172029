// A small SVG charting module: bar and line charts over evenly spaced time
// buckets, with a y axis of "nice" ticks, x labels, gridlines and a hover
// tooltip. Charts redraw at their container's width (ResizeObserver), so text
// keeps its size from a phone to a wide screen.

import { quantity } from './format.js';

const SVG = 'http://www.w3.org/2000/svg';

function el(name, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c);
  return node;
}

/** Ticks 0 … ≥ max at a 1, 2 or 5 × 10^n step, about `count` of them. */
export function niceTicks(max, count = 4) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  const ticks = [];
  for (let v = 0; v < max + step * 0.5; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < max) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

/** A tick value in few characters: 1500 → "1.5k", 0.25 → "0.25". */
export function shortNumber(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toFixed(1)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  if (a === 0) return '0';
  if (a < 0.01) return v.toExponential(0);
  return String(+v.toPrecision(3));
}

/**
 * A chart of evenly spaced buckets.
 *
 * options:
 * - kind: 'bar' | 'line'
 * - buckets: [{ start: ms, value: number, label: exact text }] in time order
 * - title: the caption; unit: what a value measures ("GiB")
 * - xLabel(ms, index): the text under a tick; tipLabel(ms): the tooltip's heading
 * - tickKey(ms): a bucket's number on the calendar; tickSteps: allowed label strides
 * - testid: data-testid of the figure
 */
export function chart(options) {
  const { kind = 'bar', buckets, title, unit = '', xLabel, tipLabel, testid, tickKey, tickSteps } = options;
  const figure = document.createElement('figure');
  figure.className = `chart chart-${kind}`;
  if (testid) figure.dataset.testid = testid;
  const caption = document.createElement('figcaption');
  caption.textContent = title;
  const holder = document.createElement('div');
  holder.className = 'chart-canvas';
  const tip = document.createElement('div');
  tip.className = 'chart-tip';
  tip.setAttribute('role', 'status');
  tip.hidden = true;
  holder.append(tip);
  figure.append(caption, holder);

  const total = buckets.reduce((s, b) => s + b.value, 0);
  const nonZero = buckets.filter((b) => b.value > 0).length;
  figure.dataset.points = String(nonZero);

  let drawnWidth = 0;
  const draw = (width) => {
    if (width < 50 || Math.abs(width - drawnWidth) < 2) return;
    drawnWidth = width;
    holder.querySelector('svg')?.remove();
    holder.prepend(render(width));
  };

  function render(width) {
    const height = 210;
    const m = { top: 22, right: 12, bottom: 30, left: 52 };
    const plotW = width - m.left - m.right;
    const plotH = height - m.top - m.bottom;
    const max = Math.max(0, ...buckets.map((b) => b.value));
    const ticks = niceTicks(max);
    const top = ticks[ticks.length - 1] || 1;
    const n = Math.max(1, buckets.length);
    const band = plotW / n;
    const y = (v) => m.top + plotH - (v / top) * plotH;
    const cx = (i) => m.left + band * (i + 0.5);

    const svg = el('svg', {
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: 'img',
      'aria-label': `${title}: ${nonZero} of ${buckets.length} buckets with usage, ` +
        `peak ${shortNumber(max)} ${unit}`,
    });
    svg.append(el('desc', {}, `${title}. Total ${shortNumber(total)} ${unit}.`));

    // Y axis: gridlines and labels.
    const axisY = el('g', { class: 'axis axis-y' });
    for (const t of ticks) {
      axisY.append(
        el('line', { x1: m.left, x2: width - m.right, y1: y(t), y2: y(t), class: 'grid' }),
        el('text', { x: m.left - 6, y: y(t), dy: '0.32em', 'text-anchor': 'end' }, shortNumber(t)),
      );
    }
    axisY.append(el('text', {
      class: 'axis-unit', x: 2, y: 9, 'text-anchor': 'start',
    }, unit));
    svg.append(axisY);

    // X axis: a label every `every` buckets so labels never overlap.
    const axisX = el('g', { class: 'axis axis-x' });
    // `tickKey(ms)` numbers buckets on the calendar (hours or days since the
    // epoch) so that labels fall on round times (00:00, 06:00, …), stepping by the
    // smallest of `tickSteps` that leaves room for every label.
    const fit = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(plotW / 64))));
    const every = (tickSteps || []).find((s) => s >= fit) ?? fit;
    const key = (b, i) => (tickKey ? tickKey(b.start) : i);
    axisX.append(el('line', {
      x1: m.left, x2: width - m.right, y1: m.top + plotH, y2: m.top + plotH, class: 'baseline',
    }));
    buckets.forEach((b, i) => {
      if (key(b, i) % every !== 0) return;
      axisX.append(
        el('line', { x1: cx(i), x2: cx(i), y1: m.top + plotH, y2: m.top + plotH + 4, class: 'tick' }),
        el('text', { x: cx(i), y: m.top + plotH + 17, 'text-anchor': 'middle' }, xLabel(b.start, i)),
      );
    });
    svg.append(axisX);

    // The series.
    const series = el('g', { class: 'series' });
    if (kind === 'bar') {
      const w = Math.max(1, band * 0.78);
      buckets.forEach((b, i) => {
        if (!(b.value > 0)) return;
        const rect = el('rect', {
          class: 'bar', x: cx(i) - w / 2, y: y(b.value), width: w,
          height: Math.max(1, m.top + plotH - y(b.value)), rx: Math.min(3, w / 4),
          'data-testid': 'chart-point', 'data-value': b.exact ?? b.label, 'data-start': b.start,
        });
        rect.append(el('title', {}, `${tipLabel(b.start)}: ${b.label} ${unit}`));
        series.append(rect);
      });
    } else {
      const pts = buckets.map((b, i) => [cx(i), y(b.value)]);
      const d = pts.map(([px, py], i) => `${i ? 'L' : 'M'}${px.toFixed(1)},${py.toFixed(1)}`).join('');
      if (pts.length > 0) {
        const base = (m.top + plotH).toFixed(1);
        series.append(
          el('path', {
            class: 'area',
            d: `${d}L${pts[pts.length - 1][0].toFixed(1)},${base}L${pts[0][0].toFixed(1)},${base}Z`,
          }),
          el('path', { class: 'line', d }),
        );
      }
      buckets.forEach((b, i) => {
        if (!(b.value > 0)) return;
        const dot = el('circle', {
          class: 'dot', cx: pts[i][0], cy: pts[i][1], r: band > 8 ? 2.5 : 1.6,
          'data-testid': 'chart-point', 'data-value': b.exact ?? b.label, 'data-start': b.start,
        });
        dot.append(el('title', {}, `${tipLabel(b.start)}: ${b.label} ${unit}`));
        series.append(dot);
      });
    }
    svg.append(series);

    // Hover: a guide line and the tooltip for the bucket under the pointer.
    const guide = el('line', {
      class: 'guide', y1: m.top, y2: m.top + plotH, x1: -10, x2: -10, visibility: 'hidden',
    });
    svg.append(guide);
    const hit = el('rect', {
      class: 'hit', x: m.left, y: m.top, width: plotW, height: plotH, fill: 'transparent',
    });
    svg.append(hit);
    const hide = () => {
      tip.hidden = true;
      guide.setAttribute('visibility', 'hidden');
    };
    hit.addEventListener('pointermove', (ev) => {
      const box = svg.getBoundingClientRect();
      const px = ((ev.clientX - box.left) / box.width) * width;
      const i = Math.min(n - 1, Math.max(0, Math.floor((px - m.left) / band)));
      const b = buckets[i];
      if (!b) return hide();
      guide.setAttribute('x1', cx(i));
      guide.setAttribute('x2', cx(i));
      guide.setAttribute('visibility', 'visible');
      tip.replaceChildren();
      const head = document.createElement('strong');
      head.textContent = tipLabel(b.start);
      const val = document.createElement('span');
      val.textContent = `${b.label} ${unit}`;
      tip.append(head, val);
      tip.hidden = false;
      const left = (cx(i) / width) * box.width;
      tip.style.left = `${Math.min(box.width - tip.offsetWidth - 4, Math.max(4, left + 10))}px`;
      tip.style.top = `${Math.max(0, (y(b.value) / height) * box.height - 44)}px`;
    });
    hit.addEventListener('pointerleave', hide);
    return svg;
  }

  if (typeof ResizeObserver === 'function') {
    new ResizeObserver((entries) => draw(Math.floor(entries[0].contentRect.width))).observe(holder);
  }
  // Draw once as soon as the figure is in the page, even before a resize event.
  requestAnimationFrame(() => draw(Math.floor(holder.clientWidth || 600)));
  return figure;
}

/**
 * Fills `[from, to)` with one bucket every `step` ms from API points
 * ({ bucket_start, quantity }); buckets without a point hold 0.
 */
export function fillBuckets(points, from, to, step) {
  const byStart = new Map();
  for (const p of points) {
    const t = Date.parse(p.bucket_start);
    if (Number.isFinite(t)) byStart.set(t, p);
  }
  const out = [];
  for (let t = from; t < to; t += step) {
    const p = byStart.get(t);
    out.push({
      start: t,
      value: p ? Number(p.quantity) : 0,
      label: p ? quantity(p.quantity, 4) : '0',
      exact: p ? p.quantity : '0',
    });
  }
  return out;
}
