//! chart.js: the dashboard's own small SVG charts (line curves with markers, bars, heat maps).
//
// Everything is drawn into a viewBox so the browser scales it to the container width; no
// fixed pixel sizes, which keeps the charts readable on a phone as on a desktop.

const NS = 'http://www.w3.org/2000/svg';

export const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563'];

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

// Round numbers for axis ticks (1, 2, 5 x 10^k) so labels stay short.
export function niceTicks(min, max, count = 5) {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [];
  if (min === max) {
    const pad = Math.abs(min) > 0 ? Math.abs(min) * 0.1 : 1;
    min -= pad;
    max += pad;
  }
  const raw = (max - min) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const ticks = [];
  for (let t = Math.floor(min / step) * step; t <= max + step * 0.5; t += step) {
    ticks.push(Number(t.toPrecision(12)));
  }
  return ticks;
}

// The viewBox width follows the container's pixel width (within bounds), so text keeps about
// its CSS size on a phone instead of shrinking with a wide drawing.
function chartWidth(px) {
  return Number.isFinite(px) && px > 0 ? Math.max(300, Math.min(720, Math.round(px))) : 640;
}

export function fmtNum(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (typeof v !== 'number') return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  if (Number.isInteger(v)) return a >= 10000 ? v.toLocaleString('en-US') : String(v);
  return v.toPrecision(4).replace(/\.?0+$/, '');
}

/**
 * A line chart of several series over a shared x axis.
 * series: [{name, points: [[x, y], ...], color, dashed}]
 * markers: [{x, label, color}] drawn as vertical lines (best epoch, early stop); markerLabels
 * 'top' or 'bottom' puts their labels where the curves are not (losses fall, accuracies rise).
 */
