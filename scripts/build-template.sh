#!/usr/bin/env bash
# Builds an example sandlot template as an OCI image layout.
#
#   scripts/build-template.sh python|code-interpreter [OUT_DIR]
#
# code-interpreter: what users of the reference's code interpreter expect:
# Debian 12 (bookworm) minbase plus Debian's python3, IPython, numpy, pandas,
# matplotlib, node (bookworm's nodejs) and bash, all from the Debian mirror
# (reproducible: no PyPI or npm at build time), a user `user` (uid 1000,
# home /home/user, shell bash) that commands run as, WorkingDir /home/user,
# MPLBACKEND=Agg, and settings that offer three interpreters for code
# contexts: python (python3), javascript (node) and bash. sandlot appends its
# own driver's arguments to each command. Import it with
#   sandlot template import code-interpreter OUT_DIR
# OUT_DIR defaults to ./target/templates/code-interpreter-oci.
# Measured here once (2 shared cores, kernel 6.18): 434 s wall (debootstrap
# unpacking and configuring ~230 MiB of packages, then gzip), one layer of
# 390 MiB gzipped, 1,326 MiB as a tar (matplotlib's and pandas' dependency
# trees, numpy's BLAS, node).
#
# python: Debian 12 (bookworm) minbase from debootstrap, plus python3 and
# python3-pip, packed as ONE gzip layer with an image config of
#   Env PATH=/usr/local/sbin:…:/bin, LANG=C.UTF-8; Cmd ["python3"]; WorkingDir /root
# and a `dev.sandlot.settings` label that offers the python interpreter
# (["python3", "-u", "-i"]), which `Store::import_oci` turns into the
# template's sandlot.json. Import it with
#   sandlot template import python OUT_DIR
# OUT_DIR defaults to ./target/templates/python-oci and is replaced.
#
# What it downloads: debootstrap itself if missing (~0.1 MB, apt-get), then
# from the Debian mirror this machine's apt uses (read from
# /etc/apt/sources.list and /etc/apt/sources.list.d/*, deb822 or one-line
# format; deb.debian.org if none is found) the bookworm package index
# (~9 MB) and ~45 MB of .deb files (minbase + python3 + python3-pip and
# their dependencies, no Recommends).
# How long it takes here (2 shared cores, kernel 6.18, measured twice):
# 55-59 s, most of it debootstrap unpacking and configuring packages. The
# result: one layer of 71 MiB gzipped, 188 MiB as a tar; imported, about
# 180 MiB of files (204 MiB on disk), which `Store::import_oci` unpacks in
# about 3 s (release build). The digest differs from build to build
# (timestamps of generated files).
#
# Needs root (debootstrap, and files keep their real owners). debootstrap runs
# in a private mount namespace (`unshare --mount`), so the /proc and /sys it
# mounts inside the new root die with it and can never leak onto the host.
# The image is written with GNU tar, sha256sum and gzip only; nothing of it is
# committed.

set -euo pipefail

SUITE=bookworm
ENV_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() {
	echo "build-template: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 python|code-interpreter [OUT_DIR]" >&2
	exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
TEMPLATE=$1
# Per template: packages, the settings label (JSON inside a JSON string), the
# image's user, working dir, extra environment and default command.
case $TEMPLATE in
python)
	PACKAGES=python3,python3-pip
	SETTINGS='{\"interpreters\":[{\"language\":\"python\",\"command\":[\"python3\"]}]}'
	IMAGE_USER=
	WORKDIR=/root
	EXTRA_ENV=
	CMD='["python3"]'
	;;
code-interpreter)
	PACKAGES=python3,python3-ipython,python3-numpy,python3-pandas,python3-matplotlib,nodejs,bash,passwd
	SETTINGS='{\"interpreters\":[{\"language\":\"python\",\"command\":[\"python3\"]},{\"language\":\"javascript\",\"command\":[\"node\"]},{\"language\":\"bash\",\"command\":[\"bash\"]}]}'
	IMAGE_USER=user
	WORKDIR=/home/user
	# Figures render off-screen; code contexts return them as PNG.
	EXTRA_ENV=',"MPLBACKEND=Agg"'
	CMD='["python3"]'
	;;
*) die "unknown template '$TEMPLATE' (known: python, code-interpreter)" ;;
esac
OUT_DIR=${2:-./target/templates/$TEMPLATE-oci}
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, file ownership)"
# OUT_DIR is replaced at the end: only ever an earlier layout or nothing.
if [[ -e $OUT_DIR && ! -f $OUT_DIR/index.json && -n $(ls -A "$OUT_DIR" 2>/dev/null) ]]; then
	die "$OUT_DIR exists and is not an OCI layout; refusing to replace it"
fi

case $(uname -m) in
x86_64) ARCH=amd64 ;;
aarch64) ARCH=arm64 ;;
*) die "unsupported machine $(uname -m)" ;;
esac

