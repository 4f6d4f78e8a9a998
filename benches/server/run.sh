#!/bin/sh
# Builds a release sandlot-server, starts it on loopback and runs
# sdk_bench.py through the pinned Python SDK (server/tests/sdk/install.sh).
#   benches/server/run.sh [latency] [throughput] [memory] [load] [rounds]
# SERVER_ARGS adds flags (e.g. "--ephemeral", "--default-network off");
# without --ephemeral the server keeps its sandboxes in a fresh state dir
# under STATE_PARENT (default: a temporary directory), removed at the end.
set -eu
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build --release -p sandlot-server
key="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
out="$(mktemp)"
state="$(mktemp -d -p "${STATE_PARENT:-/tmp}" sandlot-bench-state.XXXXXX)"
# shellcheck disable=SC2086
SANDLOT_LOG=warn ./target/release/sandlot-server --listen 127.0.0.1:0 --api-key "$key" \
    --data-dir "$root/target/sandlot-server-test-data" --state-dir "$state" ${SERVER_ARGS:-} > "$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$out"; rm -rf "$state"' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$out" && break; sleep 0.1; done
addr="$(sed -n 's/^listening on //p' "$out")"
[ -n "$addr" ] || { echo "sandlot-server did not start" >&2; exit 1; }
E2B_API_KEY="$key" E2B_API_URL="http://$addr" E2B_SANDBOX_URL="http://$addr" SANDLOT_SERVER_PID="$pid" \
    "$root/server/tests/sdk/.venv/bin/python" "$root/benches/server/sdk_bench.py" "$@"
