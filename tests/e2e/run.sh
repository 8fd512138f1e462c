#!/usr/bin/env bash
# End-to-end test: a private containerd 2.x, a three-layer image imported onto
# one snapshotter, containers run from it with ctr, then everything removed and
# checked gone.
#
#   tests/e2e/run.sh overlayfs   containerd's overlayfs snapshotter (checks the harness)
#   tests/e2e/run.sh erofs       containerd's EROFS snapshotter + EROFS differ
#   tests/e2e/run.sh proxy       an external snapshotter daemon (proxy plugin)
#
# proxy mode reads the daemon's command line from E2E_PROXY_CMD, where {socket},
# {root} and {containerd} (containerd's socket) are replaced by the paths this
# test chooses (all under its temporary directory):
#   E2E_PROXY_CMD='/path/to/erofs-snapshotter-grpc --socket {socket} --root {root} --containerd-address {containerd}'
# E2E_PROXY_CMD='ours [ARGS]' is that, built from bindings/go (or E2E_DAEMON_BIN).
# E2E_PROXY_CMD='fake [--snapshotter erofs|overlayfs]' runs tests/e2e/fakeproxy
# instead: containerd's own snapshotter behind the proxy API, which tests the
# harness's proxy plumbing without the real daemon.
# Optional: E2E_PROXY_CLEANUP_CMD (same placeholders), run after containerd's GC
# and before the leftover checks; E2E_PROXY_DIFFER, the differ paired with the
# proxy snapshotter: erofs (default, containerd's EROFS differ), walking, or
# proxy (the daemon's own differ, registered as diff proxy plugin
# <name>-differ on the same socket or E2E_PROXY_DIFF_SOCKET); E2E_PROXY_NAME
# (default erofs-ours): the snapshotter's name in containerd.
#
# E2E_UNPACKS=N: the image comes by a pull instead of an import: it is
# imported without unpacking, pushed to a local registry (go-containerregistry's,
# from install.sh), removed (content garbage-collected), then pulled with
# `ctr images pull --snapshotter` through containerd's transfer service with
# max_concurrent_unpacks = N. Above 1 the unpack must be parallel (containerd
# logs "image unpacked ... parallel=true"; a proxy snapshotter is declared with
# capabilities = ["rebase"]), at 1 sequential; in proxy mode a tap
# (tests/e2e/fakeproxy --tap, E2E_PROXY_TAP=0 leaves it out) between containerd
# and the daemon's snapshots service must show every layer prepared without a
# parent and committed onto the one below (parallel), or prepared on its
# parent (sequential).
#
# E2E_LOSE_LAYER=1 (proxy mode): after the unpack, a layer's blob is cut
# short with the daemon stopped; the restarted daemon must repair it.
# E2E_LOSE_RECORD=1 (proxy mode): the top layer's record is deleted with the
# daemon stopped; the restarted daemon must make containerd forget it.
# E2E_USERNS=1 (proxy mode): the daemon is declared with the remap-ids and
# only-remap-ids capabilities (as containerd's EROFS snapshotter advertises
# them), and a container runs in a user namespace (ctr run --uidmap --gidmap
# --remap-labels): the snapshot gets containerd's ID-mapping labels, the shim
# mounts its layers through ID-mapped mounts, the container sees the image's
# files owned by its root, and its writes land in the upper dir as host uid
# 100000; containerd never chowns (it would refuse: only-remap-ids).
# E2E_QUOTA=MiB (proxy mode, with the daemon run with --default-size of that
# many MiB, block mode): a container's writable layer is an ext4 image of that
# size: a write past it fails with ENOSPC inside, the image on the host never
# grows past it, and removing the container removes it.
# E2E_METRICS=1 (proxy mode, the daemon 'ours'): the daemon serves Prometheus
# metrics on a free local port; after the containers ran, a scrape must show
# the layers its differ applied and the requests it served.
# Other knobs: E2E_TMPDIR (default /tmp) holds the run's directory (containerd
# root and state, sockets); E2E_KEEP=1 keeps that directory; E2E_LOG_DIR
# (default /tmp/erofs-e2e-logs) receives the logs of a failed run.
# Needs root. Exit status 0 only if every step passed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

MODE=${1:-}
[ -n "$MODE" ] || { sed -n '2,40p' "$0" >&2; exit 2; }
SN=$(snapshotter_of "$MODE")
E2E_NS=e2e-$MODE
E2E_LOG_DIR=${E2E_LOG_DIR:-/tmp/erofs-e2e-logs}
IMAGE=$("$HERE/image.sh" test-name)
PULL=0
PARALLEL=0
if [ -n "$E2E_UNPACKS" ]; then
	[[ $E2E_UNPACKS =~ ^[1-9][0-9]*$ ]] || { echo "E2E_UNPACKS: a number above 0, not $E2E_UNPACKS" >&2; exit 2; }
	PULL=1
	[ "$E2E_UNPACKS" -le 1 ] || PARALLEL=1
