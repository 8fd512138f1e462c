#!/usr/bin/env bash
# The end-to-end test as CI runs it: install what is missing (containerd
# v2.4.2 is built once into /var/cache/erofs-snapshotter-e2e), build the
# library and the gRPC daemon, then run
#   overlayfs                       containerd's overlayfs (checks the harness)
#   proxy, E2E_PROXY_DIFFER=walking this project's daemon as snapshotter proxy
#                                   plugin, with containerd's walking differ
#   proxy, E2E_PROXY_DIFFER=proxy   the daemon as snapshotter and diff proxy
#                                   plugins (its own EROFS differ)
# each with the image imported (sequential unpack), then, with the image
# pulled from a local registry through containerd's transfer service:
#   overlayfs, E2E_UNPACKS=3        parallel unpack on containerd's overlayfs
#                                   (checks the harness)
#   proxy, own differ, E2E_UNPACKS=1   sequential pull, the daemon in block mode
#                                   (--default-size 32Mi, E2E_QUOTA=32): ENOSPC
#                                   in a container past its 32 MiB
#   proxy, own differ, E2E_UNPACKS=3   parallel pull: the daemon is declared with
#                                   capabilities = ["rebase"], every layer is
#                                   prepared without a parent and committed
#                                   onto the one below; with E2E_USERNS=1 also
#                                   remap-ids: a container in a user namespace
#                                   on ID-mapped layers
#   proxy, walking differ, E2E_UNPACKS=3   the same with containerd's walking differ
# and two runs that must fail, to show the checks catch what they are for:
#   proxy, own differ, E2E_UNPACKS=3, E2E_PROXY_REBASE=0
#                                   containerd falls back to a sequential unpack
#   fakeproxy (containerd's overlayfs behind the proxy API), walking differ,
#   E2E_UNPACKS=3                   containerd issue #13030: whiteouts lost
# and, before them, tests/layer_equivalence.py on the test image's layers;
# then print one closing line "e2e: N passed, M failed" (steps of all runs).
#
#   tests/e2e/ci.sh [--no-overlayfs]
#
# Needs root. Exit status 0 only if every run passed. About 40 s once
# containerd and the Go build cache are warm (the first build of containerd
# takes a few minutes, of the daemon about a minute).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
T0=$(date +%s.%N)

overlayfs=1
for arg in "$@"; do
	case $arg in
	--no-overlayfs) overlayfs=0 ;;
	-h | --help) sed -n '2,34p' "$0"; exit 0 ;;
	*) echo "ci.sh: unknown argument $arg" >&2; exit 2 ;;
	esac
done

say() { echo "[ci $(date +%T)] $*"; }
[ "$(id -u)" = 0 ] || { echo "ci.sh: run as root" >&2; exit 1; }

say "install (containerd v2.4.2, runc, busybox, a registry)"
"$HERE/install.sh" >/dev/null || { echo "e2e: 0 passed, 1 failed"; exit 1; }

say "cargo build --release; go build the daemon"
DAEMON=$REPO/target/e2e/erofs-snapshotter-grpc
if ! (cd "$REPO" && cargo build --release --quiet) ||
	! mkdir -p "$(dirname "$DAEMON")" ||
	! (cd "$REPO/bindings/go" && GOFLAGS=-buildvcs=false "$REPO/scripts/go-with-lib" build -o "$DAEMON" ./cmd/erofs-snapshotter-grpc); then
	echo "e2e: 0 passed, 1 failed"
	exit 1
fi
"$DAEMON" --version | sed 's/^/  /'
# The same daemon with no mkfs.erofs on its PATH: the default path needs no
# erofs-utils (layers are written in process).
NO_MKFS=$REPO/target/e2e/erofs-snapshotter-grpc-no-mkfs
nomkfs_path=""
IFS=: read -ra path_dirs <<<"$PATH"
for d in "${path_dirs[@]}"; do
	[ -n "$d" ] && [ ! -e "$d/mkfs.erofs" ] && nomkfs_path="${nomkfs_path:+$nomkfs_path:}$d"
done
printf '#!/bin/sh\nPATH=%s exec %s "$@"\n' "$nomkfs_path" "$DAEMON" >"$NO_MKFS"
chmod +x "$NO_MKFS"

PASSED=0
FAILED=0
SUMMARY=()
# e2e NAME ENV... -- ARGS...: one run.sh, its output indented, its counts added.
e2e() {
	local name=$1 out rc counts t0
	shift
	local envs=()
	while [ "$1" != -- ]; do envs+=("$1"); shift; done
	shift
	t0=$(date +%s)
	say "run.sh $* ($name)"
	out=$(env E2E_DAEMON_BIN="$DAEMON" "${envs[@]}" "$HERE/run.sh" "$@" 2>&1)
	rc=$?
	sed 's/^/  | /' <<<"$out"
	counts=$(grep -E '^e2e-[a-z]+: [0-9]+ passed, [0-9]+ failed' <<<"$out" | tail -1)
	local p f
	p=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$counts")
	f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$counts")
	[ -n "$p" ] || p=0
	[ -n "$f" ] || f=0
	[ $rc -eq 0 ] || [ "$f" -gt 0 ] || f=1
	PASSED=$((PASSED + p))
	FAILED=$((FAILED + f))
	SUMMARY+=("$([ $rc -eq 0 ] && echo PASS || echo FAIL)  $name: $p passed, $f failed ($(($(date +%s) - t0)) s)")
}

