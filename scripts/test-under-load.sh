#!/usr/bin/env bash
# Run the whole suite RUNS times in a row (default 3) while every core is kept busy by a
# CPU-bound process, to show that no test's verdict depends on the machine's speed:
#   bash scripts/test-under-load.sh [RUNS] [pytest args...]
# The busy processes are started here and stopped on exit, however the runs end. Each run's
# closing line and wall time are printed at the end; the exit code is the first failure's.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${1:-3}"
shift || true

hogs=()
stop_hogs() { [ "${#hogs[@]}" -gt 0 ] && kill "${hogs[@]}" 2>/dev/null; wait 2>/dev/null; }
trap stop_hogs EXIT
for _ in $(seq "$(nproc)"); do
    python3 -c 'while True: pass' &
    hogs+=("$!")
done

status=0
summary=()
for run in $(seq "$runs"); do
    start=$(date +%s)
    log="$(mktemp)"
    bash scripts/test.sh -q -p no:cacheprovider "$@" 2>&1 | tee "$log"
    rc="${PIPESTATUS[0]}"
    took=$(( $(date +%s) - start ))
    summary+=("run $run: rc=$rc, ${took}s, load $(cut -d' ' -f1-3 /proc/loadavg): $(grep -E '(passed|failed)' "$log" | tail -n 1)")
    rm -f "$log"
    [ "$rc" -ne 0 ] && [ "$status" -eq 0 ] && status="$rc"
done
printf '%s\n' "${summary[@]}"
exit "$status"
