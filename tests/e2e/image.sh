#!/usr/bin/env bash
# Build OCI image archives locally, with no registry: the OCI image-layout tar
# (oci-layout, index.json, blobs/sha256/...) that `ctr images import` accepts,
# with gzip layers, diffIDs in the config, and a linux/amd64 config.
# Same inputs give the same bytes (sorted tar entries, fixed mtimes and owners,
# gzip -n), so the digests are stable from run to run.
#
#   image.sh test OUT.tar
#       The e2e test image, localhost/erofs-e2e/test:1, three layers:
#         1  busybox-static base: /bin/busybox and applet symlinks, /etc, /data
#         2  adds files (one hard link), overwrites /data/overwrite.txt
#         3  whiteouts: deletes a file and a directory of layer 1 and a file of
#            layer 2 (.wh.NAME), makes /opaque opaque (.wh..wh..opq) with new content
#   image.sh from-tars OUT.tar NAME LAYER.tar...
#       An image NAME from uncompressed layer tars, bottom first (used by bench/).
#   image.sh test-expect
#       Print the shell script that checks, inside a container, what the test
#       image must look like (run.sh runs it with busybox sh).
set -euo pipefail

MTIME=${IMAGE_MTIME:-1700000000}          # 2023-11-14, fixed for reproducible tars
GZIP_LEVEL=${IMAGE_GZIP_LEVEL:-6}
TEST_IMAGE_NAME=localhost/erofs-e2e/test:1

WORKDIRS=()
trap 'rm -rf "${WORKDIRS[@]}"' EXIT
# workdir VAR PREFIX: VAR = a new temporary directory, removed when the script exits.
workdir() {
	local d
	d=$(mktemp -d "${TMPDIR:-/tmp}/$2.XXXXXX")
	WORKDIRS+=("$d")
	printf -v "$1" '%s' "$d"
}

log() { echo "[image $(date +%T)] $*" >&2; }
die() { echo "[image] ERROR: $*" >&2; exit 1; }

# layer_tar DIR OUT: a reproducible uncompressed tar of DIR's contents.
layer_tar() {
	tar -C "$1" --sort=name --mtime="@$MTIME" --owner=0 --group=0 --numeric-owner \
		--format=gnu -cf "$2" .
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }

# put_blob FILE LAYOUT: move FILE into LAYOUT/blobs/sha256, print its digest.
put_blob() {
	local d
	d=$(sha256 "$1")
	mv -f "$1" "$2/blobs/sha256/$d"
	echo "$d"
}

# oci_archive OUT NAME TAR...: the OCI archive of an image made of the layer tars.
oci_archive() {
	local out=$1 name=$2
	shift 2
	[ $# -ge 1 ] || die "no layer"
	local work layout
	workdir work oci-image
	layout=$work/layout
	mkdir -p "$layout/blobs/sha256"

	local diff_ids=() layers=() history=() t n=0 diff_id gz digest
	for t in "$@"; do
		n=$((n + 1))
		diff_id=$(sha256 "$t")
		gz=$work/layer$n.tar.gz
		gzip -n -"$GZIP_LEVEL" -c "$t" >"$gz"
		local gz_size
		gz_size=$(size_of "$gz")
		digest=$(put_blob "$gz" "$layout")
		diff_ids+=("\"sha256:$diff_id\"")
		layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$digest\",\"size\":$gz_size}")
		history+=("{\"created\":\"2023-11-14T22:13:20Z\",\"created_by\":\"tests/e2e/image.sh layer $n: $(basename "$t")\"}")
		log "layer $n: $(basename "$t") $(size_of "$t") bytes, gzip $gz_size, diffID sha256:${diff_id:0:12}"
	done

	local IFS=,
	printf '%s' "{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"2023-11-14T22:13:20Z\",\"config\":{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"Cmd\":[\"/bin/sh\"],\"WorkingDir\":\"/\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[${diff_ids[*]}]},\"history\":[${history[*]}]}" >"$work/config.json"
	local config_size config_digest
	config_size=$(size_of "$work/config.json")
	config_digest=$(put_blob "$work/config.json" "$layout")

	printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config_digest\",\"size\":$config_size},\"layers\":[${layers[*]}]}" >"$work/manifest.json"
	local manifest_size manifest_digest
	manifest_size=$(size_of "$work/manifest.json")
	manifest_digest=$(put_blob "$work/manifest.json" "$layout")
	unset IFS

	printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest_digest\",\"size\":$manifest_size,\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"},\"annotations\":{\"io.containerd.image.name\":\"$name\",\"org.opencontainers.image.ref.name\":\"${name##*:}\"}}]}" >"$layout/index.json"
	printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

	tar -C "$layout" --sort=name --mtime="@$MTIME" --owner=0 --group=0 --numeric-owner \
		--format=gnu -cf "$out.tmp" oci-layout index.json blobs
	mv -f "$out.tmp" "$out"
	log "$out: $name, manifest sha256:${manifest_digest:0:12}, $(size_of "$out") bytes"
}

# write FILE CONTENT: a 0644 file with CONTENT and a newline.
write() {
	mkdir -p "$(dirname "$1")"
	printf '%s\n' "$2" >"$1"
	chmod 0644 "$1"
}

