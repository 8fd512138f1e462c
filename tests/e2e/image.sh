#!/usr/bin/env bash
# Build OCI image archives locally, with no registry: the OCI image-layout tar
# (oci-layout, index.json, blobs/sha256/...) that `ctr images import` accepts,
# with gzip layers, diffIDs in the config, and a linux/amd64 config.
# Same inputs give the same bytes (sorted tar entries, fixed mtimes and owners,
# gzip -n), so the digests are stable from run to run.
#
#   image.sh test OUT.tar
#       The e2e test image, localhost/erofs-e2e/test:1, three layers, each with
#       whiteouts (.wh.NAME) and an opaque directory (.wh..wh..opq), so that an
#       unpack that loses them (containerd issue #13030: parallel unpack) shows
#       in every layer position:
#         1  busybox-static base: /bin/busybox and applet symlinks, /etc, /data;
#            a whiteout of a name no layer below has and of one layer 3 adds,
#            an opaque /base-opaque
#         2  adds files (one hard link, one owned by 1000:1000), overwrites
#            /data/overwrite.txt; deletes a file and two directories of layer 1
#            (one re-created by layer 3), makes /opaque2 opaque (and 0750,
#            1001:1002)
#         3  deletes a file and a directory of layer 1 and a file of layer 2,
#            makes /opaque opaque over layer 1 and /multi over layers 1 and 2,
#            adds to layer 2's opaque /opaque2 and to layer 1's /base-opaque
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