fi
E2E_PROXY_TAP=${E2E_PROXY_TAP:-$PULL}
METRICS_URL=
if [ "${E2E_METRICS:-0}" = 1 ]; then
	[ "$MODE" = proxy ] && [[ ${E2E_PROXY_CMD:-} == ours* ]] || { echo "E2E_METRICS=1 needs proxy mode with E2E_PROXY_CMD=ours..." >&2; exit 2; }
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	E2E_PROXY_CMD="$E2E_PROXY_CMD --metrics-address 127.0.0.1:$port"
	METRICS_URL=http://127.0.0.1:$port/metrics
fi

PASSED=0
FAILED=0
RESULTS=()
T_START=$(now)

on_exit() {
	local rc=$?
	if [ $rc -ne 0 ]; then
		[ -z "$CURRENT_STEP" ] || echo "FAIL  $CURRENT_STEP"
		if [ -n "$E2E_TMP" ] && [ -d "$E2E_TMP" ]; then
			local keep
			keep=$E2E_LOG_DIR/$MODE-$(date +%Y%m%d-%H%M%S)
			mkdir -p "$keep"
			cp "$E2E_TMP"/*.log "$E2E_TMP"/config.toml "$keep"/ 2>/dev/null || true
			for f in "$E2E_TMP"/containerd.log "$E2E_TMP"/proxy.log "$E2E_TMP"/tap.log; do
				[ -s "$f" ] || continue
				echo "----- last lines of $(basename "$f") (all in $keep) -----" >&2
				tail -n 25 "$f" >&2
			done
		fi
	fi
	e2e_cleanup
	echo
	echo "== e2e $MODE: summary =="
	local r
	for r in "${RESULTS[@]}"; do echo "  $r"; done
	if [ -n "$CURRENT_STEP" ]; then
		FAILED=$((FAILED + 1))
		echo "  FAIL  $CURRENT_STEP (exit $rc)"
	elif [ $rc -ne 0 ]; then
		FAILED=$((FAILED + 1))
		echo "  FAIL  (aborted, exit $rc)"
	fi
	echo "e2e $MODE took $(elapsed "$T_START") s"
	echo "e2e-$MODE: $PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ] && [ $rc -eq 0 ] || exit 1
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# step NAME FUNCTION [ARGS...]: run a step in this shell (later steps use the
# state it sets) with errexit on; its failure ends the run through the EXIT trap,
# which records it as FAIL.
CURRENT_STEP=
step() {
	local t0
	CURRENT_STEP=$1
	shift
	t0=$(now)
	echo
	echo "== $CURRENT_STEP"
	"$@"
	PASSED=$((PASSED + 1))
	RESULTS+=("PASS  $CURRENT_STEP ($(elapsed "$t0") s)")
	echo "PASS  $CURRENT_STEP"
	CURRENT_STEP=
}

fail() { echo "  $*" >&2; return 1; }

# retry SECONDS CMD...: until CMD succeeds, for at most SECONDS.
retry() {
	local end=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt "$end" ] || return 1
		sleep 0.2
	done
}

snapshot_count() { ctr_ snapshots --snapshotter "$SN" ls | tail -n +2 | grep -c . || true; }
no_snapshots() { [ "$(snapshot_count)" -eq 0 ]; }
no_snapshots_after_gc() { no_snapshots || { sync_gc && no_snapshots; }; }

# Where the snapshotter keeps its snapshot directories.
snapshot_dir() {
	case $MODE in
	proxy) echo "$PROXY_ROOT/snapshots" ;;
	*) echo "$E2E_TMP/root/io.containerd.snapshotter.v1.$SN/snapshots" ;;
	esac
}

# --- steps -----------------------------------------------------------------

st_setup() {
	e2e_init "e2e-$MODE"
	"$HERE/image.sh" test "$E2E_TMP/test-image.tar"
}

st_proxy_start() {
	[ -n "${E2E_PROXY_CMD:-}" ] || fail "proxy mode needs E2E_PROXY_CMD, e.g. E2E_PROXY_CMD=ours or E2E_PROXY_CMD='/path/to/erofs-snapshotter-grpc --socket {socket} --root {root} --containerd-address {containerd}'"
	proxy_start "$E2E_PROXY_CMD"
	echo "  daemon pid $PROXY_PID, socket $PROXY_SOCK, root $PROXY_ROOT"
	if [ "$E2E_PROXY_TAP" = 1 ]; then
		tap_start
		echo "  tap pid $TAP_PID: containerd's snapshot requests go through $TAP_SOCK (log: tap.log)"
	fi
}

st_containerd_start() {
	ctd_config "$MODE"
	E2E_CTD_LOG_LEVEL=debug ctd_start
	grep -E 'max_concurrent_unpacks|capabilities' "$E2E_TMP/config.toml" | sed 's/^ */  config.toml: /' || true
	ctr_ version | sed 's/^/  /'
	local plugins
	plugins=$(ctr_ plugins ls)
	echo "$plugins" | grep -E "snapshotter.v1 +$SN |differ" | sed 's/^/  /'
	echo "$plugins" | grep -qE "io.containerd.snapshotter.v1 +$SN .* ok *$" ||
		fail "snapshotter $SN is not ok"
	if [ "$MODE" = erofs ] || { [ "$MODE" = proxy ] && [ "$E2E_PROXY_DIFFER" = erofs ]; }; then
		echo "$plugins" | grep -qE "io.containerd.differ.v1 +erofs .* ok *$" ||
			fail "differ erofs is not ok (mkfs.erofs with --tar on PATH?)"
	fi
	if [ "$MODE" = proxy ] && [ "$E2E_PROXY_DIFFER" = proxy ]; then
		echo "$plugins" | grep -qE "io.containerd.differ.v1 +$SN-differ .* ok *$" ||
			fail "differ $SN-differ is not ok"
	fi
}