build_test_image() {
	local out=$1 busybox=/bin/busybox
	[ -x "$busybox" ] || die "busybox-static is not installed (tests/e2e/install.sh)"
	# A dynamic busybox (Debian's `busybox`) would not run in the image.
	! ldd "$busybox" >/dev/null 2>&1 || die "$busybox is not static: install busybox-static"
	local work
	workdir work e2e-image
	umask 022

	# Layer 1: the base.
	local l1=$work/l1 a
	mkdir -p "$l1"/{bin,etc,data/doomed-dir/sub,opaque/old-sub,proc,sys,dev,root,tmp}
	chmod 1777 "$l1/tmp"
	chmod 0700 "$l1/root"
	cp "$busybox" "$l1/bin/busybox"
	chmod 0755 "$l1/bin/busybox"
	for a in sh cat ls test [ echo mkdir rm touch stat find grep wc sleep true false \
		readlink head id printf sort tr uname env; do
		ln -s busybox "$l1/bin/$a"
	done
	write "$l1/etc/e2e-release" "erofs-e2e layer 1"
	write "$l1/etc/passwd" "root:x:0:0:root:/root:/bin/sh"
	write "$l1/etc/group" "root:x:0:"
	write "$l1/data/keep.txt" "keep from layer 1"
	write "$l1/data/overwrite.txt" "layer 1 version"
	write "$l1/data/doomed.txt" "deleted by layer 3"
	write "$l1/data/doomed-dir/a.txt" "in a directory deleted by layer 3"
	write "$l1/data/doomed-dir/sub/b.txt" "deeper in a directory deleted by layer 3"
	write "$l1/opaque/old1.txt" "hidden by the opaque dir of layer 3"
	write "$l1/opaque/old-sub/x.txt" "hidden by the opaque dir of layer 3"

	# Layer 2: additions and an overwrite.
	local l2=$work/l2
	mkdir -p "$l2"/{data,etc,opt/app}
	write "$l2/data/overwrite.txt" "layer 2 version"
	write "$l2/data/layer2.txt" "added in layer 2"
	ln "$l2/data/layer2.txt" "$l2/data/layer2-hardlink.txt"
	write "$l2/etc/layer2.conf" "setting=2"
	write "$l2/etc/short-lived.conf" "added in layer 2, deleted by layer 3"
	printf '#!/bin/sh\necho app from layer 2\n' >"$l2/opt/app/run.sh"
	chmod 0755 "$l2/opt/app/run.sh"

	# Layer 3: whiteouts, an opaque directory, new content.
	local l3=$work/l3
	mkdir -p "$l3"/{data,etc,opaque/new-sub}
	: >"$l3/data/.wh.doomed.txt"
	: >"$l3/data/.wh.doomed-dir"
	: >"$l3/etc/.wh.short-lived.conf"
	: >"$l3/opaque/.wh..wh..opq"
	write "$l3/opaque/new.txt" "new in layer 3"
	write "$l3/opaque/new-sub/y.txt" "new in layer 3"
	write "$l3/layer3.txt" "added in layer 3"
	chmod 0644 "$l3"/data/.wh.* "$l3"/etc/.wh.* "$l3"/opaque/.wh..wh..opq

	local i
	for i in 1 2 3; do
		layer_tar "$work/l$i" "$work/layer$i.tar"
	done
	oci_archive "$out" "$TEST_IMAGE_NAME" "$work/layer1.tar" "$work/layer2.tar" "$work/layer3.tar"
}

# The checks of the test image, run inside a container by busybox sh.
test_expect() {
	cat <<'EOF'
set -e
fail() { echo "CHECK FAILED: $*"; exit 1; }
is() { [ "$(cat "$1")" = "$2" ] || fail "$1 is '$(cat "$1" 2>&1)', want '$2'"; }
gone() { [ ! -e "$1" ] && [ ! -L "$1" ] || fail "$1 should be deleted"; }
is /etc/e2e-release "erofs-e2e layer 1"
is /data/keep.txt "keep from layer 1"
is /data/overwrite.txt "layer 2 version"
is /data/layer2.txt "added in layer 2"
is /data/layer2-hardlink.txt "added in layer 2"
[ "$(stat -c %i /data/layer2.txt)" = "$(stat -c %i /data/layer2-hardlink.txt)" ] || fail "hard link broken"
is /etc/layer2.conf "setting=2"
[ "$(/opt/app/run.sh)" = "app from layer 2" ] || fail "/opt/app/run.sh"
is /layer3.txt "added in layer 3"
gone /data/doomed.txt
gone /data/doomed-dir
gone /etc/short-lived.conf
gone /data/.wh.doomed.txt
gone /opaque/old1.txt
gone /opaque/old-sub
gone /opaque/.wh..wh..opq
[ "$(ls -A /opaque | tr '\n' ' ')" = "new-sub new.txt " ] || fail "/opaque holds: $(ls -A /opaque)"
is /opaque/new.txt "new in layer 3"
is /opaque/new-sub/y.txt "new in layer 3"
[ "$(ls -A /data | tr '\n' ' ')" = "keep.txt layer2-hardlink.txt layer2.txt overwrite.txt " ] ||
	fail "/data holds: $(ls -A /data)"
[ "$(stat -c %a /tmp)" = 1777 ] || fail "/tmp mode $(stat -c %a /tmp)"
echo "image content: OK (layer 1, 2, 3 files, whiteouts, opaque dir)"
EOF
}

case ${1:-} in
test)
	[ $# -eq 2 ] || die "usage: image.sh test OUT.tar"
	build_test_image "$2"
	;;
from-tars)
	[ $# -ge 4 ] || die "usage: image.sh from-tars OUT.tar NAME LAYER.tar..."
	out=$2 name=$3
	shift 3
	oci_archive "$out" "$name" "$@"
	;;
test-expect) test_expect ;;
test-name) echo "$TEST_IMAGE_NAME" ;;
*) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
