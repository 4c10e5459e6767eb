#!/usr/bin/env bash
# drover nx over two agents of two slots vs. nx run-many --parallel=4 on one machine, on a
# generated workspace of 33 tasks of 1 second each (11 projects in a tree; build needs the
# dependencies' builds and reads their dist/, test needs the build, lint nothing). Prints both
# wall times, the ratio, and the agents' per-task overhead from their logs: lease received ->
# Nx starts the task's executor (in the agent's warm Nx worker) and executor end -> result sent;
# and lease received -> the task's own command starts (after its own Node start-up).
#
#   bash bench/nx-vs-run-many.sh [path/to/drover] [path/to/dir/with/node_modules]
#   (defaults: target/release/drover, ~/.cache/drover/nx24-fixture)
#
# A benchmark, not a test: its figure is in the README's table.
set -euo pipefail
DROVER=$(realpath "${1:-target/release/drover}")
NXDIR=$(realpath "${2:-$HOME/.cache/drover/nx24-fixture}")
PROJECTS=${PROJECTS:-11}
work=$(mktemp -d)
echo "work dir: $work" >&2
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false NX_ISOLATE_PLUGINS=false

workspace() { # DIR
  local d=$1
  mkdir -p "$d/tools"
  echo '{"name":"bench","version":"0.0.0","private":true}' > "$d/package.json"
  printf 'node_modules\ndist\n.nx\n' > "$d/.gitignore"
  ln -s "$NXDIR/node_modules" "$d/node_modules"
  cat > "$d/tools/task.js" <<'EOF'
const fs = require('fs');
const path = require('path');
const [target, project, deps] = process.argv.slice(2);
const started = Date.now();
setTimeout(() => {
  if (target === 'build') {
    for (const dep of (deps || '').split(',').filter(Boolean)) {
      if (!fs.existsSync(path.join('dist', dep, 'index.js'))) {
        console.error(`${project}: the output of ${dep} is missing`);
        process.exit(1);
      }
    }
    fs.mkdirSync(path.join('dist', project), { recursive: true });
    fs.writeFileSync(path.join('dist', project, 'index.js'), `module.exports = '${project}';\n`);
  }
  console.log(`${target} ${project} done`);
  if (process.env.BENCH_RECORD && process.env.DROVER_TASK_ID) {
    fs.appendFileSync(process.env.BENCH_RECORD, `${process.env.DROVER_TASK_ID} ${started} ${Date.now()}\n`);
  }
}, 1000);
EOF
  cat > "$d/nx.json" <<'EOF'
{
  "targetDefaults": {
    "build": { "dependsOn": ["^build"], "cache": true, "outputs": ["{workspaceRoot}/dist/{projectName}"] },
    "test": { "dependsOn": ["build"], "cache": true },
    "lint": { "cache": true }
  }
}
EOF
  for i in $(seq 0 $((PROJECTS - 1))); do
    local deps="" implicit=""
    if [ "$i" -gt 0 ]; then deps="p$(((i - 1) / 2))"; implicit="\"$deps\""; fi
    mkdir -p "$d/libs/p$i"
    cat > "$d/libs/p$i/project.json" <<EOF
{ "name": "p$i", "root": "libs/p$i", "implicitDependencies": [$implicit],
  "targets": {
    "build": { "executor": "nx:run-commands", "options": { "command": "node tools/task.js build p$i $deps" } },
    "test": { "executor": "nx:run-commands", "options": { "command": "node tools/task.js test p$i" } },
    "lint": { "executor": "nx:run-commands", "options": { "command": "node tools/task.js lint p$i" } }
  } }
EOF
  done
}

# 1. One machine: nx run-many --parallel=4, no cache.
workspace "$work/local"
cd "$work/local"
start=$(date +%s.%N)
NX_CACHE_DIRECTORY="$work/cache-local" node_modules/.bin/nx run-many -t build test lint --parallel=4 > "$work/local.log" 2>&1
local_s=$(echo "$(date +%s.%N) - $start" | bc)

