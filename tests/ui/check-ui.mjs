#!/usr/bin/env node
// Drives Debian's Chromium through Drover's web UI, as a person would, and prints one JSON line
// per step: {"step": "...", "ok": true, ...} or {"step": "...", "ok": false, "error": "..."}
// (then exits 1). Screenshots go to --out. The Rust end-to-end test runs this against a real
// coordinator and checks the printed bars against the agents that ran each task.
//
// usage: node check-ui.mjs --base http://127.0.0.1:PORT --run RUN_ID --running-task TASK_ID
//                          --agents a1,a2 --out DIR [--token TOKEN] [--dark]
//
// CHROMIUM names the browser binary (default /usr/bin/chromium).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const FINAL_RUN = ['succeeded', 'failed'];
const VIEWPORT = { width: 1280, height: 800 };

function parseArgs(argv) {
  const opts = { agents: [], dark: false };
  for (let i = 0; i < argv.length; i += 1) {
    const key = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${key} needs a value`);
      i += 1;
      return argv[i];
    };
    if (key === '--base') opts.base = value().replace(/\/+$/, '');
    else if (key === '--run') opts.run = value();
    else if (key === '--running-task') opts.runningTask = value();
    else if (key === '--agents') opts.agents = value().split(',').map((a) => a.trim()).filter(Boolean);
    else if (key === '--out') opts.out = value();
    else if (key === '--token') opts.token = value();
    else if (key === '--dark') opts.dark = true;
    else throw new Error(`unknown argument ${key}`);
  }
  for (const [flag, v] of [['--base', opts.base], ['--run', opts.run], ['--running-task', opts.runningTask], ['--out', opts.out]]) {
    if (!v) throw new Error(`${flag} is required`);
  }
  return opts;
}

const print = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

/** A CSS attribute selector matching exactly this value (ids hold `:`, `/`, `@`, spaces). */
function attr(name, value) {
  const quoted = String(value).replace(/[\\"]/g, '\\$&').replace(/\n/g, '\\a ');
  return `[${name}="${quoted}"]`;
}

const runPath = (o) => `/ui/runs/${encodeURIComponent(o.run)}`;
const taskPath = (o) => `${runPath(o)}/tasks/${encodeURIComponent(o.runningTask)}`;

/** Console errors, page errors and failed requests of the page, as they happen. */
function watchPage(page, problems) {
  const where = () => new URL(page.url() || 'about:blank').pathname;
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push({ kind: 'console', page: where(), text: msg.text() });
  });
  page.on('pageerror', (err) => problems.push({ kind: 'pageerror', page: where(), text: String(err) }));
  page.on('requestfailed', (req) => {
    const failure = req.failure()?.errorText ?? 'failed';
    // Leaving a page cancels its pending polls: that is no failure of the UI.
    if (failure.includes('ERR_ABORTED')) return;
    problems.push({ kind: 'requestfailed', page: where(), url: req.url(), text: failure });
  });
  page.on('response', (res) => {
    if (res.status() >= 400) problems.push({ kind: 'http', page: where(), url: res.url(), status: res.status() });
  });
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    print({ step: 'args', ok: false, error: err.message });
    process.exit(2);
  }
  mkdirSync(opts.out, { recursive: true });
  const shot = (name) => join(opts.out, name);
  const url = (path) => `${opts.base}${path}`;
  const problems = [];

  let browser;
  let page;
  const fail = async (step, err) => {
    print({ step, ok: false, error: err?.message ?? String(err), problems });
    if (page) await page.screenshot({ path: shot(`failed-${step}.png`), fullPage: true }).catch(() => {});
    if (browser) await browser.close().catch(() => {});
    process.exit(1);
  };
  const step = async (name, fn) => {
    try {
      const extra = (await fn()) ?? {};
      print({ step: name, ok: true, ...extra });
    } catch (err) {
      await fail(name, err);
    }
  };

  await step('launch', async () => {
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
      timeout: 60_000,
    });
    const context = await browser.newContext({
      viewport: VIEWPORT,
      deviceScaleFactor: 1,
      colorScheme: opts.dark ? 'dark' : 'light',
      ignoreHTTPSErrors: true, // a test coordinator with a self-signed certificate
    });
    context.setDefaultTimeout(20_000);
    page = await context.newPage();
    watchPage(page, problems);
    return { version: browser.version() };
  });

  /** The JS has answered from the API at least once (its header chip says live or idle). */
  const jsRefreshed = () => page.waitForSelector('header.top .conn[data-state="live"], header.top .conn[data-state="idle"]', { state: 'attached' });

  if (opts.token) {
    await step('login', async () => {
      await page.goto(url('/ui/login'));
      await page.fill('input[name="token"]', opts.token);
      await Promise.all([
        page.waitForURL((u) => u.pathname === '/ui/runs' || u.searchParams.has('error')),
        page.click('form.login button[type="submit"], form button'),
      ]);
      const landed = new URL(page.url());
      if (landed.pathname !== '/ui/runs') throw new Error(`the token was refused (landed on ${landed.pathname}${landed.search})`);
      return { landed: landed.pathname };
    });
  }

  await step('runs', async () => {
    await page.goto(url('/ui/runs'));
    if (new URL(page.url()).pathname !== '/ui/runs') throw new Error(`landed on ${page.url()} (not signed in?)`);
    await page.waitForSelector(`#runs tbody tr${attr('data-run', opts.run)}`);
    await jsRefreshed();
    await page.waitForSelector(`#runs tbody tr${attr('data-run', opts.run)}`);
    await page.screenshot({ path: shot('runs.png') });
    const rows = await page.$$eval('#runs tbody tr[data-run]', (trs) => trs.map((tr) => tr.dataset.run));
    return { rows: rows.length };
  });

  await step('run', async () => {
    await page.goto(url(runPath(opts)));
    await page.waitForSelector('#timeline svg.timeline');
    await page.waitForSelector(`#timeline rect.bar${attr('data-task', opts.runningTask)}`);
    await page.screenshot({ path: shot('run-live.png'), fullPage: true });
    const found = await page.evaluate(() => {
      const lanes = [...document.querySelectorAll('#timeline rect.lane')].map((r) => ({
        agent: r.dataset.agent,
        y: Number(r.getAttribute('y')),
        h: Number(r.getAttribute('height')),
      }));
      const labels = [...document.querySelectorAll('#timeline text.lane-name')].map((t) => t.firstChild?.nodeValue ?? '');
      const templates = [...document.querySelectorAll('#timeline text.lane-template')].map((t) => t.textContent);
      const bars = [...document.querySelectorAll('#timeline rect.bar')].map((r) => {
        const y = Number(r.getAttribute('y'));
        const lane = lanes.find((l) => y >= l.y && y < l.y + l.h);
        return {
          task: r.dataset.task,
          agent: r.dataset.agent,
          attempt: Number(r.dataset.attempt),
          status: [...r.classList].find((c) => c.startsWith('status-'))?.slice(7),
          lane: lane?.agent ?? null,
        };
      });
      const tasks = [...document.querySelectorAll('#tasks tbody tr[data-task]')].map((tr) => ({
        task: tr.dataset.task, status: tr.dataset.status, agent: tr.dataset.agent,
      }));
      return { lanes: lanes.map((l) => l.agent), labels, templates, bars, tasks };
    });
    const misplaced = found.bars.filter((b) => b.lane !== b.agent);
    if (misplaced.length) throw new Error(`bars outside their agent's lane: ${JSON.stringify(misplaced)}`);
    const withBar = new Set(found.bars.map((b) => b.task));
    const missing = found.tasks.filter((t) => ['running', 'succeeded', 'failed'].includes(t.status) && !withBar.has(t.task));
    if (missing.length) throw new Error(`tasks that ran but have no bar: ${JSON.stringify(missing)}`);
    return {
      bars: found.bars.map(({ task, agent, attempt, status }) => ({ task, agent, attempt, status })),
      lanes: found.lanes,
      labels: found.labels,
      templates: found.templates,
    };
  });

  await step('task-log', async () => {
    await page.goto(url(taskPath(opts)));
    await page.waitForSelector('#task');
    await page.waitForSelector('#log', { state: 'attached' });
    const before = await page.$eval('#log', (el) => el.textContent.length);
    await page.waitForFunction((n) => document.querySelector('#log').textContent.length > n, before, { timeout: 15_000, polling: 200 })
      .catch(() => { throw new Error(`#log did not grow in 15 s (stayed at ${before} characters)`); });
    const after = await page.$eval('#log', (el) => el.textContent.length);
    await page.screenshot({ path: shot('task-log.png') });
    return { log_grew: true, before, after };
  });

  await step('agents', async () => {
    await page.goto(url('/ui/agents'));
    await jsRefreshed();
    for (const agent of opts.agents) {
      await page.waitForSelector(`#agents tbody tr${attr('data-agent', agent)}`, { timeout: 10_000 })
        .catch(() => { throw new Error(`no row for agent ${agent}`); });
    }
    const rows = await page.$$eval('#agents tbody tr[data-agent]', (trs) => trs.map((tr) => tr.dataset.agent));
    await page.screenshot({ path: shot('agents.png') });
    return { agents: rows };
  });

  await step('run-done', async () => {
    await page.goto(url(runPath(opts)));
    const finals = FINAL_RUN.map((s) => `#run[data-state="${s}"]`).join(', ');
    await page.waitForSelector(finals, { timeout: 60_000 })
      .catch(() => { throw new Error('the run did not end within 60 s'); });
    // The last answer from the API is drawn once polling has stopped.
    await page.waitForSelector('header.top .conn[data-state="idle"]', { state: 'attached', timeout: 10_000 });
    await page.waitForSelector('#timeline svg.timeline');
    const state = await page.$eval('#run', (el) => el.dataset.state);
    const nowLine = await page.$('#timeline line.now');
    if (nowLine) throw new Error('the "now" line is still drawn after the run ended');
    await page.evaluate(() => document.fonts?.ready);
    await page.screenshot({ path: shot('run-done.png') });
    await page.screenshot({ path: shot('run-done-full.png'), fullPage: true });
    return { state };
  });

  await step('problems', async () => {
    if (problems.length) throw new Error(`${problems.length} console errors or failed requests: ${JSON.stringify(problems)}`);
    return { count: 0 };
  });

  await browser.close();
}

main().catch((err) => {
  print({ step: 'main', ok: false, error: err?.stack ?? String(err) });
  process.exit(1);
});
