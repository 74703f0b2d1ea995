//! saved.js: the Saved models pages: list, metrics, try-it predictions, confusion-matrix heat map, downloads.

import { del, get, listAll, post, put } from './api.js';
import { fmtNum, heatMap } from './chart.js';
import { fetchSample } from './datasets.js';
import { clear, facts, field, fmtDate, fmtShape, h, message, select, shortId, table } from './dom.js';

export async function savedModelsPage(root) {
  const box = h('div', { 'data-testid': 'saved-models-list' }, h('p', { class: 'muted' }, 'Loading saved models…'));
  clear(root, h('h1', {}, 'Saved models'), h('p', { class: 'muted' }, 'Trained weights: from finished jobs, checkpoints, uploads or imports.'), box);
  try {
    const [items, models] = await Promise.all([listAll('/v1/saved-models'), listAll('/v1/models').catch(() => [])]);
    const names = new Map(models.map((m) => [m.id, m.name]));
    if (!items.length) {
      clear(box, h('p', { class: 'muted' }, 'No saved models yet: a job that succeeds creates one.'));
      return;
    }
    clear(
      box,
      table(
        ['Saved model', 'Model', 'Source', 'Epoch', 'Metrics', 'Created'],
        items.map((s) =>
          h(
            'tr',
            { 'data-id': s.id },
            h('td', {}, h('a', { href: `#/saved-models/${s.id}` }, shortId(s.id))),
            h('td', {}, names.get(s.model_id) || shortId(s.model_id)),
            h('td', {}, sourceText(s.source)),
            h('td', { class: 'num' }, s.epoch ?? '–'),
            h('td', {}, metricsText(s.metrics)),
            h('td', {}, fmtDate(s.created_at)),
          ),
        ),
        { class: 'stack' },
      ),
    );
  } catch (err) {
    clear(box, message('error', err));
  }
}

function sourceText(src) {
  if (!src) return '–';
  if (typeof src === 'string') return src.replaceAll('_', ' ');
  return src.type || src.kind || JSON.stringify(src);
}

function metricsText(m) {
  if (!m || typeof m !== 'object') return '–';
  return Object.entries(m)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => `${k} ${fmtNum(v)}`)
    .join(', ');
}

/** Probability bars, the predicted class highlighted. */
function probabilityBars(pred, labels) {
  // A binary model answers the probability of class 1; show it as two bars like a classifier.
  const probs = pred.probabilities || (Number.isFinite(pred.probability) ? [1 - pred.probability, pred.probability] : []);
  const cls = pred.class;
  if (!probs.length) {
    const v = pred.value;
    return h('p', { 'data-testid': 'prediction' }, 'Predicted value: ', h('strong', {}, Array.isArray(v) ? v.map(fmtNum).join(', ') : fmtNum(v)));
  }
  return h(
    'div',
    { class: 'prediction', 'data-testid': 'prediction' },
    h('p', { class: 'predicted' }, 'Predicted class: ', h('strong', { 'data-testid': 'predicted-class' }, String(labels?.[cls] ?? cls)), ` (p = ${fmtNum(probs[cls])})`),
    h(
      'div',
      { class: 'prob-bars' },
      probs.map((p, i) => {
        const fill = h('div', { class: 'prob-fill' });
        fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
        return h('div', { class: `prob-row${i === cls ? ' winner' : ''}` }, h('span', { class: 'prob-label' }, String(labels?.[i] ?? i)), h('div', { class: 'prob-track' }, fill), h('span', { class: 'prob-value' }, fmtNum(p)));
      }),
    ),
  );
}

