//! dom.js: small DOM helpers shared by the dashboard pages (element builder, tables, progress bars, messages).
//
// Pages build the DOM with h() instead of innerHTML so that names coming from the API can never
// inject markup.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'value') node.value = v;
    else if (k === 'checked') node.checked = Boolean(v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function fmtBytes(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

export function fmtDate(s) {
  if (!s) return '–';
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return String(s);
  return d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

export function fmtDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

export function fmtShape(shape) {
  if (!Array.isArray(shape)) return shape === undefined || shape === null ? '–' : String(shape);
  return `(${shape.map((d) => (d === null ? 'None' : d)).join(', ')}${shape.length === 1 ? ',' : ''})`;
}

// The tail, not the head: UUIDv7 ids start with a timestamp, so ids made close together share
// their first characters but not their last.
export const shortId = (id) => (id ? String(id).slice(-8) : '–');

const STATUS_WORDS = {
  queued: 'Queued: waiting for a free worker',
  running: 'Running',
  succeeded: 'Succeeded',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

export function statusBadge(status) {
  return h('span', { class: `badge status-${status}`, title: STATUS_WORDS[status] || status, 'data-status': status }, status || 'unknown');
}

export function statusWords(status) {
  return STATUS_WORDS[status] || `Status: ${status}`;
}

/** A labelled progress bar; fraction null means indeterminate. */
export function progressBar(fraction, label, testid) {
  const bar = h('div', { class: 'progress', role: 'progressbar', 'aria-label': label, 'data-testid': testid });
  const fill = h('div', { class: 'progress-fill' });
  if (fraction === null || fraction === undefined || !Number.isFinite(fraction)) {
    bar.classList.add('indeterminate');
  } else {
    const f = Math.max(0, Math.min(1, fraction));
    fill.style.width = `${(f * 100).toFixed(1)}%`;
    bar.setAttribute('aria-valuenow', String(Math.round(f * 100)));
  }
  bar.append(fill, h('span', { class: 'progress-label' }, label));
  return bar;
}

export function setProgress(bar, fraction, label) {
  const fill = bar.querySelector('.progress-fill');
  const text = bar.querySelector('.progress-label');
  if (fraction === null || !Number.isFinite(fraction)) {
    bar.classList.add('indeterminate');
  } else {
    bar.classList.remove('indeterminate');
    fill.style.width = `${(Math.max(0, Math.min(1, fraction)) * 100).toFixed(1)}%`;
    bar.setAttribute('aria-valuenow', String(Math.round(fraction * 100)));
  }
  text.textContent = label;
  bar.setAttribute('aria-label', label);
}

/** A message box: kind is 'error', 'ok' or 'info'. The error's problem fields are spelled out. */
export function message(kind, content) {
  const box = h('div', { class: `msg msg-${kind}`, role: kind === 'error' ? 'alert' : 'status' });
  if (content instanceof Error) {
    box.append(h('strong', {}, content.status ? `Error ${content.status}: ` : 'Error: '), content.message);
    const errs = content.fieldErrors || [];
    if (errs.length) {
      box.append(h('ul', { class: 'field-errors' }, errs.map((e) => h('li', {}, h('code', {}, e.field || '(body)'), ' ', e.message))));
    }
  } else {
    box.append(content);
  }
  return box;
}

/**
 * A table in a horizontally scrolling wrapper. Each cell carries its column name in data-label,
 * so tables with class `stack` can turn into one card per row on a phone (see app.css).
 */
export function table(headers, rows, attrs = {}) {
  const body = h('tbody', {}, rows);
  for (const tr of body.rows) {
    [...tr.cells].forEach((td, i) => {
      if (headers[i]) td.dataset.label = headers[i];
    });
  }
  return h('div', { class: 'table-wrap' }, h('table', attrs, h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))), body));
}

export function field(label, control, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), control, hint ? h('small', { class: 'hint' }, hint) : null);
}

export function select(name, options, value) {
  return h(
    'select',
    { name },
    options.map((o) => {
      const [v, text] = Array.isArray(o) ? o : [o, o];
      return h('option', { value: v, selected: v === value ? true : null }, text);
    }),
  );
}

/** Definition list from [label, value] pairs. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}
