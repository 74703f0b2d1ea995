//! jobs.js: the Jobs pages: auto-refreshing list, start-job form, and live job detail over SSE with a History polling fallback.

import { ApiError, del, get, idFromLocation, listAll, patch, post } from './api.js';
import { fmtNum, lineChart, PALETTE } from './chart.js';
import { clear, facts, field, fmtDate, fmtDuration, h, message, progressBar, select, setProgress, shortId, statusBadge, statusWords, table } from './dom.js';

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
const REFRESH_MS = 2000;

const STOP_WORDS = {
  completed: 'ran all its epochs',
  early_stopping: 'stopped early: the monitored metric stopped improving',
  terminate_on_nan: 'stopped at a NaN or infinite loss (terminate_on_nan); the weights are those before it',
  cancelled: 'was cancelled',
  error: 'stopped on an error',
};

// The job view carries the request it was created from; accept it flat or nested.
export const jobModelId = (j) => j.model_id ?? j.request?.model_id;
export const jobDatasetId = (j) => j.dataset_id ?? j.request?.dataset_id;
const jobEpochs = (j) => j.epochs ?? j.request?.fit?.epochs ?? j.fit?.epochs;

/**
 * Completed epochs as a count. The job's `epoch` is the last completed epoch, numbered from 0
 * like Keras History (null before the first one ends).
 */
function epochsDone(j) {
  if (Number.isFinite(j.epochs_completed)) return j.epochs_completed;
  return Number.isFinite(j.epoch) ? j.epoch + 1 : 0;
}

function batchFraction(p) {
  if (!p || typeof p !== 'object') return null;
  const done = p.batch ?? p.batches_done ?? p.done ?? p.batch_done;
  const total = p.batches ?? p.batches_total ?? p.total ?? p.n_batches ?? p.total_batches;
  if (!Number.isFinite(done) || !Number.isFinite(total) || total <= 0) return null;
  return { done, total, f: done / total };
}

/** Turns a Keras History body into epoch records keyed by epoch number. */
export function historyRecords(hist) {
  const out = new Map();
  const epochs = hist?.epoch || [];
  const series = hist?.history || {};
  epochs.forEach((e, i) => {
    const rec = { epoch: e };
    for (const [k, vals] of Object.entries(series)) rec[k] = vals[i];
    out.set(e, rec);
  });
  return out;
}

/** The job's state in one sentence. */
function statusLine(job, done) {
  const n = `${done} epoch${done === 1 ? '' : 's'}`;
  switch (job.status) {
    case 'cancelled':
      return `Cancelled after ${n}; the epochs and checkpoints it finished are kept.`;
    case 'succeeded':
      return `Succeeded after ${n}: it ${STOP_WORDS[job.stop_reason] || 'finished'}.`;
    case 'failed':
      return `Failed after ${n}${job.stop_reason ? `; it ${STOP_WORDS[job.stop_reason] || job.stop_reason}` : ''}.`;
    case 'running':
      return `Running: ${n} of ${jobEpochs(job) ?? '?'} done.`;
    default:
      return `${statusWords(job.status)}.`;
  }
}

/** The best validation metric among records: min val_loss, and val_accuracy at that epoch. */
function bestOf(records, bestEpoch) {
  const list = [...records.values()];
  if (!list.length) return null;
  let best = list.find((r) => r.epoch === bestEpoch);
  const key = list.some((r) => Number.isFinite(r.val_loss)) ? 'val_loss' : 'loss';
  if (!best) best = list.reduce((a, b) => ((b[key] ?? Infinity) < (a[key] ?? Infinity) ? b : a));
  return best;
}

function bestText(best) {
  if (!best) return '–';
  const parts = [];
  if (Number.isFinite(best.val_accuracy)) parts.push(`val_accuracy ${fmtNum(best.val_accuracy)}`);
  if (Number.isFinite(best.val_loss)) parts.push(`val_loss ${fmtNum(best.val_loss)}`);
  if (!parts.length && Number.isFinite(best.loss)) parts.push(`loss ${fmtNum(best.loss)}`);
  return `${parts.join(', ')} (epoch ${best.epoch})`;
}

/**
 * GETs a job's History, sending the last ETag so an unchanged history costs a 304.
 * cache keeps {etag, records} per job across polls.
 */
