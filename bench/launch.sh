#!/usr/bin/env bash
# Container-launch benchmark: time from "image content present, nothing
# unpacked" to "the container's process has started", per snapshotter.
#
#   bench/launch.sh
#
# Each mode gets its own private containerd (tests/e2e/lib.sh). The image (a
# Debian root filesystem made with debootstrap, in 4 layers) is imported with
# --no-unpack; then, RUNS times: drop the page cache, `ctr run -d` a container
# whose command writes a marker file into a bind-mounted host directory, and
# stop the clock when the marker appears (unpack of every layer + snapshot
# prepare + mounts + runc start + exec of the process). Between runs the
# container and every snapshot are removed (and the backend directories are
# waited for), so each run unpacks again.
#
# Modes (BENCH_MODES, default "overlayfs erofs erofs-immutable proxy-walking proxy proxy-mkfs proxy-immutable proxy-sync proxy-noflush overlayfs-userns erofs-userns proxy-userns proxy-block"):
#   overlayfs         containerd's overlayfs snapshotter (walking differ)
#   erofs             containerd's EROFS snapshotter + EROFS differ
#   erofs-immutable   the same with set_immutable = true
#   proxy-walking     our daemon (BENCH_PROXY_CMD) as snapshotter, containerd's walking differ
#   proxy             our daemon as snapshotter and differ (diff proxy plugin), set_immutable off;
#                     layers written by the library's built-in EROFS writer
#   proxy-mkfs        the same with --mkfs-option -x2 (BENCH_PROXY_MKFS_CMD), an option only
#                     mkfs.erofs implements: layers through mkfs.erofs --tar=f, the path before
#                     the built-in writer
#   proxy-immutable   the same with set_immutable on (BENCH_PROXY_IMMUTABLE_CMD)
#   proxy-sync        the same with sync_commit on (BENCH_PROXY_SYNC_CMD): every commit
#                     durable when it returns, one flush per layer
#   proxy-noflush     the same with durable_before_use off (BENCH_PROXY_NOFLUSH_CMD): no
#                     flush at all (proxy flushes the image's layers once, before the
#                     container's snapshot is handed out)
#   proxy-block       proxy in block mode (BENCH_PROXY_BLOCK_CMD, default
#                     'ours --default-size 1Gi'): the container's writable layer an
#                     ext4 image made and mounted at prepare
# and a container in a user namespace (ctr run --uidmap 0:100000:65536 --gidmap
# 0:100000:65536; the marker directory is world-writable), their ratio against
# overlayfs-userns:
#   overlayfs-userns  containerd's overlayfs without --remap-labels: containerd's
#                     client makes a chowned copy of the image (its chown path)
#   erofs-userns      containerd's EROFS snapshotter, --remap-labels (it advertises
#                     remap-ids): ID-mapped layers
#   proxy-userns      proxy, --remap-labels, declared with remap-ids and
#                     only-remap-ids: ID-mapped layers
# The daemon commands are templates with {socket}, {root} and {containerd};
# 'ours [ARGS]' (the default: BENCH_PROXY_CMD=ours,
# BENCH_PROXY_MKFS_CMD='ours --mkfs-option -x2',
# BENCH_PROXY_IMMUTABLE_CMD='ours --set-immutable', BENCH_PROXY_SYNC_CMD='ours --sync-commit',
# BENCH_PROXY_NOFLUSH_CMD='ours --durable-before-use=false') builds
# bindings/go/cmd/erofs-snapshotter-grpc and runs it with --socket, --root and
# --containerd-address set; 'fake [ARGS]' runs tests/e2e/fakeproxy,
# containerd's EROFS snapshotter behind the proxy API (then pair it with
# BENCH_PROXY_DIFFER=erofs: it has no differ of its own). BENCH_PROXY_DIFFER
# (default proxy) is the differ of the proxy modes but proxy-walking
# modes. With the daemon's differ, the report also gives the time the daemon
# spent applying the 4 layers (its "layer applied" log lines) per run.
#
# Parallel unpack (a second table): containerd unpacks layers in parallel only
# on a pull through its transfer service, with max_concurrent_unpacks above 1
# and a snapshotter with the "rebase" capability. So for each mode of
# BENCH_PULL_MODES (default "overlayfs erofs proxy") and each N of
# BENCH_UNPACKS (default "1 2 4"; empty: no such table), a containerd with
# max_concurrent_unpacks = N (the proxy declared with capabilities = ["rebase"]
# when N > 1), the image imported with --no-unpack as above and also served by
# a local registry (go-containerregistry's, from tests/e2e/install.sh; the
# image pushed once), then BENCH_PULL_RUNS (default 3, at most BENCH_RUNS) times: drop the
# page cache, `ctr images pull --plain-http --snapshotter <sn>` (the manifest
# resolved from the registry, the blobs already in the content store: the
# pull's work is the unpack) and `ctr run -d` as above, timed together until
# the marker appears. Each run checks containerd's "image unpacked" record says
# parallel=true (N > 1) or false (N = 1), so a silent fall-back to a
# sequential unpack fails the benchmark. BENCH_MODES='' leaves the first table
# out.
#
# Other knobs: BENCH_RUNS (5), BENCH_CACHE (/var/cache/erofs-snapshotter-bench:
# rootfs and image, built once), BENCH_PACKAGES, BENCH_SUITE (bookworm),
# BENCH_MIRROR (http://deb.debian.org/debian), BENCH_OUT (a copy of the report),
# E2E_TMPDIR (/var/tmp: the filesystem measured; containerd's root, state and
# the proxy daemon's root are made there).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# On the root filesystem (/var/tmp is never a tmpfs), not /tmp, which may be one.
E2E_TMPDIR=${E2E_TMPDIR:-/var/tmp}
# shellcheck source=../tests/e2e/lib.sh
. "$HERE/../tests/e2e/lib.sh"
# shellcheck disable=SC2034 # read by lib.sh
E2E_INSTALL_ARGS=(--bench)
# shellcheck disable=SC2034 # read by lib.sh
E2E_NS=bench

