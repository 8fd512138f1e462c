#!/usr/bin/env bash
# Installs what building and testing erofs-snapshotter needs on a Debian-based
# machine, as root. Idempotent: each step is skipped when its tool is present
# (with everything present, any user can run it as a check).
#
# erofs-utils must be at least 1.8.2 (`--tar`, `-b`, `--sort=none`); Debian 12 ships 1.5. Then
# Debian's own source package of a newer release is built and installed under
# /usr/local, where the default `mkfs_path` ("mkfs.erofs" on PATH) finds it.
# 1.8.7 and 1.8.8 are avoided: they have known tar/AUFS conversion bugs.
set -euo pipefail

EROFS_UTILS_VERSION=${EROFS_UTILS_VERSION:-1.8.6-1}
EROFS_UTILS_SUITE=${EROFS_UTILS_SUITE:-trixie}
export DEBIAN_FRONTEND=noninteractive

log() { printf '[deps] %s\n' "$*"; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: run as root to install $* (it installs packages)" >&2
        exit 1
    fi
}

apt_updated=0
apt_install() {
    need_root "$@"
    if [ "$apt_updated" = 0 ]; then
        apt-get update -q >/dev/null
        apt_updated=1
    fi
    log "apt-get install $*"
    apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# Build tools and the C toolchain the C example and tests use.
need=()
for p in gcc:gcc g++:g++ make:make pkg-config:pkg-config git:git valgrind:valgrind; do
    command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
# systemd-analyze, which checks packaging/systemd's units in the Go tests.
command -v systemd-analyze >/dev/null || need+=(systemd)
# The system's SQLite (libsqlite3-dev), which test-install links beside the
# library's own to show the two never meet.
compgen -G '/usr/lib/*-linux-gnu/libsqlite3.a' >/dev/null || need+=(libsqlite3-dev)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# mkfs.erofs ($1, default: the one on PATH) >= 1.8.2, not 1.8.7 or 1.8.8.
erofs_ok() {
    local v
    v=$("${1:-mkfs.erofs}" --version 2>/dev/null | sed -n 's/^mkfs\.erofs (erofs-utils) \([0-9.]*\).*/\1/p' | head -n1)
    [ -n "$v" ] || return 1
    case "$v" in 1.8|1.8.0|1.8.1|1.8.7|1.8.8) return 1 ;; esac
    local major minor
    major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
    [ "$major" -gt 1 ] || { [ "$major" = 1 ] && [ "$minor" -ge 8 ]; }
}

if erofs_ok; then
    log "$(mkfs.erofs --version | head -n1) already installed"
else
    apt_install dpkg-dev autoconf automake libtool pkg-config \
        liblz4-dev liblzma-dev libzstd-dev uuid-dev zlib1g-dev
    src_list=/etc/apt/sources.list.d/erofs-snapshotter-src.sources
    cat >"$src_list" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $EROFS_UTILS_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -q >/dev/null
    work=$(mktemp -d /tmp/erofs-utils-build.XXXXXX)
    trap 'rm -rf "$work"; rm -f "$src_list"' EXIT
    log "building erofs-utils $EROFS_UTILS_VERSION from Debian's $EROFS_UTILS_SUITE source package"
    (
        cd "$work"
        apt-get source -q --download-only "erofs-utils=$EROFS_UTILS_VERSION" >/dev/null 2>&1
        tar -xzf erofs-utils_*.orig.tar.gz
        cd erofs-utils-*/
        ./autogen.sh >build.log 2>&1
        ./configure --prefix=/usr/local --disable-fuse --enable-lz4 --enable-lzma \
            --with-zlib --with-libzstd >>build.log 2>&1
        make -j"$(nproc)" >>build.log 2>&1 || { tail -n 30 build.log >&2; exit 1; }
        make install >>build.log 2>&1
    )
    hash -r
    erofs_ok /usr/local/bin/mkfs.erofs || { echo "deps.sh: the erofs-utils build did not install a usable /usr/local/bin/mkfs.erofs" >&2; exit 1; }
    log "installed $(/usr/local/bin/mkfs.erofs --version | head -n1) into /usr/local"
    erofs_ok || log "warning: /usr/local/bin is not first on PATH; set \"mkfs_path\": \"/usr/local/bin/mkfs.erofs\""
fi

# The VM of the integrity tests (tests/vm/run.sh): qemu, a static busybox
# for its initramfs, the tools the guest calls, and Debian's
# bookworm-backports in the sources, from which run.sh downloads the kernel
# (6.12, with fs-verity and dm-verity; nothing is installed from it).
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
for p in cpio:cpio modinfo:kmod fsverity:fsverity veritysetup:cryptsetup-bin mke2fs:e2fsprogs xz:xz-utils; do
    command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
bpo=/etc/apt/sources.list.d/erofs-snapshotter-vm.sources
if ! apt-cache policy 2>/dev/null | grep -q bookworm-backports; then
    need_root "bookworm-backports in the apt sources"
    log "adding bookworm-backports to the apt sources (for the VM's kernel)"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' >"$bpo"
    apt_updated=0
    [ ${#need[@]} -gt 0 ] || { apt-get update -q >/dev/null; apt_updated=1; }
fi
if [ ${#need[@]} -gt 0 ]; then
    # Where qemu-utils came from bookworm-backports, bookworm's
    # qemu-system-x86 conflicts with it: take that from backports too.
    if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
        need_root "${need[@]}"
        apt-get update -q >/dev/null
        apt_updated=1
        log "apt-get install -t bookworm-backports ${need[*]}"
        apt-get install -y -q --no-install-recommends -t bookworm-backports "${need[@]}" >/dev/null
    else
        apt_install "${need[@]}"
    fi
fi

# The Rust toolchain is expected on the machine (rustup); say so clearly if not.
command -v cargo >/dev/null || { echo "deps.sh: cargo not found; install Rust with rustup" >&2; exit 1; }

# cargo-fuzz for the fuzz targets (make test-fuzz), from crates.io.
CARGO_FUZZ_VERSION=${CARGO_FUZZ_VERSION:-0.13.2}
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