export async function savedModelPage(root, id) {
  clear(root, h('p', { class: 'muted' }, 'Loading saved model…'));
  let sm;
  try {
    sm = await get(`/v1/saved-models/${encodeURIComponent(id)}`);
  } catch (err) {
    clear(root, h('h1', {}, 'Saved model'), message('error', err));
    return;
  }
  const [model, job, datasets] = await Promise.all([
    get(`/v1/models/${encodeURIComponent(sm.model_id)}`).catch(() => null),
    sm.job_id ? get(`/v1/jobs/${encodeURIComponent(sm.job_id)}`).catch(() => null) : null,
    listAll('/v1/datasets').catch(() => []),
  ]);
  const jobDataset = job ? (job.dataset_id ?? job.request?.dataset_id) : null;
  const inputShape = sm.input_shape || model?.input_shape || [];
  const is2d = inputShape.length === 2;
  const base = `/v1/saved-models/${encodeURIComponent(sm.id)}`;
  const dsOptions = datasets.map((d) => [d.id, `${d.name} (${fmtShape(d.input_shape)})`]);
  const defaultDs = datasets.find((d) => d.id === jobDataset)?.id || datasets[0]?.id;

  // Try it: a dataset sample or an uploaded PNG.
  const sampleDs = select('dataset', dsOptions, defaultDs);
  const sampleIdx = h('input', { type: 'number', min: '0', value: '0', name: 'index', 'data-testid': 'sample-index' });
  const pngInput = h('input', { type: 'file', accept: 'image/png', name: 'image' });
  const valuesInput = h('input', { name: 'values', placeholder: 'e.g. 5.1, 3.5, 1.4, 0.2', spellcheck: 'false' });
  const preview = h('div', { class: 'try-preview' });
  const result = h('div', { 'data-testid': 'predict-result' });
  const predictImage = async (blob, caption) => {
    clear(result, h('p', { class: 'muted' }, 'Predicting…'));
    const form = new FormData();
    form.append('image', blob, 'input.png');
    try {
      const res = await post(`${base}/predict`, form);
      const pred = res.body?.predictions?.[0];
      clear(result, caption ? h('p', {}, caption) : null, pred ? probabilityBars(pred) : message('error', 'The server returned no prediction.'));
    } catch (err) {
      clear(result, message('error', err));
    }
  };
  const trySample = async () => {
    clear(preview);
    try {
      const s = await fetchSample(sampleDs.value, Number(sampleIdx.value) || 0);
      clear(preview, h('img', { class: 'sample-img large', src: s.url, alt: `sample ${sampleIdx.value}` }), h('p', {}, 'True label: ', h('strong', { 'data-testid': 'true-label' }, s.label ?? 'unknown')));
      await predictImage(s.blob, null);
    } catch (err) {
      clear(result, message('error', err));
    }
  };
  pngInput.addEventListener('change', () => {
    const file = pngInput.files[0];
    if (!file) return;
    clear(preview, h('img', { class: 'sample-img large', src: URL.createObjectURL(file), alt: file.name }), h('p', {}, file.name));
    predictImage(file, null);
  });
  const tryValues = async () => {
    const nums = valuesInput.value.split(/[\s,;]+/).filter(Boolean).map(Number);
    if (!nums.length || nums.some((x) => !Number.isFinite(x))) {
      clear(result, message('error', 'Enter numbers separated by commas.'));
      return;
    }
    clear(preview);
    try {
      const res = await post(`${base}/predict`, { instances: [nums] });
      clear(result, probabilityBars(res.body.predictions[0]));
    } catch (err) {
      clear(result, message('error', err));
    }
  };

  // Evaluate -> loss, accuracy and the confusion matrix.
  const evalDs = select('dataset', dsOptions, defaultDs);
  const evalBox = h('div', { 'data-testid': 'evaluate-result' });
  const evaluate = async (button) => {
    button.disabled = true;
    clear(evalBox, h('p', { class: 'muted' }, 'Evaluating…'));
    try {
      const res = await post(`${base}/evaluate`, { dataset_id: evalDs.value });
      const r = res.body;
      const cm = r.confusion_matrix;
      const matrix = Array.isArray(cm) ? cm : cm?.matrix;
      const labels = Array.isArray(cm) ? null : cm?.labels;
      clear(
        evalBox,
        facts([
          ['Samples', r.n_samples],
          ['Loss', fmtNum(r.loss)],
          ['Accuracy', r.accuracy === undefined ? '–' : `${fmtNum(r.accuracy)} (${(r.accuracy * 100).toFixed(1)} %)`],
        ]),
        Array.isArray(matrix) && matrix.length ? h('div', { class: 'heat-box' }, heatMap({ title: 'Confusion matrix', matrix, labels })) : h('p', { class: 'muted' }, 'No confusion matrix (not a classifier).'),
      );
    } catch (err) {
      clear(evalBox, message('error', err));
    } finally {
      button.disabled = false;
    }
  };

  clear(
    root,
    h('p', { class: 'crumbs' }, h('a', { href: '#/saved-models' }, 'Saved models'), ' / ', shortId(sm.id)),
    h('h1', {}, 'Saved model ', h('code', {}, shortId(sm.id))),
    h(
      'section',
      { class: 'card' },
      facts([
        ['Model', model ? h('a', { href: `#/models/${model.id}` }, `${model.name} ${fmtShape(model.input_shape)} → ${fmtShape(model.output_shape)}`) : shortId(sm.model_id)],
        ['From job', sm.job_id ? h('a', { href: `#/jobs/${sm.job_id}` }, shortId(sm.job_id)) : '–'],
        ['Epoch', sm.epoch ?? '–'],
        ['Source', sourceText(sm.source)],
        ['Metrics', h('span', { 'data-testid': 'saved-metrics' }, metricsText(sm.metrics))],
        ['Created', fmtDate(sm.created_at)],
      ]),
      h(
        'div',
        { class: 'actions' },
        h('a', { class: 'button', href: `${base}/weights`, download: `${sm.id}.safetensors` }, 'Download weights (.safetensors)'),
        h('a', { class: 'button', href: `${base}/export`, download: `${sm.id}-model.safetensors` }, 'Export whole model'),
      ),
    ),
    h(
      'div',
      { class: 'two-col' },
      h(
        'section',
        { class: 'card', 'data-testid': 'try-it' },
        h('h2', {}, 'Try it'),
        is2d
          ? [
              h('div', { class: 'inline' }, field('Dataset', sampleDs), field('Sample #', sampleIdx), h('button', { 'data-testid': 'predict-sample', onclick: trySample }, 'Predict sample')),
              field('…or upload a PNG', pngInput, `Grayscale or RGB, exactly ${inputShape.join('×')} pixels.`),
            ]
          : h('div', { class: 'inline' }, field(`Values (${inputShape.join('×') || '?'} numbers)`, valuesInput), h('button', { 'data-testid': 'predict-values', onclick: tryValues }, 'Predict')),
        preview,
        result,
      ),
      h(
        'section',
        { class: 'card' },
        h('h2', {}, 'Evaluate'),
        h('div', { class: 'inline' }, field('Dataset', evalDs), h('button', { 'data-testid': 'evaluate', onclick: (e) => evaluate(e.target) }, 'Evaluate')),
        evalBox,
      ),
    ),
    aliasesCard(sm),
    h('section', { class: 'card' }, h('h2', {}, 'Open Inference Protocol'), h('p', {}, 'The same model answers KServe v2 requests at ', h('code', {}, `/v2/models/${sm.id}/infer`), '.')),
  );
}

