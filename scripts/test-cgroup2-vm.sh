#!/usr/bin/env bash
# test-cgroup2-vm.sh — run the cgroups integration tests in a pure cgroup v2
# guest (Debian 12's kernel 6.1, see shared/tools/vm-cgroup2), twice:
#   1. in the guest's root cgroup;
#   2. in /ci.slice/test (VM_CGROUP), a non-root cgroup that holds the test
#      process, as under systemd: the no-internal-processes rule applies.
# Fails if either run fails. Our own machines are hybrid, so this is the
# only place the v2 code path runs for real.
#
# usage: scripts/test-cgroup2-vm.sh [extra test-binary args, e.g. a filter]
# env:   SANDLOT_VM_TOOL  path of run-in-vm.sh (default: shared/ beside the
#                         repository, as on developer machines and in CI)
#        any VM_* knob of run-in-vm.sh (VM_MEM, VM_TIMEOUT, VM_DEBUG, ...)
set -euo pipefail

log() { printf '[test-cgroup2-vm] %s\n' "$*" >&2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
tool=${SANDLOT_VM_TOOL:-}
if [ -z "$tool" ]; then
  for d in "$repo/.." "$repo/../.."; do
    if [ -x "$d/shared/tools/vm-cgroup2/run-in-vm.sh" ]; then
      tool=$d/shared/tools/vm-cgroup2/run-in-vm.sh
      break
    fi
  done
fi
[ -n "$tool" ] && [ -x "$tool" ] || {
  log "run-in-vm.sh not found beside the repository; set SANDLOT_VM_TOOL"
  exit 2
}

# 1. build the test binary; cargo prints its path in the JSON messages
log "building the cgroups integration tests"
bin=$(cd "$repo" && cargo test -p sandlot --test cgroups --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | grep '/cgroups-' | tail -n1)
[ -n "$bin" ] && [ -x "$bin" ] || { log "could not find the test binary"; exit 2; }
log "test binary: $bin"

# the debug binary lives in guest RAM
export VM_MEM=${VM_MEM:-1536}
export VM_TIMEOUT=${VM_TIMEOUT:-600}

# 2. run it in the root cgroup, 3. then in /ci.slice/test
failed=()
log "run 1/2: root cgroup"
if ! VM_CGROUP= "$tool" "$bin" "$@"; then failed+=("root cgroup"); fi
log "run 2/2: VM_CGROUP=/ci.slice/test"
if ! VM_CGROUP=/ci.slice/test "$tool" "$bin" "$@"; then failed+=("/ci.slice/test"); fi

if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED in: ${failed[*]}"
  exit 1
fi
log "passed in the root cgroup and in /ci.slice/test"
