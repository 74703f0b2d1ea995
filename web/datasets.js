//! datasets.js: the Datasets pages: list, upload (with progress) and built-ins, detail with samples and class chart.

import { ApiError, del, get, idFromLocation, listAll, post, request, upload } from './api.js';
import { barChart, fmtNum } from './chart.js';
import { clear, facts, field, fmtBytes, fmtDate, fmtShape, h, message, progressBar, select, setProgress, shortId, table } from './dom.js';

const BUILTINS = [
  ['digits', 'digits: 8x8 handwritten digits (ships with fitd)'],
  ['iris', 'iris: 4 features, 3 classes (ships with fitd)'],
  ['breast_cancer', 'breast_cancer: 30 features, 2 classes (ships with fitd)'],
  ['mnist', 'mnist: 28x28 digits (downloaded on demand)'],
  ['fashion_mnist', 'fashion_mnist: 28x28 clothes (downloaded on demand)'],
];

export function rangeText(range) {
  if (!range) return '–';
  if (Array.isArray(range)) return `${fmtNum(range[0])} … ${fmtNum(range[1])}`;
  if (typeof range === 'object') return `${fmtNum(range.min)} … ${fmtNum(range.max)}`;
  return String(range);
}

export function classEntries(ds) {
  const counts = ds.class_counts;
  if (!counts) return [];
  const entries = Array.isArray(counts)
    ? counts.map((c, i) => (typeof c === 'object' ? [String(c.label ?? i), Number(c.count)] : [String(i), Number(c)]))
    : Object.entries(counts).map(([k, v]) => [k, Number(v)]);
  return entries.sort((a, b) => {
    const na = Number(a[0]);
    const nb = Number(b[0]);
    return Number.isFinite(na) && Number.isFinite(nb) ? na - nb : a[0].localeCompare(b[0]);
  });
}

export async function datasetsPage(root) {
  const listBox = h('div', { 'data-testid': 'datasets-list' }, h('p', { class: 'muted' }, 'Loading datasets…'));
  clear(root, h('h1', {}, 'Datasets'), listBox, h('div', { class: 'two-col' }, uploadForm(), builtinForm()));
  try {
    const items = await listAll('/v1/datasets');
    if (items.length === 0) {
      clear(listBox, h('p', { class: 'muted' }, 'No datasets yet. Upload one or add a built-in below.'));
      return;
    }
    clear(
      listBox,
      table(
        ['Name', 'Samples', 'Input shape', 'Classes', 'Size', 'Created'],
        items.map((d) =>
          h(
            'tr',
            { 'data-id': d.id },
            h('td', {}, h('a', { href: `#/datasets/${d.id}` }, d.name || shortId(d.id))),
            h('td', { class: 'num' }, d.n_samples),
            h('td', {}, fmtShape(d.input_shape)),
            h('td', { class: 'num' }, d.n_classes ?? '–'),
            h('td', { class: 'num' }, fmtBytes(d.size_bytes)),
            h('td', {}, fmtDate(d.created_at)),
          ),
        ),
        { class: 'stack' },
      ),
    );
  } catch (err) {
    clear(listBox, message('error', err));
  }
}