async function pollHistory(jobId, cache) {
  const prev = cache.get(jobId);
  const headers = { Accept: 'application/json' };
  if (prev?.etag) headers['If-None-Match'] = prev.etag;
  const res = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/history`, { headers, cache: 'no-store' });
  if (res.status === 304 && prev) return { ...prev, notModified: true };
  if (!res.ok) {
    let problem = null;
    try {
      problem = await res.json();
    } catch {
      problem = null;
    }
    throw new ApiError(res.status, problem, res.statusText);
  }
  const entry = { etag: res.headers.get('ETag'), records: historyRecords(await res.json()), notModified: false };
  cache.set(jobId, entry);
  return entry;
}

export async function jobsPage(root, ctx, query) {
  const listBox = h('div', { 'data-testid': 'jobs-list' }, h('p', { class: 'muted' }, 'Loading jobs…'));
  const auto = h('input', { type: 'checkbox', checked: true, 'data-testid': 'auto-refresh' });
  const filter = select('status', [['', 'all statuses'], 'queued', 'running', 'succeeded', 'failed', 'cancelled'], query.get('status') || '');
  const nameFilter = h('input', { name: 'name', type: 'search', placeholder: 'name contains…', value: query.get('name') || '', 'data-testid': 'filter-name' });
  const tagFilter = h('input', { name: 'tag', type: 'search', placeholder: 'tag: key or key:value', value: query.get('tag') || '', 'data-testid': 'filter-tag' });
  const sort = select(
    'order_by',
    [
      ['created_at:asc', 'oldest first'],
      ['created_at:desc', 'newest first'],
      ['best.val_accuracy:desc', 'best val_accuracy'],
      ['best.val_loss:asc', 'lowest val_loss'],
      ['final.val_accuracy:desc', 'final val_accuracy'],
      ['best.accuracy:desc', 'best accuracy'],
      ['best.loss:asc', 'lowest loss'],
    ],
    query.get('order_by') || 'created_at:asc',
  );
  const selected = new Set();
  const compareBtn = h('button', { type: 'button', 'data-testid': 'compare-selected', disabled: true }, 'Compare selected');
  const syncCompare = () => {
    compareBtn.disabled = selected.size < 2 || selected.size > 20;
    compareBtn.textContent = selected.size ? `Compare selected (${selected.size})` : 'Compare selected';
  };
  compareBtn.addEventListener('click', () => {
    location.hash = `#/jobs/compare?ids=${[...selected].map(encodeURIComponent).join(',')}`;
  });
  const updated = h('small', { class: 'muted' });
  const formBox = h('div');
  clear(
    root,
    h('h1', {}, 'Jobs'),
    h(
      'div',
      { class: 'toolbar' },
      h('label', { class: 'check' }, auto, ' auto-refresh every 2 s'),
      h('label', { class: 'check' }, 'Show ', filter),
      h('label', { class: 'check' }, nameFilter),
      h('label', { class: 'check' }, tagFilter),
      h('label', { class: 'check' }, 'Sort ', sort),
      compareBtn,
      updated,
    ),
    listBox,
    formBox,
  );
  const names = { models: new Map(), datasets: new Map() };
  const [models, datasets, saved] = await Promise.all([
    listAll('/v1/models').catch(() => []),
    listAll('/v1/datasets').catch(() => []),
    listAll('/v1/saved-models').catch(() => []),
  ]);
  models.forEach((m) => names.models.set(m.id, m.name));
  datasets.forEach((d) => names.datasets.set(d.id, d.name));
  formBox.append(startJobForm(models, datasets, saved, query));
  const histories = new Map();
  const refresh = async () => {
    try {
      const params = new URLSearchParams();
      if (filter.value) params.set('status', filter.value);
      if (nameFilter.value.trim()) params.set('name', nameFilter.value.trim());
      for (const t of tagFilter.value.split(/[\s,]+/).filter(Boolean)) params.append('tag', t);
      const [orderBy, order] = sort.value.split(':');
      params.set('order_by', orderBy);
      params.set('order', order);
      const jobs = await listAll(`/v1/jobs?${params}`, 200);
      const bests = await Promise.all(
        jobs.map((j) => (epochsDone(j) > 0 || Number.isFinite(j.best_epoch) ? pollHistory(j.id, histories).catch(() => null) : null)),
      );
      if (!ctx.alive()) return;
      for (const id of [...selected]) if (!jobs.some((j) => j.id === id)) selected.delete(id);
      syncCompare();
      renderJobs(listBox, jobs, bests, names, selected, syncCompare);
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (ctx.alive()) clear(listBox, message('error', err));
    }
  };
  filter.addEventListener('change', refresh);
  sort.addEventListener('change', refresh);
  nameFilter.addEventListener('change', refresh);
  tagFilter.addEventListener('change', refresh);
  await refresh();
  const timer = setInterval(() => {
    if (auto.checked) refresh();
  }, REFRESH_MS);
  ctx.cleanup(() => clearInterval(timer));
}

/** A job's tags as small chips. */
function tagChips(tags) {
  const entries = Object.entries(tags || {});
  if (!entries.length) return null;
  return h('span', { class: 'tags' }, entries.map(([k, v]) => h('span', { class: 'tag', 'data-tag': k }, v ? `${k}: ${v}` : k)));
}

function renderJobs(box, jobs, bests, names, selected, onSelect) {
  if (jobs.length === 0) {
    clear(box, h('p', { class: 'muted' }, 'No jobs match. Start one with the form below.'));
    return;
  }
  clear(
    box,
    table(
      ['', 'Job', 'Status', 'Model', 'Dataset', 'Epochs', 'Batches', 'Best validation', 'Created'],
      jobs.map((j, i) => {
        const total = jobEpochs(j);
        const done = epochsDone(j);
        const batch = batchFraction(j.progress || j);
        const best = bests[i] ? bestOf(bests[i].records, j.best_epoch) : null;
        const pick = h('input', { type: 'checkbox', 'aria-label': `select job ${shortId(j.id)} to compare`, 'data-testid': 'compare-pick', checked: selected.has(j.id) });
        pick.addEventListener('change', () => {
          if (pick.checked) selected.add(j.id);
          else selected.delete(j.id);
          onSelect();
        });
        return h(
          'tr',
          { 'data-id': j.id, 'data-status': j.status },
          h('td', {}, pick),
          h('td', {}, h('a', { href: `#/jobs/${j.id}` }, j.name || shortId(j.id)), ' ', tagChips(j.tags)),
          h('td', {}, statusBadge(j.status)),
          h('td', {}, names.models.get(jobModelId(j)) || shortId(jobModelId(j))),
          h('td', {}, names.datasets.get(jobDatasetId(j)) || shortId(jobDatasetId(j))),
          h('td', { class: 'bar-cell' }, progressBar(total ? done / total : 0, `${done} / ${total ?? '?'}`)),
          h(
            'td',
            { class: 'bar-cell' },
            j.status === 'running' && batch ? progressBar(batch.f, `${batch.done} / ${batch.total}`) : h('span', { class: 'muted' }, j.status === 'running' ? 'starting…' : '–'),
          ),
          h('td', {}, bestText(best)),
          h('td', {}, fmtDate(j.created_at)),
        );
      }),
      { class: 'jobs-table stack' },
    ),
  );
}