export function lineChart({ title, xLabel = 'epoch', series, markers = [], height = 260, yMin, width, markerLabels = 'top', legend: showLegend = true }) {
  const W = chartWidth(width);
  const H = height;
  const m = { l: 56, r: 16, t: title ? 28 : 12, b: 58 };
  const svg = el('svg', {
    viewBox: `0 0 ${W} ${H}`,
    class: 'chart line-chart',
    role: 'img',
    'aria-label': title || 'chart',
  });
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  svg.dataset.points = String(Math.max(0, ...series.map((s) => s.points.length)));
  if (title) svg.append(el('text', { x: m.l, y: 18, class: 'chart-title' }, title));
  if (pts.length === 0) {
    svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'no epochs yet'));
    return svg;
  }
  let x0 = Math.min(...pts.map((p) => p[0]), ...markers.map((mk) => mk.x));
  let x1 = Math.max(...pts.map((p) => p[0]), ...markers.map((mk) => mk.x));
  if (x0 === x1) x1 = x0 + 1;
  let y0 = Math.min(...pts.map((p) => p[1]));
  let y1 = Math.max(...pts.map((p) => p[1]));
  if (yMin !== undefined) y0 = Math.min(y0, yMin);
  const yt = niceTicks(y0, y1, 5);
  y0 = Math.min(y0, yt[0]);
  y1 = Math.max(y1, yt[yt.length - 1]);
  const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const sy = (y) => H - m.b - ((y - y0) / (y1 - y0 || 1)) * (H - m.t - m.b);

  const grid = el('g', { class: 'grid' });
  for (const t of yt) {
    grid.append(el('line', { x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t) }));
    grid.append(el('text', { x: m.l - 6, y: sy(t) + 4, 'text-anchor': 'end', class: 'tick' }, fmtNum(t)));
  }
  const span = x1 - x0;
  const xStep = Math.max(1, Math.ceil(span / 10));
  for (let x = Math.ceil(x0); x <= x1; x += xStep) {
    grid.append(el('text', { x: sx(x), y: H - m.b + 16, 'text-anchor': 'middle', class: 'tick' }, String(x)));
  }
  grid.append(el('text', { x: (m.l + W - m.r) / 2, y: H - m.b + 32, 'text-anchor': 'middle', class: 'axis-label' }, xLabel));
  svg.append(grid);

  for (const mk of markers) {
    const g = el('g', { class: 'marker', 'data-marker': mk.label });
    g.append(el('line', { x1: sx(mk.x), x2: sx(mk.x), y1: m.t, y2: H - m.b, stroke: mk.color || '#6b7280', 'stroke-dasharray': '4 3' }));
    // Near the right edge the label goes to the left of its line so it is not cut off.
    const right = sx(mk.x) > W - m.r - 110;
    g.append(el('text', { x: sx(mk.x) + (right ? -4 : 4), y: markerLabels === 'bottom' ? H - m.b - 6 - (mk.row || 0) * 13 : m.t + 12 + (mk.row || 0) * 13, 'text-anchor': right ? 'end' : 'start', class: 'marker-label', fill: mk.color || '#6b7280' }, mk.label));
    svg.append(g);
  }

  series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    const good = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (good.length === 0) return;
    const d = good.map(([x, y], j) => `${j ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    const g = el('g', { class: 'series', 'data-series': s.name, 'data-points': good.length, 'data-key': s.key });
    g.append(el('path', { d, fill: 'none', stroke: color, 'stroke-width': s.strokeWidth || 2, 'stroke-dasharray': s.dashed ? '6 4' : null }));
    for (const [x, y] of good) {
      const c = el('circle', { cx: sx(x), cy: sy(y), r: 3, fill: color });
      c.append(el('title', {}, `${s.name} @ ${xLabel} ${x}: ${fmtNum(y)}`));
      g.append(c);
    }
    svg.append(g);
  });

  if (!showLegend) return svg;
  // Legend below the axis so it never covers the curves.
  const legend = el('g', { class: 'legend' });
  let lx = m.l;
  series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    legend.append(el('line', { x1: lx, x2: lx + 18, y1: H - 10, y2: H - 10, stroke: color, 'stroke-width': 2, 'stroke-dasharray': s.dashed ? '6 4' : null }));
    legend.append(el('text', { x: lx + 22, y: H - 6, class: 'legend-text' }, s.name));
    lx += 30 + s.name.length * 7.5;
  });
  svg.append(legend);
  return svg;
}

/**
 * A colour per index that stays the same wherever the index is drawn: the palette first, then
 * hues spread by the golden angle so neighbouring indexes never look alike.
 */
export function seriesColor(i) {
  return i < PALETTE.length ? PALETTE[i] : `hsl(${Math.round((i * 137.508) % 360)} 65% 42%)`;
}

// Ticks of a log axis: powers of ten, with 2 and 5 between them when the range spans few decades.
function logTicks(min, max) {
  const lo = Math.floor(Math.log10(min));
  const hi = Math.ceil(Math.log10(max));
  const mults = hi - lo <= 2 ? [1, 2, 5] : [1];
  const out = [];
  for (let k = lo; k <= hi; k += 1) {
    for (const m of mults) {
      const t = Number((m * 10 ** k).toPrecision(12));
      if (t >= min * 0.999 && t <= max * 1.001) out.push(t);
    }
  }
  return out.length >= 2 ? out : [min, max];
}

/**
 * A scatter plot: one dot per point. x is numeric (log scale with `log`) or, with `categories`,
 * the index of a category named on the axis.
 * points: [{x, y, color, label}]
 */
export function scatterChart({ title, xLabel, yLabel, points, log = false, categories = null, height = 240, width }) {
  const W = chartWidth(width);
  const H = height;
  const m = { l: yLabel ? 68 : 56, r: 16, t: title ? 28 : 12, b: 46 };
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart scatter-chart', role: 'img', 'aria-label': title || 'scatter plot' });
  const good = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && (!log || p.x > 0));
  svg.dataset.points = String(good.length);
  if (title) svg.append(el('text', { x: m.l, y: 18, class: 'chart-title' }, title));
  if (good.length === 0) {
    svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'no objective yet'));
    return svg;
  }
  const tx = log ? Math.log10 : (v) => v;
  let x0;
  let x1;
  let xt;
  if (categories) {
    x0 = -0.5;
    x1 = categories.length - 0.5;
    xt = categories.map((_, i) => i);
  } else {
    const xs = good.map((p) => p.x);
    const lo = Math.min(...xs);
    const hi = Math.max(...xs);
    xt = log ? logTicks(lo, hi) : niceTicks(lo, hi, 5);
    x0 = tx(Math.min(lo, xt[0]));
    x1 = tx(Math.max(hi, xt[xt.length - 1]));
    if (x0 === x1) {
      x0 -= 0.5;
      x1 += 0.5;
    }
  }
  const ys = good.map((p) => p.y);
  const yt = niceTicks(Math.min(...ys), Math.max(...ys), 4);
  const y0 = Math.min(...ys, yt[0]);
  const y1 = Math.max(...ys, yt[yt.length - 1]);
  const sx = (v) => m.l + ((tx(v) - x0) / (x1 - x0)) * (W - m.l - m.r);
  const sxCat = (i) => m.l + ((i - x0) / (x1 - x0)) * (W - m.l - m.r);
  const px = categories ? sxCat : sx;
  const sy = (v) => H - m.b - ((v - y0) / (y1 - y0 || 1)) * (H - m.t - m.b);
  const grid = el('g', { class: 'grid' });
  for (const t of yt) {
    grid.append(el('line', { x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t) }));
    grid.append(el('text', { x: m.l - 6, y: sy(t) + 4, 'text-anchor': 'end', class: 'tick' }, fmtNum(t)));
  }
  // Category names are cut short so they never run into each other.
  const room = Math.max(3, Math.floor((W - m.l - m.r) / Math.max(1, xt.length) / 7));
  for (const t of xt) {
    let label = categories ? String(categories[t]) : fmtNum(t);
    if (label.length > room) label = `${label.slice(0, room - 1)}…`;
    grid.append(el('text', { x: px(t), y: H - m.b + 16, 'text-anchor': 'middle', class: 'tick' }, label));
  }
  grid.append(el('text', { x: (m.l + W - m.r) / 2, y: H - m.b + 34, 'text-anchor': 'middle', class: 'axis-label' }, `${xLabel}${log ? ' (log scale)' : ''}`));
  if (yLabel) grid.append(el('text', { x: 12, y: (m.t + H - m.b) / 2, 'text-anchor': 'middle', class: 'axis-label', transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})` }, yLabel));
  svg.append(grid);
  const dots = el('g', { class: 'dots' });
  for (const p of good) {
    const c = el('circle', { cx: px(p.x), cy: sy(p.y), r: 4.5, fill: p.color || PALETTE[0], 'fill-opacity': 0.85, class: 'dot', 'data-key': p.key });
    c.append(el('title', {}, `${p.label ? `${p.label}: ` : ''}${xLabel} ${categories ? categories[p.x] : fmtNum(p.x)}, ${yLabel || 'y'} ${fmtNum(p.y)}`));
    dots.append(c);
  }
  svg.append(dots);
  return svg;
}

