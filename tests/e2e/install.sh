#!/usr/bin/env bash
# Install what the end-to-end test and the launch benchmark need, when missing.
# Idempotent; run as root on Debian 12.
#
#   runc, busybox-static        Debian packages (apt)
#   containerd, ctr,            built with `go install` from the Go module proxy at
#   containerd-shim-runc-v2     $CONTAINERD_VERSION into $E2E_BIN (not /usr/local/bin,
#                               so nothing on the machine's PATH is shadowed)
#   registry                    go-containerregistry's in-memory registry
#                               (cmd/registry) at $REGISTRY_VERSION, built with
#                               `go install` into $E2E_CACHE/registry-$REGISTRY_VERSION:
#                               the local registry that parallel unpack needs
#                               (containerd unpacks in parallel only on pull)
#   debootstrap                 only with --bench (Debian package)
#
# Prints "registry=PATH" and then, on the last line of stdout, the directory of
# the containerd binaries (run.sh and bench/launch.sh call this script and
# read both, through lib.sh).
set -euo pipefail

CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
E2E_CACHE=${E2E_CACHE:-/var/cache/erofs-snapshotter-e2e}
E2E_BIN=${E2E_BIN:-$E2E_CACHE/containerd-$CONTAINERD_VERSION/bin}
# Build tags: no_btrfs (the btrfs snapshotter needs libbtrfs headers through cgo);
# no_cri, no_zfs, no_devmapper: plugins the tests do not use, left out so the build
# is shorter; urfave_cli_no_docs as upstream's Makefile.
CONTAINERD_TAGS=${CONTAINERD_TAGS:-no_btrfs no_cri no_zfs no_devmapper urfave_cli_no_docs}
REGISTRY_VERSION=${REGISTRY_VERSION:-v0.22.1}
REGISTRY_BIN=$E2E_CACHE/registry-$REGISTRY_VERSION/registry

log() { echo "[install $(date +%T)] $*" >&2; }
die() { echo "[install] ERROR: $*" >&2; exit 1; }

timed() { # timed LABEL CMD... : run CMD, log how long it took
	local label=$1 t0 rc=0
	shift
	t0=$(date +%s.%N)
	"$@" >&2 || rc=$?
	log "$label: $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s (exit $rc)"
	return "$rc"
}

want_bench=0
for arg in "$@"; do
	case $arg in
	--bench) want_bench=1 ;;
	-h | --help) sed -n '2,20p' "$0"; exit 0 ;;
	*) die "unknown argument $arg" ;;
	esac
done

[ "$(id -u)" = 0 ] || die "run as root"

apt_updated=0
apt_install() { # apt_install PKG... : install the Debian packages not yet installed
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ $apt_updated = 0 ]; then
		timed "apt-get update" apt-get update -qq
		apt_updated=1
	fi
	timed "apt-get install ${missing[*]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

command -v bc >/dev/null || { apt-get update -qq >&2 && apt_updated=1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc >&2; }

pkgs=(runc busybox-static ca-certificates)
[ $want_bench = 1 ] && pkgs+=(debootstrap)
apt_install "${pkgs[@]}"

# containerd 2.x. Debian 12's `containerd` package is 1.6: not used.
build_containerd() {
	command -v go >/dev/null || die "go is not on PATH (Go 1.24+ is expected on the machine)"
	mkdir -p "$E2E_BIN"
	local cmd
	for cmd in containerd ctr containerd-shim-runc-v2; do
		timed "go install $cmd@$CONTAINERD_VERSION" env GOBIN="$E2E_BIN" GOFLAGS=-buildvcs=false \
			go install -trimpath -tags "$CONTAINERD_TAGS" \
			-ldflags "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
			"github.com/containerd/containerd/v2/cmd/$cmd@$CONTAINERD_VERSION"
	done
}
have_containerd() {
	[ -x "$E2E_BIN/containerd" ] && [ -x "$E2E_BIN/ctr" ] && [ -x "$E2E_BIN/containerd-shim-runc-v2" ] &&
		"$E2E_BIN/containerd" --version 2>/dev/null | grep -q -- "$CONTAINERD_VERSION"
}
if have_containerd; then
	log "containerd $CONTAINERD_VERSION already in $E2E_BIN"
else
	build_containerd
	have_containerd || die "containerd $CONTAINERD_VERSION not usable in $E2E_BIN after the build"
fi

# A registry on localhost: go-containerregistry's (pkg/registry, in memory).
if [ -x "$REGISTRY_BIN" ]; then
	log "registry $REGISTRY_VERSION already in $REGISTRY_BIN"
else
	command -v go >/dev/null || die "go is not on PATH (Go 1.24+ is expected on the machine)"
	mkdir -p "$(dirname "$REGISTRY_BIN")"
	timed "go install registry@$REGISTRY_VERSION" env GOBIN="$(dirname "$REGISTRY_BIN")" GOFLAGS=-buildvcs=false \
		go install -trimpath "github.com/google/go-containerregistry/cmd/registry@$REGISTRY_VERSION"
	[ -x "$REGISTRY_BIN" ] || die "no $REGISTRY_BIN after the build"
fi

log "runc: $(runc --version | head -1)"
log "containerd: $("$E2E_BIN/containerd" --version)"
echo "registry=$REGISTRY_BIN"
echo "$E2E_BIN"
