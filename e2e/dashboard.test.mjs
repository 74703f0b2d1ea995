//! dashboard.test.mjs: drives the dashboard in headless Chromium against the real fitd binary, end to end.
//
// Run: `cd e2e && npm ci && node --test` (see README.md). The server binary comes from FITD_BIN,
// else $CARGO_TARGET_DIR/debug/fitd, else <repo>/target/debug/fitd. Screenshots go to
// <repo>/ci-artifacts/screenshots (SCREENSHOT_DIR overrides), with the server log beside them.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import zlib from 'node:zlib';
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
const MNIST = path.join(ROOT, 'tests', 'data', 'mnist-10k');
// Training runs on a shared 2-core machine in a debug build: be generous.
const TRAIN_TIMEOUT = Number(process.env.E2E_TRAIN_TIMEOUT_MS || 240_000);

const state = { pageErrors: [], consoleErrors: [] };

/** The labels of an IDX label file (gzipped), read here so the test checks what the file says. */
function idxLabels(file) {
  const bytes = zlib.gunzipSync(fs.readFileSync(file));
  assert.equal(bytes.readUInt32BE(0), 0x801, `${file} is not an IDX label file`);
  return [...bytes.subarray(8)].map(String);
}
const TRAIN_IMAGES = path.join(MNIST, 'train-images-idx3-ubyte.gz');
const TRAIN_LABELS = path.join(MNIST, 'train-labels-idx1-ubyte.gz');
let server;
let serverExit = null;
let base;
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
  let last = 'no answer';
  while (Date.now() < end) {
    if (serverExit) throw new Error(`fitd exited early (${serverExit}); see ${path.join(SHOTS, 'server.log')}`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = err.message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`fitd did not become healthy within ${ms} ms: ${last}`);
}