BENCH_RUNS=${BENCH_RUNS:-5}
BENCH_MODES=${BENCH_MODES-overlayfs erofs erofs-immutable proxy-walking proxy proxy-mkfs proxy-immutable proxy-sync proxy-noflush overlayfs-userns erofs-userns proxy-userns proxy-block}
BENCH_UNPACKS=${BENCH_UNPACKS-1 2 4}
BENCH_PULL_MODES=${BENCH_PULL_MODES-overlayfs erofs proxy}
# Fewer than BENCH_RUNS by default: 9 configurations, overlayfs's runs about
# 25 s each with the removal of its 52,000 files.
BENCH_PULL_RUNS=${BENCH_PULL_RUNS:-$((BENCH_RUNS < 3 ? BENCH_RUNS : 3))}
BENCH_PROXY_CMD=${BENCH_PROXY_CMD:-ours}
BENCH_PROXY_MKFS_CMD=${BENCH_PROXY_MKFS_CMD:-ours --mkfs-option -x2}
BENCH_PROXY_IMMUTABLE_CMD=${BENCH_PROXY_IMMUTABLE_CMD:-ours --set-immutable}
BENCH_PROXY_SYNC_CMD=${BENCH_PROXY_SYNC_CMD:-ours --sync-commit}
BENCH_PROXY_NOFLUSH_CMD=${BENCH_PROXY_NOFLUSH_CMD:-ours --durable-before-use=false}
BENCH_PROXY_BLOCK_CMD=${BENCH_PROXY_BLOCK_CMD:-ours --default-size 1Gi}
# The user namespace of the *-userns modes.
USERNS_MAP=0:100000:65536
BENCH_PROXY_DIFFER=${BENCH_PROXY_DIFFER:-proxy}
BENCH_CACHE=${BENCH_CACHE:-/var/cache/erofs-snapshotter-bench}
BENCH_SUITE=${BENCH_SUITE:-bookworm}
BENCH_MIRROR=${BENCH_MIRROR:-http://deb.debian.org/debian}
BENCH_PACKAGES=${BENCH_PACKAGES:-python3,perl,git,npm,vim,tzdata,python3-pandas,python3-sympy}
BENCH_OUT=${BENCH_OUT:-/tmp/erofs-bench-$(date +%Y%m%d-%H%M%S).txt}
IMAGE_NAME=localhost/erofs-bench/debian:1
for n in $BENCH_UNPACKS; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_UNPACKS: numbers above 0, not '$n'"
done
[ -n "$BENCH_UNPACKS" ] || BENCH_PULL_MODES=

T_BENCH=$(now)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg) # the machine may be shared
PROC_MOUNT=   # /proc of the rootfs being built, unmounted on exit
BENCH_REGISTRY_PID= # the registry serving the image to pulls, for the whole run
BENCH_REGISTRY_LOG=
PULL_REF=
# The container's tree as the first pulled run saw it (check_tree).
TREE_REF=$(mktemp "$E2E_TMPDIR/bench-tree.XXXXXX")
bench_exit() {
	rm -f "$TREE_REF" "$TREE_REF.diff" "$TREE_REF.notes"
	[ -z "$PROC_MOUNT" ] || umount "$PROC_MOUNT"
	e2e_cleanup
	[ -z "$BENCH_REGISTRY_PID" ] || stop_pid "$BENCH_REGISTRY_PID"
	[ -z "$BENCH_REGISTRY_LOG" ] || rm -f "$BENCH_REGISTRY_LOG"
}
trap bench_exit EXIT
trap 'exit 130' INT TERM

# --- the image ---------------------------------------------------------------

cache_key() { echo "$BENCH_SUITE $BENCH_MIRROR $BENCH_PACKAGES v1" | sha256sum | cut -c1-12; }

