//! searches.js: the Searches pages: the list of searches, and a search's page with its leaderboard, the trials' objective curves overlaid live over SSE, and each parameter plotted against the objective.

import { get, listAll, post } from './api.js';
import { fmtNum, lineChart, scatterChart, seriesColor } from './chart.js';
import { clear, facts, fmtDate, h, message, progressBar, setProgress, shortId, statusBadge, table } from './dom.js';

const REFRESH_MS = 2000;
const TRIAL_WORDS = {
  queued: 'waiting for a free worker',
  running: 'training',
  succeeded: 'trained every epoch',
  stopped: 'stopped early at a rung: its objective was not among the best there',
  failed: 'failed',
  cancelled: 'cancelled',
};
const METHOD_WORDS = {
  grid: 'grid: every combination in order',
  random: 'random: seeded draws',
  asha: 'ASHA: random trials, the weaker ones stopped at rungs',
  hyperband: 'Hyperband: random trials in brackets of successive halving, the weaker ones of a bracket stopped at its rungs',
};

const searchName = (s) => s.request?.base?.name || shortId(s.id);
const objectiveName = (s) => `${s.objective?.metric} (${s.maximize ? 'max' : 'min'})`;

/** A colour square; set through CSSOM, which the dashboard's CSP allows (style attributes it does not). */
function swatch(color) {
  const sw = h('span', { class: 'swatch' });
  sw.style.background = color;
  return sw;
}

