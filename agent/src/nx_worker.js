// Drover's warm Nx worker: a long-lived Node process on an agent that keeps the workspace's Nx
// loaded (its modules and the project graph) between the tasks of one run, and runs each task
// through Nx's own task-running API (`runDiscreteTasks` in nx/src/tasks-runner/init-tasks-runner)
// instead of a fresh `nx run` per task. The agent starts it in the checkout and gives it one
// task at a time; everything a task prints goes to this process's stdout and stderr as usual.
//
// Protocol (the agent's side is agent/src/nx_worker.rs):
// - requests: one JSON object per line on stdin:
//   {"project", "target", "configuration"?, "overrides": [words], "restore": bool,
//    "skip": [task ids], "note"?: string, "env": {name: value}}
// - replies: MARK + JSON + "\n" on stdout, then MARK + "\n" on stderr, where MARK is "\x01drover:"
//   + DROVER_NX_WORKER_NONCE + ":". All output before the marks belongs to the task. The first
//   reply, before any request, is {"ready": true, "nx": version} or {"unavailable": reason}
//   (and the process exits); a reply to a task is {"code": n} or {"fallback": reason} (nothing
//   ran: the agent runs the task's own command instead).
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');

const MARK = '\x01drover:' + (process.env.DROVER_NX_WORKER_NONCE || '') + ':';
delete process.env.DROVER_NX_WORKER_NONCE;

function reply(message) {
  return new Promise((resolve) => {
    process.stdout.write('\n' + MARK + JSON.stringify(message) + '\n', () => {
      process.stderr.write('\n' + MARK + '\n', () => resolve());
    });
  });
}

function say(line) {
  process.stdout.write(line + '\n');
}

// Nx from the workspace, as `npx nx` would find it. Nx 22 on ships its code under dist/.
function loadNx() {
  const root = process.cwd();
  let pkgPath;
  try {
    pkgPath = require.resolve('nx/package.json', { paths: [root] });
  } catch (e) {
    throw new Error(`Nx is not installed in ${root} (cannot resolve nx/package.json)`);
  }
  const nxRoot = path.dirname(pkgPath);
  const version = JSON.parse(fs.readFileSync(pkgPath, 'utf8')).version;
  const base = fs.existsSync(path.join(nxRoot, 'dist', 'src')) ? path.join(nxRoot, 'dist') : nxRoot;
  const load = (p) => require(path.join(base, 'src', p));
  const api = {
    version,
    createProjectGraphAsync: load('project-graph/project-graph.js').createProjectGraphAsync,
    readNxJson: load('config/nx-json.js').readNxJson,
    createTaskGraph: load('tasks-runner/create-task-graph.js').createTaskGraph,
    runDiscreteTasks: load('tasks-runner/init-tasks-runner.js').runDiscreteTasks,
    createOverrides: load('utils/command-line-utils.js').createOverrides,
  };
  for (const [name, value] of Object.entries(api)) {
    if (value === undefined) {
      throw new Error(`Nx ${version} has no ${name} where Drover looks for it`);
    }
  }
  return api;
}

// The task's environment: the agent's base one, with this task's variables over it. The worker
// starts with its first task's variables, which the agent names.
const baseEnv = { ...process.env };
try {
  for (const name of JSON.parse(process.env.DROVER_NX_WORKER_TASK_VARS || '[]')) delete baseEnv[name];
} catch (e) {
  // none named
}
delete baseEnv.DROVER_NX_WORKER_TASK_VARS;
delete process.env.DROVER_NX_WORKER_TASK_VARS;
function setEnv(env) {
  for (const name of Object.keys(process.env)) {
    if (!(name in env) && !(name in baseEnv)) delete process.env[name];
  }
  for (const [name, value] of Object.entries(baseEnv)) {
    if (!(name in env)) process.env[name] = value;
  }
  for (const [name, value] of Object.entries(env)) process.env[name] = value;
}

const edgeId = (edge) => (typeof edge === 'string' ? edge : edge.id);

// The task's dependencies, transitive ones included, in levels: each level's tasks need only
// those of the levels before.
function dependencyLevels(taskGraph, id) {
  const depth = new Map();
  const visit = (k, trail) => {
    if (depth.has(k)) return depth.get(k);
    if (trail.has(k)) throw new Error(`dependency cycle through ${k}`);
    trail.add(k);
    const deps = (taskGraph.dependencies[k] || []).map(edgeId);
    const d = deps.length === 0 ? 0 : Math.max(...deps.map((x) => visit(x, trail))) + 1;
    trail.delete(k);
    depth.set(k, d);
    return d;
  };
  visit(id, new Set());
  const levels = [];
  for (const [k, d] of depth) {
    if (k !== id) (levels[d] = levels[d] || []).push(k);
  }
  return levels.filter(Boolean);
}

const FROM_CACHE = new Set(['local-cache', 'local-cache-kept-existing', 'remote-cache']);

