//! auth.test.mjs: a fitd server with tokens, driven in headless Chromium: the dashboard signs in with
//! a token (session cookie, never a URL), an admin creates a token on the Tokens page, and pages on
//! a second origin (cross-site and same-site) cannot make the signed-in browser change anything.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = process.env.FITD_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target'), 'debug', 'fitd');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOT_DIR || path.join(ROOT, 'ci-artifacts', 'screenshots');

let server;
let attacker;
let base;
let attackerPort;
let token;
let tmp;
let context;
let page;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitForHealth(url, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`fitd did not become healthy within ${ms} ms`);
}

async function datasets() {
  const res = await fetch(`${base}/v1/datasets`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200);
  return (await res.json()).items;
}

/** The attacker's page: a multipart upload and a text/plain cancel sent to fitd without a preflight. */
function attackPage(target) {
  return `<!doctype html><title>loading</title><script>
    const fd = new FormData();
    fd.append('name', 'planted');
    fd.append('file', new Blob(['label,a,b\\n0,1,2\\n1,3,4\\n']), 'data.csv');
    Promise.allSettled([
      fetch('${target}/v1/datasets', { method: 'POST', body: fd, mode: 'no-cors', credentials: 'include' }),
      fetch('${target}/v1/tokens', { method: 'POST', body: '{"name":"x","scopes":["admin"]}', mode: 'no-cors', credentials: 'include', headers: { 'Content-Type': 'text/plain' } }),
    ]).then(() => { document.title = 'sent'; });
  </script>`;
}

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fitd-e2e-auth-'));
  const db = path.join(tmp, 'fitd.db');
  token = execFileSync(BIN, ['token', 'create', '--db', db, '--scope', 'read,train,predict,admin', '--name', 'e2e-admin'], { encoding: 'utf8' }).trim();
  assert.match(token, /^fitd_[0-9a-f]{64}$/);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const log = fs.openSync(path.join(SHOTS, 'server-auth.log'), 'w');
  server = spawn(BIN, ['serve', '--addr', `127.0.0.1:${port}`, '--db', db, '--workers', '1'], { stdio: ['ignore', log, log] });
  await waitForHealth(base, 30_000);
  attacker = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(attackPage(base));
  });
  await new Promise((r) => attacker.listen(0, '127.0.0.1', r));
  attackerPort = attacker.address().port;
  context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(20_000);
});

after(async () => {
  await context?.close().catch(() => {});
  attacker?.close();
  if (server) {
    server.kill('SIGTERM');
    await new Promise((r) => {
      const t = setTimeout(() => {
        server.kill('SIGKILL');
        r();
      }, 10_000);
      server.once('exit', () => {
        clearTimeout(t);
        r();
      });
    });
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('fitd with API tokens', () => {
  test('the dashboard asks for a token, signs in to an HttpOnly cookie, and an admin creates a token', async () => {
    await page.goto(`${base}/#/datasets`);
    await page.getByTestId('signin-form').waitFor();
    await page.getByTestId('signin-token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Datasets' }).waitFor();
    assert.equal(await page.getByTestId('signed-in-as').textContent(), 'e2e-admin');
    assert.ok(!page.url().includes(token), 'the token is in the URL');
    const cookies = await context.cookies(base);
    const session = cookies.find((c) => c.name === 'fitd_session');
    assert.ok(session, 'no session cookie');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
    assert.ok(!session.value.includes(token.slice(5)), 'the cookie holds the token');
    assert.equal(await page.evaluate(() => document.cookie), '', 'scripts can read the session');

    await page.locator('nav a[data-nav="tokens"]').click();
    await page.getByRole('heading', { name: 'API tokens' }).waitFor();
    await page.getByTestId('token-form').locator('input[name="name"]').fill('reader');
    await page.getByRole('button', { name: 'Create token' }).click();
    const created = await page.getByTestId('new-token').textContent();
    assert.match(created, /^fitd_[0-9a-f]{64}$/);
    await page.getByTestId('tokens-list').locator('tr', { hasText: 'reader' }).waitFor();
    await page.screenshot({ path: path.join(SHOTS, 'auth-01-tokens.png'), fullPage: true });
  });

  test('pages on another origin cannot make the signed-in browser upload or create tokens', async () => {
    for (const host of ['localhost', '127.0.0.1']) {
      // localhost is another site; 127.0.0.1 on another port is the same site but another origin.
      const evil = await context.newPage();
      await evil.goto(`http://${host}:${attackerPort}/`);
      await evil.waitForFunction(() => document.title === 'sent');
      await evil.close();
    }
    assert.equal((await datasets()).length, 0, 'a cross-origin page uploaded a dataset');
    // Refused by the Origin/Sec-Fetch-Site check (also where SameSite would let the cookie through).
    const log = fs.readFileSync(path.join(SHOTS, 'server-auth.log'), 'utf8');
    assert.equal(log.split('cross-site request refused').length - 1, 4, 'the server did not refuse all four requests');
    const res = await fetch(`${base}/v1/tokens`, { headers: { Authorization: `Bearer ${token}` } });
    const names = (await res.json()).items.map((t) => t.name);
    assert.deepEqual(names, ['e2e-admin', 'reader']);

    // The same upload from the dashboard's own origin works, so the payload itself is fine.
    const status = await page.evaluate(async () => {
      const fd = new FormData();
      fd.append('name', 'own');
      fd.append('file', new Blob(['label,a,b\n0,1,2\n1,3,4\n']), 'data.csv');
      return (await fetch('/v1/datasets', { method: 'POST', body: fd })).status;
    });
    assert.equal(status, 201);
    assert.deepEqual((await datasets()).map((d) => d.name), ['own']);
  });

  test('signing out shows the sign-in form again', async () => {
    await page.goto(`${base}/#/datasets`);
    await page.getByTestId('signout').click();
    await page.getByTestId('signin-form').waitFor();
    const res = await page.evaluate(async () => (await fetch('/v1/datasets')).status);
    assert.equal(res, 401);
  });
});
