//! app.js: the dashboard shell: hash router, navigation, and the per-page lifecycle (timers and streams closed on leave).

import { datasetPage, datasetsPage } from './datasets.js';
import { clear, h, message } from './dom.js';
import { comparePage, jobPage, jobsPage } from './jobs.js';
import { modelPage, modelsPage } from './models.js';
import { savedModelPage, savedModelsPage } from './saved.js';
import { searchesPage, searchPage } from './searches.js';
import { signInPage, tokensPage } from './tokens.js';
import { del, get } from './api.js';

const ROUTES = [
  [/^\/datasets$/, 'datasets', (root) => datasetsPage(root)],
  [/^\/datasets\/([^/]+)$/, 'datasets', (root, _ctx, m) => datasetPage(root, m[1])],
  [/^\/models$/, 'models', (root) => modelsPage(root)],
  [/^\/models\/([^/]+)$/, 'models', (root, _ctx, m) => modelPage(root, m[1])],
  [/^\/jobs$/, 'jobs', (root, ctx, _m, q) => jobsPage(root, ctx, q)],
  [/^\/jobs\/compare$/, 'jobs', (root, _ctx, _m, q) => comparePage(root, q)],
  [/^\/jobs\/([^/]+)$/, 'jobs', (root, ctx, m) => jobPage(root, ctx, m[1])],
  [/^\/searches$/, 'searches', (root, ctx) => searchesPage(root, ctx)],
  [/^\/searches\/([^/]+)$/, 'searches', (root, ctx, m) => searchPage(root, ctx, m[1])],
  [/^\/saved-models$/, 'saved-models', (root) => savedModelsPage(root)],
  [/^\/saved-models\/([^/]+)$/, 'saved-models', (root, _ctx, m) => savedModelPage(root, decodeURIComponent(m[1]))],
  [/^\/tokens$/, 'tokens', (root) => tokensPage(root)],
];

let session = null;

/** Reads who is signed in and shows it in the header, with the Tokens link for admins. */
async function loadSession() {
  try {
    session = await get('/v1/session');
  } catch {
    session = null;
  }
  const who = document.getElementById('who');
  const admin = !session?.auth_required || session?.scopes?.includes('admin');
  document.querySelector('nav a[data-nav="tokens"]').hidden = !admin;
  if (session?.signed_in) {
    const out = h('button', {
      type: 'button',
      class: 'link',
      'data-testid': 'signout',
      async onclick() {
        await del('/v1/session').catch(() => {});
        await loadSession();
        route();
      },
    }, 'Sign out');
    clear(who, h('span', { 'data-testid': 'signed-in-as' }, session.name), ' · ', out);
  } else {
    clear(who);
  }
}

function needsSignIn() {
  return session?.auth_required && !session?.signed_in;
}

let current = null;

/** A page's lifetime: cleanups run when the user navigates away, and alive() turns false. */
function newContext() {
  const fns = [];
  let alive = true;
  return {
    cleanup: (fn) => fns.push(fn),
    alive: () => alive,
    end() {
      alive = false;
      for (const fn of fns.splice(0)) {
        try {
          fn();
        } catch (err) {
          console.error(err);
        }
      }
    },
  };
}

async function route() {
  const raw = location.hash.replace(/^#/, '') || '/datasets';
  const [path, qs] = raw.split('?');
  const query = new URLSearchParams(qs || '');
  const root = document.getElementById('main');
  current?.end();
  const ctx = newContext();
  current = ctx;
  if (needsSignIn()) {
    signInPage(root, async () => {
      await loadSession();
      route();
    });
    return;
  }
  for (const link of document.querySelectorAll('nav a[data-nav]')) link.removeAttribute('aria-current');
  for (const [re, nav, page] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    document.querySelector(`nav a[data-nav="${nav}"]`)?.setAttribute('aria-current', 'page');
    document.title = `fitd · ${nav.replace('-', ' ')}`;
    try {
      await page(root, ctx, m, query);
    } catch (err) {
      if (ctx.alive()) clear(root, message('error', err));
    }
    return;
  }
  clear(root, h('h1', {}, 'Not found'), h('p', {}, 'No page at ', h('code', {}, path), '. ', h('a', { href: '#/datasets' }, 'Go to datasets')));
}

async function health() {
  const dot = document.getElementById('health');
  try {
    const res = await fetch('/healthz', { cache: 'no-store' });
    dot.textContent = res.ok ? 'server up' : `server answers ${res.status}`;
    dot.className = res.ok ? 'health ok' : 'health bad';
  } catch {
    dot.textContent = 'server unreachable';
    dot.className = 'health bad';
  }
}

window.addEventListener('hashchange', route);
// A 401 from any call: the session ended (signed out elsewhere, token revoked, server restarted).
window.addEventListener('fitd:signin', async () => {
  await loadSession();
  if (needsSignIn()) route();
});
loadSession().then(route);
health();
setInterval(health, 10000);