/** The aliases naming this saved model, a form pointing one at it, and each alias's history. */
function aliasesCard(sm) {
  const list = h('div', { 'data-testid': 'aliases' }, h('p', { class: 'muted' }, 'Loading aliases…'));
  const status = h('div');
  const name = h('input', { name: 'alias', placeholder: 'e.g. production', 'data-testid': 'alias-name', spellcheck: 'false' });
  const refresh = async () => {
    try {
      const items = await listAll(`/v1/aliases?saved_model_id=${encodeURIComponent(sm.id)}`);
      if (!items.length) {
        clear(list, h('p', { class: 'muted' }, 'No alias points here.'));
        return;
      }
      const histories = await Promise.all(items.map((a) => get(`/v1/aliases/${encodeURIComponent(a.name)}/history?limit=5`).catch(() => null)));
      clear(
        list,
        table(
          ['Alias', 'Since', 'Before', 'URL', ''],
          items.map((a, i) => {
            const before = (histories[i]?.items || []).slice(1).map((e) => (e.saved_model_id ? shortId(e.saved_model_id) : 'deleted'));
            return h(
              'tr',
              { 'data-alias': a.name },
              h('td', {}, h('strong', {}, a.name)),
              h('td', {}, fmtDate(a.updated_at)),
              h('td', { class: 'muted' }, before.join(' ← ') || '–'),
              h('td', {}, h('code', {}, `/v1/saved-models/${a.name}/predict`)),
              h(
                'td',
                {},
                h(
                  'button',
                  {
                    class: 'danger',
                    'data-testid': `delete-alias-${a.name}`,
                    onclick: async () => {
                      try {
                        await del(`/v1/aliases/${encodeURIComponent(a.name)}`);
                        await refresh();
                      } catch (err) {
                        clear(status, message('error', err));
                      }
                    },
                  },
                  'Remove',
                ),
              ),
            );
          }),
        ),
      );
    } catch (err) {
      clear(list, message('error', err));
    }
  };
  const form = h(
    'form',
    { class: 'inline', 'data-testid': 'alias-form' },
    field('Point an alias here', name, 'Creates the alias, or moves it from the model it names now.'),
    h('button', { type: 'submit' }, 'Set alias'),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(status);
    try {
      const res = await put(`/v1/aliases/${encodeURIComponent(name.value.trim())}`, { saved_model_id: sm.id });
      clear(status, message('info', `${res.body.name} now names this model.`));
      name.value = '';
      await refresh();
    } catch (err) {
      clear(status, message('error', err));
    }
  });
  refresh();
  return h('section', { class: 'card' }, h('h2', {}, 'Aliases'), list, form, status);
}