# layer_tar DIR OUT: a reproducible uncompressed tar of DIR's contents, with
# the numeric owners its files have (build_test_image sets them).
layer_tar() {
	tar -C "$1" --sort=name --mtime="@$MTIME" --numeric-owner \
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
	# The layers carry owners other than root (chown).
	[ "$(id -u)" = 0 ] || die "image.sh test: run as root (the layers have files owned by other users)"
	local work
	workdir work e2e-image
	umask 022

	# Layer 1: the base; a whiteout and an opaque directory already here, where
	# they hide nothing (they must not show either).
	local l1=$work/l1 a
	mkdir -p "$l1"/{bin,etc,data/doomed-dir/sub,data/doomed-dir-2/sub,data/recreated,proc,sys,dev,root,tmp} \
		"$l1"/{opaque/old-sub,opaque2/old-sub,multi,base-opaque}
	chmod 1777 "$l1/tmp"
	chmod 0700 "$l1/root"
	cp "$busybox" "$l1/bin/busybox"
	chmod 0755 "$l1/bin/busybox"
	for a in sh cat ls test [ echo mkdir rm touch stat find grep wc sleep true false \
		readlink head id printf sort tr uname env diff; do
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
	write "$l1/data/doomed-by-2.txt" "deleted by layer 2"
	write "$l1/data/doomed-dir-2/c.txt" "in a directory deleted by layer 2"
	write "$l1/data/doomed-dir-2/sub/d.txt" "deeper in a directory deleted by layer 2"
	write "$l1/data/recreated/old.txt" "deleted with its directory by layer 2"
	write "$l1/opaque/old1.txt" "hidden by the opaque dir of layer 3"
	write "$l1/opaque/old-sub/x.txt" "hidden by the opaque dir of layer 3"
	write "$l1/opaque2/old.txt" "hidden by the opaque dir of layer 2"
	write "$l1/opaque2/old-sub/z.txt" "hidden by the opaque dir of layer 2"
	write "$l1/multi/one.txt" "hidden by the opaque dir of layer 3"
	write "$l1/base-opaque/base.txt" "in the opaque dir of layer 1"
	: >"$l1/base-opaque/.wh..wh..opq"
	: >"$l1/data/.wh.never-existed"
	: >"$l1/data/.wh.later.txt"

	# Layer 2: additions, an overwrite, whiteouts of layer 1, an opaque dir.
	local l2=$work/l2
	mkdir -p "$l2"/{data,etc,opt/app,opaque2,multi}
	write "$l2/data/overwrite.txt" "layer 2 version"
	write "$l2/data/layer2.txt" "added in layer 2"
	ln "$l2/data/layer2.txt" "$l2/data/layer2-hardlink.txt"
	write "$l2/data/owned.txt" "owned by 1000:1000, mode 0640"
	write "$l2/etc/layer2.conf" "setting=2"
	write "$l2/etc/short-lived.conf" "added in layer 2, deleted by layer 3"
	printf '#!/bin/sh\necho app from layer 2\n' >"$l2/opt/app/run.sh"
	chmod 0755 "$l2/opt/app/run.sh"
	: >"$l2/data/.wh.doomed-by-2.txt"
	: >"$l2/data/.wh.doomed-dir-2"
	: >"$l2/data/.wh.recreated"
	: >"$l2/opaque2/.wh..wh..opq"
	write "$l2/opaque2/new2.txt" "new in layer 2"
	write "$l2/multi/two.txt" "hidden by the opaque dir of layer 3"

	# Layer 3: whiteouts of layers 1 and 2, opaque dirs, additions.
	local l3=$work/l3
	mkdir -p "$l3"/{data/recreated,etc,opaque/new-sub,opaque2,multi,base-opaque}
	: >"$l3/data/.wh.doomed.txt"
	: >"$l3/data/.wh.doomed-dir"
	: >"$l3/etc/.wh.short-lived.conf"
	: >"$l3/opaque/.wh..wh..opq"
	: >"$l3/multi/.wh..wh..opq"
	write "$l3/opaque/new.txt" "new in layer 3"
	write "$l3/opaque/new-sub/y.txt" "new in layer 3"
	write "$l3/layer3.txt" "added in layer 3"
	write "$l3/data/recreated/new.txt" "re-created by layer 3"
	write "$l3/data/later.txt" "added in layer 3 (whited out in layer 1)"
	write "$l3/opaque2/from3.txt" "added by layer 3 to the opaque dir of layer 2"
	write "$l3/multi/three.txt" "new in layer 3"
	write "$l3/base-opaque/l3.txt" "added by layer 3 to the opaque dir of layer 1"

	local i
	for i in 1 2 3; do
		find "$work/l$i" -name '.wh.*' -exec chmod 0644 {} +
		chown -R 0:0 "$work/l$i"
	done
	chown 1000:1000 "$l2/data/owned.txt"
	chmod 0640 "$l2/data/owned.txt"
	# Layer 3's entry of /opaque2 (the parent of its new file) keeps the
	# directory's metadata, as a diff of the directory would.
	chown 1001:1002 "$l2/opaque2" "$l3/opaque2"
	chmod 0750 "$l2/opaque2" "$l3/opaque2"
	for i in 1 2 3; do
		layer_tar "$work/l$i" "$work/layer$i.tar"
	done
	oci_archive "$out" "$TEST_IMAGE_NAME" "$work/layer1.tar" "$work/layer2.tar" "$work/layer3.tar"
}

# The checks of the test image, run inside a container by busybox sh: the
# exact tree (every name, type, mode and owner outside /bin and the runtime's
# mount points), then the content of every file.
test_expect() {
	cat <<'EOF'
set -e
fail() { echo "CHECK FAILED: $*"; exit 1; }
is() { [ "$(cat "$1")" = "$2" ] || fail "$1 is '$(cat "$1" 2>&1)', want '$2'"; }
gone() { [ ! -e "$1" ] && [ ! -L "$1" ] || fail "$1 should be deleted"; }
# Everything on the root filesystem but the applets in /bin and the mount
# points the runtime adds (which show their own filesystems), sorted by path.
tree=$(find / -xdev | grep -v -e '^/bin/' -e '^/proc$' -e '^/sys$' -e '^/dev$' -e '^/run$' | sort |
	while IFS= read -r p; do stat -c '%n %F %a %u:%g' "$p"; done)
want='/ directory 755 0:0
/base-opaque directory 755 0:0
/base-opaque/base.txt regular file 644 0:0
/base-opaque/l3.txt regular file 644 0:0
/bin directory 755 0:0
/data directory 755 0:0
/data/keep.txt regular file 644 0:0
/data/later.txt regular file 644 0:0
/data/layer2-hardlink.txt regular file 644 0:0
/data/layer2.txt regular file 644 0:0
/data/overwrite.txt regular file 644 0:0
/data/owned.txt regular file 640 1000:1000
/data/recreated directory 755 0:0
/data/recreated/new.txt regular file 644 0:0
/etc directory 755 0:0
/etc/e2e-release regular file 644 0:0
/etc/group regular file 644 0:0
/etc/layer2.conf regular file 644 0:0
/etc/passwd regular file 644 0:0
/layer3.txt regular file 644 0:0
/multi directory 755 0:0
/multi/three.txt regular file 644 0:0
/opaque directory 755 0:0
/opaque/new-sub directory 755 0:0
/opaque/new-sub/y.txt regular file 644 0:0
/opaque/new.txt regular file 644 0:0
/opaque2 directory 750 1001:1002
/opaque2/from3.txt regular file 644 0:0
/opaque2/new2.txt regular file 644 0:0
/opt directory 755 0:0
/opt/app directory 755 0:0
/opt/app/run.sh regular file 755 0:0
/root directory 700 0:0
/tmp directory 1777 0:0'
if [ "$tree" != "$want" ]; then
	echo "tree differs (-: the image's, +: the container's):"
	printf '%s\n' "$want" >/tmp/.e2e-want
	printf '%s\n' "$tree" >/tmp/.e2e-tree
	diff /tmp/.e2e-want /tmp/.e2e-tree | grep -e '^-/' -e '^+/' || true
	rm -f /tmp/.e2e-want /tmp/.e2e-tree
	fail "the container's tree is not the image's"
fi
is /etc/e2e-release "erofs-e2e layer 1"
is /etc/passwd "root:x:0:0:root:/root:/bin/sh"
is /etc/group "root:x:0:"
is /data/keep.txt "keep from layer 1"
is /data/overwrite.txt "layer 2 version"
is /data/layer2.txt "added in layer 2"
is /data/layer2-hardlink.txt "added in layer 2"
[ "$(stat -c %i /data/layer2.txt)" = "$(stat -c %i /data/layer2-hardlink.txt)" ] || fail "hard link broken"
is /data/owned.txt "owned by 1000:1000, mode 0640"
is /etc/layer2.conf "setting=2"
[ "$(/opt/app/run.sh)" = "app from layer 2" ] || fail "/opt/app/run.sh"
is /layer3.txt "added in layer 3"
is /data/later.txt "added in layer 3 (whited out in layer 1)"
is /data/recreated/new.txt "re-created by layer 3"
is /opaque/new.txt "new in layer 3"
is /opaque/new-sub/y.txt "new in layer 3"
is /opaque2/new2.txt "new in layer 2"
is /opaque2/from3.txt "added by layer 3 to the opaque dir of layer 2"
is /multi/three.txt "new in layer 3"
is /base-opaque/base.txt "in the opaque dir of layer 1"
is /base-opaque/l3.txt "added by layer 3 to the opaque dir of layer 1"
# Named again for a clear message (the tree check above covers them).
for p in /data/doomed.txt /data/doomed-dir /data/doomed-by-2.txt /data/doomed-dir-2 \
	/data/recreated/old.txt /data/never-existed /data/.wh.never-existed /data/.wh.later.txt \
	/etc/short-lived.conf /data/.wh.doomed.txt /opaque/old1.txt /opaque/old-sub \
	/opaque/.wh..wh..opq /opaque2/old.txt /opaque2/old-sub /opaque2/.wh..wh..opq \
	/multi/one.txt /multi/two.txt /base-opaque/.wh..wh..opq; do
	gone "$p"
done
echo "image content: OK (the exact tree, whiteouts and opaque dirs of every layer, owners, modes, contents)"
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
*) sed -n '2,28p' "$0" >&2; exit 2 ;;
esac