/** Vertical bars, one per label (class distribution). */
export function barChart({ title, labels, values, height = 220, color = PALETTE[0], width }) {
  const W = chartWidth(width);
  const H = height;
  const m = { l: 56, r: 12, t: title ? 28 : 12, b: 34 };
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart bar-chart', role: 'img', 'aria-label': title || 'bar chart' });
  svg.dataset.bars = String(values.length);
  if (title) svg.append(el('text', { x: m.l, y: 18, class: 'chart-title' }, title));
  const max = Math.max(1, ...values);
  const yt = niceTicks(0, max, 4);
  const top = yt[yt.length - 1] || max;
  const sy = (v) => H - m.b - (v / top) * (H - m.t - m.b);
  for (const t of yt) {
    svg.append(el('line', { x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t), class: 'grid-line' }));
    svg.append(el('text', { x: m.l - 6, y: sy(t) + 4, 'text-anchor': 'end', class: 'tick' }, fmtNum(t)));
  }
  const n = Math.max(1, values.length);
  const slot = (W - m.l - m.r) / n;
  const bw = Math.max(1, slot * 0.75);
  const labelEvery = Math.ceil(n / Math.max(5, Math.floor(W / 22)));
  values.forEach((v, i) => {
    const x = m.l + i * slot + (slot - bw) / 2;
    const r = el('rect', { x, y: sy(v), width: bw, height: Math.max(0, H - m.b - sy(v)), fill: color, class: 'bar' });
    r.append(el('title', {}, `${labels[i]}: ${v}`));
    svg.append(r);
    if (i % labelEvery === 0) {
      svg.append(el('text', { x: x + bw / 2, y: H - m.b + 16, 'text-anchor': 'middle', class: 'tick' }, String(labels[i])));
    }
  });
  return svg;
}

