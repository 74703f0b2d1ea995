//! models.js: the Models pages: list, create from JSON with errors beside their fields, detail with the summary table.

import { del, get, idFromLocation, listAll, post, request } from './api.js';
import { fmtNum } from './chart.js';
import { clear, facts, field, fmtDate, fmtShape, h, message, shortId, table } from './dom.js';

const PRESETS = {
  'mnist-mlp': {
    name: 'mnist-mlp',
    input_shape: [28, 28],
    layers: [
      { type: 'flatten' },
      { type: 'rescaling', scale: 1 / 255, offset: 0 },
      { type: 'dense', units: 64, activation: 'relu' },
      { type: 'dropout', rate: 0.2 },
      { type: 'dense', units: 10, activation: 'softmax' },
    ],
  },
  'digits-mlp': {
    name: 'digits-mlp',
    input_shape: [8, 8],
    layers: [
      { type: 'flatten' },
      { type: 'rescaling', scale: 0.0625, offset: 0 },
      { type: 'dense', units: 32, activation: 'relu' },
      { type: 'dense', units: 10, activation: 'softmax' },
    ],
  },
  'iris-mlp': {
    name: 'iris-mlp',
    input_shape: [4],
    layers: [
      { type: 'dense', units: 16, activation: 'tanh' },
      { type: 'dense', units: 3, activation: 'softmax' },
    ],
  },
};

export const paramsTotal = (m) => m?.params?.total ?? m?.total_params ?? null;

export async function modelsPage(root) {
  const listBox = h('div', { 'data-testid': 'models-list' }, h('p', { class: 'muted' }, 'Loading models…'));
  clear(root, h('h1', {}, 'Models'), listBox, createForm());
  try {
    const items = await listAll('/v1/models');
    if (items.length === 0) {
      clear(listBox, h('p', { class: 'muted' }, 'No models yet. Create one from JSON below.'));
      return;
    }
    clear(
      listBox,
      table(
        ['Name', 'Input shape', 'Output shape', 'Layers', 'Parameters', 'Created'],
        items.map((m) =>
          h(
            'tr',
            { 'data-id': m.id },
            h('td', {}, h('a', { href: `#/models/${m.id}` }, m.name || shortId(m.id))),
            h('td', {}, fmtShape(m.input_shape)),
            h('td', {}, fmtShape(m.output_shape)),
            h('td', { class: 'num' }, Array.isArray(m.layers) ? m.layers.length : '–'),
            h('td', { class: 'num' }, fmtNum(paramsTotal(m))),
            h('td', {}, fmtDate(m.created_at)),
          ),
        ),
        { class: 'stack' },
      ),
    );
  } catch (err) {
    clear(listBox, message('error', err));
  }
}

