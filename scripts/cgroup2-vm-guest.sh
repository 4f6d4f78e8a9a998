#!/bin/sh
# cgroup2-vm-guest.sh — runs INSIDE the pure cgroup v2 guest (busybox sh),
# started by scripts/test-cgroup2-vm.sh: prepares what sandboxes need there,
# then runs each test binary given as an argument and exits non-zero if any
# failed.
#
# usage: cgroup2-vm-guest.sh BINARY... [-- TEST-ARGS...]
#        (each BINARY a cargo test binary; TEST-ARGS, e.g. a filter, go to
#        every one of them)
#
# What the guest lacks, and what stands in for it:
# - its root is a tmpfs, and kernel 6.1 cannot idmap tmpfs (6.3+): the data
#   dir (templates are attached as idmapped mounts) goes on an ext4 mounted
#   from a sparse file through a loop device (modules loop, ext4);
# - it has no /usr: sandboxes use a directory template made of the guest's
#   static busybox (SANDLOT_TEST_TEMPLATE=busybox), imported by the tests'
#   runtime() helper from SANDLOT_TEST_TEMPLATE_DIR.
# With VM_CGROUP set, each binary starts in that cgroup alone, as on a
# systemd host; this script waits in a sibling cgroup so that it is not an
# internal process of the binary's cgroup.
set -eu

data=/var/lib/sandlot-test
mkdir -p "$data"
truncate -s 2G /var/sandlot-data.img
mke2fs -q -F /var/sandlot-data.img
mount -t ext4 -o loop /var/sandlot-data.img "$data"

t=$data/busybox-root
mkdir -p "$t/bin" "$t/etc" "$t/tmp" "$t/root" "$t/home/user" "$t/dev" "$t/proc" \
  "$t/sys" "$t/run" "$t/var/tmp"
cp /bin/busybox "$t/bin/busybox"
# relative links: --install -s would point them at this host-side path
for applet in $(busybox --list); do
  [ -e "$t/bin/$applet" ] || ln -s busybox "$t/bin/$applet"
done
chmod 1777 "$t/tmp" "$t/var/tmp"
chmod 700 "$t/root"
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n' > "$t/etc/passwd"
printf 'root:x:0:\nuser:x:1000:\n' > "$t/etc/group"
chown 1000:1000 "$t/home/user"

export SANDLOT_TEST_DATA_DIR="$data"
export SANDLOT_TEST_TEMPLATE=busybox
export SANDLOT_TEST_TEMPLATE_DIR="$t"

if [ -n "${VM_CGROUP:-}" ]; then
  side="/sys/fs/cgroup${VM_CGROUP%/*}/vm-guest-driver"
  mkdir -p "$side"
  echo $$ > "$side/cgroup.procs"
fi

bins=""
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  bins="$bins $1"
  shift
done
[ $# -gt 0 ] && shift # the --; what is left are the test arguments

failed=""
for bin in $bins; do
  echo "=== ${bin##*/} (cgroup ${VM_CGROUP:-/})"
  # shellcheck disable=SC2016
  if ! sh -c '[ -z "${VM_CGROUP:-}" ] || echo $$ > "/sys/fs/cgroup$VM_CGROUP/cgroup.procs"; exec "$@"' \
      sh "$bin" "$@"; then
    failed="$failed ${bin##*/}"
  fi
done

left=$(find /sys/fs/cgroup -mindepth 1 -type d -name '*sandlot*' | head -20)
if [ -n "$left" ]; then
  echo "cgroup dirs left behind:"
  echo "$left"
  failed="$failed (leaked-cgroups)"
fi
umount "$data" 2>/dev/null || true

if [ -n "$failed" ]; then
  echo "FAILED:$failed"
  exit 1
fi
echo "all passed"
