#!/usr/bin/env bash
# drover exec vs make -j8 on the same graph, side by side in one run: 1,500 no-op tasks in
# 15 chains of 100, one local agent with 8 slots. Prints both wall times and the ratio.
#
#   bash bench/exec-vs-make.sh [path/to/drover]     (default: target/release/drover)
#
# A benchmark, not a test: its figure is in the README's table.
set -euo pipefail
DROVER=${1:-target/release/drover}
DROVER=$(realpath "$DROVER")
CHAINS=${CHAINS:-15}
LENGTH=${LENGTH:-100}
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work"

# The same graph twice: tasks.yaml for drover, a Makefile for make.
{
  echo "tasks:"
  for c in $(seq 1 "$CHAINS"); do
    for k in $(seq 1 "$LENGTH"); do
      echo "  - id: c$c:t$k"
      echo "    command: \"true\""
      [ "$k" -gt 1 ] && echo "    dependsOn: [c$c:t$((k - 1))]"
    done
  done
} > tasks.yaml
{
  printf 'all:'
  for c in $(seq 1 "$CHAINS"); do printf ' c%s-t%s' "$c" "$LENGTH"; done
  printf '\n.PHONY: all'
  for c in $(seq 1 "$CHAINS"); do for k in $(seq 1 "$LENGTH"); do printf ' c%s-t%s' "$c" "$k"; done; done
  printf '\n'
  for c in $(seq 1 "$CHAINS"); do
    for k in $(seq 1 "$LENGTH"); do
      dep=""
      [ "$k" -gt 1 ] && dep="c$c-t$((k - 1))"
      printf 'c%s-t%s: %s\n\t@true\n' "$c" "$k" "$dep"
    done
  done
} > Makefile

# Below Linux's ephemeral range (32768 on), where a busy machine's outgoing sockets live.
port=$((20000 + RANDOM % 10000))
export DROVER_COORDINATOR=http://127.0.0.1:$port
"$DROVER" coordinator --listen 127.0.0.1:$port --http-listen 127.0.0.1:$((port + 1)) \
  --data-dir "$work/data" 2> coordinator.log &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((port + 1))/readyz" > /dev/null && break; sleep 0.05; done
curl -sf "http://127.0.0.1:$((port + 1))/readyz" > /dev/null || { cat coordinator.log; echo "the coordinator did not start" >&2; exit 1; }
export DROVER_CI_EXECUTION_ID=bench-$$
"$DROVER" agent --daemon --launch-template local --slots 8 2> agent.log &

now() { date +%s.%N; }
# Ticks every core spent busy so far (user, nice, system, irq, softirq), for CPU_REPORT.
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# CPU_REPORT=1: what each phase cost all cores, and at the end the coordinator's and agent's
# own CPU (ticks of 1/100 s, from /proc).
own_cpu() {
  for pid in $(jobs -p); do
    echo "$(tr '\0' ' ' < "/proc/$pid/cmdline" | cut -d' ' -f2): $(awk '{print $14 + $15}' "/proc/$pid/stat") ticks"
  done
}
[ -n "${CPU_REPORT:-}" ] && trap 'own_cpu; kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
best_make=999999 best_drover=999999
for round in $(seq 1 "$ROUNDS"); do
  [ -n "${CPU_REPORT:-}" ] && s0=$(busy)
  t0=$(now); make -s -j8 > /dev/null; t1=$(now)
  [ -n "${CPU_REPORT:-}" ] && echo "make phase: $(( $(busy) - s0 )) busy ticks on all cores"
  m=$(echo "$t1 - $t0" | bc -l)
  export DROVER_CI_EXECUTION_ID=bench-$$-$round
  "$DROVER" start-ci-run > /dev/null
  [ -n "${CPU_REPORT:-}" ] && s0=$(busy)
  t0=$(now); "$DROVER" exec --graph tasks.yaml > exec.log; t1=$(now)
  [ -n "${CPU_REPORT:-}" ] && echo "drover phase: $(( $(busy) - s0 )) busy ticks on all cores"
  "$DROVER" complete-ci-run > /dev/null
  d=$(echo "$t1 - $t0" | bc -l)
  printf 'round %s: make -j8 %.2fs, drover exec %.2fs (%.2fx)\n' "$round" "$m" "$d" "$(echo "$d / $m" | bc -l)"
  best_make=$(echo "if ($m < $best_make) $m else $best_make" | bc -l)
  best_drover=$(echo "if ($d < $best_drover) $d else $best_drover" | bc -l)
done
printf 'best of %s: make -j8 %.2fs, drover exec %.2fs: %.2fx make\n' "$ROUNDS" "$best_make" "$best_drover" \
  "$(echo "$best_drover / $best_make" | bc -l)"
