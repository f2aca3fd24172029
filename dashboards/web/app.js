// allot dashboards: a hash router over three pages (overview, tenant, finance),
// the token form, and the messages for an expired token or a denied tenant.
//
// Routes:  #/overview   #/tenant/<id>[?month=YYYY-MM]   #/finance/<YYYY-MM>
// A token arrives as #token=… (or …?token=… on any route); it is moved to
// sessionStorage and removed from the address bar at once.

import { ApiError, decodeClaims, getToken, setToken } from './api.js';
import { h, message } from './dom.js';
import { isoMonth } from './format.js';
import { overviewPage } from './pages/overview.js';
import { tenantPage } from './pages/tenant.js';
import { financePage } from './pages/finance.js';

export const MSG_AUTH = 'Your token has expired or is invalid — paste a new one';
export const MSG_DENIED = 'No such tenant, or you may not see it';

const app = document.getElementById('app');
const nav = document.getElementById('nav');
const session = document.getElementById('session');
let generation = 0;
let timers = [];

/** Moves a token from the URL fragment into sessionStorage; true if one was there. */
function takeTokenFromUrl() {
  const raw = location.hash.slice(1);
  const q = raw.startsWith('/') ? raw.indexOf('?') : -1;
  const path = raw.startsWith('/') ? (q < 0 ? raw : raw.slice(0, q)) : '';
  const params = new URLSearchParams(raw.startsWith('/') ? (q < 0 ? '' : raw.slice(q + 1)) : raw);
  const token = params.get('token');
  if (!token) return false;
  setToken(token.trim());
  params.delete('token');
  const rest = params.toString();
  const hash = path ? `#${path}${rest ? `?${rest}` : ''}` : '';
  history.replaceState(null, '', `${location.pathname}${location.search}${hash}`);
  return true;
}

function parseRoute() {
  const raw = location.hash.slice(1);
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  let parts;
  try {
    parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = ['bad-route'];
  }
  return { parts, params: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)) };
}

function homeOf(claims) {
  if (claims?.role === 'tenant' && claims.tenant) {
    return `#/tenant/${encodeURIComponent(claims.tenant)}`;
  }
  return '#/overview';
}

function renderChrome(claims, active) {
  const link = (href, label, key) => h('a', {
    href, class: 'nav-link', 'data-testid': `nav-${key}`,
    'aria-current': active === key ? 'page' : null,
  }, label);
  const links = [];
  if (claims?.role === 'tenant') {
    if (claims.tenant) links.push(link(homeOf(claims), 'My usage', 'tenant'));
  } else if (claims || getToken()) {
    links.push(link('#/overview', 'Tenants', 'overview'));
    links.push(link(`#/finance/${isoMonth(Date.now())}`, 'Finance', 'finance'));
  }
  nav.replaceChildren(...links);
  if (!getToken()) {
    session.replaceChildren();
    return;
  }
  const who = claims
    ? [h('span', { class: 'who-sub' }, claims.sub ?? 'unknown'), ' · ',
      h('span', { class: 'who-role', 'data-testid': 'session-role' }, claims.role ?? '?'),
      claims.role === 'tenant' && claims.tenant ? ` of ${claims.tenant}` : null]
    : ['signed in'];
  session.replaceChildren(
    h('span', { class: 'who' }, ...who),
    h('button', {
      type: 'button', class: 'button ghost', 'data-testid': 'sign-out',
      onclick: () => {
        setToken('');
        location.hash = '#/';
        route();
      },
    }, 'Sign out'),
  );
}

function showLogin(note) {
  renderChrome(null, null);
  document.title = 'Sign in · allot';
  const input = h('textarea', {
    id: 'token-input', name: 'token', rows: 4, required: true, autocomplete: 'off',
    spellcheck: 'false', 'data-testid': 'token-input',
    placeholder: 'eyJhbGciOi…',
  });
  const form = h('form', {
    class: 'login-form', 'data-testid': 'token-form',
    onsubmit: (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      setToken(token);
      const { parts } = parseRoute();
      if (parts.length === 0 || parts[0] === 'login') location.hash = homeOf(decodeClaims(token));
      route();
    },
  },
  h('label', { for: 'token-input' }, 'Access token'),
  input,
  h('p', { class: 'hint', id: 'token-hint' },
    'An operator mints one with ', h('code', {}, 'allot token --role finance --ttl 1h'),
    '. It is kept in this browser tab only.'),
  h('button', { type: 'submit', class: 'button primary', 'data-testid': 'token-submit' }, 'Open dashboards'));
  input.setAttribute('aria-describedby', 'token-hint');
  app.replaceChildren(h('section', { class: 'card login', 'data-testid': 'login' },
    h('h1', {}, 'Sign in'),
    note ? message('error', note, 'auth-message') : null,
    form));
  input.focus();
}

/** What every page gets: the claims, a guard against stale renders, timers. */
function context(gen, claims) {
  return {
    claims,
    live: () => gen === generation,
    every(ms, fn) {
      const id = setInterval(() => {
        if (gen === generation && document.visibilityState === 'visible') fn();
      }, ms);
      timers.push(id);
    },
    fail: (err, view) => fail(err, view, gen),
  };
}

/** Shows an error in `view` (or the whole page): 401 goes back to the token form. */
function fail(err, view, gen = generation) {
  if (gen !== generation) return;
  if (err instanceof ApiError && err.isAuth) {
    setToken('');
    showLogin(MSG_AUTH);
    return;
  }
  const target = view || app;
  if (err instanceof ApiError && err.isDenied) {
    target.replaceChildren(message('denied', MSG_DENIED, 'denied-message'));
    return;
  }
  const text = err instanceof ApiError
    ? (err.status === 429
      ? 'The server is busy (rate limited); try again in a few seconds.'
      : err.message || `The server answered ${err.status}.`)
    : `Something went wrong: ${err?.message ?? err}`;
  target.replaceChildren(message('error', text, 'error-message',
    h('button', { type: 'button', class: 'button', onclick: () => route() }, 'Try again')));
  console.error(err);
}

export async function route() {
  generation += 1;
  const gen = generation;
  timers.forEach(clearInterval);
  timers = [];
  takeTokenFromUrl();
  const token = getToken();
  if (!token) return showLogin(null);
  const claims = decodeClaims(token);
  const { parts, params } = parseRoute();
  const [page, arg] = parts;

  if (!page || page === 'login' || (page === 'overview' && claims?.role === 'tenant' && claims.tenant)) {
    const home = homeOf(claims);
    if (location.hash !== home) {
      history.replaceState(null, '', `${location.pathname}${location.search}${home}`);
    }
    return route();
  }
  renderChrome(claims, page);
  const view = h('div', { class: 'page', 'aria-busy': 'true' });
  app.replaceChildren(view);
  const ctx = context(gen, claims);
  try {
    if (page === 'overview') await overviewPage(view, ctx);
    else if (page === 'tenant' && arg) await tenantPage(view, ctx, arg, params);
    else if (page === 'finance') await financePage(view, ctx, arg, params);
    else view.replaceChildren(message('info', 'There is no such page.', 'not-found', h('a', { href: homeOf(claims) }, 'Go to the dashboards')));
  } catch (err) {
    fail(err, view, gen);
  } finally {
    view.removeAttribute('aria-busy');
  }
}

window.addEventListener('hashchange', () => route());
route();
