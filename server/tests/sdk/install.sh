#!/bin/sh
# Installs the pinned E2B SDKs the server's tests drive: the Python SDKs in
# server/tests/sdk/.venv (requirements.txt) and the JavaScript SDKs in
# server/tests/sdk/node_modules (package-lock.json). Idempotent; CI calls it
# before `cargo test -p sandlot-server`.
set -eu
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --disable-pip-version-check -q -r requirements.txt
npm ci --no-audit --no-fund --silent
echo "E2B SDKs installed in $(pwd)/.venv and $(pwd)/node_modules"