# 2. Drover: a coordinator with its defaults, two agents of two slots in their own clones.
mkdir -p "$work/coord"
"$DROVER" coordinator --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$work/coord" > "$work/coord.log" 2>&1 &
for _ in $(seq 1 100); do grep -q "listening grpc=" "$work/coord.log" && break; sleep 0.1; done
grpc=$(sed -n 's/.*listening grpc=\([^ ]*\).*/\1/p' "$work/coord.log" | head -1)
export DROVER_COORDINATOR="http://$grpc"
for a in 1 2; do
  workspace "$work/agent$a"
  mkdir -p "$work/home$a"
  HOME="$work/home$a" NX_CACHE_DIRECTORY="$work/cache-agent$a" BENCH_RECORD="$work/record.txt" \
    DROVER_NX_WORKER_TIMINGS="$work/executor.txt" \
    NX_DAEMON=${AGENT_NX_DAEMON:-false} RUST_LOG=${RUST_LOG:-info} \
    "$DROVER" agent --launch-template linux --slots 2 --name "agent$a" --workdir "$work/agent$a" --daemon \
    > "$work/agent$a.log" 2>&1 &
done
workspace "$work/main"
cd "$work/main"
export DROVER_STATE_FILE="$work/ci-run.json" DROVER_CI_EXECUTION_ID="bench-$$"
"$DROVER" start-ci-run > /dev/null 2>&1
start=$(date +%s.%N)
NX_CACHE_DIRECTORY="$work/cache-main" "$DROVER" nx -- run-many -t build test lint --parallel=2 > "$work/drover.log" 2>&1 || {
  cat "$work/drover.log"; cat "$work/agent1.log" | tail -30; exit 1; }
drover_s=$(echo "$(date +%s.%N) - $start" | bc)
distributed=$(grep -o 'Summary: .* in [0-9.a-z ]*' "$work/drover.log" | sed 's/.* in //')

printf 'nx run-many --parallel=4 (one machine): %.1f s\n' "$local_s"
printf 'drover nx, 2 agents x 2 slots (distribution %s, then the replay): %.1f s\n' "$distributed" "$drover_s"
printf 'ratio: %.2fx\n' "$(echo "$drover_s / $local_s" | bc -l)"
# Per-task overhead on the agents: lease received ("starting task" in the agent's log) -> the
# task's own command starts (its first line of JavaScript, under Nx's executor), and the command
# ends -> result sent ("task finished"); median and worst over the tasks.
python3 - "$work" <<'PY'
import re, sys, datetime, statistics, glob
work = sys.argv[1]
def ts(line):
    t = line.split()[0].rstrip('Z')
    return datetime.datetime.fromisoformat(t).replace(tzinfo=datetime.timezone.utc).timestamp() * 1000
start, end, lease_task = {}, {}, {}
for log in glob.glob(f"{work}/agent*.log"):
    for line in open(log):
        m = re.search(r'starting task lease_id="(\d+)" task_id="([^"]+)"', line)
        if m:
            lease_task[(log, m[1])] = m[2]; start[m[2]] = ts(line)
        m = re.search(r'task finished lease_id="(\d+)"', line)
        if m and (log, m[1]) in lease_task:
            end[lease_task[(log, m[1])]] = ts(line)
def overhead(record, what):
    before, after = [], []
    try:
        lines = open(record).read().split("\n")
    except FileNotFoundError:
        return
    for line in filter(None, lines):
        task, s, e = line.split()
        if task in start and task in end:
            before.append(int(s) - start[task]); after.append(end[task] - int(e))
    if before:
        print(f"per-task overhead ({len(before)} tasks): lease -> {what} start median {statistics.median(before):.0f} ms, max {max(before):.0f} ms; {what} end -> result median {statistics.median(after):.0f} ms, max {max(after):.0f} ms")
# Nx's executor (as the warm worker sees it: Nx's startTasks and endTasks), then the task's
# own command (its first line of JavaScript, after its own Node start-up).
overhead(f"{work}/executor.txt", "Nx executor")
overhead(f"{work}/record.txt", "command")
PY