# build_rootfs DIR: a Debian root filesystem in DIR (cached): debootstrap
# minbase, then apt-get install in a chroot (debootstrap's own --include does not
# resolve dependencies well enough for npm and the like).
build_rootfs() {
	local dir=$1 t0 tmp=$1.tmp
	if [ -f "$dir/.complete" ]; then
		log "rootfs: cached $dir"
		return 0
	fi
	t0=$(now)
	rm -rf "$tmp"
	log "rootfs: debootstrap --variant=minbase $BENCH_SUITE + apt-get install ${BENCH_PACKAGES//,/ } (one time, a few minutes)"
	debootstrap --variant=minbase "$BENCH_SUITE" "$tmp" "$BENCH_MIRROR" >"$BENCH_CACHE/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$BENCH_CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $BENCH_CACHE/debootstrap.log)"; }
	mount -t proc proc "$tmp/proc"
	PROC_MOUNT=$tmp/proc
	local rc=0
	# shellcheck disable=SC2086 # the package list is split on purpose
	{
		chroot "$tmp" apt-get update -qq &&
			chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends ${BENCH_PACKAGES//,/ } &&
			chroot "$tmp" apt-get clean
	} >>"$BENCH_CACHE/debootstrap.log" 2>&1 || rc=$?
	umount "$tmp/proc"
	PROC_MOUNT=
	[ $rc -eq 0 ] || { tail -n 20 "$BENCH_CACHE/debootstrap.log" >&2; die "apt-get install in the rootfs failed (log: $BENCH_CACHE/debootstrap.log)"; }
	# What an image would not carry: apt lists, logs.
	rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/log/* "$tmp"/var/cache/debconf/*-old
	rm -rf "$dir"
	mv "$tmp" "$dir"
	touch "$dir/.complete"
	log "rootfs: built in $(elapsed "$t0") s"
}

# build_image ROOTFS OUT: the OCI archive, 4 layers (cached).
#   1 base: everything but /usr/lib and /usr/share (their directories only)
#   2 /usr/share   3 /usr/lib   4 a small "app" layer
build_image() {
	local rootfs=$1 out=$2 t0 work
	if [ -f "$out" ]; then
		log "image: cached $out"
		return 0
	fi
	t0=$(now)
	work=$(mktemp -d "$BENCH_CACHE/layers.XXXXXX")
	local tar_opts=(--sort=name --numeric-owner --format=gnu -C "$rootfs")
	# No device nodes, no /proc, /sys contents: runc provides them.
	tar "${tar_opts[@]}" --exclude=./.complete --exclude='./dev/*' --exclude='./proc/*' \
		--exclude='./sys/*' --exclude='./usr/lib/*' --exclude='./usr/share/*' \
		-cf "$work/1-base.tar" .
	tar "${tar_opts[@]}" -cf "$work/2-usr-share.tar" ./usr/share
	tar "${tar_opts[@]}" -cf "$work/3-usr-lib.tar" ./usr/lib
	mkdir -p "$work/app/app" "$work/app/etc"
	printf '#!/bin/sh\necho app\n' >"$work/app/app/start.sh"
	chmod 0755 "$work/app/app/start.sh"
	echo "erofs-snapshotter launch benchmark image" >"$work/app/etc/bench-release"
	tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@1700000000 --format=gnu \
		-C "$work/app" -cf "$work/4-app.tar" .
	"$HERE/../tests/e2e/image.sh" from-tars "$out.tmp" "$IMAGE_NAME" \
		"$work/1-base.tar" "$work/2-usr-share.tar" "$work/3-usr-lib.tar" "$work/4-app.tar"
	rm -rf "$work"
	mv "$out.tmp" "$out"
	log "image: built in $(elapsed "$t0") s"
}

# --- one mode ----------------------------------------------------------------

MARKS=

snapshots_of() { ctr_ snapshots --snapshotter "$SN" ls | awk 'NR > 1 { print $1, ($2 ~ /^(Active|Committed|View)$/ ? "" : $2) }'; }

# remove_snapshots: every snapshot of the snapshotter, leaves first.
remove_snapshots() {
	local _ list keys parents k
	for _ in $(seq 1 30); do
		list=$(snapshots_of)
		[ -n "$list" ] || return 0
		keys=$(awk '{ print $1 }' <<<"$list")
		parents=$(awk 'NF > 1 { print $2 }' <<<"$list" | sort -u)
		for k in $keys; do
			grep -qxF -- "$k" <<<"$parents" || ctr_ snapshots --snapshotter "$SN" rm "$k" >/dev/null
		done
	done
	die "snapshots left: $(snapshots_of)"
}

# backend_dirs: snapshot (and trash) directories the backend still holds.
backend_dirs() {
	local d
	case $MODE in
	proxy*) d="$PROXY_ROOT/snapshots $PROXY_ROOT/trash" ;;
	*) d=$E2E_TMP/root/io.containerd.snapshotter.v1.$SN/snapshots ;;
	esac
	# shellcheck disable=SC2086
	find $d -mindepth 1 -maxdepth 1 2>/dev/null | wc -l
}

wait_backend_empty() {
	local i
	sync_gc
	for i in $(seq 1 1200); do
		[ "$(backend_dirs)" -eq 0 ] && return 0
		[ $((i % 50)) -ne 0 ] || sync_gc
		sleep 0.1
	done
	die "backend directories still there after 120 s"
}

# check_blob_flags: in an immutable mode every layer.erofs carries
# FS_IMMUTABLE_FL, in the others none does (so a mode measures what it says).
check_blob_flags() {
	local dir f attrs n=0
	# snapshots/<id>/layer.erofs in both; not the trash, which is being deleted.
	case $MODE in
	proxy*) dir=$PROXY_ROOT/snapshots ;;
	*) dir=$E2E_TMP/root/io.containerd.snapshotter.v1.$SN/snapshots ;;
	esac
	while IFS= read -r f; do
		n=$((n + 1))
		attrs=$(lsattr -d "$f" | cut -d' ' -f1)
		if [[ $MODE == *-immutable ]]; then
			[[ $attrs == *i* ]] || die "$f is not immutable ($attrs) in mode $MODE"
		else
			[[ $attrs != *i* ]] || die "$f is immutable in mode $MODE"
		fi
	done < <(find "$dir" -mindepth 2 -maxdepth 2 -name layer.erofs -type f)
	[[ $MODE != *-immutable ]] || [ $n -gt 0 ] || die "no layer.erofs under $dir"
}

# check_differ N: after run N of a mode with this project's differ, the daemon
# has logged "layer applied" for every layer of every run so far (the diff
# service did not fall back to the walking differ); with the walking differ,
# for none.
check_differ() {
	[[ $MODE == proxy* ]] && grep -q 'serving snapshots and diff APIs' "$E2E_TMP/proxy.log" || return 0
	local applied want=0
	applied=$(grep -c 'layer applied' "$E2E_TMP/proxy.log" || true)
	[ "$E2E_PROXY_DIFFER" != proxy ] || want=$((4 * $1))
	[ "$applied" -eq "$want" ] || die "mode $MODE: the daemon's differ applied $applied layers, want $want"
}

# check_unpack N: after run N of a pull, containerd has logged N unpacks
# ("image unpacked"), the last one parallel=true when max_concurrent_unpacks
# is above 1, parallel=false otherwise.
check_unpack() {
	local want=false lines
	[ "$E2E_UNPACKS" -le 1 ] || want=true
	lines=$(grep 'msg="image unpacked"' "$E2E_TMP/containerd.log" || true)
	[ "$(grep -c . <<<"$lines")" -eq "$1" ] ||
		die "mode $MODE, run $1: containerd logged $(grep -c . <<<"$lines") unpacks, want $1"
	tail -n1 <<<"$lines" | grep -q " parallel=$want" ||
		die "mode $MODE, max_concurrent_unpacks $E2E_UNPACKS: containerd's unpack was not parallel=$want: $(tail -n1 <<<"$lines")"
}

# check_tree ID: the running container ID's root file system (every path
# with its type, mode, owner, and size for files, target for links; not
# times) must be the one the first pulled run saw (overlayfs, sequential, by
# default), whatever the snapshotter, differ and number of parallel unpacks:
# whiteouts and opaque directories lost or misapplied by a parallel unpack
# (containerd #13030) change it. A difference fails the benchmark in this
# project's modes; in containerd's EROFS modes it is noted in the report
# (mkfs.erofs gives a directory a layer implies without an entry mode 0777).
check_tree() {
	local id=$1 listing
	listing=$(ctr_ tasks exec --exec-id "tree-$id" "$id" /bin/sh -c \
		"find / -xdev \( -type f -printf '%p f %m %U %G %s\n' \) -o \( -type l -printf '%p l %l\n' \) -o -printf '%p %y %m %U %G\n' | LC_ALL=C sort") ||
		die "mode $MODE: listing the container's tree failed"
	[ "$(grep -c . <<<"$listing")" -gt 50000 ] || die "mode $MODE: the container's tree has only $(grep -c . <<<"$listing") entries"
	if [ ! -s "$TREE_REF" ]; then
		printf '%s\n' "$listing" >"$TREE_REF"
		log "tree: $(grep -c . "$TREE_REF") entries (the reference: mode $MODE, max_concurrent_unpacks $E2E_UNPACKS)"
	elif ! diff <(printf '%s\n' "$listing") "$TREE_REF" >"$TREE_REF.diff"; then
		local what
		what="mode $MODE, max_concurrent_unpacks $E2E_UNPACKS: the container's tree differs from the first pulled run's ($(grep -c '^[<>]' "$TREE_REF.diff") lines; < this run, > the first): $(grep '^[<>]' "$TREE_REF.diff" | head -n 6 | tr '\n' ';')"
		[[ $MODE == erofs* ]] || die "$what"
		log "WARNING: $what"
		echo "$what" >>"$TREE_REF.notes"
	else
		log "tree: the same $(grep -c . "$TREE_REF") entries as the reference"
	fi
}

# userns_args: ctr run's flags for the mode's user namespace, if any.
userns_args() {
	case $MODE in
	overlayfs-userns) echo "--uidmap $USERNS_MAP --gidmap $USERNS_MAP" ;;
	*-userns) echo "--uidmap $USERNS_MAP --gidmap $USERNS_MAP --remap-labels" ;;
	esac
}

# one_run N [REF]: prints "launch_seconds ctr_returned_seconds pull_seconds".
# With REF, the clock starts with `ctr images pull REF` (pull_seconds: until it
# returned) and the container runs REF; without, pull_seconds is "-".
one_run() {
	local n=$1 ref=${2:-} image=$IMAGE_NAME id=bench-$1 t0 t_ctr t_start t_pull=- _
	sync
	echo 3 >/proc/sys/vm/drop_caches
	t0=$(now)
	if [ -n "$ref" ]; then
		ctr_ images pull --plain-http --snapshotter "$SN" "$ref" >/dev/null
		t_pull=$(elapsed "$t0")
		image=$ref
	fi
	# shellcheck disable=SC2046 # the user namespace's flags, split on purpose
	ctr_ run -d --snapshotter "$SN" --runc-root "$RUNC_ROOT" --fifo-dir "$E2E_TMP/fifo" \
		--mount "type=bind,src=$MARKS,dst=/bench,options=rbind:rw" $(userns_args) \
		"$image" "$id" /bin/sh -c "echo started > /bench/$id; exec sleep 600" >/dev/null
	t_ctr=$(elapsed "$t0")
	for _ in $(seq 1 6000); do
		[ -e "$MARKS/$id" ] && break
		sleep 0.005
	done
	t_start=$(elapsed "$t0")
	[ -e "$MARKS/$id" ] || die "run $n: the container's process did not start"
	ctr_ tasks ls | grep -qE "^$id +[0-9]+ +RUNNING" || die "run $n: task not RUNNING"
	check_blob_flags
	check_differ "$n"
	[ -z "$ref" ] || check_unpack "$n"
	# Once per configuration, after the clock: the tree is exactly right.
	[ -z "$ref" ] || [ "$n" -ne 1 ] || check_tree "$id"
	# Tear down: task, container (its active snapshot), the image's snapshots.
	ctr_ tasks kill -s SIGKILL "$id" >/dev/null
	for _ in $(seq 1 100); do
		ctr_ tasks delete "$id" >/dev/null 2>&1 && break
		sleep 0.1
	done
	ctr_ containers delete "$id"
	if [ "$MODE" = overlayfs-userns ]; then
		# containerd's chowned copy is collected with the container, but its
		# parent keeps it as a child in containerd's metadata: the image's
		# snapshots can then only go with the image (collected as a whole).
		ctr_ images rm --sync "$image" >/dev/null
		local _
		for _ in $(seq 1 30); do
			[ -n "$(snapshots_of)" ] || break
			sync_gc
			sleep 0.2
		done
		[ -z "$(snapshots_of)" ] || die "snapshots left after removing the image: $(snapshots_of)"
		ctr_ images import --no-unpack "$IMAGE_TAR" >/dev/null
	fi
	remove_snapshots
	wait_backend_empty
	echo "$t_start $t_ctr $t_pull"
}

declare -A RESULT_MEDIAN RESULT_ALL RESULT_NOTE RESULT_APPLY RESULT_PULL

# apply_seconds: per run, the seconds the daemon's differ spent on the run's 4
# layers (the "d" field of its "layer applied" lines, 4 lines a run).
apply_seconds() {
	grep 'layer applied' "$E2E_TMP/proxy.log" | sed -n 's/.* d=\([^ ]*\).*/\1/p' | awk '
		/ns$/ { v = $0 + 0; v /= 1e9 } /(µs|us)$/ { v = $0 + 0; v /= 1e6 }
		/ms$/ { v = $0 + 0; v /= 1e3 } /[0-9]s$/ { v = $0 + 0 }
		{ sum += v; if (NR % 4 == 0) { printf "%.3f\n", sum; sum = 0 } }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# start_mode MODE: a private containerd (and for a proxy mode the daemon)
# configured for MODE, the image imported without unpacking. Sets MODE, SN,
# MARKS, E2E_PROXY_DIFFER. Returns 1 (after noting why in RESULT_NOTE[KEY])
# when the mode cannot run. KEY (default MODE) names the result.
start_mode() {
	MODE=$1
	local key=${2:-$1}
	SN=$(snapshotter_of "$MODE")
	local proxy_tmpl='' immutable=false
	E2E_USERNS=
	case $MODE in
	overlayfs | erofs | overlayfs-userns | erofs-userns) ;;
	proxy-userns) proxy_tmpl=$BENCH_PROXY_CMD E2E_PROXY_DIFFER=$BENCH_PROXY_DIFFER E2E_USERNS=1 ;;
	proxy-block) proxy_tmpl=$BENCH_PROXY_BLOCK_CMD E2E_PROXY_DIFFER=$BENCH_PROXY_DIFFER ;;
	erofs-immutable) immutable=true ;;
	proxy-walking) proxy_tmpl=$BENCH_PROXY_CMD E2E_PROXY_DIFFER=walking ;;
	proxy) proxy_tmpl=$BENCH_PROXY_CMD E2E_PROXY_DIFFER=$BENCH_PROXY_DIFFER ;;
	proxy-mkfs) proxy_tmpl=$BENCH_PROXY_MKFS_CMD E2E_PROXY_DIFFER=$BENCH_PROXY_DIFFER ;;
	proxy-immutable) proxy_tmpl=$BENCH_PROXY_IMMUTABLE_CMD E2E_PROXY_DIFFER=$BENCH_PROXY_DIFFER ;;
	proxy-sync) proxy_tmpl=$BENCH_PROXY_SYNC_CMD E2E_PROXY_DIFFER=$BENCH_PROXY_DIFFER ;;
	proxy-noflush) proxy_tmpl=$BENCH_PROXY_NOFLUSH_CMD E2E_PROXY_DIFFER=$BENCH_PROXY_DIFFER ;;
	*) die "unknown mode $MODE" ;;
	esac
	if [[ $MODE == proxy* ]] && [ -z "$proxy_tmpl" ]; then
		log "SKIP mode $MODE: no daemon command"
		RESULT_NOTE[$key]="skipped: no daemon command"
		return 1
	fi

	echo >&2
	log "=== mode $key (snapshotter $SN)"
	e2e_init "bench-$MODE"
	MARKS=$E2E_TMP/marks
	mkdir -p "$MARKS"
	# A container's root in a user namespace is host uid 100000.
	chmod 0777 "$MARKS"
	[ -z "$proxy_tmpl" ] || proxy_start "$proxy_tmpl"
	ctd_config "$MODE" "$immutable"
	# Debug level for pulls: containerd's "image unpacked ... parallel=" record.
	E2E_CTD_LOG_LEVEL=$([ -n "$E2E_UNPACKS" ] && echo debug || echo info) ctd_start
	local t0
	t0=$(now)
	ctr_ images import --no-unpack "$IMAGE_TAR" >/dev/null
	log "import --no-unpack: $(elapsed "$t0") s"
	[ -z "$(snapshots_of)" ] || die "snapshots exist before the first run"
}