function uploadForm() {
  const status = h('div', { class: 'form-status' });
  const format = select('format', [
    ['idx', 'IDX pair (images + labels, .gz or raw)'],
    ['csv', 'CSV (label column + features)'],
    ['npz', 'NPZ (arrays x and y)'],
  ]);
  const parts = h('div', { class: 'parts' });
  const renderParts = () => {
    const f = format.value;
    clear(
      parts,
      f === 'idx' && [
        field('Images file', h('input', { type: 'file', name: 'images', required: true })),
        field('Labels file', h('input', { type: 'file', name: 'labels', required: true })),
      ],
      f === 'csv' && [
        field('CSV file', h('input', { type: 'file', name: 'file', accept: '.csv,text/csv', required: true })),
        field('Label column', h('input', { name: 'label_column', placeholder: 'label' }), 'Defaults to "label".'),
      ],
      f === 'npz' && field('NPZ file', h('input', { type: 'file', name: 'file', accept: '.npz', required: true })),
      f !== 'idx' && field('Input shape', h('input', { name: 'input_shape', placeholder: 'e.g. 28,28' }), 'Optional, for flat formats.'),
    );
  };
  format.addEventListener('change', renderParts);
  renderParts();
  const bar = progressBar(0, 'not started', 'upload-progress');
  bar.hidden = true;
  const form = h(
    'form',
    { class: 'card', 'data-testid': 'upload-form' },
    h('h2', {}, 'Upload a dataset'),
    field('Name', h('input', { name: 'name', required: true, placeholder: 'my-dataset' })),
    field('Format', format),
    parts,
    h('button', { type: 'submit' }, 'Upload'),
    bar,
    status,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = new FormData();
    data.append('name', form.elements.name.value.trim());
    for (const input of parts.querySelectorAll('input')) {
      if (input.type === 'file') {
        if (input.files[0]) data.append(input.name, input.files[0], input.files[0].name);
      } else if (input.value.trim()) {
        data.append(input.name, input.value.trim());
      }
    }
    const button = form.querySelector('button');
    button.disabled = true;
    bar.hidden = false;
    setProgress(bar, 0, 'Uploading… 0 %');
    clear(status);
    try {
      const res = await upload('/v1/datasets', data, (f) => {
        if (f === null) setProgress(bar, null, 'Uploading…');
        else if (f >= 1) setProgress(bar, 1, 'Uploaded; the server is parsing the files…');
        else setProgress(bar, f, `Uploading… ${Math.round(f * 100)} %`);
      });
      setProgress(bar, 1, 'Done');
      const id = res.body?.id || idFromLocation(res.location);
      clear(status, message('ok', `Dataset "${res.body?.name ?? ''}" created with ${res.body?.n_samples ?? '?'} samples.`));
      location.hash = `#/datasets/${id}`;
    } catch (err) {
      setProgress(bar, 0, 'Upload failed');
      clear(status, message('error', err));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function builtinForm() {
  const status = h('div', { class: 'form-status' });
  const source = select('source', BUILTINS, 'digits');
  const split = select('split', [['train', 'train split'], ['test', 'test split']], 'train');
  const splitField = field('Split', split);
  const name = h('input', { name: 'name', required: true, value: 'digits' });
  let nameTouched = false;
  name.addEventListener('input', () => {
    nameTouched = true;
  });
  const sync = () => {
    splitField.hidden = !['mnist', 'fashion_mnist'].includes(source.value);
    if (!nameTouched) name.value = splitField.hidden ? source.value : `${source.value}-${split.value}`;
  };
  source.addEventListener('change', sync);
  split.addEventListener('change', sync);
  const form = h(
    'form',
    { class: 'card', 'data-testid': 'builtin-form' },
    h('h2', {}, 'Add a built-in dataset'),
    field('Source', source),
    splitField,
    field('Name', name),
    h('button', { type: 'submit' }, 'Add'),
    status,
  );
  sync();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), source: source.value };
    if (!splitField.hidden) body.split = split.value;
    const button = form.querySelector('button');
    button.disabled = true;
    clear(status, message('info', body.source.includes('mnist') ? 'Downloading and verifying the files…' : 'Loading…'));
    try {
      const res = await post('/v1/datasets', body);
      const id = res.body?.id || idFromLocation(res.headers.get('Location'));
      location.hash = `#/datasets/${id}`;
    } catch (err) {
      clear(status, message('error', err));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export async function datasetPage(root, id) {
  clear(root, h('p', { class: 'muted' }, 'Loading dataset…'));
  let ds;
  try {
    ds = await get(`/v1/datasets/${encodeURIComponent(id)}`);
  } catch (err) {
    clear(root, h('h1', {}, 'Dataset'), message('error', err));
    return;
  }
  const classes = classEntries(ds);
  const evr = ds.explained_variance_ratio || ds.derivation?.pca?.explained_variance_ratio;
  const grid = h('div', { class: 'sample-grid', 'data-testid': 'sample-grid' });
  const delStatus = h('div');
  const chartBox = h('div');
  clear(
    root,
    h('p', { class: 'crumbs' }, h('a', { href: '#/datasets' }, 'Datasets'), ' / ', ds.name),
    h('h1', {}, ds.name || shortId(ds.id)),
    h(
      'div',
      { class: 'actions' },
      h('a', { class: 'button', href: `#/jobs?dataset=${encodeURIComponent(ds.id)}` }, 'Train on this dataset'),
      h('button', { class: 'danger', onclick: () => deleteDataset(ds, delStatus) }, 'Delete'),
    ),
    delStatus,
    h(
      'div',
      { class: 'two-col' },
      h(
        'section',
        { class: 'card' },
        h('h2', {}, 'Shape and range'),
        facts([
          ['Samples', ds.n_samples],
          ['Input shape', fmtShape(ds.input_shape)],
          ['Classes', ds.n_classes ?? (classes.length || `none: ${ds.n_targets ?? ''} regression target(s)`)],
          ['Value range', rangeText(ds.feature_range)],
          ['Size', fmtBytes(ds.size_bytes)],
          ['Created', fmtDate(ds.created_at)],
          ['Kind', ds.kind ? ds.kind.replaceAll('_', ' ') : '–'],
          ['Source', ds.source || '–'],
          ...(ds.parent_id ? [['Derived from', h('a', { href: `#/datasets/${ds.parent_id}` }, shortId(ds.parent_id))]] : []),
          ...(evr ? [['Explained variance', `${(evr.reduce((a, b) => a + b, 0) * 100).toFixed(1)} % in ${evr.length} components`]] : []),
          ['Id', h('code', {}, ds.id)],
        ]),
      ),
      h(
        'section',
        { class: 'card', 'data-testid': 'class-chart' },
        h('h2', {}, 'Class distribution'),
        chartBox,
      ),
    ),
    h('section', { class: 'card' }, h('h2', {}, `Samples (first ${Math.min(20, ds.n_samples)})`), grid),
    pcaForm(ds),
  );
  // Drawn once the card is in the page, so the chart can size itself to it.
  chartBox.append(
    classes.length
      ? barChart({ labels: classes.map((c) => c[0]), values: classes.map((c) => c[1]), width: chartBox.clientWidth })
      : h('p', { class: 'muted' }, 'No class labels (regression targets).'),
  );
  await loadSamples(ds, grid);
}

/** Fetches one sample PNG; returns {url, label}. The label travels in the X-Label header. */
export async function fetchSample(datasetId, index) {
  const res = await request('GET', `/v1/datasets/${encodeURIComponent(datasetId)}/samples/${index}.png`, {
    raw: true,
    headers: { Accept: 'image/png' },
  });
  const blob = await res.blob();
  return { blob, url: URL.createObjectURL(blob), label: res.headers.get('X-Label') };
}

async function loadSamples(ds, grid) {
  const shape = ds.input_shape || [];
  // A PCA dataset's samples are drawn as their reconstruction in the parent's 2-D shape.
  if (shape.length !== 2 && !ds.parent_id && ds.source !== 'pca') {
    grid.append(message('info', `Samples are drawn as images for 2-D inputs only; each sample here has ${shape.reduce((a, b) => a * b, 1)} features.`));
    return;
  }
  const n = Math.min(20, ds.n_samples || 0);
  const cells = [];
  for (let i = 0; i < n; i += 1) {
    const cell = h('figure', { class: 'sample' }, h('div', { class: 'sample-img placeholder' }), h('figcaption', {}, `#${i}`));
    cells.push(cell);
    grid.append(cell);
  }
  const results = await Promise.allSettled(cells.map((_, i) => fetchSample(ds.id, i)));
  const firstError = results.find((r) => r.status === 'rejected');
  if (firstError && results.every((r) => r.status === 'rejected')) {
    const err = firstError.reason;
    clear(grid, message('info', err instanceof ApiError ? `No sample images: ${err.message}` : String(err)));
    return;
  }
  results.forEach((r, i) => {
    const cell = cells[i];
    if (r.status === 'fulfilled') {
      const img = h('img', { class: 'sample-img', src: r.value.url, alt: `sample ${i}, label ${r.value.label ?? 'unknown'}` });
      cell.replaceChildren(img, h('figcaption', {}, `#${i} `, h('strong', { 'data-testid': 'sample-label' }, r.value.label ?? '?')));
    } else {
      cell.replaceChildren(h('div', { class: 'sample-img broken' }, '✕'), h('figcaption', {}, `#${i} error`));
      cell.title = r.reason?.message || 'failed';
    }
  });
}

/** Derives a dataset of PCA features; its sample images show the reconstruction. */
function pcaForm(ds) {
  const k = h('input', { name: 'n_components', type: 'number', min: '1', value: '50' });
  const out = h('div');
  const form = h(
    'form',
    { class: 'card inline-form', 'data-testid': 'pca-form' },
    h('h2', {}, 'Derive a PCA dataset'),
    h('div', { class: 'inline' }, field('Components', k), h('button', { type: 'submit' }, 'Derive')),
    out,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = form.querySelector('button');
    button.disabled = true;
    clear(out, message('info', 'Fitting PCA…'));
    try {
      const res = await post(`/v1/datasets/${encodeURIComponent(ds.id)}/pca`, { n_components: Number(k.value) });
      location.hash = `#/datasets/${res.body?.id || idFromLocation(res.headers.get('Location'))}`;
    } catch (err) {
      clear(out, message('error', err));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

async function deleteDataset(ds, status) {
  if (!window.confirm(`Delete dataset "${ds.name}"?`)) return;
  try {
    try {
      await del(`/v1/datasets/${encodeURIComponent(ds.id)}`);
    } catch (err) {
      // Finished jobs that used it: delete them too, once the user agrees.
      if (err.status !== 409 || !String(err.problem?.detail || '').includes('cascade=true')) throw err;
      if (!window.confirm(`${err.problem.detail}\n\nDelete those jobs with the dataset?`)) return;
      await del(`/v1/datasets/${encodeURIComponent(ds.id)}?cascade=true`);
    }
    location.hash = '#/datasets';
  } catch (err) {
    clear(status, message('error', err));
  }
}
