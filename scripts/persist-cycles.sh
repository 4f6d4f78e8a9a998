#!/usr/bin/env bash
# Runs N create/exec/destroy cycles (default 10,000; CI runs 1,000) twice —
# with a persistent runtime (state dir, monitors) and without — and prints
# the census before and after each: the process's descriptors, threads,
# children, mounts (its own and its spawner's), the cgroup dirs of its
# sandboxes, the state dir's records and monitors. Exits non-zero if any
# count changed. Also prints machine-wide counts (every sandlot on the
# machine, so other users' sandboxes show there too).
#
#   scripts/persist-cycles.sh [N]        PROFILE=dev for a debug build
#   SANDLOT_DATA_DIR=...                 templates (default: the tests' data dir)
#   SANDLOT_BENCH_STATE_DIR=...          where the state dir goes (default /run)
set -euo pipefail

N=${1:-10000}
PROFILE=${PROFILE:-release}
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "persist-cycles: sandboxes need root" >&2
    exit 1
fi
build_log=$(mktemp)
if ! cargo build --profile "$PROFILE" -p sandlot-bench -q 2>"$build_log"; then
    cat "$build_log" >&2
    rm -f "$build_log"
    exit 1
fi
rm -f "$build_log"
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
BENCH=target/$dir/sandlot-bench
export SANDLOT_DATA_DIR=${SANDLOT_DATA_DIR:-$PWD/target/sandlot-test-data}

machine_census() {
    local inits monitors cgroups mounts
    # Zombies are not counted: ended, waiting for whoever reaps orphans.
    inits=$(ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 == "sandlot-init"' | wc -l)
    monitors=$(ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 == "sandlot-monitor"' | wc -l)
    cgroups=$(find /sys/fs/cgroup -maxdepth 6 -type d -name 'sandlot-*' 2>/dev/null | wc -l)
    mounts=$(wc -l </proc/self/mountinfo)
    echo "machine: sandlot-init $inits, sandlot-monitor $monitors, sandlot-* cgroup dirs $cgroups, mounts $mounts"
}

status=0
for mode in "" --persistent; do
    echo "=== cycles ${mode:-(no state dir)} ==="
    machine_census
    "$BENCH" cycles --count "$N" $mode || status=1
    machine_census
done
exit $status