# The test image's layers through the library alone: the built-in writer's
# tree equals mkfs.erofs's and a reference extraction's.
say "tests/layer_equivalence.py on the test image"
t0=$(date +%s)
EQ_DIR=$(mktemp -d "${E2E_TMPDIR:-/var/tmp}/e2e-equivalence.XXXXXX")
if out=$("$HERE/image.sh" test "$EQ_DIR/test-image.tar" 2>&1 &&
	python3 "$REPO/tests/layer_equivalence.py" "$REPO/target/release/erofs-snapshotter-ctl" \
		"$EQ_DIR/test-image.tar" "$EQ_DIR" 2>&1); then
	PASSED=$((PASSED + 1))
	SUMMARY+=("PASS  layer equivalence (test image): $(tail -1 <<<"$out") ($(($(date +%s) - t0)) s)")
else
	FAILED=$((FAILED + 1))
	SUMMARY+=("FAIL  layer equivalence (test image) ($(($(date +%s) - t0)) s)")
fi
sed 's/^/  | /' <<<"$out"
rm -rf "$EQ_DIR"

[ $overlayfs = 0 ] || e2e "overlayfs (harness check)" -- overlayfs
e2e "daemon + walking differ; a layer lost in a power cut, repaired by the restarted daemon" \
	E2E_LOSE_LAYER=1 E2E_PROXY_CMD=ours E2E_PROXY_DIFFER=walking -- proxy
e2e "daemon + its own differ, no mkfs.erofs on its PATH; a commit's record lost in a power cut, forgotten by containerd" \
	E2E_DAEMON_BIN="$NO_MKFS" E2E_LOSE_RECORD=1 E2E_PROXY_CMD=ours E2E_PROXY_DIFFER=proxy -- proxy
# Pulls through the transfer service, from a local registry.
[ $overlayfs = 0 ] || e2e "overlayfs, parallel pull (max_concurrent_unpacks 3; harness check)" \
	E2E_UNPACKS=3 -- overlayfs
e2e "daemon + its own differ, sequential pull (max_concurrent_unpacks 1); block mode (default_size 32 MiB); metrics scraped" \
	E2E_UNPACKS=1 E2E_QUOTA=32 E2E_METRICS=1 E2E_PROXY_CMD='ours --default-size 32Mi' E2E_PROXY_DIFFER=proxy -- proxy
e2e "daemon + its own differ, parallel pull (max_concurrent_unpacks 3, rebase); a container in a user namespace (remap-ids)" \
	E2E_UNPACKS=3 E2E_USERNS=1 E2E_PROXY_CMD=ours E2E_PROXY_DIFFER=proxy -- proxy
e2e "daemon + walking differ, parallel pull (max_concurrent_unpacks 3, rebase)" \
	E2E_UNPACKS=3 E2E_PROXY_CMD=ours E2E_PROXY_DIFFER=walking -- proxy

# must_fail NAME PATTERN ENV... -- ARGS...: one run.sh that must fail, with a
# line matching PATTERN (grep -E) in its output: the checks catch what they are for.
must_fail() {
	local name=$1 pattern=$2 out rc t0 logs
	shift 2
	local envs=()
	while [ "$1" != -- ]; do envs+=("$1"); shift; done
	shift
	t0=$(date +%s)
	say "run.sh $* ($name: must fail)"
	logs=$(mktemp -d) # the logs of an expected failure are not kept
	out=$(env E2E_DAEMON_BIN="$DAEMON" E2E_LOG_DIR="$logs" "${envs[@]}" "$HERE/run.sh" "$@" 2>&1)
	rc=$?
	rm -rf "$logs"
	if [ $rc -ne 0 ] && grep -qE -- "$pattern" <<<"$out"; then
		PASSED=$((PASSED + 1))
		SUMMARY+=("PASS  $name: failed as it must ($(($(date +%s) - t0)) s)")
		grep -E -- "$pattern|^[+-]/|^FAIL " <<<"$out" | sed 's/^/  | /'
	else
		FAILED=$((FAILED + 1))
		SUMMARY+=("FAIL  $name: exit $rc, want a failure with /$pattern/ ($(($(date +%s) - t0)) s)")
		sed 's/^/  | /' <<<"$out"
	fi
}

# Without the rebase capability containerd falls back to a sequential unpack
# (max_concurrent_unpacks notwithstanding): the parallel-unpack check fails.
must_fail "fall-back to a sequential unpack caught" 'containerd did not unpack with parallel=true' \
	E2E_UNPACKS=3 E2E_PROXY_REBASE=0 E2E_PROXY_CMD=ours E2E_PROXY_DIFFER=proxy -- proxy
# containerd issue #13030 itself: containerd's overlayfs snapshotter behind the
# proxy API (so containerd's workaround, for the snapshotter named "overlayfs"
# only, does not apply) with the walking differ: a layer prepared without its
# parent is a bind mount, the walking differ drops its whiteouts and opaque
# markers, and the container's tree check sees the deleted files come back.
must_fail "containerd #13030 (whiteouts lost by a parallel unpack) caught by the tree check" \
	"the container's tree is not the image's" \
	E2E_UNPACKS=3 E2E_PROXY_CMD='fake --snapshotter overlayfs' E2E_PROXY_DIFFER=walking -- proxy

echo
echo "== tests/e2e/ci.sh: summary =="
printf '  %s\n' "${SUMMARY[@]}"
echo "  took $(printf '%.0f' "$(echo "$(date +%s.%N) - $T0" | bc)") s"
echo "e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