function createForm() {
  const text = h('textarea', { name: 'spec', rows: 16, spellcheck: 'false', 'data-testid': 'model-json' });
  text.value = JSON.stringify(PRESETS['mnist-mlp'], null, 2);
  const preset = h(
    'select',
    { name: 'preset', 'aria-label': 'Start from a preset' },
    Object.keys(PRESETS).map((k) => h('option', { value: k }, k)),
  );
  preset.addEventListener('change', () => {
    text.value = JSON.stringify(PRESETS[preset.value], null, 2);
    clear(status);
    clear(annotated);
  });
  const status = h('div', { class: 'form-status' });
  const annotated = h('div', { class: 'annotated', 'data-testid': 'model-errors' });
  const form = h(
    'form',
    { class: 'card', 'data-testid': 'model-form' },
    h('h2', {}, 'Create a model'),
    field('Preset', preset),
    field('Model spec (JSON)', text, 'Layer types: flatten, dense, dropout, rescaling, pca.'),
    h('button', { type: 'submit' }, 'Create model'),
    status,
    annotated,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(status);
    clear(annotated);
    let spec;
    try {
      spec = JSON.parse(text.value);
    } catch (err) {
      clear(status, message('error', `The spec is not valid JSON: ${err.message}`));
      return;
    }
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      const res = await post('/v1/models', spec);
      const id = res.body?.id || idFromLocation(res.headers.get('Location'));
      location.hash = `#/models/${id}`;
    } catch (err) {
      clear(status, message('error', err));
      if (err.fieldErrors.length) {
        clear(annotated, h('h3', {}, 'Where the problems are'), annotate(spec, err.fieldErrors));
      }
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** Normalises `layers.2.rate`, `/layers/2/rate` and `layers[2].rate` to the last form. */
function normPath(p) {
  return String(p || '')
    .replace(/^\$?\.?\/?/, '')
    .replace(/\/(\d+)(?=\/|$)/g, '[$1]')
    .replace(/\.(\d+)(?=\.|\[|$)/g, '[$1]')
    .replace(/\//g, '.');
}

/**
 * Renders the submitted spec one field per line, and puts each validation error beside the
 * line of the field it names (or of its nearest existing parent, e.g. for a missing field).
 */
export function annotate(spec, errors) {
  const lines = [];
  const paths = new Set();
  const walk = (value, path, key, depth, last) => {
    const comma = last ? '' : ',';
    const prefix = key === null ? '' : `${JSON.stringify(key)}: `;
    paths.add(path);
    const isScalarArray = Array.isArray(value) && value.every((v) => v === null || typeof v !== 'object');
    if (value !== null && typeof value === 'object' && !isScalarArray) {
      const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
      const [open, close] = Array.isArray(value) ? ['[', ']'] : ['{', '}'];
      lines.push({ path, depth, text: `${prefix}${open}` });
      entries.forEach(([k, v], i) => {
        const child = Array.isArray(value) ? `${path}[${k}]` : path ? `${path}.${k}` : String(k);
        walk(v, child, Array.isArray(value) ? null : k, depth + 1, i === entries.length - 1);
      });
      lines.push({ path: null, depth, text: `${close}${comma}` });
    } else {
      lines.push({ path, depth, text: `${prefix}${JSON.stringify(value)}${comma}` });
    }
  };
  walk(spec, '', null, 0, true);
  const byPath = new Map();
  const unplaced = [];
  for (const e of errors) {
    let p = normPath(e.field);
    while (p && !paths.has(p)) {
      const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
      p = cut > 0 ? p.slice(0, cut) : '';
    }
    if (!p) unplaced.push(e);
    else byPath.set(p, [...(byPath.get(p) || []), e]);
  }
  const errNode = (e) => h('span', { class: 'field-error', 'data-field': e.field }, `← ${e.field}: ${e.message}`);
  return h(
    'div',
    { class: 'json-view' },
    unplaced.map((e) => h('div', { class: 'json-line has-error' }, errNode(e))),
    lines.map((l) => {
      const errs = l.path !== null ? byPath.get(l.path) || [] : [];
      const used = errs.length ? (byPath.delete(l.path), errs) : [];
      const line = h('div', { class: `json-line${used.length ? ' has-error' : ''}`, 'data-path': l.path ?? '' }, h('code', {}, l.text), used.map(errNode));
      line.style.paddingLeft = `${l.depth * 1.2}em`;
      return line;
    }),
  );
}

export async function modelPage(root, id) {
  clear(root, h('p', { class: 'muted' }, 'Loading model…'));
  let model;
  try {
    model = await get(`/v1/models/${encodeURIComponent(id)}`);
  } catch (err) {
    clear(root, h('h1', {}, 'Model'), message('error', err));
    return;
  }
  const summaryBox = h('div', { 'data-testid': 'model-summary' }, h('p', { class: 'muted' }, 'Loading summary…'));
  const textBox = h('pre', { class: 'keras-table' });
  const status = h('div');
  clear(
    root,
    h('p', { class: 'crumbs' }, h('a', { href: '#/models' }, 'Models'), ' / ', model.name),
    h('h1', {}, model.name || shortId(model.id)),
    h(
      'div',
      { class: 'actions' },
      h('a', { class: 'button', href: `#/jobs?model=${encodeURIComponent(model.id)}` }, 'Train this model'),
      h('button', { class: 'danger', onclick: () => deleteModel(model, status) }, 'Delete'),
    ),
    status,
    h(
      'section',
      { class: 'card' },
      facts([
        ['Input shape', fmtShape(model.input_shape)],
        ['Output shape', fmtShape(model.output_shape)],
        ['Parameters', `${fmtNum(paramsTotal(model))} total, ${fmtNum(model.params?.trainable)} trainable, ${fmtNum(model.params?.non_trainable)} non-trainable`],
        ['Created', fmtDate(model.created_at)],
        ['Id', h('code', {}, model.id)],
      ]),
    ),
    h('section', { class: 'card' }, h('h2', {}, 'Summary'), summaryBox, h('details', {}, h('summary', {}, 'As Keras prints it'), textBox)),
    appendLayerForm(model, status),
    h('section', { class: 'card' }, h('details', {}, h('summary', {}, 'Spec as JSON'), h('pre', {}, JSON.stringify({ name: model.name, input_shape: model.input_shape, layers: model.layers }, null, 2)))),
  );
  try {
    const s = await get(`/v1/models/${encodeURIComponent(model.id)}/summary`);
    const rows = s.layers || s.rows || [];
    const total = s.total_params ?? s.params?.total ?? s.totals?.total ?? paramsTotal(model);
    const trainable = s.trainable_params ?? s.params?.trainable ?? s.totals?.trainable;
    const nonTrainable = s.non_trainable_params ?? s.params?.non_trainable ?? s.totals?.non_trainable;
    clear(
      summaryBox,
      table(
        ['Layer (type)', 'Output shape', 'Param #'],
        rows.map((r) =>
          h(
            'tr',
            {},
            h('td', {}, `${r.name} (${r.class_name || r.type})`),
            h('td', {}, fmtShape(r.output_shape)),
            h('td', { class: 'num' }, r.params === null || r.params === undefined ? 'unknown until fitted' : fmtNum(r.params)),
          ),
        ),
        { class: 'summary-table' },
      ),
      h('p', {}, `Total params: ${fmtNum(total)}`, trainable !== undefined ? ` · trainable: ${fmtNum(trainable)}` : '', nonTrainable !== undefined ? ` · non-trainable: ${fmtNum(nonTrainable)}` : ''),
    );
  } catch (err) {
    clear(summaryBox, message('error', err));
  }
  try {
    const res = await request('GET', `/v1/models/${encodeURIComponent(model.id)}/summary`, { raw: true, headers: { Accept: 'text/plain' } });
    textBox.textContent = await res.text();
  } catch (err) {
    textBox.textContent = `Could not load the text summary: ${err.message}`;
  }
}

function appendLayerForm(model, status) {
  const text = h('input', { name: 'layer', value: '{"type": "dense", "units": 10, "activation": "softmax"}', spellcheck: 'false' });
  const out = h('div');
  const form = h(
    'form',
    { class: 'card inline-form' },
    h('h2', {}, 'Append a layer'),
    field('Layer (JSON)', text, 'Like Keras model.add(); refused once a job has used this model.'),
    h('button', { type: 'submit' }, 'Append'),
    out,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(out);
    let layer;
    try {
      layer = JSON.parse(text.value);
    } catch (err) {
      clear(out, message('error', `Not valid JSON: ${err.message}`));
      return;
    }
    try {
      await post(`/v1/models/${encodeURIComponent(model.id)}/layers`, layer);
      clear(status, message('ok', 'Layer appended.'));
      modelPage(document.getElementById('main'), model.id);
    } catch (err) {
      clear(out, message('error', err));
    }
  });
  return form;
}

async function deleteModel(model, status) {
  if (!window.confirm(`Delete model "${model.name}"?`)) return;
  try {
    try {
      await del(`/v1/models/${encodeURIComponent(model.id)}`);
    } catch (err) {
      // Finished jobs that used it: delete them too, once the user agrees.
      if (err.status !== 409 || !String(err.problem?.detail || '').includes('cascade=true')) throw err;
      if (!window.confirm(`${err.problem.detail}\n\nDelete those jobs with the model?`)) return;
      await del(`/v1/models/${encodeURIComponent(model.id)}?cascade=true`);
    }
    location.hash = '#/models';
  } catch (err) {
    clear(status, message('error', err));
  }
}
