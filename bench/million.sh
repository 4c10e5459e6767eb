#!/usr/bin/env bash
# A graph of TASKS no-op tasks (default 1,000,000, in chains of 100) through `drover simulate`
# and through `drover exec` on a local coordinator with one 8-slot agent. Prints each one's
# wall time and peak RSS (the coordinator's too).
#
#   bash bench/million.sh [path/to/drover]     (default: target/release/drover)
#   TASKS=100000 bash bench/million.sh
#
# A benchmark, not a test: its figures are in the README's table.
set -euo pipefail
DROVER=$(realpath "${1:-target/release/drover}")
TASKS=${TASKS:-1000000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"

python3 - "$TASKS" > tasks.yaml <<'EOF'
import sys
n = int(sys.argv[1])
out = sys.stdout
out.write("tasks:\n")
for i in range(n):
    c, k = divmod(i, 100)
    out.write(f'  - id: c{c}:t{k}\n    command: "true"\n')
    if k:
        out.write(f"    dependsOn: [c{c}:t{k - 1}]\n")
EOF
echo "graph: $TASKS tasks, $(du -h tasks.yaml | cut -f1) of YAML"

/usr/bin/time -f "simulate: %e s, peak RSS %M KiB" \
  "$DROVER" simulate --graph tasks.yaml --agents "1 local:8" > simulate.out
head -1 simulate.out

port=$((40000 + RANDOM % 10000))
export DROVER_COORDINATOR=http://127.0.0.1:$port
"$DROVER" coordinator --listen 127.0.0.1:$port --http-listen 127.0.0.1:$((port + 1)) \
  --data-dir "$work/data" 2> coordinator.log &
coordinator=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((port + 1))/readyz" > /dev/null && break; sleep 0.05; done
export DROVER_CI_EXECUTION_ID=million-$$
"$DROVER" agent --daemon --launch-template local --slots 8 2> agent.log &
"$DROVER" start-ci-run > /dev/null
/usr/bin/time -f "exec: %e s, peak RSS %M KiB (drover exec)" \
  "$DROVER" exec --graph tasks.yaml > exec.log
tail -3 exec.log | grep -v '^$' || true
echo "coordinator: peak RSS $(awk '/VmHWM/ {print $2, $3}' /proc/$coordinator/status)," \
  "store $(du -sh data | cut -f1)"