function startJobForm(models, datasets, saved, query) {
  const status = h('div', { class: 'form-status' });
  const opt = (list) => [['', '— choose —'], ...list.map((x) => [x.id, `${x.name} (${shortId(x.id)})`])];
  const c = {
    model_id: select('model_id', opt(models), query.get('model') || models[0]?.id),
    dataset_id: select('dataset_id', opt(datasets), query.get('dataset') || datasets[0]?.id),
    optimizer: select('optimizer', ['adam', 'sgd', 'rmsprop', 'adagrad'], 'adam'),
    learning_rate: h('input', { name: 'learning_rate', type: 'number', step: 'any', min: '0', value: '0.001' }),
    momentum: h('input', { name: 'momentum', type: 'number', step: 'any', min: '0', max: '1', value: '0' }),
    schedule: select('schedule', [['', 'constant'], ['exponential_decay', 'exponential decay'], ['inverse_time_decay', 'inverse time decay'], ['cosine_decay', 'cosine decay'], ['polynomial_decay', 'polynomial decay']], ''),
    decay_steps: h('input', { name: 'decay_steps', type: 'number', min: '1', value: '1000' }),
    decay_rate: h('input', { name: 'decay_rate', type: 'number', step: 'any', min: '0', value: '0.9' }),
    warmup_steps: h('input', { name: 'warmup_steps', type: 'number', min: '0', value: '0' }),
    end_learning_rate: h('input', { name: 'end_learning_rate', type: 'number', step: 'any', min: '0', value: '0.0001' }),
    loss: select('loss', ['sparse_categorical_crossentropy', 'categorical_crossentropy', 'binary_crossentropy', 'mean_squared_error'], 'sparse_categorical_crossentropy'),
    accuracy: h('input', { type: 'checkbox', name: 'accuracy', checked: true }),
    epochs: h('input', { name: 'epochs', type: 'number', min: '1', value: '10' }),
    batch_size: h('input', { name: 'batch_size', type: 'number', min: '1', value: '32' }),
    split: h('input', { name: 'split', type: 'number', step: 'any', min: '0', max: '0.99', value: '0.2' }),
    seed: h('input', { name: 'seed', type: 'number', value: '42' }),
    shuffle: h('input', { type: 'checkbox', name: 'shuffle', checked: true }),
    checkpoint: h('input', { type: 'checkbox', name: 'checkpoint', checked: true }),
    early: h('input', { type: 'checkbox', name: 'early_stopping', checked: false }),
    monitor: select('monitor', ['val_loss', 'val_accuracy', 'loss', 'accuracy'], 'val_loss'),
    patience: h('input', { name: 'patience', type: 'number', min: '0', value: '2' }),
    restore: h('input', { type: 'checkbox', name: 'restore_best_weights', checked: true }),
    plateau: h('input', { type: 'checkbox', name: 'reduce_lr_on_plateau', checked: false }),
    factor: h('input', { name: 'factor', type: 'number', step: 'any', min: '0', max: '1', value: '0.1' }),
    plateau_patience: h('input', { name: 'plateau_patience', type: 'number', min: '0', value: '10' }),
    nan: h('input', { type: 'checkbox', name: 'terminate_on_nan', checked: false }),
    initial: select('initial_weights', [['', 'none: start from random weights'], ...saved.map((s) => [s.id, `saved model ${shortId(s.id)}`])], ''),
  };
  // Only weights of the chosen architecture can seed a job.
  const syncInitial = () => {
    for (const o of c.initial.options) o.hidden = Boolean(o.value) && saved.find((s) => s.id === o.value)?.model_id !== c.model_id.value;
    if (c.initial.selectedOptions[0]?.hidden) c.initial.value = '';
  };
  c.model_id.addEventListener('change', syncInitial);
  syncInitial();
  const momentumField = field('Momentum (sgd)', c.momentum);
  // A schedule starts from the learning rate above (cosine decay with a warmup: warms up to it).
  const scheduleFields = {
    decay_steps: field('Decay steps (batches)', c.decay_steps),
    decay_rate: field('Decay rate', c.decay_rate),
    warmup_steps: field('Warmup steps', c.warmup_steps, 'Linear warmup from 0 to the learning rate.'),
    end_learning_rate: field('End learning rate', c.end_learning_rate),
  };
  const scheduleParams = {
    exponential_decay: ['decay_steps', 'decay_rate'],
    inverse_time_decay: ['decay_steps', 'decay_rate'],
    cosine_decay: ['decay_steps', 'warmup_steps'],
    polynomial_decay: ['decay_steps', 'end_learning_rate'],
  };
  const scheduleBox = h('div', { class: 'sub-fields', 'data-testid': 'schedule-fields' }, Object.values(scheduleFields));
  const monitorField = field('Monitor', c.monitor);
  const earlyBox = h('div', { class: 'sub-fields' }, field('Patience (epochs)', c.patience), h('label', { class: 'check' }, c.restore, ' restore best weights at the end'));
  const plateauBox = h('div', { class: 'sub-fields' }, field('Factor', c.factor, 'The learning rate is multiplied by this, in (0, 1).'), field('Patience (epochs)', c.plateau_patience));
  const sync = () => {
    momentumField.hidden = c.optimizer.value !== 'sgd';
    const params = scheduleParams[c.schedule.value] || [];
    for (const [k, f] of Object.entries(scheduleFields)) f.hidden = !params.includes(k);
    scheduleBox.hidden = !params.length;
    // Keras lets callbacks change only a constant learning rate.
    c.plateau.disabled = Boolean(c.schedule.value);
    if (c.plateau.disabled) c.plateau.checked = false;
    earlyBox.hidden = !c.early.checked;
    plateauBox.hidden = !c.plateau.checked;
    monitorField.hidden = !c.early.checked && !c.plateau.checked;
  };
  c.optimizer.addEventListener('change', () => {
    c.learning_rate.value = { adam: '0.001', sgd: '0.01', rmsprop: '0.001', adagrad: '0.001' }[c.optimizer.value];
    sync();
  });
  c.early.addEventListener('change', sync);
  c.plateau.addEventListener('change', sync);
  c.schedule.addEventListener('change', sync);
  // Server field paths -> the control to mark; filled as the body is built.
  const paths = new Map();
  const form = h(
    'form',
    { class: 'card job-form', 'data-testid': 'job-form' },
    h('h2', {}, 'Start a training job'),
    h(
      'div',
      { class: 'grid-fields' },
      field('Model', c.model_id),
      field('Dataset', c.dataset_id),
      field('Optimizer', c.optimizer),
      field('Learning rate', c.learning_rate),
      field('Learning-rate schedule', c.schedule),
      momentumField,
      field('Loss', c.loss),
      field('Epochs', c.epochs),
      field('Batch size', c.batch_size),
      field('Validation split', c.split, 'Fraction held out, in (0, 1).'),
      field('Seed', c.seed),
      field('Continue from', c.initial),
    ),
    h(
      'div',
      { class: 'checks' },
      h('label', { class: 'check' }, c.accuracy, ' report accuracy'),
      h('label', { class: 'check' }, c.shuffle, ' shuffle each epoch'),
      h('label', { class: 'check' }, c.checkpoint, ' keep the best checkpoint'),
      h('label', { class: 'check' }, c.early, ' early stopping'),
      h('label', { class: 'check' }, c.plateau, ' reduce the learning rate on a plateau'),
      h('label', { class: 'check' }, c.nan, ' stop at a NaN loss'),
    ),
    scheduleBox,
    monitorField,
    earlyBox,
    plateauBox,
    h('button', { type: 'submit' }, 'Start job'),
    status,
  );
  sync();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    for (const n of form.querySelectorAll('.field-error')) n.remove();
    for (const n of form.querySelectorAll('.invalid')) n.classList.remove('invalid');
    clear(status);
    paths.clear();
    const num = (x) => (x.value.trim() === '' ? undefined : Number(x.value));
    const optimizer = { type: c.optimizer.value, learning_rate: num(c.learning_rate) };
    if (c.optimizer.value === 'sgd') optimizer.momentum = num(c.momentum);
    if (c.schedule.value) {
      const lr = optimizer.learning_rate;
      const schedule = { type: c.schedule.value, initial_learning_rate: lr };
      for (const k of scheduleParams[c.schedule.value]) schedule[k] = num(c[k]);
      if (c.schedule.value === 'cosine_decay' && schedule.warmup_steps > 0) {
        schedule.initial_learning_rate = 0;
        schedule.warmup_target = lr;
      }
      optimizer.learning_rate = schedule;
      const base = 'compile.optimizer.learning_rate';
      for (const k of ['initial_learning_rate', 'warmup_target']) paths.set(`${base}.${k}`, c.learning_rate);
      for (const k of Object.keys(scheduleFields)) paths.set(`${base}.${k}`, c[k]);
      paths.set(`${base}.type`, c.schedule);
    }
    const callbacks = [];
    if (c.checkpoint.checked) {
      callbacks.push({ type: 'model_checkpoint', monitor: c.early.checked ? c.monitor.value : 'val_loss', save_best_only: true });
      paths.set(`callbacks[${callbacks.length - 1}].monitor`, c.monitor);
    }
    if (c.early.checked) {
      const i = callbacks.length;
      callbacks.push({ type: 'early_stopping', monitor: c.monitor.value, patience: num(c.patience), restore_best_weights: c.restore.checked });
      paths.set(`callbacks[${i}].monitor`, c.monitor);
      paths.set(`callbacks[${i}].patience`, c.patience);
    }
    if (c.plateau.checked) {
      const i = callbacks.length;
      callbacks.push({ type: 'reduce_lr_on_plateau', monitor: c.monitor.value, factor: num(c.factor), patience: num(c.plateau_patience) });
      paths.set(`callbacks[${i}].monitor`, c.monitor);
      paths.set(`callbacks[${i}].factor`, c.factor);
      paths.set(`callbacks[${i}].patience`, c.plateau_patience);
    }
    if (c.nan.checked) callbacks.push({ type: 'terminate_on_nan' });
    const body = {
      model_id: c.model_id.value,
      dataset_id: c.dataset_id.value,
      validation: { split: num(c.split) },
      compile: { optimizer, loss: c.loss.value, metrics: c.accuracy.checked ? ['accuracy'] : [] },
      fit: { epochs: num(c.epochs), batch_size: num(c.batch_size), shuffle: c.shuffle.checked, seed: num(c.seed) },
      callbacks,
    };
    if (c.initial.value) body.initial_weights = c.initial.value;
    for (const [p, ctl] of [
      ['model_id', c.model_id],
      ['dataset_id', c.dataset_id],
      ['validation', c.split],
      ['validation.split', c.split],
      ['compile.optimizer', c.optimizer],
      ['compile.optimizer.type', c.optimizer],
      ['compile.optimizer.learning_rate', c.learning_rate],
      ['compile.optimizer.momentum', c.momentum],
      ['compile.loss', c.loss],
      ['compile.metrics', c.accuracy],
      ['fit.epochs', c.epochs],
      ['fit.batch_size', c.batch_size],
      ['fit.seed', c.seed],
      ['initial_weights', c.initial],
    ]) {
      paths.set(p, ctl);
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const res = await post('/v1/jobs', body);
      const id = res.body?.id || idFromLocation(res.headers.get('Location'));
      location.hash = `#/jobs/${id}`;
    } catch (err) {
      clear(status, message('error', err));
      for (const fe of err.fieldErrors || []) {
        const ctl = paths.get(fe.field) || paths.get(String(fe.field).split('.').slice(0, -1).join('.'));
        if (!ctl) continue;
        ctl.classList.add('invalid');
        ctl.closest('.field, .check')?.append(h('span', { class: 'field-error', 'data-field': fe.field }, fe.message));
      }
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/* ---------------------------------------------------------------- job detail */

export async function jobPage(root, ctx, id) {
  clear(root, h('p', { class: 'muted' }, 'Loading job…'));
  let job;
  try {
    job = await get(`/v1/jobs/${encodeURIComponent(id)}`);
  } catch (err) {
    clear(root, h('h1', {}, 'Job'), message('error', err));
    return;
  }
  const [model, dataset] = await Promise.all([
    get(`/v1/models/${encodeURIComponent(jobModelId(job))}`).catch(() => null),
    get(`/v1/datasets/${encodeURIComponent(jobDatasetId(job))}`).catch(() => null),
  ]);
  const records = new Map();
  let batch = null;
  const headBox = h('div');
  const epochBar = progressBar(0, 'epochs', 'epoch-progress');
  const batchBar = progressBar(0, 'batches', 'batch-progress');
  const live = h('p', { class: 'live', 'data-testid': 'live-status' }, 'Connecting…');
  const lossBox = h('div', { class: 'chart-box', 'data-testid': 'loss-chart' });
  const accBox = h('div', { class: 'chart-box', 'data-testid': 'accuracy-chart' });
  const epochTable = h('div', { 'data-testid': 'epoch-table' });
  const ckptBox = h('div', { 'data-testid': 'checkpoints' }, h('p', { class: 'muted' }, 'Loading checkpoints…'));
  const actionMsg = h('div');
  const cancelBtn = h('button', { class: 'danger', 'data-testid': 'cancel-job' }, 'Cancel job');
  const deleteBtn = h('button', { class: 'danger', 'data-testid': 'delete-job' }, 'Delete job');
  deleteBtn.addEventListener('click', async () => {
    if (!window.confirm('Delete this job with its epochs, events and checkpoints? Its saved model stays.')) return;
    try {
      await del(`/v1/jobs/${encodeURIComponent(job.id)}`);
      location.hash = '#/jobs';
    } catch (err) {
      clear(actionMsg, message('error', err));
    }
  });
  const labelsBox = labelsForm(job, (updated) => {
    job = updated;
    render();
  });
  cancelBtn.addEventListener('click', async () => {
    cancelBtn.disabled = true;
    try {
      const res = await post(`/v1/jobs/${encodeURIComponent(job.id)}/cancel`);
      if (res.body && res.body.status) job = res.body;
      clear(actionMsg, message('info', 'Cancellation requested; the job stops within one batch.'));
      await refreshJob();
    } catch (err) {
      cancelBtn.disabled = false;
      clear(actionMsg, message('error', err));
    }
  });

  clear(
    root,
    h('p', { class: 'crumbs' }, h('a', { href: '#/jobs' }, 'Jobs'), ' / ', shortId(job.id)),
    headBox,
    actionMsg,
    labelsBox,
    h('section', { class: 'card' }, h('div', { class: 'bars' }, epochBar, batchBar), live),
    h('div', { class: 'two-col charts' }, h('section', { class: 'card' }, lossBox), h('section', { class: 'card' }, accBox)),
    h('section', { class: 'card' }, h('h2', {}, 'Checkpoints'), ckptBox),
    h('section', { class: 'card' }, h('h2', {}, 'Epochs'), epochTable),
  );

  const render = () => {
    const total = jobEpochs(job);
    const done = Math.max(epochsDone(job), records.size);
    setProgress(epochBar, total ? done / total : null, `Epoch ${done} of ${total ?? '?'}`);
    if (job.status === 'running' && batch) setProgress(batchBar, batch.f, `Batch ${batch.done} of ${batch.total}`);
    else if (job.status === 'running') setProgress(batchBar, null, 'Batches: waiting for progress…');
    else setProgress(batchBar, TERMINAL.has(job.status) ? 1 : 0, TERMINAL.has(job.status) ? 'Batches: finished' : 'Batches: not started');
    cancelBtn.hidden = TERMINAL.has(job.status);
    deleteBtn.hidden = !TERMINAL.has(job.status);
    if (TERMINAL.has(job.status) && actionMsg.querySelector('.msg-info')) clear(actionMsg);
    clear(
      headBox,
      h('h1', {}, 'Job ', job.name ? h('span', { 'data-testid': 'job-name' }, job.name) : h('code', {}, shortId(job.id)), ' ', statusBadge(job.status)),
      tagChips(job.tags),
      h('p', { class: 'status-words', 'data-testid': 'job-status' }, statusLine(job, done)),
      job.error ? message('error', `The job failed: ${typeof job.error === 'string' ? job.error : job.error.message || JSON.stringify(job.error)}`) : null,
      h(
        'div',
        { class: 'actions' },
        cancelBtn,
        deleteBtn,
        job.saved_model_id ? h('a', { class: 'button', href: `#/saved-models/${job.saved_model_id}`, 'data-testid': 'saved-model-link' }, 'Open the trained model') : null,
      ),
      facts([
        ['Model', model ? h('a', { href: `#/models/${model.id}` }, model.name) : shortId(jobModelId(job))],
        ['Dataset', dataset ? h('a', { href: `#/datasets/${dataset.id}` }, dataset.name) : shortId(jobDatasetId(job))],
        job.search ? ['Search', h('a', { href: `#/searches/${job.search.search_id}`, 'data-testid': 'job-search-link' }, `trial ${job.search.trial} of search ${shortId(job.search.search_id)}`)] : null,
        ['Best epoch', job.best_epoch ?? '–'],
        ['Created', fmtDate(job.created_at)],
        ['Started', fmtDate(job.started_at)],
        ['Finished', fmtDate(job.finished_at)],
      ]),
    );
    drawCharts();
    renderEpochs();
  };

  const drawCharts = () => {
    const list = [...records.values()].sort((a, b) => a.epoch - b.epoch);
    const pts = (k) => list.filter((r) => Number.isFinite(r[k])).map((r) => [r.epoch, r[k]]);
    const markers = [];
    if (job.best_epoch !== null && job.best_epoch !== undefined) markers.push({ x: job.best_epoch, label: `best epoch ${job.best_epoch}`, color: '#16a34a' });
    const last = list.length ? list[list.length - 1].epoch : null;
    if (job.stop_reason === 'early_stopping' && last !== null) markers.push({ x: last, label: 'early stop', color: '#dc2626', row: 1 });
    if (job.stop_reason === 'terminate_on_nan' && last !== null) markers.push({ x: last, label: 'NaN loss', color: '#dc2626', row: 1 });
    if (job.stop_reason === 'cancelled' && last !== null) markers.push({ x: last, label: 'cancelled', color: '#6b7280', row: 1 });
    clear(
      lossBox,
      lineChart({
        title: 'Loss',
        width: lossBox.clientWidth,
        series: [
          { name: 'train loss', points: pts('loss'), color: PALETTE[0] },
          { name: 'val loss', points: pts('val_loss'), color: PALETTE[1], dashed: true },
        ],
        markers,
      }),
    );
    const accKeys = ['accuracy', 'val_accuracy'].filter((k) => list.some((r) => Number.isFinite(r[k])));
    clear(
      accBox,
      accKeys.length || list.length === 0
        ? lineChart({
            title: 'Accuracy',
            width: accBox.clientWidth,
            markerLabels: 'bottom',
            series: [
              { name: 'train accuracy', points: pts('accuracy'), color: PALETTE[0] },
              { name: 'val accuracy', points: pts('val_accuracy'), color: PALETTE[1], dashed: true },
            ],
            markers,
          })
        : h('p', { class: 'muted' }, 'This job does not report accuracy.'),
    );
  };

  const renderEpochs = () => {
    const list = [...records.values()].sort((a, b) => b.epoch - a.epoch);
    if (!list.length) {
      clear(epochTable, h('p', { class: 'muted' }, job.status === 'queued' ? 'Waiting for a worker.' : 'No epoch finished yet.'));
      return;
    }
    const keys = [...new Set(list.flatMap((r) => Object.keys(r)))].filter((k) => !['epoch', 'duration_ms', 'type', 'job_id'].includes(k) && list.some((r) => typeof r[k] === 'number'));
    clear(
      epochTable,
      table(
        ['Epoch', ...keys, 'Time'],
        list.map((r) => h('tr', { class: r.epoch === job.best_epoch ? 'best' : null }, h('td', { class: 'num' }, r.epoch), keys.map((k) => h('td', { class: 'num' }, fmtNum(r[k]))), h('td', { class: 'num' }, fmtDuration(r.duration_ms)))),
      ),
    );
  };

  const refreshJob = async () => {
    try {
      job = await get(`/v1/jobs/${encodeURIComponent(job.id)}`);
      batch = batchFraction(job.progress || job) || batch;
    } catch (err) {
      clear(actionMsg, message('error', err));
    }
    if (ctx.alive()) render();
  };

  const refreshCheckpoints = async () => {
    try {
      const body = await get(`/v1/jobs/${encodeURIComponent(job.id)}/checkpoints`);
      const items = Array.isArray(body) ? body : body?.items || [];
      if (!ctx.alive()) return;
      if (!items.length) {
        clear(ckptBox, h('p', { class: 'muted' }, 'No checkpoints yet.'));
        return;
      }
      clear(
        ckptBox,
        table(
          ['Epoch', 'Metrics', 'Best', 'Saved', ''],
          items.map((cp) =>
            h(
              'tr',
              { class: cp.is_best ? 'best' : null },
              h('td', { class: 'num' }, cp.epoch),
              h('td', {}, Object.entries(cp.metrics || {}).map(([k, v]) => `${k} ${fmtNum(v)}`).join(', ')),
              h('td', {}, cp.is_best ? '★ best' : ''),
              h('td', {}, fmtDate(cp.created_at)),
              h('td', {}, h('button', { class: 'small', onclick: (e) => saveCheckpoint(cp.epoch, e.target) }, 'Save as model')),
            ),
          ),
          { class: 'stack' },
        ),
      );
    } catch (err) {
      if (ctx.alive()) clear(ckptBox, message('error', err));
    }
  };

  const saveCheckpoint = async (epoch, button) => {
    button.disabled = true;
    try {
      const res = await post('/v1/saved-models', { job_id: job.id, epoch });
      const sid = res.body?.id || idFromLocation(res.headers.get('Location'));
      location.hash = `#/saved-models/${sid}`;
    } catch (err) {
      button.disabled = false;
      clear(actionMsg, message('error', err));
    }
  };

  render();
  refreshCheckpoints();

  // Live updates: SSE first; the browser's EventSource resends Last-Event-ID on reconnect,
  // and records are keyed by epoch so a replayed event can never draw a point twice.
  let es = null;
  let pollTimer = null;
  let failures = 0;
  const startPolling = (why) => {
    if (es) es.close();
    es = null;
    if (pollTimer || !ctx.alive()) return;
    const cache = new Map();
    const tick = async () => {
      try {
        const entry = await pollHistory(job.id, cache);
        if (!entry.notModified) {
          records.clear();
          for (const [k, v] of entry.records) records.set(k, v);
        }
        live.textContent = `${why} Polling History every 2 s with ETag (last answer: ${entry.notModified ? '304 Not Modified' : '200 with new epochs'}).`;
        const wasTerminal = TERMINAL.has(job.status);
        await refreshJob();
        if (!entry.notModified) refreshCheckpoints();
        if (wasTerminal && TERMINAL.has(job.status)) {
          clearInterval(pollTimer);
          live.textContent = `${why} The job has finished: ${job.status}.`;
        }
      } catch (err) {
        live.textContent = `${why} Polling failed: ${err.message}`;
      }
    };
    tick();
    pollTimer = setInterval(tick, REFRESH_MS);
  };
  ctx.cleanup(() => {
    if (es) es.close();
    if (pollTimer) clearInterval(pollTimer);
  });

  if (typeof EventSource !== 'function') {
    startPolling('This browser has no EventSource.');
    return;
  }
  es = new EventSource(`/v1/jobs/${encodeURIComponent(job.id)}/events`);
  const parse = (e) => {
    failures = 0;
    try {
      return JSON.parse(e.data);
    } catch {
      return {};
    }
  };
  es.onopen = () => {
    live.textContent = 'Live: receiving events from the server (SSE).';
  };
  es.addEventListener('epoch', (e) => {
    const d = parse(e);
    if (!Number.isFinite(d.epoch)) return;
    records.set(d.epoch, { ...(d.metrics || {}), ...d });
    batch = null;
    if (job.status === 'queued') job = { ...job, status: 'running' };
    render();
  });
  es.addEventListener('progress', (e) => {
    const d = parse(e);
    const b = batchFraction(d);
    if (!b) return;
    batch = b;
    if (job.status === 'running') setProgress(batchBar, b.f, `Batch ${b.done} of ${b.total}`);
  });
  es.addEventListener('status', (e) => {
    const d = parse(e);
    if (d.status && d.status !== job.status) {
      job = { ...job, ...d };
      render();
    }
    refreshJob();
  });
  es.addEventListener('checkpoint', () => {
    failures = 0;
    refreshCheckpoints();
    // The job's best_epoch moves with checkpoints; refetch it so the marker follows live.
    refreshJob();
  });
  es.addEventListener('done', async () => {
    es.close();
    es = null;
    live.textContent = 'The stream has ended: the job is finished.';
    await refreshJob();
    refreshCheckpoints();
  });
  es.onerror = () => {
    if (!es) return;
    failures += 1;
    if (es.readyState === EventSource.CLOSED) {
      startPolling('The event stream was refused.');
    } else if (failures >= 3) {
      startPolling('The event stream keeps dropping.');
    } else {
      live.textContent = `Connection lost; reconnecting (attempt ${failures}), resuming after the last event received…`;
    }
  };
}

/** Name, tags and notes of a job, edited in place with PATCH; every refused field is marked. */
function labelsForm(job, onSaved) {
  const name = h('input', { name: 'name', value: job.name || '', placeholder: 'e.g. adam lr 1e-3', 'data-testid': 'job-name-input' });
  const tags = h('input', {
    name: 'tags',
    value: Object.entries(job.tags || {}).map(([k, v]) => `${k}=${v}`).join(', '),
    placeholder: 'key=value, key=value',
    'data-testid': 'job-tags-input',
  });
  const notes = h('textarea', { name: 'notes', rows: 2, 'data-testid': 'job-notes-input' });
  notes.value = job.notes || '';
  const status = h('div');
  const form = h(
    'form',
    { class: 'card', 'data-testid': 'labels-form' },
    h('h2', {}, 'Name, tags and notes'),
    h('div', { class: 'grid-fields' }, field('Name', name), field('Tags', tags, 'Comma-separated key=value pairs.'), field('Notes', notes)),
    h('button', { type: 'submit' }, 'Save'),
    status,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    for (const n of form.querySelectorAll('.field-error')) n.remove();
    clear(status);
    const wanted = {};
    for (const pair of tags.value.split(',').map((x) => x.trim()).filter(Boolean)) {
      const i = pair.indexOf('=');
      wanted[i < 0 ? pair : pair.slice(0, i).trim()] = i < 0 ? '' : pair.slice(i + 1).trim();
    }
    // A merge patch: tags no longer listed are removed.
    const tagPatch = { ...wanted };
    for (const k of Object.keys(job.tags || {})) if (!(k in wanted)) tagPatch[k] = null;
    try {
      const res = await patch(`/v1/jobs/${encodeURIComponent(job.id)}`, {
        name: name.value.trim() || null,
        tags: tagPatch,
        notes: notes.value.trim() ? notes.value : null,
      });
      job = res.body;
      clear(status, message('info', 'Saved.'));
      onSaved(job);
    } catch (err) {
      clear(status, message('error', err));
      for (const fe of err.fieldErrors || []) {
        const ctl = fe.field.startsWith('tags') ? tags : fe.field === 'notes' ? notes : name;
        ctl.closest('.field')?.append(h('span', { class: 'field-error', 'data-field': fe.field }, fe.message));
      }
    }
  });
  return form;
}

/* ---------------------------------------------------------------- compare */

/** A colour square; set through CSSOM, which the dashboard's CSP allows (style attributes it does not). */
function swatch(color) {
  const s = h('span', { class: 'swatch' });
  s.style.background = color;
  return s;
}

const COMPARE_METRICS = [
  ['val_accuracy', 'Validation accuracy'],
  ['val_loss', 'Validation loss'],
  ['accuracy', 'Training accuracy'],
  ['loss', 'Training loss'],
];

/** Several jobs side by side: their curves overlaid per metric, and their parameters with the differing ones marked. */
export async function comparePage(root, query) {
  const ids = (query.get('ids') || '').split(',').filter(Boolean);
  clear(root, h('p', { class: 'muted' }, 'Loading the comparison…'));
  let c;
  try {
    c = await get(`/v1/jobs/compare?ids=${ids.map(encodeURIComponent).join(',')}`);
  } catch (err) {
    clear(root, h('p', { class: 'crumbs' }, h('a', { href: '#/jobs' }, 'Jobs'), ' / compare'), h('h1', {}, 'Compare jobs'), message('error', err));
    return;
  }
  const label = (j) => j.name || shortId(j.id);
  const charts = COMPARE_METRICS.filter(([k]) => c.jobs.some((j) => j.history[k])).map(([k, title]) =>
    h(
      'section',
      { class: 'card chart-box', 'data-testid': `compare-chart-${k}` },
      lineChart({
        title,
        series: c.jobs.map((j, i) => ({
          name: label(j),
          color: PALETTE[i % PALETTE.length],
          points: (j.history[k] || []).map((v, e) => [c.epoch[e], v]).filter(([, v]) => Number.isFinite(v)),
        })),
      }),
    ),
  );
  const onlyDiff = h('input', { type: 'checkbox', 'data-testid': 'only-differing' });
  const paramsBox = h('div', { 'data-testid': 'compare-params' });
  const drawParams = () => {
    const rows = c.params.filter((p) => !onlyDiff.checked || p.differs);
    clear(
      paramsBox,
      table(
        ['Parameter', ...c.jobs.map(label)],
        rows.map((p) =>
          h(
            'tr',
            { class: p.differs ? 'differs' : null, 'data-path': p.path },
            h('td', {}, h('code', {}, p.path)),
            p.values.map((v) => h('td', { class: typeof v === 'number' ? 'num' : null }, v === null ? '–' : typeof v === 'number' ? fmtNum(v) : String(v))),
          ),
        ),
      ),
    );
  };
  onlyDiff.addEventListener('change', drawParams);
  drawParams();
  clear(
    root,
    h('p', { class: 'crumbs' }, h('a', { href: '#/jobs' }, 'Jobs'), ' / compare'),
    h('h1', {}, `Compare ${c.jobs.length} jobs`),
    h(
      'section',
      { class: 'card' },
      table(
        ['Job', 'Status', 'Best epoch', 'Saved model'],
        c.jobs.map((j, i) =>
          h(
            'tr',
            { 'data-id': j.id },
            h('td', {}, swatch(PALETTE[i % PALETTE.length]), ' ', h('a', { href: `#/jobs/${j.id}` }, label(j)), ' ', tagChips(j.tags)),
            h('td', {}, statusBadge(j.status)),
            h('td', { class: 'num' }, j.best_epoch ?? '–'),
            h('td', {}, j.saved_model_id ? h('a', { href: `#/saved-models/${j.saved_model_id}` }, shortId(j.saved_model_id)) : '–'),
          ),
        ),
      ),
    ),
    h('div', { class: 'two-col charts' }, charts.length ? charts : h('p', { class: 'muted' }, 'None of these jobs has finished an epoch yet.')),
    h(
      'section',
      { class: 'card' },
      h('h2', {}, 'Parameters'),
      h('p', { class: 'muted' }, `${c.differing.length} of ${c.params.length} differ (highlighted). `, h('label', { class: 'check' }, onlyDiff, ' show only those')),
      paramsBox,
    ),
  );
}
