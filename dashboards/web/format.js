// Formatting and exact decimal helpers. The API sends every decimal as a string
// holding its exact text ("12.34", "-0.50", "1.000000000000"); money shown on the
// page and totals added up here stay exact: they are computed on BigInt, never on
// floating point. Floats are used only to draw charts.

/** Parses a decimal string into { units: BigInt, scale } (value = units / 10^scale). */
export function parseDecimal(text) {
  const s = String(text ?? '').trim();
  const m = /^([+-]?)(\d*)(?:\.(\d*))?$/.exec(s);
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) return null;
  const frac = m[3] ?? '';
  let units = BigInt((m[2] || '0') + frac);
  if (m[1] === '-') units = -units;
  return { units, scale: frac.length };
}

function rescale(d, scale) {
  return d.units * 10n ** BigInt(scale - d.scale);
}

/** Exact a + b of two decimal strings, as a decimal string. */
export function addDecimal(a, b) {
  const x = parseDecimal(a);
  const y = parseDecimal(b);
  if (!x) return y ? String(b) : '0';
  if (!y) return String(a);
  const scale = Math.max(x.scale, y.scale);
  return toText(rescale(x, scale) + rescale(y, scale), scale);
}

/** Exact sum of decimal strings. */
export function sumDecimals(values, scale = 2) {
  let acc = (0).toFixed(scale);
  for (const v of values) acc = addDecimal(acc, v);
  return acc;
}

/** Compares two decimal strings exactly: -1, 0 or 1. Unparsable text sorts first. */
export function compareDecimal(a, b) {
  const x = parseDecimal(a);
  const y = parseDecimal(b);
  if (!x || !y) return (x ? 1 : 0) - (y ? 1 : 0);
  const scale = Math.max(x.scale, y.scale);
  const l = rescale(x, scale);
  const r = rescale(y, scale);
  return l < r ? -1 : l > r ? 1 : 0;
}

function toText(units, scale) {
  const neg = units < 0n;
  let digits = (neg ? -units : units).toString();
  if (scale > 0) {
    digits = digits.padStart(scale + 1, '0');
    digits = `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  }
  return (neg ? '-' : '') + digits;
}

/** Rounds a decimal string half away from zero to `places` (for display only). */
export function roundDecimal(text, places) {
  const d = parseDecimal(text);
  if (!d) return String(text ?? '');
  if (d.scale <= places) return toText(rescale(d, places), places);
  const div = 10n ** BigInt(d.scale - places);
  const neg = d.units < 0n;
  const abs = neg ? -d.units : d.units;
  let q = abs / div;
  if ((abs % div) * 2n >= div) q += 1n;
  return toText(neg && q !== 0n ? -q : q, places);
}

/** Adds thousands separators to the integer part of a decimal string. */
export function groupThousands(text) {
  const s = String(text);
  const m = /^(-?)(\d+)(\.\d+)?$/.exec(s);
  if (!m) return s;
  return m[1] + m[2].replace(/\B(?=(\d{3})+(?!\d))/g, ',') + (m[3] ?? '');
}

/** Money as sent by the API (already to the cent), grouped, with its currency. */
export function money(text, currency) {
  if (text === undefined || text === null || text === '') return '—';
  const shown = groupThousands(text);
  return currency ? `${shown} ${currency}` : shown;
}

/** A quantity with at most `places` decimals for display (exact value in a title). */
export function quantity(text, places = 3) {
  if (text === undefined || text === null || text === '') return '';
  const r = roundDecimal(text, places);
  const trimmed = r.includes('.') ? r.replace(/0+$/, '').replace(/\.$/, '') : r;
  return groupThousands(trimmed === '-0' ? '0' : trimmed);
}

/** A percentage string ("83.25") for display: "83.3 %". */
export function percent(text, places = 1) {
  return `${quantity(text, places)} %`;
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** A raw amount of a metric (bytes, seconds, …) in words a person reads. */
export function rawAmount(metric, text) {
  const v = Number(text);
  if (!Number.isFinite(v)) return String(text);
  if (/_bytes$/.test(metric)) {
    let i = 0;
    let x = Math.abs(v);
    while (x >= 1024 && i < BYTE_UNITS.length - 1) {
      x /= 1024;
      i += 1;
    }
    return `${(Math.sign(v) * x).toFixed(x >= 100 || i === 0 ? 0 : 1)} ${BYTE_UNITS[i]}`;
  }
  if (/_seconds$/.test(metric)) {
    const h = v / 3600;
    return h >= 1 ? `${groupThousands(h.toFixed(1))} h` : `${Math.round(v)} s`;
  }
  return groupThousands(quantity(text, 2));
}

const pad = (n) => String(n).padStart(2, '0');

/** "2026-11-28" (UTC). */
export function isoDay(ms) {
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

/** "2026-11" (UTC). */
export function isoMonth(ms) {
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}`;
}

/** "2026-11-28 14:00 UTC". */
export function dateTime(value) {
  const ms = typeof value === 'number' ? value : Date.parse(value);
  if (!Number.isFinite(ms)) return String(value ?? '');
  const d = new Date(ms);
  return `${isoDay(ms)} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** "Nov 28" (UTC). */
export function shortDay(ms) {
  const d = new Date(ms);
  return `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}`;
}

/** "14:00" (UTC). */
export function hourOfDay(ms) {
  return `${pad(new Date(ms).getUTCHours())}:00`;
}

/** "November 2026". */
export function monthName(period) {
  const m = /^(\d{4})-(\d{2})$/.exec(period);
  if (!m) return period;
  const names = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August',
    'September', 'October', 'November', 'December'];
  return `${names[Number(m[2]) - 1]} ${m[1]}`;
}

/** The month before or after "YYYY-MM". */
export function shiftMonth(period, delta) {
  const [y, m] = period.split('-').map(Number);
  const d = new Date(Date.UTC(y, m - 1 + delta, 1));
  return isoMonth(d.getTime());
}

/** Start (inclusive) and end (exclusive) of "YYYY-MM" in UTC milliseconds. */
export function monthBounds(period) {
  const [y, m] = period.split('-').map(Number);
  return [Date.UTC(y, m - 1, 1), Date.UTC(y, m, 1)];
}

/** "1 GiB-month" → what one bucket of a usage chart measures. */
export function chartUnit(unit) {
  // A gauge's chart point is its average level over the bucket: GiB-month → GiB.
  return String(unit ?? '').replace(/-month$/, '');
}

/** A metric id in words: "egress_bytes" → "Egress". */
export function metricLabel(metric) {
  const known = {
    compute_seconds: 'Compute',
    egress_bytes: 'Egress',
    storage_bytes: 'Storage',
  };
  if (known[metric]) return known[metric];
  const s = String(metric).replace(/_(bytes|seconds|count|total)$/, '').replace(/_/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** A share ("0.333333") as a percentage text ("33.3333"), exactly. */
export function shareToPercent(text) {
  const d = parseDecimal(text);
  if (!d) return String(text ?? '');
  return d.scale >= 2 ? toText(d.units, d.scale - 2) : toText(d.units * 10n ** BigInt(2 - d.scale), 0);
}