# The first Debian mirror apt is configured with for $SUITE.
find_mirror() {
	local f
	# deb822 (*.sources): URIs and Suites fields of one stanza.
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] || continue
		awk -v suite="$SUITE" '
			function flush() { if (uri != "" && ok) { print uri; found = 1; exit } uri = ""; ok = 0 }
			/^[[:space:]]*$/ { flush(); next }
			/^[[:space:]]*#/ { next }
			tolower($1) == "uris:" { uri = $2 }
			tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
			END { if (!found) flush() }
		' "$f"
	done
	# One-line format: deb [opts] URI SUITE COMPONENTS...
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -f $f ]] || continue
		sed -e 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2 }'
	done
}
MIRROR=$(find_mirror | head -n1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if ! command -v debootstrap >/dev/null; then
	echo "build-template: installing debootstrap" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

START=$(date +%s)
WORK=$(mktemp -d /var/tmp/sandlot-template.XXXXXX)
trap 'rm -rf --one-file-system "$WORK"' EXIT
ROOTFS=$WORK/rootfs

# 1. The root filesystem.
echo "build-template: debootstrap $SUITE ($ARCH) + $PACKAGES from $MIRROR" >&2
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
KEYRING_ARG=()
[[ -f $KEYRING ]] && KEYRING_ARG=(--keyring="$KEYRING")
unshare --mount --propagation private \
	debootstrap --variant=minbase --arch="$ARCH" --include="$PACKAGES" \
	"${KEYRING_ARG[@]}" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
	{
		tail -n 30 "$WORK/debootstrap.log" >&2
		die "debootstrap failed"
	}

DOWNLOADED=$(du -sm "$ROOTFS/var/cache/apt/archives" | cut -f1)

# The reference's default account: commands and code contexts run as `user`.
if [[ -n $IMAGE_USER ]]; then
	chroot "$ROOTFS" useradd --create-home --uid 1000 --user-group \
		--shell /bin/bash "$IMAGE_USER" ||
		die "useradd $IMAGE_USER in the new root failed"
fi

# 2. Trim what a template must not or need not carry: device nodes (the
# runtime makes its own /dev, and the importer rejects device nodes), the
# downloaded .debs and package lists (apt-get update refreshes them), logs.
find "$ROOTFS/dev" "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/run" "$ROOTFS/tmp" \
	-mindepth 1 -delete 2>/dev/null || true
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
	"$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/* "$ROOTFS"/var/cache/debconf/*-old
# What the sandbox sees as its hostname and resolver comes from the runtime.
rm -f "$ROOTFS/etc/hostname" "$ROOTFS/etc/resolv.conf"

# 3. One layer: an uncompressed tar for the diff_id, then gzip for the blob.
LAYOUT=$WORK/layout
mkdir -p "$LAYOUT/blobs/sha256"
tar --create --file="$WORK/layer.tar" --directory="$ROOTFS" \
	--numeric-owner --sort=name --format=pax \
	--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
DIFF_ID=sha256:$(sha256sum "$WORK/layer.tar" | cut -d' ' -f1)
UNPACKED=$(stat -c %s "$WORK/layer.tar")
gzip -n -6 <"$WORK/layer.tar" >"$WORK/layer.tar.gz"
rm -f "$WORK/layer.tar"

# Moves a file into blobs/sha256/<hex> and prints "<digest> <size>".
add_blob() {
	local hex size
	hex=$(sha256sum "$1" | cut -d' ' -f1)
	size=$(stat -c %s "$1")
	mv "$1" "$LAYOUT/blobs/sha256/$hex"
	echo "sha256:$hex $size"
}
read -r LAYER_DIGEST LAYER_SIZE < <(add_blob "$WORK/layer.tar.gz")

# 4. Config, manifest, index. The settings label is JSON inside a JSON string.
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
USER_FIELD=
[[ -n $IMAGE_USER ]] && USER_FIELD=",\"User\":\"$IMAGE_USER\""
cat >"$WORK/config.json" <<EOF
{"created":"$CREATED","architecture":"$ARCH","os":"linux","config":{"Env":["PATH=$ENV_PATH","LANG=C.UTF-8"$EXTRA_ENV],"Cmd":$CMD,"WorkingDir":"$WORKDIR"$USER_FIELD,"Labels":{"dev.sandlot.settings":"$SETTINGS"}},"rootfs":{"type":"layers","diff_ids":["$DIFF_ID"]},"history":[{"created":"$CREATED","created_by":"sandlot scripts/build-template.sh $TEMPLATE: debootstrap --variant=minbase --include=$PACKAGES $SUITE"}]}
EOF
read -r CONFIG_DIGEST CONFIG_SIZE < <(add_blob "$WORK/config.json")

cat >"$WORK/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$CONFIG_DIGEST","size":$CONFIG_SIZE},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$LAYER_DIGEST","size":$LAYER_SIZE}]}
EOF
read -r MANIFEST_DIGEST MANIFEST_SIZE < <(add_blob "$WORK/manifest.json")

cat >"$LAYOUT/index.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$MANIFEST_DIGEST","size":$MANIFEST_SIZE,"platform":{"architecture":"$ARCH","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"$TEMPLATE"}}]}
EOF
echo '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"

# 5. Replace OUT_DIR only now that the layout is complete.
mkdir -p "$(dirname "$OUT_DIR")"
rm -rf "$OUT_DIR"
mv "$LAYOUT" "$OUT_DIR"

END=$(date +%s)
echo "build-template: wrote $OUT_DIR in $((END - START)) s:" \
	"layer $LAYER_DIGEST, $((LAYER_SIZE / 1048576)) MiB gzipped," \
	"$((UNPACKED / 1048576)) MiB as tar; downloaded $DOWNLOADED MiB of packages" >&2