async function shot(name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

const hashId = (prefix) => {
  const m = new URL(page.url()).hash.match(new RegExp(`^#/${prefix}/([^/?]+)$`));
  return m ? decodeURIComponent(m[1]) : null;
};

async function api(method, p, body) {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

function need(value, what) {
  if (!value) throw new Error(`cannot run: ${what} was not created by an earlier step`);
  return value;
}

before(async () => {
  assert.ok(fs.existsSync(BIN), `fitd binary not found at ${BIN}; build it with \`cargo build\` or set FITD_BIN`);
  assert.ok(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}; apt-get install chromium or set CHROMIUM_BIN`);
  fs.mkdirSync(SHOTS, { recursive: true });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fitd-e2e-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const log = fs.openSync(path.join(SHOTS, 'server.log'), 'w');
  server = spawn(BIN, ['serve', '--addr', `127.0.0.1:${port}`, '--db', path.join(tmp, 'fitd.db'), '--workers', '2'], {
    stdio: ['ignore', log, log],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  server.on('exit', (code, signal) => {
    serverExit = signal || `code ${code}`;
  });
  await waitForHealth(base, 30_000);
  context = await chromium.launchPersistentContext(path.join(tmp, 'chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(20_000);
  page.on('pageerror', (err) => state.pageErrors.push(String(err)));
  page.on('console', (msg) => {
    if (msg.type() === 'error') state.consoleErrors.push(msg.text());
  });
});

after(async () => {
  await context?.close().catch(() => {});
  if (server && !serverExit) {
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

describe('fitd dashboard', () => {
  test('the dashboard is served by fitd itself with its assets', async () => {
    const res = await fetch(`${base}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /text\/html/);
    const js = await fetch(`${base}/assets/app.js`);
    assert.match(js.headers.get('content-type'), /javascript/);
    await page.goto(`${base}/#/datasets`);
    await page.getByRole('heading', { name: 'Datasets' }).waitFor();
    await page.locator('#health.ok').waitFor();
    await shot('01-datasets-empty');
  });

  test('uploading the MNIST IDX pair shows upload progress, then samples with labels and the class chart', async () => {
    await page.goto(`${base}/#/datasets`);
    const form = page.getByTestId('upload-form');
    await form.locator('input[name=name]').fill('mnist-10k');
    await form.locator('select[name=format]').selectOption('idx');
    await form.locator('input[name=images]').setInputFiles(TRAIN_IMAGES);
    await form.locator('input[name=labels]').setInputFiles(TRAIN_LABELS);
    // The page moves to the new dataset as soon as the upload finishes: record the bar's labels.
    await page.evaluate(() => {
      window.__uploadLabels = [];
      const label = document.querySelector('[data-testid=upload-progress] .progress-label');
      new MutationObserver(() => window.__uploadLabels.push(label.textContent)).observe(label, { childList: true, characterData: true, subtree: true });
    });
    await form.getByRole('button', { name: 'Upload' }).click();
    await page.waitForURL(/#\/datasets\/[^/]+$/, { timeout: 60_000 });
    const labels = await page.evaluate(() => window.__uploadLabels);
    assert.ok(labels.some((l) => /Uploading… \d+ %|Uploaded|Done/.test(l)), `progress labels seen: ${JSON.stringify(labels)}`);
    state.mnistId = hashId('datasets');
    await page.getByRole('heading', { name: 'mnist-10k' }).waitFor();
    await page.locator('[data-testid=sample-grid] img.sample-img').nth(19).waitFor();
    assert.equal(await page.locator('[data-testid=sample-grid] img.sample-img').count(), 20);
    const sampleLabels = await page.getByTestId('sample-label').allTextContents();
    assert.deepEqual(sampleLabels, idxLabels(TRAIN_LABELS).slice(0, 20));
    assert.equal(await page.locator('[data-testid=class-chart] svg').getAttribute('data-bars'), '10');
    await shot('02-dataset-detail');
  });

  test('a built-in dataset is added from the datasets page', async () => {
    await page.goto(`${base}/#/datasets`);
    const form = page.getByTestId('builtin-form');
    await form.locator('select[name=source]').selectOption('digits');
    await form.getByRole('button', { name: 'Add' }).click();
    await page.waitForURL(/#\/datasets\/[^/]+$/, { timeout: 30_000 });
    state.digitsId = hashId('datasets');
    await page.getByRole('heading', { name: 'digits' }).waitFor();
    await page.locator('[data-testid=sample-grid] img.sample-img').first().waitFor();
    await page.goto(`${base}/#/datasets`);
    await page.locator('[data-testid=datasets-list] tbody tr').nth(1).waitFor();
    await shot('03-datasets-list');
  });

  test('a bad model spec shows each error beside its field, and a good one shows the summary', async () => {
    await page.goto(`${base}/#/models`);
    const form = page.getByTestId('model-form');
    const spec = {
      name: 'mnist-mlp',
      input_shape: [28, 28],
      layers: [
        { type: 'flatten' },
        { type: 'rescaling', scale: 1 / 255, offset: 0 },
        { type: 'dense', units: 32, activation: 'relu' },
        { type: 'dropout', rate: 1.5 },
        { type: 'dense', units: 10, activation: 'softmax' },
      ],
    };
    await page.getByTestId('model-json').fill(JSON.stringify(spec, null, 2));
    await form.getByRole('button', { name: 'Create model' }).click();
    const err = page.locator('[data-testid=model-errors] .json-line.has-error .field-error').first();
    await err.waitFor();
    assert.match(await err.textContent(), /layers\[3\]\.rate/);
    const line = page.locator('[data-testid=model-errors] .json-line.has-error').first();
    assert.match((await line.getAttribute('data-path')) || '', /^layers\[3\]/);
    await shot('04-model-field-error');

    spec.layers[3].rate = 0.2;
    await page.getByTestId('model-json').fill(JSON.stringify(spec, null, 2));
    await form.getByRole('button', { name: 'Create model' }).click();
    await page.waitForURL(/#\/models\/[^/]+$/);
    state.modelId = hashId('models');
    await page.locator('[data-testid=model-summary] tbody tr').nth(4).waitFor();
    assert.equal(await page.locator('[data-testid=model-summary] tbody tr').count(), 5);
    // 784*32+32 + 32*10+10 trainable parameters.
    assert.match(await page.getByTestId('model-summary').textContent(), /25,?450/);
    await shot('05-model-detail');
  });

  test('a job started from the form draws at least 3 epochs live over SSE and succeeds', async () => {
    const datasetId = need(state.mnistId, 'the MNIST dataset');
    const modelId = need(state.modelId, 'the model');
    await page.goto(`${base}/#/jobs?model=${modelId}&dataset=${datasetId}`);
    const form = page.getByTestId('job-form');
    await form.locator('input[name=epochs]').fill('5');
    await form.locator('input[name=batch_size]').fill('64');
    await form.locator('input[name=split]').fill('0.2');
    // A cosine schedule with a warmup, and TerminateOnNaN.
    await form.locator('select[name=schedule]').selectOption('cosine_decay');
    await form.getByTestId('schedule-fields').waitFor();
    await form.locator('input[name=decay_steps]').fill('400');
    await form.locator('input[name=warmup_steps]').fill('50');
    assert.equal(await form.locator('input[name=reduce_lr_on_plateau]').isDisabled(), true);
    await form.locator('input[name=terminate_on_nan]').check();
    await form.getByRole('button', { name: 'Start job' }).click();
    await page.waitForURL(/#\/jobs\/[^/]+$/);
    state.jobId = hashId('jobs');
    await page.waitForFunction(
      () => Number(document.querySelector('[data-testid=loss-chart] svg')?.dataset.points || 0) >= 3,
      null,
      { timeout: TRAIN_TIMEOUT },
    );
    assert.match(await page.getByTestId('live-status').textContent(), /Live|stream has ended/);
    assert.ok(Number(await page.locator('[data-testid=accuracy-chart] svg').getAttribute('data-points')) >= 3);
    await shot('06-job-live');
    await page.locator('h1 [data-status=succeeded]').waitFor({ timeout: TRAIN_TIMEOUT });
    assert.equal(await page.locator('[data-testid=loss-chart] svg').getAttribute('data-points'), '5');
    const job = await api('GET', `/v1/jobs/${state.jobId}`);
    assert.deepEqual(job.body.request.compile.optimizer.learning_rate, {
      type: 'cosine_decay', initial_learning_rate: 0, decay_steps: 400, warmup_target: 0.001, warmup_steps: 50,
    });
    assert.deepEqual(job.body.request.callbacks.map((c) => c.type), ['model_checkpoint', 'terminate_on_nan']);
    const hist = await api('GET', `/v1/jobs/${state.jobId}/history`);
    assert.equal(hist.body.history.learning_rate.length, 5);
    // The rate rises through the warmup, then decays.
    assert.ok(hist.body.history.learning_rate[0] > 0 && hist.body.history.learning_rate[4] < 0.001);
    await page.locator('[data-testid=epoch-table] th', { hasText: 'learning_rate' }).waitFor();
    await page.locator('[data-testid=checkpoints] tbody tr').first().waitFor();
    await page.getByTestId('saved-model-link').waitFor();
    await shot('07-job-succeeded');
  });

  test('a second job is cancelled from its page and says so in words', async () => {
    const datasetId = need(state.mnistId, 'the MNIST dataset');
    const modelId = need(state.modelId, 'the model');
    await page.goto(`${base}/#/jobs?model=${modelId}&dataset=${datasetId}`);
    const form = page.getByTestId('job-form');
    await form.locator('input[name=epochs]').fill('200');
    await form.locator('input[name=batch_size]').fill('16');
    await form.getByRole('button', { name: 'Start job' }).click();
    await page.waitForURL(/#\/jobs\/[^/]+$/);
    state.cancelledJobId = hashId('jobs');
    await page.locator('h1 [data-status=running]').waitFor({ timeout: 60_000 });
    const points = () => page.evaluate(() => Number(document.querySelector('[data-testid=loss-chart] svg')?.dataset.points || 0));
    await page.waitForFunction(
      () => Number(document.querySelector('[data-testid=loss-chart] svg')?.dataset.points || 0) >= 2,
      null,
      { timeout: TRAIN_TIMEOUT },
    );
    await page.getByTestId('cancel-job').click();
    await page.locator('h1 [data-status=cancelled]').waitFor({ timeout: 60_000 });
    assert.match(await page.getByTestId('job-status').textContent(), /Cancelled after \d+ epochs?/);
    // A cancelled job keeps the epochs it finished, and the chart says where it stopped.
    assert.ok((await points()) >= 2);
    assert.ok((await points()) < 200);
    await page.locator('[data-testid=loss-chart] [data-marker=cancelled]').waitFor();
    await shot('08-job-cancelled');
    await page.goto(`${base}/#/jobs`);
    await page.locator(`[data-testid=jobs-list] tr[data-id="${state.cancelledJobId}"][data-status=cancelled]`).waitFor();
    await page.locator(`[data-testid=jobs-list] tr[data-id="${need(state.jobId, 'the first job')}"][data-status=succeeded]`).waitFor();
    await shot('09-jobs-list');
  });

  test('the trained model predicts a dataset sample and shows the confusion matrix', async () => {
    const job = await api('GET', `/v1/jobs/${need(state.jobId, 'the first job')}`);
    const savedId = need(job.body?.saved_model_id, 'the saved model of the first job');
    const direct = await api('GET', `/v1/saved-models/${savedId}`);
    assert.equal(direct.status, 200, `GET /v1/saved-models/${savedId} answered ${direct.status}: ${JSON.stringify(direct.body)}`);
    await page.goto(`${base}/#/saved-models/${savedId}`);
    await page.getByTestId('predict-sample').click();
    await page.getByTestId('predicted-class').waitFor({ timeout: 30_000 });
    assert.equal(await page.locator('[data-testid=prediction] .prob-row').count(), 10);
    assert.equal(await page.getByTestId('true-label').textContent(), idxLabels(TRAIN_LABELS)[0]);
    await page.getByTestId('evaluate').click();
    await page.locator('[data-testid=evaluate-result] svg.heat-map').waitFor({ timeout: 60_000 });
    assert.equal(await page.locator('[data-testid=evaluate-result] svg.heat-map').getAttribute('data-cells'), '100');
    await shot('10-saved-model');
    await page.goto(`${base}/#/saved-models`);
    await page.locator(`[data-testid=saved-models-list] tr[data-id="${savedId}"]`).waitFor();
    await shot('11-saved-models-list');
  });

  test('runs are named and tagged on their page, found by tag, compared with overlaid curves, aliased and deleted', async () => {
    const jobId = need(state.jobId, 'the first job');
    const cancelledId = need(state.cancelledJobId, 'the cancelled job');
    const label = async (id, name, tags) => {
      await page.goto(`${base}/#/jobs/${id}`);
      const form = page.getByTestId('labels-form');
      await form.getByTestId('job-name-input').fill(name);
      await form.getByTestId('job-tags-input').fill(tags);
      await form.getByRole('button', { name: 'Save' }).click();
      await page.locator('[data-testid=job-name]', { hasText: name }).waitFor();
    };
    await label(jobId, 'cosine run', 'team=vision, stage=dev');
    await label(cancelledId, 'long run', 'team=vision');
    const job = await api('GET', `/v1/jobs/${jobId}`);
    assert.deepEqual(job.body.tags, { stage: 'dev', team: 'vision' });
    // A bad tag key is refused and named beside the field.
    await page.getByTestId('job-tags-input').fill('bad key=1');
    await page.getByTestId('labels-form').getByRole('button', { name: 'Save' }).click();
    await page.locator('[data-testid=labels-form] .field-error[data-field="tags.bad key"]').waitFor();

    await page.goto(`${base}/#/jobs`);
    const rows = page.locator('[data-testid=jobs-list] tbody tr');
    // Filters apply at once (Enter); no timed refresh redraws the rows while they are picked.
    await page.getByTestId('auto-refresh').uncheck();
    await page.getByTestId('filter-tag').fill('stage:dev');
    await page.getByTestId('filter-tag').press('Enter');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=jobs-list] tbody tr').length === 1);
    assert.equal(await rows.first().getAttribute('data-id'), jobId);
    await page.getByTestId('filter-tag').fill('team:vision');
    await page.getByTestId('filter-tag').press('Enter');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=jobs-list] tbody tr').length === 2);
    await page.locator(`tr[data-id="${jobId}"] [data-testid=compare-pick]`).check();
    await page.locator(`tr[data-id="${cancelledId}"] [data-testid=compare-pick]`).check();
    await shot('12-jobs-filtered');
    await page.getByTestId('compare-selected').click();
    await page.waitForURL(/#\/jobs\/compare\?ids=/);
    await page.locator('[data-testid=compare-chart-loss] svg').waitFor();
    // One curve per job, named after it, on the same axes.
    const series = await page.locator('[data-testid=compare-chart-loss] g.series').evaluateAll((gs) => gs.map((g) => g.dataset.series));
    assert.deepEqual(series.sort(), ['cosine run', 'long run']);
    // The runs differ in epochs and batch size, not in loss: highlighted accordingly.
    await page.locator('[data-testid=compare-params] tr.differs[data-path="fit.epochs"]').waitFor();
    await page.locator('[data-testid=compare-params] tr.differs[data-path="fit.batch_size"]').waitFor();
    assert.equal(await page.locator('[data-testid=compare-params] tr[data-path="compile.loss"]').getAttribute('class'), null);
    await page.getByTestId('only-differing').check();
    assert.equal(await page.locator('[data-testid=compare-params] tr[data-path="compile.loss"]').count(), 0);
    await shot('13-compare');

    // An alias set on the saved model page serves predictions under its name.
    const savedId = need(job.body.saved_model_id, 'the saved model of the first job');
    await page.goto(`${base}/#/saved-models/${savedId}`);
    await page.getByTestId('alias-name').fill('production');
    await page.getByTestId('alias-form').getByRole('button', { name: 'Set alias' }).click();
    await page.locator('[data-testid=aliases] tr[data-alias=production]').waitFor();
    const alias = await api('GET', '/v1/aliases/production');
    assert.equal(alias.body.saved_model_id, savedId);
    const meta = await api('GET', '/v2/models/production');
    assert.equal(meta.status, 200);
    await shot('14-saved-model-alias');

    // A finished job is deleted from its page, after a confirmation.
    await page.goto(`${base}/#/jobs/${cancelledId}`);
    page.once('dialog', (d) => d.accept());
    await page.getByTestId('delete-job').click();
    await page.waitForURL(/#\/jobs$/);
    assert.equal((await api('GET', `/v1/jobs/${cancelledId}`)).status, 404);
    state.cancelledJobId = null;
  });

  test('a search shows its leaderboard, one objective curve per trial and each parameter against the objective, live', async () => {
    const datasetId = need(state.digitsId, 'the digits dataset');
    const ds = await api('GET', `/v1/datasets/${datasetId}`);
    const model = await api('POST', '/v1/models', {
      name: 'digits-search-mlp',
      input_shape: ds.body.input_shape,
      layers: [
        { type: 'flatten' },
        { type: 'rescaling', scale: 0.0625 },
        { type: 'dense', units: 16, activation: 'relu' },
        { type: 'dropout', rate: 0.2 },
        { type: 'dense', units: 10, activation: 'softmax' },
      ],
    });
    assert.equal(model.status, 201, JSON.stringify(model.body));
    const job = (epochs) => ({
      model_id: model.body.id,
      dataset_id: datasetId,
      validation: { split: 0.2 },
      compile: { optimizer: { type: 'adam', learning_rate: 0.001 }, loss: 'sparse_categorical_crossentropy', metrics: ['accuracy'] },
      fit: { epochs, batch_size: 8, seed: 3 },
    });
    // Two long jobs hold both workers, so the search's trials wait in the queue while the page opens.
    const blockers = [];
    for (let i = 0; i < 2; i += 1) {
      const b = await api('POST', '/v1/jobs', job(100000));
      assert.equal(b.status, 202, JSON.stringify(b.body));
      blockers.push(b.body.id);
    }
    for (const id of blockers) {
      const end = Date.now() + 60_000;
      while ((await api('GET', `/v1/jobs/${id}`)).body.status !== 'running') {
        assert.ok(Date.now() < end, `job ${id} never started`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const space = [
      { path: 'compile.optimizer.learning_rate', type: 'log_uniform', low: 1e-3, high: 3e-2 },
      { path: 'model.layers[2].units', type: 'int', low: 8, high: 32, step: 8 },
      { path: 'model.layers[3].rate', type: 'uniform', low: 0.0, high: 0.4 },
    ];
    const created = await api('POST', '/v1/searches', {
      base: { ...job(3), name: 'digits search' },
      space,
      objective: { metric: 'val_loss' },
      method: 'random',
      max_trials: 4,
      max_concurrent_trials: 2,
      seed: 5,
    });
    assert.equal(created.status, 202, JSON.stringify(created.body));
    const searchId = created.body.id;
    state.searchId = searchId;

    await page.goto(`${base}/#/searches`);
    const listed = page.locator(`[data-testid=searches-list] tr[data-id="${searchId}"]`);
    await listed.waitFor();
    assert.equal(await listed.locator('a').textContent(), 'digits search');
    await listed.locator('a').click();
    await page.waitForURL(new RegExp(`#/searches/${searchId}$`));
    // Queued: the first two trials are on the leaderboard, nothing is drawn yet.
    await page.locator('h1 [data-status=running]').waitFor();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=leaderboard] tbody tr').length === 2);
    assert.deepEqual(await page.locator('[data-testid=leaderboard] tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.status)), ['queued', 'queued']);
    assert.equal(await page.locator('[data-testid=search-curves] g.series').count(), 0);
    assert.deepEqual(
      await page.locator('[data-testid=param-plot]').evaluateAll((ps) => ps.map((p) => [p.dataset.path, p.querySelector('svg').dataset.points])),
      space.map((d) => [d.path, '0']),
    );
    await shot('15-search-queued');
    // The page stays open from here on: everything below arrives over the search's event stream.
    await page.evaluate(() => {
      window.__sameSearchPage = true;
    });
    for (const id of blockers) {
      const c = await api('POST', `/v1/jobs/${id}/cancel`);
      assert.equal(c.status, 202, JSON.stringify(c.body));
    }
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=search-curves] g.series').length >= 1, null, { timeout: TRAIN_TIMEOUT });
    await page.locator('h1 [data-status=succeeded]').waitFor({ timeout: TRAIN_TIMEOUT });
    assert.equal(await page.evaluate(() => window.__sameSearchPage), true);
    const final = (await api('GET', `/v1/searches/${searchId}`)).body;
    assert.equal(final.status, 'succeeded');
    // The leaderboard: every trial, in the API's order (lowest val_loss first), with its parameters.
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=leaderboard] tbody tr')].filter((r) => r.dataset.status === 'succeeded').length === 4);
    const rows = await page.locator('[data-testid=leaderboard] tbody tr').evaluateAll((trs) =>
      trs.map((r) => ({
        trial: Number(r.dataset.trial),
        objective: Number(r.dataset.objective),
        units: r.querySelector('td[data-path="model.layers[2].units"]').textContent,
      })),
    );
    assert.deepEqual(rows.map((r) => r.trial), final.trials.map((t) => t.trial));
    assert.deepEqual(rows.map((r) => r.objective), final.trials.map((t) => t.objective));
    assert.deepEqual(rows.map((r) => r.units), final.trials.map((t) => String(t.params['model.layers[2].units'])));
    for (let i = 1; i < rows.length; i += 1) assert.ok(rows[i - 1].objective <= rows[i].objective, JSON.stringify(rows));
    assert.equal(await page.locator(`[data-testid=leaderboard] tr.best[data-trial="${final.best.trial}"]`).count(), 1);
    // One curve per trial, with a point per epoch, all received while the page was open.
    const curves = await page.locator('[data-testid=search-curves] g.series').evaluateAll((gs) => gs.map((g) => [g.dataset.series, g.dataset.points]));
    assert.deepEqual(curves, [0, 1, 2, 3].map((t) => [`trial ${t}`, '3']));
    assert.ok(Number(await page.getByTestId('live-status').getAttribute('data-epoch-events')) >= 12);
    // Each parameter against the objective: a dot per trial; the learning rate on a log axis.
    assert.deepEqual(
      await page.locator('[data-testid=param-plot]').evaluateAll((ps) => ps.map((p) => [p.dataset.path, p.querySelector('svg').dataset.points])),
      space.map((d) => [d.path, '4']),
    );
    assert.match(await page.locator('[data-testid=param-plot][data-path="compile.optimizer.learning_rate"] .axis-label').first().textContent(), /log scale/);
    assert.equal(await page.getByTestId('best-model-link').getAttribute('href'), `#/saved-models/${final.best.saved_model_id}`);
    await shot('16-search-finished');
    // A trial's job page leads back to its search.
    await page.getByTestId('best-job-link').click();
    await page.waitForURL(new RegExp(`#/jobs/${final.best.job_id}$`));
    await page.getByTestId('job-search-link').click();
    await page.waitForURL(new RegExp(`#/searches/${searchId}$`));
    await page.locator('h1 [data-status=succeeded]').waitFor();
    await page.goto(`${base}/#/searches`);
    await page.locator(`[data-testid=searches-list] tr[data-id="${searchId}"][data-status=succeeded]`).waitFor();
  });

  test('pages fit a phone-width screen without sideways scrolling', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    try {
      const pages = [
        ['phone-datasets', '#/datasets'],
        ['phone-dataset', state.mnistId && `#/datasets/${state.mnistId}`],
        ['phone-models', '#/models'],
        ['phone-jobs', '#/jobs'],
        ['phone-job', state.jobId && `#/jobs/${state.jobId}`],
        ['phone-search', state.searchId && `#/searches/${state.searchId}`],
      ];
      for (const [name, hash] of pages.filter(([, h]) => h)) {
        await page.goto(`${base}/${hash}`);
        await page.locator('main h1').first().waitFor();
        await page.waitForTimeout(700);
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        await shot(name);
        assert.ok(overflow <= 1, `${hash} scrolls sideways by ${overflow}px at 390px`);
      }
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  });

  test('no page raised an uncaught script error or broke its content security policy', () => {
    assert.deepEqual(state.pageErrors, []);
    assert.deepEqual(state.consoleErrors.filter((e) => /Content Security Policy/i.test(e)), []);
  });
});