st_import() {
	ctr_ images import --snapshotter "$SN" "$E2E_TMP/test-image.tar" | sed 's/^/  /'
	check_unpacked
}

# check_unpacked: after an import or a pull, the image is listed and its three
# layers are committed snapshots of $SN, written by the differ the mode says.
check_unpacked() {
	ctr_ images ls | sed 's/^/  /'
	ctr_ images ls -q | grep -qxF "$IMAGE" || fail "$IMAGE not listed after import"
	ctr_ snapshots --snapshotter "$SN" ls | sed 's/^/  /'
	# Import and pull unpack through the transfer service: the three layers
	# must be committed snapshots of this snapshotter now (not left for `ctr run`).
	local committed
	committed=$(ctr_ snapshots --snapshotter "$SN" ls | awk 'NR > 1 && $NF == "Committed"' | wc -l)
	[ "$committed" -eq 3 ] || fail "want 3 committed snapshots after import, got $committed"
	if [ "$MODE" = erofs ] || { [ "$MODE" = proxy ] && [ "$E2E_PROXY_DIFFER" = erofs ]; }; then
		local blobs applied
		blobs=$(find "$(snapshot_dir)" -maxdepth 2 -name layer.erofs | wc -l)
		[ "$blobs" -eq 3 ] || fail "want 3 layer.erofs blobs, found $blobs"
		# The EROFS differ logs each layer it converts ("diff applied ... mode=convert").
		applied=$(grep 'diff applied' "$E2E_TMP/containerd.log" | grep -c 'mode=' || true)
		echo "  $blobs layer.erofs blobs; layers applied by the EROFS differ: $applied"
		[ "$applied" -eq 3 ] || fail "the EROFS differ did not apply the 3 layers (walking differ used?)"
	fi
	if [ "$MODE" = proxy ] && [ "$E2E_PROXY_DIFFER" = proxy ]; then
		# The daemon logs each layer its differ applies ("layer applied").
		local applied
		applied=$(grep -c 'layer applied' "$E2E_TMP/proxy.log" || true)
		echo "  layers applied by the daemon's differ: $applied"
		[ "$applied" -eq 3 ] || fail "the daemon's differ did not apply the 3 layers (walking differ used?)"
	fi
}

# The image by a pull: imported without unpacking, pushed to a local registry,
# removed here (and its content collected), so the pull downloads it.
st_registry() {
	registry_start "$E2E_TMP/registry.log"
	ctr_ images import --no-unpack "$E2E_TMP/test-image.tar" >/dev/null
	local ref=$REGISTRY/erofs-e2e/test:1
	ctr_ images push --plain-http "$ref" "$IMAGE" >/dev/null
	echo "  pushed $IMAGE to $ref"
	ctr_ images rm --sync "$IMAGE" >/dev/null
	# shellcheck disable=SC2016 # evaluated by retry
	retry 10 eval '[ "$(ctr_ content ls -q | wc -l)" -eq 0 ] || { sync_gc; false; }' ||
		fail "content left after removing the imported image: $(ctr_ content ls -q | tr '\n' ' ')"
	[ -z "$(ctr_ snapshots --snapshotter "$SN" ls | tail -n +2)" ] || fail "snapshots exist before the pull"
	IMAGE=$ref
	echo "  image removed, no content, no snapshot: the pull downloads and unpacks everything"
}

