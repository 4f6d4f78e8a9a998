#!/usr/bin/env bash
# test-cgroup2-vm.sh — run the cgroup-level and sandbox-level limit tests in
# a pure cgroup v2 guest (Debian 12's kernel 6.1, see shared/tools/vm-cgroup2),
# twice:
#   1. in the guest's root cgroup;
#   2. in /ci.slice/test (VM_CGROUP), a non-root cgroup that holds the test
#      process, as under systemd: the no-internal-processes rule applies.
# Fails if either run fails. Our own machines are hybrid, so this is the
# only place the v2 code path runs for real.
#
# The tests: runtime/tests/cgroups.rs (the cgroups module alone), and
# tests/limits.rs and tests/resources.rs (whole sandboxes: every limit
# biting, OOM, metrics, monitor, health, pause). Inside the guest,
# scripts/cgroup2-vm-guest.sh puts the data dir on a loop-mounted ext4 (the
# guest's root is a tmpfs, which 6.1 cannot idmap) and builds a busybox
# template (the guest has no /usr for the base template to bind).
#
# usage: scripts/test-cgroup2-vm.sh [extra test-binary args, e.g. a filter]
# env:   SANDLOT_VM_TOOL  path of run-in-vm.sh (default: shared/ beside the
#                         repository, as on developer machines and in CI)
#        SANDLOT_VM_TESTS which tests (default "cgroups limits resources")
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
tests=${SANDLOT_VM_TESTS:-cgroups limits resources}

# 1. build the test binaries; cargo prints their paths in its JSON messages
log "building the test binaries: $tests"
args=()
for t in $tests; do
  case "$t" in
    cgroups) args+=(-p sandlot --test cgroups) ;;
    *) args+=(-p sandlot-tests --test "$t") ;;
  esac
done
json=$(cd "$repo" && cargo test "${args[@]}" --no-run --message-format=json)
out="$repo/target/vm-cgroup2"
mkdir -p "$out"
bins=()
for t in $tests; do
  bin=$(printf '%s\n' "$json" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' \
    | grep "/deps/$t-" | tail -n1)
  [ -n "$bin" ] && [ -x "$bin" ] || { log "could not find the $t test binary"; exit 2; }
  # Debug info is most of a test binary and the guest holds its files in
  # RAM: ship a stripped copy.
  if command -v objcopy >/dev/null; then
    objcopy --strip-debug "$bin" "$out/$t"
  else
    cp "$bin" "$out/$t"
  fi
  bins+=("$out/$t")
done
log "test binaries: ${bins[*]}"

export VM_MEM=${VM_MEM:-2048}
export VM_TIMEOUT=${VM_TIMEOUT:-900}
# loop and ext4 for the data dir (their dependencies come along)
export VM_MODULES=${VM_MODULES:-overlay loop ext4}
export VM_FILES="${VM_FILES:-} $repo/scripts/cgroup2-vm-guest.sh ${bins[*]}"

# 2. run them in the root cgroup, 3. then in /ci.slice/test
failed=()
run() {
  "$tool" /bin/busybox sh "$repo/scripts/cgroup2-vm-guest.sh" "${bins[@]}" -- "$@"
}
log "run 1/2: root cgroup"
if ! VM_CGROUP= run "$@"; then failed+=("root cgroup"); fi
log "run 2/2: VM_CGROUP=/ci.slice/test"
if ! VM_CGROUP=/ci.slice/test run "$@"; then failed+=("/ci.slice/test"); fi

if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED in: ${failed[*]}"
  exit 1
fi
log "passed in the root cgroup and in /ci.slice/test"
