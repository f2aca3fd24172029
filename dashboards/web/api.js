// The JSON API client: bearer token, relative URLs (the pages are served by the
// same server), errors as ApiError, 429 retried after Retry-After, CSV downloads.

const TOKEN_KEY = 'allot.token';

/** An HTTP error answer of the API: status, the error's code and message. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** 401: the token is missing, expired or invalid. */
  get isAuth() {
    return this.status === 401;
  }

  /** 403 or 404: no such resource, or not for this token. */
  get isDenied() {
    return this.status === 403 || this.status === 404;
  }
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage may be disabled; the token then lives as long as the page.
  }
}

/**
 * The claims of a JWT, decoded without verifying (only to choose what to show:
 * the server is the authority). null when the text is not a JWT.
 */
export function decodeClaims(token) {
  const part = String(token || '').split('.')[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function url(path, query) {
  const u = new URL(path.replace(/^\//, ''), document.baseURI);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, v);
  }
  return u;
}

async function errorOf(res) {
  let code = '';
  let message = '';
  try {
    const body = await res.json();
    code = body?.error?.code ?? '';
    message = body?.error?.message ?? '';
  } catch {
    // Not JSON: keep the status alone.
  }
  const retry = Number(res.headers.get('Retry-After'));
  return new ApiError(res.status, code, message, Number.isFinite(retry) ? retry : undefined);
}

/**
 * GETs `path` (relative, e.g. "v1/tenants") with the bearer token. Answers the
 * parsed JSON, or the text when `accept` is not JSON. Throws ApiError.
 */
export async function get(path, { query, accept = 'application/json', token = getToken() } = {}) {
  const target = url(path, query);
  for (let attempt = 0; ; attempt += 1) {
    let res;
    try {
      res = await fetch(target, {
        headers: { Accept: accept, ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'network', `The server could not be reached (${e.message}).`);
    }
    if (res.ok) return accept.includes('json') ? res.json() : res.text();
    const err = await errorOf(res);
    if (res.status === 429 && attempt < 2) {
      await sleep(Math.min(10, Math.max(1, err.retryAfter ?? 1)) * 1000);
      continue;
    }
    throw err;
  }
}

/**
 * POSTs the text `body` to `path` with the bearer token. Answers the parsed
 * JSON, or the text when `accept` is not JSON. Throws ApiError.
 */
export async function postText(path, body, { query, accept = 'application/json', token = getToken() } = {}) {
  let res;
  try {
    res = await fetch(url(path, query), {
      method: 'POST',
      body,
      headers: { Accept: accept, 'Content-Type': 'application/toml', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'network', `The server could not be reached (${e.message}).`);
  }
  if (res.ok) return accept.includes('json') ? res.json() : res.text();
  throw await errorOf(res);
}

/** Saves the CSV `text` as `filename` through a download link. */
export function saveCsv(text, filename) {
  const blob = new Blob([text], { type: 'text/csv;charset=utf-8' });
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
  return text;
}

/** Fetches `path` as CSV and saves it as `filename` through a download link. */
export async function downloadCsv(path, filename) {
  const text = await get(path, { accept: 'text/csv' });
  return saveCsv(text, filename);
}