function fmtValue(v) {
  if (v === null || v === undefined) return '–';
  if (typeof v === 'number') return fmtNum(v);
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

function trialsBar(s) {
  const n = s.trial_count || 0;
  return progressBar(n ? s.trials_finished / n : 0, `${s.trials_finished} / ${n} trials`);
}

/* ---------------------------------------------------------------- list */

export async function searchesPage(root, ctx) {
  const listBox = h('div', { 'data-testid': 'searches-list' }, h('p', { class: 'muted' }, 'Loading searches…'));
  const updated = h('small', { class: 'muted' });
  clear(
    root,
    h('h1', {}, 'Searches'),
    h(
      'p',
      { class: 'muted' },
      'Hyperparameter searches: trials of one base job over a search space, run as jobs on the shared workers. Start one with ',
      h('code', {}, 'POST /v1/searches'),
      ' (see ',
      h('a', { href: '/docs/' }, 'the API docs'),
      '). ',
      updated,
    ),
    listBox,
  );
  const refresh = async () => {
    try {
      const items = await listAll('/v1/searches', 500);
      if (!ctx.alive()) return false;
      renderList(listBox, items);
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
      return items.some((s) => s.status === 'running');
    } catch (err) {
      if (ctx.alive()) clear(listBox, message('error', err));
      return true;
    }
  };
  await refresh();
  // Newest last, as the API lists them; refreshed while the page is open.
  const timer = setInterval(refresh, REFRESH_MS);
  ctx.cleanup(() => clearInterval(timer));
}

function renderList(box, items) {
  if (!items.length) {
    clear(box, h('p', { class: 'muted' }, 'No searches yet.'));
    return;
  }
  clear(
    box,
    table(
      ['Search', 'Status', 'Method', 'Objective', 'Trials', 'Best', 'Created'],
      items.map((s) =>
        h(
          'tr',
          { 'data-id': s.id, 'data-status': s.status },
          h('td', {}, h('a', { href: `#/searches/${s.id}` }, searchName(s))),
          h('td', {}, statusBadge(s.status)),
          h('td', {}, s.method),
          h('td', {}, objectiveName(s)),
          h('td', { class: 'bar-cell' }, trialsBar(s)),
          h('td', { class: 'num' }, s.best ? `${fmtNum(s.best.objective)} (trial ${s.best.trial})` : '–'),
          h('td', {}, fmtDate(s.created_at)),
        ),
      ),
      { class: 'searches-table stack' },
    ),
  );
}

/* ---------------------------------------------------------------- one search */

export async function searchPage(root, ctx, id) {
  clear(root, h('p', { class: 'muted' }, 'Loading search…'));
  let s;
  try {
    s = await get(`/v1/searches/${encodeURIComponent(id)}`);
  } catch (err) {
    clear(root, h('p', { class: 'crumbs' }, h('a', { href: '#/searches' }, 'Searches'), ' / ', shortId(id)), h('h1', {}, 'Search'), message('error', err));
    return;
  }
  // trial -> (epoch -> objective), filled from the stream's trial_epoch events (or History).
  const curves = new Map();
  // The trial whose curve and dots stand out (hover on its leaderboard row).
  let focus = null;
  const headBox = h('div');
  const bar = trialsBar(s);
  const live = h('p', { class: 'live', 'data-testid': 'live-status' }, 'Connecting…');
  const actionMsg = h('div');
  const boardBox = h('div', { 'data-testid': 'leaderboard' });
  const curvesBox = h('div', { class: 'chart-box', 'data-testid': 'search-curves' });
  const paramsBox = h('div', { class: 'param-plots', 'data-testid': 'param-plots' });
  const cancelBtn = h('button', { class: 'danger', 'data-testid': 'cancel-search' }, 'Cancel search');
  cancelBtn.addEventListener('click', async () => {
    cancelBtn.disabled = true;
    try {
      const res = await post(`/v1/searches/${encodeURIComponent(s.id)}/cancel`);
      if (res.body?.id) s = res.body;
      clear(actionMsg, message('info', 'Cancellation requested: no new trial starts and running trials stop within a batch.'));
      render();
    } catch (err) {
      cancelBtn.disabled = false;
      clear(actionMsg, message('error', err));
    }
  });
  clear(
    root,
    h('p', { class: 'crumbs' }, h('a', { href: '#/searches' }, 'Searches'), ' / ', shortId(s.id)),
    headBox,
    actionMsg,
    h('section', { class: 'card' }, bar, live),
    h('section', { class: 'card' }, h('h2', {}, 'Leaderboard'), boardBox),
    h('section', { class: 'card' }, curvesBox),
    h('section', { class: 'card' }, h('h2', {}, 'Parameters against the objective'), paramsBox),
  );

  const metric = s.objective.metric;
  const trialColor = (t) => seriesColor(t);

  const renderHead = () => {
    const best = s.best;
    cancelBtn.hidden = s.status !== 'running';
    const space = s.request?.space || [];
    clear(
      headBox,
      h('h1', {}, 'Search ', h('span', { 'data-testid': 'search-name' }, searchName(s)), ' ', statusBadge(s.status)),
      h(
        'p',
        { class: 'status-words', 'data-testid': 'search-status' },
        s.status === 'running'
          ? `Running: ${s.trials_finished} of ${s.trial_count} trials over, up to ${s.request?.max_concurrent_trials ?? 2} at a time.`
          : `${s.status === 'cancelled' ? 'Cancelled' : 'Finished'}: ${s.trials_finished} of ${s.trial_count} trials over.`,
      ),
      h(
        'div',
        { class: 'actions' },
        cancelBtn,
        best?.job_id ? h('a', { class: 'button', href: `#/jobs/${best.job_id}`, 'data-testid': 'best-job-link' }, `Best trial: ${best.trial}`) : null,
        best?.saved_model_id ? h('a', { class: 'button', href: `#/saved-models/${best.saved_model_id}`, 'data-testid': 'best-model-link' }, 'Open the best model') : null,
      ),
      facts([
        ['Method', METHOD_WORDS[s.method] || s.method],
        ['Objective', objectiveName(s)],
        ['Best so far', best ? h('span', { 'data-testid': 'best-objective' }, `${metric} ${fmtNum(best.objective)} (trial ${best.trial})`) : '–'],
        ['Space', h('span', {}, space.map((d, i) => [i ? ', ' : '', h('code', {}, d.path), ` ${d.type}`]))],
        ['Seed', s.request?.seed ?? '–'],
        ['Created', fmtDate(s.created_at)],
        ['Finished', fmtDate(s.finished_at)],
      ]),
    );
    setProgress(bar, s.trial_count ? s.trials_finished / s.trial_count : 0, `${s.trials_finished} / ${s.trial_count} trials over`);
  };

  const renderBoard = () => {
    const trials = s.trials || [];
    if (!trials.length) {
      clear(boardBox, h('p', { class: 'muted' }, 'No trial yet.'));
      return;
    }
    const paths = (s.request?.space || []).map((d) => d.path);
    const brackets = trials.some((t) => Number.isFinite(t.bracket));
    const rows = trials.map((t, rank) => {
      const row = h(
        'tr',
        {
          'data-trial': t.trial,
          'data-status': t.status,
          'data-objective': Number.isFinite(t.objective) ? t.objective : null,
          class: s.best && s.best.trial === t.trial ? 'best' : null,
          title: TRIAL_WORDS[t.status] || t.status,
        },
        h('td', { class: 'num' }, Number.isFinite(t.objective) ? rank + 1 : '–'),
        h('td', {}, swatch(trialColor(t.trial)), ' ', t.job_id ? h('a', { href: `#/jobs/${t.job_id}` }, `trial ${t.trial}`) : `trial ${t.trial}`),
        h('td', {}, statusBadge(t.status)),
        h('td', { class: 'num', 'data-testid': 'trial-objective' }, fmtNum(t.objective)),
        h('td', { class: 'num' }, t.objective_epoch ?? '–'),
        h('td', { class: 'num' }, Number.isFinite(t.epoch) ? t.epoch + 1 : 0),
        brackets ? h('td', { class: 'num', 'data-testid': 'trial-bracket' }, t.bracket ?? '–') : null,
        paths.map((p) => h('td', { class: typeof t.params?.[p] === 'number' ? 'num' : null, 'data-path': p }, fmtValue(t.params?.[p]))),
        h('td', { class: 'error-cell' }, t.error || ''),
      );
      row.addEventListener('mouseenter', () => setFocus(t.trial));
      row.addEventListener('mouseleave', () => setFocus(null));
      return row;
    });
    clear(
      boardBox,
      table(['Rank', 'Trial', 'Status', metric, 'Best epoch', 'Epochs', ...(brackets ? ['Bracket'] : []), ...paths, 'Error'], rows, { class: 'leaderboard stack' }),
      h('p', { class: 'muted' }, `Best first by ${objectiveName(s)}, the trial's best value over its epochs so far. Hover a row to pick out its curve and dots.`),
    );
  };

  const renderCurves = () => {
    const ids = [...curves.keys()].sort((a, b) => a - b);
    clear(
      curvesBox,
      lineChart({
        title: `${metric} per epoch, one curve per trial`,
        width: curvesBox.clientWidth,
        legend: false,
        series: ids.map((t) => ({
          name: `trial ${t}`,
          key: t,
          color: trialColor(t),
          strokeWidth: s.best?.trial === t ? 3.5 : 1.8,
          points: [...curves.get(t).entries()].sort((a, b) => a[0] - b[0]),
        })),
      }),
    );
    applyFocus();
  };

  const renderParams = () => {
    const space = s.request?.space || [];
    const trials = s.trials || [];
    clear(
      paramsBox,
      space.map((d) => {
        const categories = d.type === 'choice' ? (d.values || []).map(fmtValue) : null;
        const points = trials.map((t) => {
          const v = t.params?.[d.path];
          return {
            x: categories ? categories.indexOf(fmtValue(v)) : v,
            y: t.objective,
            color: trialColor(t.trial),
            label: `trial ${t.trial}`,
            key: t.trial,
          };
        });
        return h(
          'div',
          { class: 'chart-box param-plot', 'data-testid': 'param-plot', 'data-path': d.path },
          scatterChart({
            title: d.path,
            xLabel: d.path.split('.').pop(),
            yLabel: metric,
            log: d.type === 'log_uniform',
            categories,
            points: points.filter((p) => p.x !== -1),
            width: paramsBox.clientWidth > 700 ? paramsBox.clientWidth / 2 : paramsBox.clientWidth,
          }),
        );
      }),
    );
    applyFocus();
  };

  const applyFocus = () => {
    for (const svg of root.querySelectorAll('[data-testid=search-curves] svg, [data-testid=param-plots] svg')) {
      svg.classList.toggle('has-focus', focus !== null);
      for (const node of svg.querySelectorAll('[data-key]')) node.classList.toggle('focus', focus !== null && node.dataset.key === String(focus));
    }
  };
  const setFocus = (t) => {
    focus = t;
    applyFocus();
  };

  const render = () => {
    renderHead();
    renderBoard();
    renderParams();
    renderCurves();
  };
  render();

  const refresh = async () => {
    try {
      const next = await get(`/v1/searches/${encodeURIComponent(s.id)}`);
      if (!ctx.alive()) return;
      s = next;
      render();
    } catch (err) {
      if (ctx.alive()) clear(actionMsg, message('error', err));
    }
  };
  // Events come in bursts (every trial's epochs on replay): one leaderboard fetch per burst.
  let pending = null;
  const refreshSoon = () => {
    if (pending) return;
    pending = setTimeout(async () => {
      await refresh();
      pending = null;
    }, 250);
  };
  let drawPending = false;
  const drawSoon = () => {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      if (ctx.alive()) renderCurves();
    });
  };

  // Without the stream: every trial's History, and the search, every 2 s.
  let pollTimer = null;
  const startPolling = (why) => {
    if (es) es.close();
    es = null;
    if (pollTimer || !ctx.alive()) return;
    const tick = async () => {
      await refresh();
      for (const t of s.trials || []) {
        if (!t.job_id) continue;
        try {
          const hist = await get(`/v1/jobs/${encodeURIComponent(t.job_id)}/history`);
          const values = hist?.history?.[metric] || [];
          const m = new Map();
          (hist?.epoch || []).forEach((e, i) => {
            if (Number.isFinite(values[i])) m.set(e, values[i]);
          });
          curves.set(t.trial, m);
        } catch {
          // A trial deleted meanwhile keeps the points it had.
        }
      }
      if (!ctx.alive()) return;
      renderCurves();
      live.textContent = `${why} Polling the search and its trials' History every 2 s.`;
      if (s.status !== 'running') {
        clearInterval(pollTimer);
        live.textContent = `${why} The search has ended: ${s.status}.`;
      }
    };
    tick();
    pollTimer = setInterval(tick, REFRESH_MS);
  };

  let es = null;
  let failures = 0;
  ctx.cleanup(() => {
    if (es) es.close();
    if (pollTimer) clearInterval(pollTimer);
    if (pending) clearTimeout(pending);
  });
  if (typeof EventSource !== 'function') {
    startPolling('This browser has no EventSource.');
    return;
  }
  // The stream replays every event from the start, then follows; the browser resends
  // Last-Event-ID on reconnect. Points are keyed by (trial, epoch), so a replay never doubles one.
  es = new EventSource(`/v1/searches/${encodeURIComponent(s.id)}/events`);
  const parse = (e) => {
    failures = 0;
    try {
      return JSON.parse(e.data);
    } catch {
      return {};
    }
  };
  es.onopen = () => {
    live.textContent = 'Live: receiving the search\'s events from the server (SSE).';
  };
  es.addEventListener('trial_epoch', (e) => {
    const d = parse(e);
    if (!Number.isFinite(d.trial) || !Number.isFinite(d.epoch)) return;
    if (!curves.has(d.trial)) curves.set(d.trial, new Map());
    const v = d.objective ?? d.metrics?.[metric];
    if (Number.isFinite(v)) curves.get(d.trial).set(d.epoch, v);
    live.dataset.epochEvents = String(Number(live.dataset.epochEvents || 0) + 1);
    drawSoon();
    refreshSoon();
  });
  for (const name of ['trial_started', 'trial_promoted', 'trial_stopped', 'trial_finished']) {
    es.addEventListener(name, (e) => {
      parse(e);
      refreshSoon();
    });
  }
  es.addEventListener('done', async () => {
    es.close();
    es = null;
    live.textContent = 'The stream has ended: the search is over.';
    await refresh();
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