# run_mode KEY RUNS [REF]: RUNS runs (one_run) in the started mode, their
# times as results of KEY.
run_mode() {
	local key=$1 runs=$2 ref=${3:-} n times=() pulls=() line t_start t_ctr t_pull
	for n in $(seq 1 "$runs"); do
		line=$(one_run "$n" "$ref")
		read -r t_start t_ctr t_pull <<<"$line"
		times+=("$t_start")
		[ "$t_pull" = - ] || pulls+=("$t_pull")
		log "run $n: process started after $t_start s (ctr run -d returned after $t_ctr s$([ "$t_pull" = - ] || echo ", the pull after $t_pull s"))"
	done
	RESULT_ALL[$key]="${times[*]}"
	RESULT_MEDIAN[$key]=$(printf '%s\n' "${times[@]}" | median)
	[ ${#pulls[@]} -eq 0 ] || RESULT_PULL[$key]=$(printf '%s\n' "${pulls[@]}" | median)
	if [[ $MODE == proxy* ]] && [ "$E2E_PROXY_DIFFER" = proxy ]; then
		local applies
		applies=$(apply_seconds)
		[ -z "$applies" ] || RESULT_APPLY[$key]=$(median <<<"$applies")
	fi
}

# bench_mode MODE: the first table's runs (ctr run's client-side unpack).
bench_mode() {
	E2E_UNPACKS=
	start_mode "$1" || return 0
	run_mode "$1" "$BENCH_RUNS"
	e2e_cleanup
}

# bench_pull MODE N: the second table's runs, pulls with max_concurrent_unpacks N.
bench_pull() {
	E2E_UNPACKS=$2
	start_mode "$1" "$1/u$2" || return 0
	log "max_concurrent_unpacks = $2$([ "$(proxy_rebase)" = 1 ] && [[ $1 == proxy* ]] && echo ', rebase capability declared')"
	run_mode "$1/u$2" "$BENCH_PULL_RUNS" "$PULL_REF"
	e2e_cleanup
	E2E_UNPACKS=
}

# serve_image: a registry on localhost for the whole run, holding the image
# (pushed from a throw-away containerd); sets PULL_REF.
serve_image() {
	local t0
	t0=$(now)
	E2E_UNPACKS=
	e2e_init bench-push
	ctd_config overlayfs
	ctd_start
	ctr_ images import --no-unpack "$IMAGE_TAR" >/dev/null
	BENCH_REGISTRY_LOG=$(mktemp "$E2E_TMPDIR/bench-registry.XXXXXX")
	registry_start "$BENCH_REGISTRY_LOG"
	# Kept past this containerd's cleanup (bench_exit stops it).
	BENCH_REGISTRY_PID=$REGISTRY_PID
	REGISTRY_PID=
	PULL_REF=$REGISTRY/erofs-bench/debian:1
	ctr_ images push --plain-http "$PULL_REF" "$IMAGE_NAME" >/dev/null
	e2e_cleanup
	log "image pushed to $PULL_REF in $(elapsed "$t0") s"
}

# --- main --------------------------------------------------------------------

e2e_init bench-setup # install (with debootstrap) and check root
mkdir -p "$BENCH_CACHE"
KEY=$(cache_key)
ROOTFS=$BENCH_CACHE/rootfs-$BENCH_SUITE-$KEY
IMAGE_TAR=$BENCH_CACHE/image-$BENCH_SUITE-$KEY.tar
build_rootfs "$ROOTFS"
build_image "$ROOTFS" "$IMAGE_TAR"
e2e_cleanup

ROOTFS_FILES=$(find "$ROOTFS" -xdev -not -path "$ROOTFS/dev/*" | wc -l)
ROOTFS_MB=$(du -sm --exclude=./dev "$ROOTFS" | cut -f1)
IMAGE_MB=$(($(stat -c %s "$IMAGE_TAR") / 1048576))

for m in $BENCH_MODES; do
	bench_mode "$m"
done
if [ -n "$BENCH_PULL_MODES" ]; then
	serve_image
	for m in $BENCH_PULL_MODES; do
		for u in $BENCH_UNPACKS; do
			bench_pull "$m" "$u"
		done
	done
fi

# --- report ------------------------------------------------------------------

BENCH_SECONDS=$(elapsed "$T_BENCH")
TMP_FS=$(findmnt -no FSTYPE,SOURCE --target "$E2E_TMPDIR" | head -1 | tr -s ' ')
{
	echo "erofs-snapshotter launch benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r); load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
	echo "containerd root and snapshots: $E2E_TMPDIR on $TMP_FS; $("$E2E_BIN/containerd" --version | awk '{ print "containerd", $3 }'), $(runc --version | head -1), $(mkfs.erofs --version 2>&1 | head -1)"
	echo "image: Debian $BENCH_SUITE minbase + $BENCH_PACKAGES; $ROOTFS_FILES files, $ROOTFS_MB MiB unpacked, $IMAGE_MB MiB as gzip layers, 4 layers"
	echo "per run: sync; echo 3 > /proc/sys/vm/drop_caches; then timed until /bench/<id> exists:"
	echo "  ctr run -d --snapshotter <sn> --mount type=bind,src=<marks>,dst=/bench,options=rbind:rw $IMAGE_NAME <id> /bin/sh -c 'echo started > /bench/<id>; exec sleep 600'"
	echo "  (image imported with ctr images import --no-unpack; all snapshots removed between runs)"
	for m in $BENCH_MODES $BENCH_PULL_MODES; do
		case $m in
		proxy-walking) echo "$m: daemon '$BENCH_PROXY_CMD', differ walking" ;;
		proxy) echo "$m: daemon '$BENCH_PROXY_CMD', differ $BENCH_PROXY_DIFFER" ;;
		proxy-mkfs) echo "$m: daemon '$BENCH_PROXY_MKFS_CMD', differ $BENCH_PROXY_DIFFER" ;;
		proxy-immutable) echo "$m: daemon '$BENCH_PROXY_IMMUTABLE_CMD', differ $BENCH_PROXY_DIFFER" ;;
		proxy-sync) echo "$m: daemon '$BENCH_PROXY_SYNC_CMD', differ $BENCH_PROXY_DIFFER" ;;
		proxy-noflush) echo "$m: daemon '$BENCH_PROXY_NOFLUSH_CMD', differ $BENCH_PROXY_DIFFER" ;;
		proxy-block) echo "$m: daemon '$BENCH_PROXY_BLOCK_CMD', differ $BENCH_PROXY_DIFFER" ;;
		proxy-userns) echo "$m: daemon '$BENCH_PROXY_CMD', differ $BENCH_PROXY_DIFFER, capabilities remap-ids and only-remap-ids; ctr run --uidmap $USERNS_MAP --gidmap $USERNS_MAP --remap-labels" ;;
		erofs-userns) echo "$m: ctr run --uidmap $USERNS_MAP --gidmap $USERNS_MAP --remap-labels (ID-mapped layers)" ;;
		overlayfs-userns) echo "$m: ctr run --uidmap $USERNS_MAP --gidmap $USERNS_MAP (containerd's chowned copy of the image)" ;;
		esac
	done | sort -u
	echo "  ('ours' is bindings/go/cmd/erofs-snapshotter-grpc --socket {socket} --root {root} --containerd-address {containerd}; differ proxy: its own, as diff proxy plugin)"
	echo "  (apply_s: with the daemon's differ, the seconds it spent applying the 4 layers in a run, summed, median)"
	fmt2() { [ -n "${1:-}" ] && printf '%.2f' "$1" || echo -; }
	ratio() { [ -n "${1:-}" ] && [ -n "${2:-}" ] && echo "$1 $2" | awk '{ printf "%.2fx", $1 / $2 }' || echo -; }
	if [ -n "$BENCH_MODES" ]; then
		echo
		echo "Unpacked by ctr run (client-side, layer after layer), $BENCH_RUNS runs per mode:"
		echo "  (vs_overlay: a *-userns mode against overlayfs-userns, containerd's chown path; the others against overlayfs)"
		printf '%-16s %10s %10s %8s   %s\n' mode median_s vs_overlay apply_s "runs (s)"
		for m in $BENCH_MODES; do
			base=${RESULT_MEDIAN[overlayfs]:-}
			[[ $m != *-userns ]] || base=${RESULT_MEDIAN[overlayfs-userns]:-}
			if [ -n "${RESULT_MEDIAN[$m]:-}" ]; then
				printf '%-16s %10.2f %10s %8s   %s\n' "$m" "${RESULT_MEDIAN[$m]}" \
					"$(ratio "${RESULT_MEDIAN[$m]}" "$base")" "$(fmt2 "${RESULT_APPLY[$m]:-}")" \
					"$(for t in ${RESULT_ALL[$m]}; do printf '%.2f ' "$t"; done)"
			else
				printf '%-16s %10s %10s %8s   %s\n' "$m" - - - "${RESULT_NOTE[$m]:-}"
			fi
		done
		if [ -n "${RESULT_MEDIAN[proxy-block]:-}" ] && [ -n "${RESULT_MEDIAN[proxy]:-}" ]; then
			echo "  block mode against directory mode: proxy-block / proxy = $(ratio "${RESULT_MEDIAN[proxy-block]}" "${RESULT_MEDIAN[proxy]}")"
		fi
	fi
	if [ -n "$BENCH_PULL_MODES" ]; then
		echo
		echo "Pulled (ctr images pull --plain-http --snapshotter <sn> $PULL_REF, through the transfer service, then ctr run -d as above; the blobs already in the content store) with max_concurrent_unpacks = unpacks (above 1: parallel unpack, the proxy declared with capabilities = [\"rebase\"]), $BENCH_PULL_RUNS runs each:"
		echo "  (vs_overlay: against overlayfs with the same unpacks; vs_u1: against the same mode with unpacks 1; pull_s: until ctr images pull returned)"
		printf '%-16s %7s %9s %10s %7s %7s %8s   %s\n' mode unpacks median_s vs_overlay vs_u1 pull_s apply_s "runs (s)"
		for m in $BENCH_PULL_MODES; do
			for u in $BENCH_UNPACKS; do
				k=$m/u$u
				if [ -n "${RESULT_MEDIAN[$k]:-}" ]; then
					printf '%-16s %7s %9.2f %10s %7s %7s %8s   %s\n' "$m" "$u" "${RESULT_MEDIAN[$k]}" \
						"$(ratio "${RESULT_MEDIAN[$k]}" "${RESULT_MEDIAN[overlayfs/u$u]:-}")" \
						"$(ratio "${RESULT_MEDIAN[$k]}" "${RESULT_MEDIAN[$m/u1]:-}")" \
						"$(fmt2 "${RESULT_PULL[$k]:-}")" "$(fmt2 "${RESULT_APPLY[$k]:-}")" \
						"$(for t in ${RESULT_ALL[$k]}; do printf '%.2f ' "$t"; done)"
				else
					printf '%-16s %7s %9s %10s %7s %7s %8s   %s\n' "$m" "$u" - - - - - "${RESULT_NOTE[$k]:-}"
				fi
			done
		done
	fi
	echo
	if [ -n "$BENCH_UNPACKS" ] && [ -n "$BENCH_PULL_MODES" ]; then
		echo "Trees: each pulled configuration's container listed (find / -xdev: path, type, mode, owner, file size, link target) and compared with the first's (mode ${BENCH_PULL_MODES%% *}, unpacks ${BENCH_UNPACKS%% *});"
		if [ -s "$TREE_REF.notes" ]; then
			echo "  differences (this project's modes would have failed the benchmark):"
			sed 's/^/  /' "$TREE_REF.notes"
		else
			echo "  all equal."
		fi
		echo
	fi
	echo "whole benchmark run: $BENCH_SECONDS s (bench/launch.sh, BENCH_RUNS=$BENCH_RUNS BENCH_UNPACKS='$BENCH_UNPACKS' BENCH_PULL_RUNS=$BENCH_PULL_RUNS)"
} | tee "$BENCH_OUT"
log "report saved to $BENCH_OUT"