async function runTask(nx, pristineGraph, req) {
  // Running a task changes its project's configuration in the graph (Nx fills in options),
  // which changes the task's hash the next time: each task gets projects of its own.
  const projectGraph = { ...pristineGraph, nodes: structuredClone(pristineGraph.nodes) };
  const nxJson = nx.readNxJson();
  let taskGraph;
  try {
    const overrides = nx.createOverrides(req.overrides || []);
    taskGraph = nx.createTaskGraph(
      projectGraph,
      {},
      [req.project],
      [req.target],
      req.configuration || undefined,
      overrides,
      !req.restore,
    );
  } catch (e) {
    return { fallback: `Nx cannot make the task's graph: ${(e && e.message) || e}` };
  }
  const id = Object.keys(taskGraph.tasks).find((k) => {
    const t = taskGraph.tasks[k].target;
    return t.project === req.project && t.target === req.target;
  });
  if (!id) return { fallback: `Nx's graph has no task ${req.project}:${req.target}` };
  const continuous = Object.values(taskGraph.continuousDependencies || {}).some((e) => e.length > 0);
  if (continuous) return { fallback: 'the task has continuous dependencies' };
  // When Nx starts the task's executor and when it ends, for the per-task overhead figures
  // (`DROVER_NX_WORKER_TIMINGS`: a file to append "task-id start-ms end-ms" lines to).
  const times = {};
  const lifeCycle = {
    startTasks(tasks) {
      for (const t of tasks) if (t.id === id) times.start = Date.now();
    },
    endTasks(results) {
      for (const r of results) if (r.task.id === id) times.end = Date.now();
    },
  };
  if (req.restore) {
    const skip = new Set(req.skip || []);
    const all = dependencyLevels(taskGraph, id);
    const levels = all
      .map((level) => level.filter((k) => !skip.has(k)))
      .filter((level) => level.length > 0);
    // The main job's note says what it meant to restore; said when some of it still is.
    if (req.note && levels.length > 0) say(req.note);
    const here = all.flat().filter((k) => skip.has(k)).sort();
    if (here.length > 0) {
      say(`drover: the outputs of ${here.join(', ')} were made in this checkout during this run; they are used as they are`);
    }
    for (const level of levels) {
      const handles = await nx.runDiscreteTasks(
        level.map((k) => taskGraph.tasks[k]),
        projectGraph,
        taskGraph,
        nxJson,
        lifeCycle,
      );
      const results = (await Promise.all(handles)).flat();
      const ranHere = results.filter((r) => !FROM_CACHE.has(r.status));
      for (const r of ranHere) {
        say(`drover: ${r.task.id} was not in the remote cache, so it ran here (${r.status})`);
      }
      const failed = results.filter((r) => r.status === 'failure' || r.status === 'skipped');
      if (failed.length > 0) {
        say(`drover: not running ${id}: its dependency ${failed.map((r) => r.task.id).join(', ')} failed here`);
        return { code: 1 };
      }
    }
  }
  const handles = await nx.runDiscreteTasks([taskGraph.tasks[id]], projectGraph, taskGraph, nxJson, lifeCycle);
  const [result] = (await Promise.all(handles)).flat();
  const timings = process.env.DROVER_NX_WORKER_TIMINGS;
  if (timings && times.start && times.end) {
    fs.appendFileSync(timings, `${process.env.DROVER_TASK_ID || id} ${times.start} ${times.end}\n`);
  }
  if (!result) return { code: 1 };
  if (typeof result.code === 'number') return { code: result.code };
  return { code: result.status === 'failure' ? 1 : 0 };
}

async function main() {
  let nx;
  let projectGraph;
  try {
    nx = loadNx();
    // One orchestrator per task: Nx's own process-level listeners add up otherwise.
    for (const emitter of [process, process.stdout, process.stderr]) emitter.setMaxListeners(0);
    projectGraph = await nx.createProjectGraphAsync({ exitOnError: false });
  } catch (e) {
    await reply({ unavailable: String((e && e.message) || e) });
    process.exit(0);
  }
  await reply({ ready: true, nx: nx.version });
  const lines = readline.createInterface({ input: process.stdin });
  // One task at a time: the agent waits for a reply before it sends the next request.
  for await (const line of lines) {
    if (!line.trim()) continue;
    let message;
    try {
      const req = JSON.parse(line);
      setEnv(req.env || {});
      message = await runTask(nx, projectGraph, req);
    } catch (e) {
      process.stderr.write(`drover: the Nx worker could not run the task: ${(e && e.stack) || e}\n`);
      message = { code: 1 };
    }
    await reply(message);
  }
  process.exit(0);
}

process.on('unhandledRejection', (e) => {
  process.stderr.write(`drover: the Nx worker: unhandled rejection: ${(e && e.stack) || e}\n`);
});
main();