st_pull() {
	local out
	out=$(ctr_ images pull --plain-http --snapshotter "$SN" "$IMAGE" 2>&1) || { echo "$out"; fail "pull failed"; }
	tail -n 3 <<<"$out" | sed 's/^/  /'
	check_unpacked
	check_unpack_mode
}

# check_unpack_mode: containerd unpacked the image in parallel (E2E_UNPACKS
# above 1) or sequentially, as containerd itself logs it; through the tap, what
# the daemon's snapshots service was asked.
check_unpack_mode() {
	local want=false lines
	[ "$PARALLEL" = 0 ] || want=true
	lines=$(grep 'msg="image unpacked"' "$E2E_TMP/containerd.log" || true)
	sed 's/^/  containerd.log: /' <<<"$lines"
	[ "$(grep -c . <<<"$lines")" -eq 1 ] || fail "want one \"image unpacked\" record in containerd's log"
	grep -q "parallel=$want" <<<"$lines" ||
		fail "containerd did not unpack with parallel=$want (max_concurrent_unpacks = $E2E_UNPACKS)"
	if [ "$want" = true ] && grep -q 'does not support rebase capability' "$E2E_TMP/containerd.log"; then
		fail "containerd says the snapshotter has no rebase capability"
	fi
	echo "  containerd: unpack with parallel=$want"
	[ "$MODE" = proxy ] && [ "$E2E_PROXY_TAP" = 1 ] || return 0

	# The extraction snapshots (keys "<ns>/<n>/extract-<n>-<rand> <chainID>"
	# in the backend) as the daemon saw them, in the order the calls returned.
	local calls prepares commits
	calls=$(grep -E 'tap: (Prepare|Commit) .*key="[^"]*extract-' "$E2E_TMP/tap.log" | sed 's/^.*tap: //' || true)
	sed 's/^/  tap: /' <<<"$calls"
	! grep -qv 'err=<nil>' <<<"$calls" || fail "a Prepare or Commit of the unpack failed"
	prepares=$(grep '^Prepare' <<<"$calls" || true)
	commits=$(grep '^Commit' <<<"$calls" || true)
	[ "$(grep -c . <<<"$prepares")" -eq 3 ] && [ "$(grep -c . <<<"$commits")" -eq 3 ] ||
		fail "want 3 Prepare and 3 Commit calls of extraction snapshots"
	local names=() cparents=() pparents=() l
	while IFS= read -r l; do
		names+=("$(sed -E 's/.* name="([^"]*)".*/\1/' <<<"$l")")
		cparents+=("$(sed -E 's/.* parent="([^"]*)".*/\1/' <<<"$l")")
	done <<<"$commits"
	while IFS= read -r l; do
		pparents+=("$(sed -E 's/.* parent="([^"]*)".*/\1/' <<<"$l")")
	done <<<"$prepares"
	if [ "$want" = true ]; then
		# Every layer prepared without a parent, and all of them before the
		# first commit (in flight together); each committed onto the one below.
		[ -z "${pparents[0]}${pparents[1]}${pparents[2]}" ] || fail "a layer was prepared with a parent"
		[ "$(grep -n . <<<"$calls" | grep ':Prepare' | tail -n1 | cut -d: -f1)" -lt \
			"$(grep -n . <<<"$calls" | grep ':Commit' | head -n1 | cut -d: -f1)" ] ||
			fail "a layer was prepared after the first commit"
		[ -z "${cparents[0]}" ] && [ "${cparents[1]}" = "${names[0]}" ] && [ "${cparents[2]}" = "${names[1]}" ] ||
			fail "the commits do not rebase each layer onto the one below"
		echo "  daemon: 3 layers prepared without a parent, all before the first commit; committed with parents (rebase)"
	else
		[ -z "${pparents[0]}" ] && [ "${pparents[1]}" = "${names[0]}" ] && [ "${pparents[2]}" = "${names[1]}" ] ||
			fail "the layers were not prepared each on the one below"
		[ -z "${cparents[0]}${cparents[1]}${cparents[2]}" ] || fail "a sequential commit carried a parent"
		echo "  daemon: each layer prepared on the one below, committed without a parent (sequential)"
	fi
}

# In the container: first start checks the image and writes into the writable
# layer; a later start of the same container checks the writes are still there.
c1_script() {
	cat <<EOF
if [ -e /state.txt ]; then
	set -e
	[ "\$(cat /state.txt)" = c1 ] || { echo "CHECK FAILED: /state.txt"; exit 1; }
	[ ! -e /data/keep.txt ] || { echo "CHECK FAILED: /data/keep.txt came back"; exit 1; }
	[ "\$(cat /data/overwrite.txt | wc -l)" = 2 ] || { echo "CHECK FAILED: copy-up lost"; exit 1; }
	[ ! -e /opaque/new-sub ] || { echo "CHECK FAILED: /opaque/new-sub came back"; exit 1; }
	[ "\$(cat /newdir/f)" = new ] || { echo "CHECK FAILED: /newdir/f"; exit 1; }
	echo "writable layer: persisted across task restarts"
	exit 0
fi
$("$HERE/image.sh" test-expect)
echo c1 > /state.txt
rm /data/keep.txt
echo appended >> /data/overwrite.txt
rm -r /opaque/new-sub
mkdir /newdir && echo new > /newdir/f
[ "\$(cat /state.txt)" = c1 ] && [ ! -e /data/keep.txt ] && [ -e /newdir/f ] ||
	{ echo "CHECK FAILED: writes"; exit 1; }
echo "writable layer: written"
EOF
}

st_run_c1() {
	local out
	out=$(ctr_ run --snapshotter "$SN" --runc-root "$RUNC_ROOT" --fifo-dir "$E2E_TMP/fifo" "$IMAGE" c1 \
		/bin/sh -c "$(c1_script)" 2>&1) || { echo "$out"; fail "container c1 failed"; }
	sed 's/^/  c1: /' <<<"$out"
	grep -q 'image content: OK' <<<"$out" || fail "no image check output"
	grep -q 'writable layer: written' <<<"$out" || fail "no write output"
	ctr_ snapshots --snapshotter "$SN" ls | sed 's/^/  /'
	[ "$(ctr_ snapshots --snapshotter "$SN" ls | awk 'NR > 1 && $NF == "Active"' | wc -l)" -eq 1 ] ||
		fail "want one active snapshot for c1"
}

st_restart_c1() {
	local out
	out=$(ctr_ tasks start --fifo-dir "$E2E_TMP/fifo" c1 2>&1) || { echo "$out"; fail "second start of c1 failed"; }
	sed 's/^/  c1: /' <<<"$out"
	grep -q 'writable layer: persisted' <<<"$out" || fail "writes not found on restart"
}

st_run_c2() {
	local out
	out=$(ctr_ run --rm --snapshotter "$SN" --runc-root "$RUNC_ROOT" --fifo-dir "$E2E_TMP/fifo" "$IMAGE" c2 \
		/bin/sh -c "$("$HERE/image.sh" test-expect)
[ ! -e /state.txt ] && [ ! -e /newdir ] || { echo 'CHECK FAILED: sees c1 writes'; exit 1; }
echo 'isolation: c1 writes not visible'" 2>&1) || { echo "$out"; fail "container c2 failed"; }
	sed 's/^/  c2: /' <<<"$out"
	grep -q 'isolation: c1 writes not visible' <<<"$out" || fail "no isolation output"
	! ctr_ containers ls -q | grep -qx c2 || fail "c2 not removed by --rm"
}

# A power cut before the layers reached the disk: the daemon stopped, the
# middle layer's blob cut short, the daemon started again. It must find the
# layer lost, refuse it, and make it again from containerd's content store
# (containerd keeps its own record of the layer, so it never unpacks it
# again by itself); the containers then check the whole tree.
st_lose_layer() {
	local blob size
	proxy_stop || fail "proxy daemon did not stop cleanly on SIGTERM"
	blob=$(find "$PROXY_ROOT/snapshots" -mindepth 2 -maxdepth 2 -name layer.erofs | sort -V | sed -n 2p)
	[ -n "$blob" ] || fail "no second layer blob under $PROXY_ROOT/snapshots"
	size=$(stat -c %s "$blob")
	truncate -s $((size / 2)) "$blob"
	echo "  $blob cut from $size to $((size / 2)) bytes"
	proxy_start "$E2E_PROXY_CMD"
	# shellcheck disable=SC2016 # evaluated by retry
	retry 60 eval 'grep -q "lost layer repaired from the content store" "$E2E_TMP/proxy.log"' ||
		fail "the daemon did not repair the lost layer: $(grep -E 'lost' "$E2E_TMP/proxy.log" | tail -5)"
	grep -E 'lost: |lost layer' "$E2E_TMP/proxy.log" | sed 's/^/  proxy.log: /'
	[ "$(stat -c %s "$blob")" -eq "$size" ] || fail "$blob is $(stat -c %s "$blob") bytes after the repair, not $size"
	# containerd reconnects to the restarted daemon.
	# shellcheck disable=SC2016 # evaluated by retry
	retry 20 eval 'ctr_ snapshots --snapshotter "$SN" ls >/dev/null 2>&1' ||
		fail "containerd does not reach the restarted daemon"
}

# A power cut in the moment after a commit returned, before its record
# reached the disk: containerd (which syncs its own record at once) names a
# layer this root forgot. With the daemon stopped, the top layer's record and
# directory are deleted; the restarted daemon must make containerd forget
# the layer too, so that the next run unpacks it again.
st_lose_record() {
	local id
	proxy_stop || fail "proxy daemon did not stop cleanly on SIGTERM"
	id=$(python3 - "$PROXY_ROOT/metadata.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
id_, key = db.execute("SELECT id, key FROM snapshots WHERE kind = 3 ORDER BY id DESC LIMIT 1").fetchone()
db.execute("DELETE FROM snapshots WHERE id = ?", (id_,))
db.commit()
print(id_)
PY
	) || fail "could not delete the top layer's record"
	rm -rf "${PROXY_ROOT:?}/snapshots/$id"
	echo "  record and directory of snapshot $id deleted"
	proxy_start "$E2E_PROXY_CMD"
	# shellcheck disable=SC2016 # evaluated by retry
	retry 60 eval 'grep -q "records of layers lost with their records removed" "$E2E_TMP/proxy.log"' ||
		fail "the daemon did not make containerd forget the layer: $(tail -5 "$E2E_TMP/proxy.log")"
	grep -E "lost with its record removed" "$E2E_TMP/proxy.log" | sed 's/^/  proxy.log: /'
	# shellcheck disable=SC2016 # evaluated by retry
	retry 20 eval 'ctr_ snapshots --snapshotter "$SN" ls >/dev/null 2>&1' ||
		fail "containerd does not reach the restarted daemon"
	# containerd no longer has the top layer; its GC may take the layers
	# below too (only the top's record held them). The next run unpacks
	# again, from the local content store.
	local committed
	committed=$(ctr_ snapshots --snapshotter "$SN" ls | awk 'NR > 1 && $NF == "Committed"' | wc -l)
	echo "  committed snapshots containerd still lists: $committed"
	[ "$committed" -lt 3 ] || fail "containerd still lists all 3 layers"
}

# Block mode: a container's writes bounded by its image.
st_run_quota() {
	local out images size blocks
	out=$(ctr_ run --snapshotter "$SN" --runc-root "$RUNC_ROOT" --fifo-dir "$E2E_TMP/fifo" "$IMAGE" q1 \
		/bin/sh -c "dd if=/dev/zero of=/small bs=1M count=4 2>/dev/null && echo 'quota: 4 MiB written';
			if dd if=/dev/zero of=/big bs=1M count=$((E2E_QUOTA * 2)) 2>/tmp/err; then
				echo 'CHECK FAILED: $((E2E_QUOTA * 2)) MiB written'; exit 1
			fi
			grep -q 'No space left' /tmp/err && echo 'quota: ENOSPC past the limit' || { cat /tmp/err; exit 1; }" 2>&1) ||
		{ echo "$out"; fail "container q1 failed"; }
	sed 's/^/  q1: /' <<<"$out"
	grep -q 'quota: ENOSPC' <<<"$out" || fail "no ENOSPC inside the container"
	images=$(find "$PROXY_ROOT/snapshots" -maxdepth 2 -name rwlayer.img)
	[ "$(grep -c . <<<"$images")" -ge 1 ] || fail "no rwlayer.img in the daemon's root"
	for img in $images; do
		size=$(stat -c %s "$img")
		blocks=$(($(stat -c %b "$img") * 512))
		[ "$size" -eq $((E2E_QUOTA << 20)) ] || fail "$img is $size bytes, want $((E2E_QUOTA << 20))"
		[ "$blocks" -le $((E2E_QUOTA << 20)) ] || fail "$img holds $blocks bytes on the host"
	done
	echo "  $(grep -c . <<<"$images") writable images of $E2E_QUOTA MiB; at most that much on the host's disk"
	ctr_ containers delete q1
}

# The daemon's Prometheus endpoint, scraped as Prometheus does.
st_metrics() {
	local body
	body=$(python3 -c 'import sys, urllib.request; r = urllib.request.urlopen(sys.argv[1], timeout=10); print(r.headers["Content-Type"]); print(r.read().decode())' "$METRICS_URL") ||
		fail "GET $METRICS_URL failed"
	grep -E '^erofs_snapshotter_(layers_applied_total|requests_total\{operation="(Prepare|Commit)",code="OK"\}|trash_entries)' <<<"$body" | sed 's/^/  /'
	head -n1 <<<"$body" | grep -q '^text/plain; version=0.0.4' || fail "Content-Type $(head -n1 <<<"$body")"
	[ "$E2E_PROXY_DIFFER" != proxy ] || grep -qx 'erofs_snapshotter_layers_applied_total 3' <<<"$body" ||
		fail "the scrape does not show the 3 layers the daemon's differ applied"
	grep -qE '^erofs_snapshotter_requests_total\{operation="Prepare",code="OK"\} [1-9]' <<<"$body" ||
		fail "the scrape shows no Prepare served"
	grep -qE '^erofs_snapshotter_request_duration_seconds_count\{operation="Mounts"\} [1-9]' <<<"$body" ||
		fail "the scrape shows no Mounts latency"
}

# A container in a user namespace: container root is host uid and gid 100000.
st_run_userns() {
	local out script upper owner
	script=$(
		cat <<EOF
set -e
[ "\$(id -u):\$(id -g)" = 0:0 ] || { echo "CHECK FAILED: not root inside"; exit 1; }
grep -q '^ *0 *100000 *65536' /proc/self/uid_map || { echo "CHECK FAILED: no user namespace: \$(cat /proc/self/uid_map)"; exit 1; }
[ "\$(stat -c %u:%g /bin/sh)" = 0:0 ] || { echo "CHECK FAILED: /bin/sh owned by \$(stat -c %u:%g /bin/sh) inside"; exit 1; }
$("$HERE/image.sh" test-expect)
echo u1 > /userns.txt
echo "user namespace: image owned by the container's root, written"
EOF
	)
	out=$(ctr_ run --snapshotter "$SN" --runc-root "$RUNC_ROOT" --fifo-dir "$E2E_TMP/fifo" \
		--uidmap 0:100000:65536 --gidmap 0:100000:65536 --remap-labels "$IMAGE" u1 \
		/bin/sh -c "$script" 2>&1) || { echo "$out"; fail "container u1 (user namespace) failed"; }
	sed 's/^/  u1: /' <<<"$out"
	grep -q 'image content: OK' <<<"$out" || fail "no image check output"
	grep -q 'user namespace: image owned' <<<"$out" || fail "no user namespace output"
	# The snapshot's own mounts carry containerd's uidmap=/gidmap= options.
	out=$(ctr_ snapshots --snapshotter "$SN" mounts /mnt u1)
	grep -q 'uidmap=0:100000:65536' <<<"$out" || { echo "$out"; fail "u1's mounts have no uidmap= option"; }
	upper=$(grep -oE 'upperdir=[^,]+' <<<"$out" | head -1 | cut -d= -f2)
	[ -n "$upper" ] || { echo "$out"; fail "no upperdir in u1's mounts"; }
	owner=$(stat -c %u:%g "$upper")
	[ "$owner" = 100000:100000 ] || fail "u1's upper dir owned by $owner, want 100000:100000 (the mapped root)"
	owner=$(stat -c %u:%g "$upper/userns.txt")
	[ "$owner" = 100000:100000 ] || fail "what u1 wrote is owned by $owner on the host, want 100000:100000"
	echo "  upper dir $upper and /userns.txt in it: owned by 100000:100000 on the host"
	# No chowned copy of the image (containerd's fall-back names it <...>-remap).
	! ctr_ snapshots --snapshotter "$SN" ls | grep -q remap || fail "containerd made a chowned copy of the image"
	ctr_ containers delete u1
}

st_remove() {
	ctr_ containers delete c1
	ctr_ images rm --sync "$IMAGE" | sed 's/^/  /'
	# GC removes the snapshots (and their backend directories) once nothing
	# refers to them. A collection that started before the removal may release
	# the --sync wait (lib.sh sync_gc): collect again until done.
	retry 30 no_snapshots_after_gc || { ctr_ snapshots --snapshotter "$SN" ls >&2; fail "snapshots left after GC"; }
	local content
	content=$(ctr_ content ls -q | wc -l)
	[ "$content" -eq 0 ] || fail "$content content blobs left after GC"
	echo "  no snapshots, no content left"
	# This project's daemon logs each Cleanup, which containerd's GC calls on
	# a snapshotter after removing snapshots from it.
	if [ "$MODE" = proxy ] && grep -q 'serving snapshots and diff APIs' "$E2E_TMP/proxy.log"; then
		retry 10 grep -q 'cleanup done' "$E2E_TMP/proxy.log" || fail "containerd's GC did not call the daemon's Cleanup"
		echo "  containerd's GC called the daemon's Cleanup $(grep -c 'cleanup done' "$E2E_TMP/proxy.log") times"
	fi
	if [ "$MODE" = proxy ] && [ -n "${E2E_PROXY_CLEANUP_CMD:-}" ]; then
		local c
		c=$(proxy_cmd "$E2E_PROXY_CLEANUP_CMD")
		echo "  daemon cleanup: $c"
		bash -c "$c"
	fi
}

# no_leftovers: no mount under the temporary dir, no snapshot directory.
leftovers() {
	local mounts dirs
	mounts=$(mounts_under "$E2E_TMP")
	dirs=$(find "$(snapshot_dir)" -mindepth 1 -maxdepth 1 2>/dev/null || true)
	if [ "$MODE" = proxy ] && [ -d "$PROXY_ROOT/trash" ]; then
		dirs+=$(find "$PROXY_ROOT/trash" -mindepth 1 -maxdepth 1)
	fi
	[ -z "$mounts$dirs" ] && return 0
	[ -z "$mounts" ] || echo "mounts: $mounts"
	[ -z "$dirs" ] || echo "dirs: $dirs"
	return 1
}

st_no_leftovers() {
	local left
	# The backend removes directories after the metadata is gone; allow it a
	# moment (and another collection: see sync_gc in lib.sh).
	# shellcheck disable=SC2016 # evaluated by retry
	retry 20 eval '[ -z "$(leftovers)" ] || { sync_gc; [ -z "$(leftovers)" ]; }' || { left=$(leftovers); fail "left behind: $left"; }
	echo "  no mount under $E2E_TMP, $(snapshot_dir) empty"
}

st_stop() {
	ctd_stop
	if [ "$MODE" = proxy ]; then
		proxy_stop || fail "proxy daemon did not stop cleanly on SIGTERM"
		echo "  daemon exited on SIGTERM, socket removed"
	fi
	local m
	m=$(mounts_under "$E2E_TMP")
	[ -z "$m" ] || fail "mounts left after stop: $m"
	[ -z "$(leftovers)" ] || fail "left behind after stop: $(leftovers)"
	# A shim exits on its own shortly after its task is deleted.
	# shellcheck disable=SC2016 # evaluated by retry
	retry 10 eval '[ -z "$(our_pids)" ]' ||
		fail "processes of this run still there: $(our_pids | xargs -r ps -o pid=,args= -p)"
}

# --- main ------------------------------------------------------------------

echo "e2e mode $MODE: snapshotter $SN"
step "setup: install, build the test image" st_setup
if [ "$MODE" = proxy ]; then
	step "proxy daemon start" st_proxy_start
fi
step "containerd start, $SN plugin ok" st_containerd_start
if [ "$PULL" = 1 ]; then
	step "push the image to a local registry, remove it here" st_registry
	step "pull onto $SN, max_concurrent_unpacks = $E2E_UNPACKS (3 committed snapshots, $([ "$PARALLEL" = 1 ] && echo parallel || echo sequential) unpack)" st_pull
else
	step "import onto $SN (3 committed snapshots)" st_import
fi
if [ "${E2E_LOSE_LAYER:-0}" = 1 ]; then
	[ "$MODE" = proxy ] || die "E2E_LOSE_LAYER=1 needs proxy mode"
	step "power cut before the layers reached the disk: a blob cut short, the daemon restarted repairs it from containerd's content store" st_lose_layer
fi
if [ "${E2E_LOSE_RECORD:-0}" = 1 ]; then
	[ "$MODE" = proxy ] || die "E2E_LOSE_RECORD=1 needs proxy mode"
	step "power cut right after a commit: its record gone here, kept by containerd; the restarted daemon makes containerd forget it" st_lose_record
fi
step "c1: layers, whiteouts, opaque dir; write to the writable layer" st_run_c1
step "c1 again: writes persisted in its snapshot" st_restart_c1
step "c2: fresh snapshot of the same image, c1 writes not visible" st_run_c2
if [ -n "${E2E_QUOTA:-}" ]; then
	[ "$MODE" = proxy ] || die "E2E_QUOTA needs proxy mode"
	step "q1: block mode, the writable layer an ext4 image of $E2E_QUOTA MiB: ENOSPC past it" st_run_quota
fi
if [ "${E2E_USERNS:-0}" = 1 ]; then
	[ "$MODE" = proxy ] || die "E2E_USERNS=1 needs proxy mode"
	step "u1: a container in a user namespace, its layers ID-mapped (remap-ids), no chown" st_run_userns
fi
[ -z "$METRICS_URL" ] || step "the daemon's metrics scraped ($METRICS_URL)" st_metrics
step "remove containers and image; GC empties snapshots and content" st_remove
step "no mounts, no snapshot directories left" st_no_leftovers
step "stop containerd$([ "$MODE" = proxy ] && echo ' and the daemon (SIGTERM, socket gone)'), nothing left" st_stop