/** A square heat map (confusion matrix): rows are true classes, columns predictions. */
export function heatMap({ title, matrix, labels, rowLabel = 'true class', colLabel = 'predicted class' }) {
  const n = matrix.length;
  const cols = n ? matrix[0].length : 0;
  const cell = Math.max(18, Math.min(48, Math.floor(480 / Math.max(1, cols))));
  const m = { l: 64, t: title ? 48 : 28, r: 10, b: 10 };
  const W = m.l + cols * cell + m.r;
  const H = m.t + n * cell + m.b + 20;
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart heat-map', role: 'img', 'aria-label': title || 'heat map' });
  svg.dataset.cells = String(n * cols);
  if (title) svg.append(el('text', { x: 4, y: 16, class: 'chart-title' }, title));
  // Normalise each row so a class with few samples still shows where its errors go.
  const rowMax = matrix.map((row) => Math.max(1, ...row.map((v) => Number(v) || 0)));
  svg.append(el('text', { x: m.l + (cols * cell) / 2, y: m.t - 16, 'text-anchor': 'middle', class: 'axis-label' }, colLabel));
  const yl = el('text', { x: 12, y: m.t + (n * cell) / 2, 'text-anchor': 'middle', class: 'axis-label', transform: `rotate(-90 12 ${m.t + (n * cell) / 2})` }, rowLabel);
  svg.append(yl);
  for (let j = 0; j < cols; j += 1) {
    svg.append(el('text', { x: m.l + j * cell + cell / 2, y: m.t - 4, 'text-anchor': 'middle', class: 'tick' }, String(labels?.[j] ?? j)));
  }
  for (let i = 0; i < n; i += 1) {
    svg.append(el('text', { x: m.l - 6, y: m.t + i * cell + cell / 2 + 4, 'text-anchor': 'end', class: 'tick' }, String(labels?.[i] ?? i)));
    for (let j = 0; j < cols; j += 1) {
      const v = Number(matrix[i][j]) || 0;
      const f = v / rowMax[i];
      // White to blue; the diagonal (correct) in blue, off-diagonal errors in red.
      const hue = i === j ? 217 : 0;
      const light = 97 - f * 55;
      const r = el('rect', { x: m.l + j * cell, y: m.t + i * cell, width: cell - 1, height: cell - 1, fill: `hsl(${hue} 80% ${light}%)`, class: 'cell' });
      r.append(el('title', {}, `true ${labels?.[i] ?? i}, predicted ${labels?.[j] ?? j}: ${v}`));
      svg.append(r);
      if (cell >= 26 && v > 0) {
        svg.append(el('text', { x: m.l + j * cell + cell / 2, y: m.t + i * cell + cell / 2 + 4, 'text-anchor': 'middle', class: f > 0.6 ? 'cell-text light' : 'cell-text' }, String(v)));
      }
    }
  }
  return svg;
}
