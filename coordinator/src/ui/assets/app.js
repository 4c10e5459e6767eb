// Drover web UI: enhances the server-rendered pages with live data.
// No framework, no build step; embedded in the coordinator binary. Server strings only ever
// reach the page as text nodes or attribute values, never as HTML.
'use strict';

(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const ACTIVE_RUN = new Set(['running', 'stopping']);
  const FINAL_TASK = new Set(['succeeded', 'failed', 'skipped']);
  const enc = encodeURIComponent;
  const $ = (sel, root = document) => root.querySelector(sel);
  const natural = new Intl.Collator(undefined, { numeric: true }).compare;

  // ---------------------------------------------------------------- DOM helpers

  const absent = (v) => v === null || v === undefined || v === false;

  /** Sets attributes and appends children (strings become text nodes; null/false are left out). */
  function build(node, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) if (!absent(v)) node.setAttribute(k, String(v));
    for (const c of children) if (!absent(c)) node.append(c instanceof Node ? c : String(c));
    return node;
  }

  /** An HTML element: h('a', {href}, 'text', child…). */
  const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  /** An SVG element, same shape as h(). */
  const s = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

  const runHref = (run) => `/ui/runs/${enc(run)}`;
  const taskHref = (run, task) => `/ui/runs/${enc(run)}/tasks/${enc(task)}`;

  const statusBadge = (state) => h('span', { class: `status status-${state}` }, state);

  function setBadge(badge, state) {
    if (!badge) return;
    badge.className = `status status-${state}`;
    badge.textContent = state;
  }

  // ---------------------------------------------------------------- formatting

  /** Mirrors drover_scheduler::duration::format_duration: 850ms, 2s, 12.3s, 4m 05s, 1h 02m. */
  function formatDuration(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return '';
    ms = Math.max(0, Math.floor(ms));
    if (ms < 1000) return `${ms}ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1).replace(/\.0$/, '')}s`;
    const sec = Math.floor(ms / 1000);
    const pad = (n) => String(n).padStart(2, '0');
    if (sec < 3600) return `${Math.floor(sec / 60)}m ${pad(sec % 60)}s`;
    return `${Math.floor(sec / 3600)}h ${pad(Math.floor((sec % 3600) / 60))}m`;
  }

  function formatAgo(ms) {
    if (ms === null || ms === undefined) return 'never';
    return `${formatDuration(ms < 1000 ? Math.round(ms / 100) * 100 : ms).replace(/^0ms$/, '0s')} ago`;
  }

  /** Axis labels: 0s, 30s, 1m, 1m30s, 1h, 1h15m. */
  function formatTick(ms) {
    const sec = Math.round(ms / 1000);
    if (sec < 60) return `${sec}s`;
    if (sec < 3600) return `${Math.floor(sec / 60)}m${sec % 60 ? `${sec % 60}s` : ''}`;
    const min = Math.floor((sec % 3600) / 60);
    return `${Math.floor(sec / 3600)}h${min ? `${min}m` : ''}`;
  }

  function formatClock(ms) {
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    const opts = today
      ? { hour: '2-digit', minute: '2-digit', second: '2-digit' }
      : { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' };
    return d.toLocaleString(undefined, opts);
  }

  const timeEl = (ms) => (ms ? h('time', { datetime: new Date(ms).toISOString(), title: new Date(ms).toLocaleString() }, formatClock(ms)) : '');

  /** Server-rendered <time> elements show UTC; show them in the reader's zone. */
  function localizeTimes(root = document) {
    for (const t of root.querySelectorAll('time[datetime]')) {
      const ms = Date.parse(t.getAttribute('datetime'));
      if (!Number.isNaN(ms)) t.replaceWith(timeEl(ms));
    }
  }

  // ---------------------------------------------------------------- network

  class Unauthorized extends Error {}

  function toLogin() {
    const next = location.pathname + location.search;
    location.assign(`/ui/login?next=${enc(next)}`);
  }

  async function request(url) {
    const res = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
    if (res.status === 401 || (res.redirected && new URL(res.url).pathname === '/ui/login')) {
      toLogin();
      throw new Unauthorized('not signed in');
    }
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    return res;
  }

  const getJSON = async (url) => (await request(url)).json();

  /** A small status chip in the header: live, paused (run over) or connection lost. */
  function setConnection(state) {
    const header = $('header.top');
    if (!header) return;
    let chip = $('.conn', header);
    if (!chip) chip = header.appendChild(h('span', { class: 'conn', role: 'status' }));
    chip.dataset.state = state;
    chip.textContent = { live: 'Live', lost: 'Reconnecting…', idle: '' }[state] ?? '';
  }

  /**
   * Calls step() now and then every intervalMs while it returns true (a number: that many ms
   * until the next call). Errors back off and retry; polling pauses while the tab is hidden.
   */
  function poll(step, intervalMs) {
    let failures = 0;
    const tick = async () => {
      if (document.hidden) {
        document.addEventListener('visibilitychange', tick, { once: true });
        return;
      }
      let next = intervalMs;
      try {
        const more = await step();
        failures = 0;
        if (more === false) return setConnection('idle');
        if (typeof more === 'number') next = more;
        setConnection('live');
      } catch (err) {
        if (err instanceof Unauthorized) return;
        failures += 1;
        next = Math.min(intervalMs * 2 ** failures, 15000);
        setConnection('lost');
        console.warn('drover: refresh failed, retrying', err);
      }
      setTimeout(tick, next);
    };
    tick();
  }

  // ---------------------------------------------------------------- runs page

  /** As the server writes it: `12 ok · 1 failed · 2 running · 5 queued of 20`. */
  function runCounts(r) {
    const more = [[r.failed, 'failed'], [r.running, 'running'], [r.queued, 'queued'], [r.skipped, 'skipped']]
      .filter(([n]) => n > 0).map(([n, label]) => `${n} ${label}`);
    return `${[`${r.succeeded} ok`, ...more].join(' · ')} of ${r.total}`;
  }

  const runDuration = (r, now) => formatDuration((r.ended_at_ms ?? now) - r.opened_at_ms);

  function runRow(r, now) {
    return h('tr', { 'data-run': r.id, 'data-state': r.state },
      h('td', {}, h('a', { href: runHref(r.id), title: r.ci_execution_id ? `CI execution ${r.ci_execution_id}` : null }, r.id)),
      h('td', {}, statusBadge(r.state)),
      h('td', {}, timeEl(r.opened_at_ms)),
      h('td', { class: 'duration' }, runDuration(r, now)),
      h('td', { class: 'counts' }, runCounts(r)),
      h('td', {}, r.started_by ?? ''));
  }

  const emptyRow = (columns, text) => h('tr', { class: 'empty' }, h('td', { colspan: columns }, text));

  function initRuns() {
    const tbody = $('#runs tbody');
    if (!tbody) return;
    poll(async () => {
      const data = await getJSON('/api/runs');
      const runs = [...data.runs].sort((a, b) => b.opened_at_ms - a.opened_at_ms);
      tbody.replaceChildren(...runs.map((r) => runRow(r, data.now_ms)));
      const empty = $('main > p.empty');
      if (empty) empty.hidden = runs.length > 0;
      return true;
    }, 2000);
  }

  // ---------------------------------------------------------------- run page: task table

  /** A running task's duration so far, from its open attempt. */
  function taskDuration(t, attempts, now) {
    if (t.duration_ms > 0) return formatDuration(t.duration_ms);
    if (t.status !== 'running') return '';
    const open = attempts.find((a) => a.task === t.id && a.end_ms === null);
    return open ? formatDuration(now - open.start_ms) : '';
  }

  function taskRow(runId, t, attempts, now) {
    return h('tr', { 'data-task': t.id, 'data-status': t.status, 'data-agent': t.agent ?? '', class: t.critical ? 'critical' : null },
      h('td', {}, h('a', { href: taskHref(runId, t.id) }, t.id),
        t.critical && ' ', t.critical && h('span', { class: 'star', title: 'on the critical path' }, '★')),
      h('td', {}, statusBadge(t.status)),
      h('td', {}, t.agent ?? ''),
      h('td', { class: 'num' }, t.attempts ?? 0),
      h('td', { class: 'duration' }, taskDuration(t, attempts, now)),
      h('td', { class: 'reason' }, t.reason ?? ''));
  }

  function renderRunSummary(section, data) {
    const run = data.run;
    section.dataset.state = run.state;
    setBadge($('.status', section), run.state);
    const counts = $('.counts', section);
    if (counts) counts.textContent = runCounts(run);
    const duration = $('.duration', section)
      ?? [...section.querySelectorAll('dt')].find((dt) => dt.textContent.trim() === 'Duration')?.nextElementSibling;
    if (duration) duration.textContent = runDuration(run, data.now_ms);
  }

  // ---------------------------------------------------------------- run page: timeline

  const TL = { left: 180, right: 18, top: 28, bottom: 10, row: 22, gap: 4, pad: 7, minLane: 40 };
  const TICK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400]
    .map((sec) => sec * 1000);

  /** Lanes per agent; each attempt goes into the first sub-row that is free at its start. */
  function packLanes(attempts, now) {
    const lanes = new Map();
    const sorted = [...attempts].sort((a, b) => a.start_ms - b.start_ms || a.attempt - b.attempt || natural(a.task, b.task));
    for (const a of sorted) {
      const agent = a.agent ?? '(unknown)';
      let lane = lanes.get(agent);
      if (!lane) lanes.set(agent, (lane = { agent, template: a.template, ends: [], items: [] }));
      if (a.template) lane.template = a.template;
      const end = Math.max(a.end_ms ?? now, a.start_ms);
      let row = lane.ends.findIndex((e) => e <= a.start_ms);
      if (row < 0) row = lane.ends.push(end) - 1;
      else lane.ends[row] = end;
      lane.items.push({ a, row, end });
    }
    return [...lanes.values()].sort((x, y) => natural(x.agent, y.agent));
  }

  /** From the run's start to its end (or now, plus a little room while it runs). */
  function timeSpan(t0, horizon, lanes, active) {
    let t1 = horizon;
    for (const lane of lanes) for (const it of lane.items) t1 = Math.max(t1, it.end);
    const span = Math.max(t1 - t0, 5000);
    return active ? span + Math.max(span * 0.03, 1000) : span;
  }

  function tickStep(span, maxTicks) {
    const step = TICK_STEPS.find((st) => span / st <= maxTicks);
    return step ?? TICK_STEPS.at(-1) * Math.ceil(span / maxTicks / TICK_STEPS.at(-1));
  }

  const laneHeight = (lane) => Math.max(TL.minLane, TL.pad * 2 + lane.ends.length * (TL.row + TL.gap) - TL.gap);

  /** Shortens text to about what fits in px at the bar font size. */
  function fit(text, px, charPx = 6.6) {
    const max = Math.floor(px / charPx);
    if (text.length <= max) return text;
    return max < 2 ? '' : `${text.slice(0, max - 1)}…`;
  }

  function drawAxis(g, geo) {
    const { x, span, width, height, left } = geo;
    const maxTicks = Math.max(2, Math.min(10, Math.floor((width - left - TL.right) / 60)));
    const step = tickStep(span, maxTicks);
    for (let t = 0; t <= span; t += step) {
      const tx = x(t);
      g.append(
        s('line', { class: 'grid', x1: tx, x2: tx, y1: TL.top - 4, y2: height - TL.bottom }),
        s('text', { class: 'tick', x: tx, y: TL.top - 10, 'text-anchor': 'middle' }, formatTick(t)));
    }
  }

  function drawLaneLabel(g, lane, y, hgt, left) {
    const name = s('text', { class: 'lane-name', x: 12, y: y + hgt / 2 - (lane.template ? 3 : -4) }, fit(lane.agent, left - 20, 7.2));
    name.append(s('title', {}, lane.agent));
    g.append(name);
    if (lane.template) {
      g.append(s('text', { class: 'lane-template', x: 12, y: y + hgt / 2 + 11 }, fit(lane.template, left - 20, 6.2)));
    }
  }

  function attemptTitle(it) {
    const a = it.a;
    const dur = formatDuration(it.end - a.start_ms);
    const status = a.end_ms === null ? `${a.status} for ${dur}` : `${a.status} after ${dur}`;
    return `${a.task}\nattempt ${a.attempt} on ${a.agent}${a.template ? ` (${a.template})` : ''}\n${status}`;
  }

  function drawBar(g, runId, it, y, geo, critical) {
    const a = it.a;
    const x0 = geo.x(a.start_ms - geo.t0);
    const w = Math.max(geo.x(it.end - geo.t0) - x0, 3);
    const classes = ['bar', `status-${a.status}`, critical ? 'critical' : ''].join(' ').trim();
    const link = s('a', { href: taskHref(runId, a.task), class: 'bar-link' },
      s('title', {}, attemptTitle(it)),
      s('rect', { class: classes, x: x0, y, width: w, height: TL.row, rx: 3, 'data-task': a.task, 'data-agent': a.agent, 'data-attempt': a.attempt }));
    if (w > 34) {
      const clip = s('svg', { x: x0, y, width: w - 4, height: TL.row, class: 'bar-clip' });
      clip.append(s('text', { class: `bar-label status-${a.status}`, x: 6, y: TL.row / 2 + 4 }, fit(a.task, w - 10)));
      link.append(clip);
    }
    g.append(link);
  }

  function renderTimeline(svg, data, width) {
    const { run, now_ms: now } = data;
    const active = ACTIVE_RUN.has(run.state) || run.ended_at_ms === null;
    const horizon = active ? now : run.ended_at_ms;
    const lanes = packLanes(data.attempts || [], horizon);
    const critical = new Set((data.tasks || []).filter((t) => t.critical).map((t) => t.id));
    const t0 = run.opened_at_ms;
    const span = timeSpan(t0, horizon, lanes, active);
    const left = Math.round(Math.min(TL.left, Math.max(110, width * 0.22)));
    const lanesHeight = lanes.reduce((sum, l) => sum + laneHeight(l), 0) || TL.minLane;
    const height = TL.top + lanesHeight + TL.bottom;
    const plot = width - left - TL.right;
    const x = (t) => +(left + (Math.max(t, 0) / span) * plot).toFixed(1);
    const geo = { x, span, width, height, left, t0 };

    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.setAttribute('width', width);
    svg.setAttribute('height', height);
    svg.setAttribute('aria-label', `Timeline: ${(data.attempts || []).length} attempts on ${lanes.length} agents`);

    const back = s('g', { class: 'lanes' });
    const axis = s('g', { class: 'axis' });
    const bars = s('g', { class: 'bars' });
    let y = TL.top;
    lanes.forEach((lane, i) => {
      const hgt = laneHeight(lane);
      back.append(s('rect', { class: `lane${i % 2 ? ' odd' : ''}`, x: 0, y, width, height: hgt, 'data-agent': lane.agent }));
      drawLaneLabel(back, lane, y, hgt, left);
      const top = y + (hgt - (lane.ends.length * (TL.row + TL.gap) - TL.gap)) / 2;
      for (const it of lane.items) drawBar(bars, run.id, it, top + it.row * (TL.row + TL.gap), geo, critical.has(it.a.task));
      y += hgt;
    });
    drawAxis(axis, geo);
    const parts = [back, axis, bars];
    if (active) {
      const nx = x(now - t0);
      parts.push(s('line', { class: 'now', x1: nx, x2: nx, y1: TL.top - 4, y2: height - TL.bottom }));
    }
    if (!lanes.length) {
      parts.push(s('text', { class: 'empty', x: left + plot / 2, y: TL.top + TL.minLane / 2 + 4, 'text-anchor': 'middle' }, 'No task has started yet'));
    }
    svg.querySelectorAll(':scope > :not(defs)').forEach((n) => n.remove());
    svg.append(...parts);
    const attempts = data.attempts || [];
    return { statuses: new Set(attempts.map((a) => a.status)), critical: attempts.some((a) => critical.has(a.task)) };
  }

  const LEGEND = ['succeeded', 'failed', 'running', 'requeued', 'cancelled'];

  /** A key to the colours on show. */
  function renderLegend(legend, { statuses, critical }) {
    const item = (cls, label) => h('li', {}, h('i', { class: `swatch ${cls}` }), label);
    legend.replaceChildren(...LEGEND.filter((st) => statuses.has(st)).map((st) => item(`status-${st}`, st)),
      critical ? item('critical', 'critical path') : null);
  }

  /** The timeline's lasting parts: the <svg> with the running stripes, and the legend. */
  function createTimeline(container) {
    const pattern = s('pattern', { id: 'tl-stripes', width: 10, height: 10, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
      s('rect', { class: 'stripe-bg', width: 10, height: 10 }),
      s('rect', { class: 'stripe-fg', width: 5, height: 10 }));
    if (!matchMedia('(prefers-reduced-motion: reduce)').matches) {
      pattern.append(s('animateTransform', { attributeName: 'patternTransform', type: 'translate', from: '0 0', to: '10 0', dur: '0.8s', repeatCount: 'indefinite', additive: 'sum' }));
    }
    const svg = s('svg', { class: 'timeline', role: 'img', xmlns: SVG_NS }, s('defs', {}, pattern));
    const legend = h('ul', { class: 'legend' });
    container.replaceChildren(svg, legend);
    return { svg, legend };
  }

  /** Hovering a bar lights up its task's row and its other attempts, and the other way round. */
  function linkHighlights(timeline, table) {
    let current = null;
    const mark = (task) => {
      if (task === current) return;
      current = task;
      for (const n of document.querySelectorAll('#timeline rect.bar, #tasks tr[data-task]')) {
        n.classList.toggle('hl', task !== null && n.dataset.task === task);
      }
    };
    const over = (sel) => (e) => mark(e.target.closest(sel)?.dataset.task ?? null);
    timeline.addEventListener('mouseover', (e) => mark(e.target.closest('a')?.querySelector('rect.bar')?.dataset.task ?? null));
    timeline.addEventListener('mouseleave', () => mark(null));
    table?.addEventListener('mouseover', over('tr[data-task]'));
    table?.addEventListener('mouseleave', () => mark(null));
    return () => { const t = current; current = null; mark(t); };
  }

  function initRun() {
    const section = $('#run');
    const container = $('#timeline');
    if (!section) return;
    const runId = section.dataset.run;
    const tbody = $('#tasks tbody');
    const { svg, legend } = container ? createTimeline(container) : {};
    const rehighlight = container ? linkHighlights(container, $('#tasks')) : () => {};
    let latest = null;
    let drawnWidth = 0;
    const draw = () => {
      if (!latest || !svg) return;
      drawnWidth = Math.max(320, Math.floor(container.clientWidth));
      renderLegend(legend, renderTimeline(svg, latest, drawnWidth));
      rehighlight();
    };
    if (container) {
      let queued = false;
      new ResizeObserver(() => {
        if (queued || Math.floor(container.clientWidth) === drawnWidth) return;
        queued = true;
        requestAnimationFrame(() => { queued = false; draw(); });
      }).observe(container);
    }
    poll(async () => {
      latest = await getJSON(`/api/runs/${enc(runId)}`);
      renderRunSummary(section, latest);
      if (tbody) {
        const rows = latest.tasks.map((t) => taskRow(runId, t, latest.attempts || [], latest.now_ms));
        tbody.replaceChildren(...(rows.length ? rows : [emptyRow(6, 'No tasks submitted yet.')]));
      }
      draw();
      return ACTIVE_RUN.has(latest.run.state);
    }, 1000);
  }

  // ---------------------------------------------------------------- task page: log

  const ANSI_TOKEN = /\x1b\[([0-9;:?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
  const ANSI_INCOMPLETE = /\x1b(?:\[[0-9;:?]*|\][^\x07\x1b]*)?$/;

  function xterm256(n) {
    if (n < 232) {
      const level = (v) => (v ? 55 + v * 40 : 0);
      const c = n - 16;
      return `rgb(${level(Math.floor(c / 36))}, ${level(Math.floor(c / 6) % 6)}, ${level(c % 6)})`;
    }
    const g = 8 + (n - 232) * 10;
    return `rgb(${g}, ${g}, ${g})`;
  }

  /** Turns SGR colour codes into spans, drops every other escape; keeps state across chunks. */
  class AnsiLog {
    constructor(el) {
      this.el = el;
      this.pending = '';
      this.sgr = {};
    }

    write(chunk) {
      let text = this.pending + chunk;
      this.pending = '';
      const tail = text.match(ANSI_INCOMPLETE);
      if (tail && tail[0].length < 256) {
        this.pending = tail[0];
        text = text.slice(0, tail.index);
      }
      const frag = document.createDocumentFragment();
      let last = 0;
      for (const m of text.matchAll(ANSI_TOKEN)) {
        this.emit(frag, text.slice(last, m.index));
        if (m[2] === 'm') this.apply(m[1]);
        last = m.index + m[0].length;
      }
      this.emit(frag, text.slice(last));
      this.el.append(frag);
    }

    emit(frag, text) {
      text = text.replace(/\x1b/g, '').replace(/\r+\n/g, '\n');
      if (!text) return;
      const { bold, dim, italic, underline, fg, bg } = this.sgr;
      const classes = [bold && 'ansi-bold', dim && 'ansi-dim', italic && 'ansi-italic', underline && 'ansi-underline',
        typeof fg === 'number' && `ansi-fg-${fg}`, typeof bg === 'number' && `ansi-bg-${bg}`].filter(Boolean);
      if (!classes.length && !fg && !bg) return frag.append(text);
      const span = h('span', { class: classes.join(' ') || null }, text);
      if (typeof fg === 'string') span.style.color = fg;
      if (typeof bg === 'string') span.style.backgroundColor = bg;
      frag.append(span);
    }

    /** An extended colour (38;5;n or 38;2;r;g;b) at codes[i]; returns [colour, codes used]. */
    static extended(codes, i) {
      if (codes[i] === 5 && codes[i + 1] >= 0) return [codes[i + 1] < 16 ? codes[i + 1] : xterm256(codes[i + 1]), 2];
      if (codes[i] === 2) return [`rgb(${codes[i + 1] | 0}, ${codes[i + 2] | 0}, ${codes[i + 3] | 0})`, 4];
      return [undefined, 0];
    }

    apply(params) {
      const codes = params === '' ? [0] : params.split(/[;:]/).map((c) => Number(c) || 0);
      for (let i = 0; i < codes.length; i += 1) {
        const c = codes[i];
        if (c === 0) this.sgr = {};
        const cur = this.sgr;
        if (c === 1) cur.bold = true;
        else if (c === 2) cur.dim = true;
        else if (c === 3) cur.italic = true;
        else if (c === 4) cur.underline = true;
        else if (c === 22) cur.bold = cur.dim = false;
        else if (c === 23) cur.italic = false;
        else if (c === 24) cur.underline = false;
        else if (c >= 30 && c <= 37) cur.fg = c - 30;
        else if (c >= 90 && c <= 97) cur.fg = c - 90 + 8;
        else if (c === 39) cur.fg = undefined;
        else if (c >= 40 && c <= 47) cur.bg = c - 40;
        else if (c >= 100 && c <= 107) cur.bg = c - 100 + 8;
        else if (c === 49) cur.bg = undefined;
        else if (c === 38 || c === 48) {
          const [colour, used] = AnsiLog.extended(codes, i + 1);
          cur[c === 38 ? 'fg' : 'bg'] = colour;
          i += used;
        }
      }
    }
  }

  /** Whether the log box, and the page, are scrolled to their bottom. */
  const scrollPosition = (log) => ({
    inner: log.scrollHeight - log.scrollTop - log.clientHeight < 8,
    page: window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 8,
  });

  function keepAtBottom(log, pos) {
    if (pos.inner) log.scrollTop = log.scrollHeight;
    if (pos.page) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  /** Swaps in the attempts table and the reason from the server's fresh rendering of this page. */
  async function refreshAttempts() {
    const html = await (await request(location.pathname)).text();
    const fresh = new DOMParser().parseFromString(html, 'text/html');
    for (const sel of ['#attempts tbody', '#task .reason']) {
      const [now, next] = [$(sel), $(sel, fresh)];
      if (!now || !next) continue;
      now.replaceChildren(...[...next.childNodes].map((n) => document.adoptNode(n)));
      localizeTimes(now);
    }
  }

  function setTaskStatus(section, log, status) {
    if (!status || section.dataset.status === status) return false;
    section.dataset.status = status;
    log.dataset.status = status;
    setBadge($('.status', section), status);
    return true;
  }

  function initTask() {
    const section = $('#task');
    const log = $('#log');
    if (!section || !log) return;
    const { run, task } = section.dataset;
    const ansi = new AnsiLog(log);
    const initial = log.textContent;
    log.textContent = '';
    ansi.write(initial);
    log.dataset.status = section.dataset.status;
    keepAtBottom(log, { inner: true, page: false });
    if (FINAL_TASK.has(section.dataset.status)) return;

    let size = Number(log.dataset.size) || 0;
    let polls = 0;
    const decoder = new TextDecoder();
    poll(async () => {
      polls += 1;
      const res = await request(`/api/runs/${enc(run)}/tasks/${enc(task)}/log?from=${size}`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      const status = res.headers.get('X-Task-Status');
      const total = Number(res.headers.get('X-Log-Size'));
      const final = FINAL_TASK.has(status);
      const pos = scrollPosition(log);
      // Where the next read starts (past a cut, more than the bytes shown).
      size = Number(res.headers.get('X-Log-Next')) || size + bytes.byteLength;
      ansi.write(decoder.decode(bytes, { stream: !final }));
      log.dataset.size = String(size);
      section.dataset.size = String(size);
      keepAtBottom(log, pos);
      // The attempts table is the server's: fetch it again when the status moves, else now and then.
      if (setTaskStatus(section, log, status) || polls % 5 === 0) refreshAttempts().catch((e) => console.warn('drover:', e));
      if (final) return false;
      return Number.isFinite(total) && total > size ? 50 : true; // the server sent a part: go on
    }, 1000);
  }

  // ---------------------------------------------------------------- agents page

  function agentRow(a) {
    const state = !a.connected ? 'away' : a.draining ? 'draining' : 'connected';
    const running = a.running.flatMap((r, i) => [i ? ', ' : null, h('a', { href: taskHref(r.run, r.task), title: `run ${r.run}` }, r.task)]);
    return h('tr', { 'data-agent': a.name, 'data-state': state },
      h('td', { title: `id ${a.id}${a.version ? `, version ${a.version}` : ''}` }, a.name),
      h('td', {}, a.template ?? ''),
      h('td', { class: 'num' }, a.slots),
      h('td', { class: 'running' }, ...running),
      h('td', { class: 'heartbeat' }, formatAgo(a.last_heartbeat_ms_ago)),
      h('td', {}, statusBadge(state)));
  }

  function initAgents() {
    const tbody = $('#agents tbody');
    if (!tbody) return;
    poll(async () => {
      const data = await getJSON('/api/agents');
      const agents = [...data.agents].sort((x, y) => natural(x.name, y.name));
      tbody.replaceChildren(...(agents.length ? agents.map(agentRow) : [emptyRow(6, 'No agent has connected yet.')]));
      return true;
    }, 2000);
  }

  // ---------------------------------------------------------------- start

  const PAGES = { runs: initRuns, run: initRun, task: initTask, agents: initAgents };

  function start() {
    localizeTimes();
    PAGES[document.body.dataset.page]?.();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
