#!/usr/bin/env bash
# `make install`: the C library as a system library.
#
#   make install [PREFIX=/usr/local] [LIBDIR=$PREFIX/lib] [INCLUDEDIR=$PREFIX/include]
#                [PKGCONFIGDIR=$LIBDIR/pkgconfig] [DESTDIR=]
#
# Installs, under $DESTDIR:
#   $LIBDIR/liberofs_snapshotter.so.<version>   debug info split off (.debug
#                                                next to it, found by its
#                                                .gnu_debuglink), SONAME
#                                                liberofs_snapshotter.so.0
#   $LIBDIR/liberofs_snapshotter.so.0, .so      links to it
#   $LIBDIR/liberofs_snapshotter.a               one object whose only global
#                                                symbols are erofs_snapshotter_*
#                                                (the bundled SQLite, zstd and
#                                                Rust runtime are local to it),
#                                                without debug info
#   $INCLUDEDIR/erofs_snapshotter.h
#   $PKGCONFIGDIR/erofs-snapshotter.pc           Libs.private: what rustc says a
#                                                static link needs
#                                                (--print native-static-libs)
# Builds first (cargo build --release) if needed. Needs no root with a DESTDIR.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
CARGO=${CARGO:-cargo}
PREFIX=${PREFIX:-/usr/local}
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
PKGCONFIGDIR=${PKGCONFIGDIR:-$LIBDIR/pkgconfig}
DESTDIR=${DESTDIR:-}
for d in PREFIX LIBDIR INCLUDEDIR PKGCONFIGDIR; do
	[[ ${!d} == /* ]] || { echo "install.sh: $d must be an absolute path, got '${!d}'" >&2; exit 2; }
done
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
SOVERSION=$(sed -n 's/^const SOVERSION: u32 = \([0-9]*\);$/\1/p' build.rs)
[ -n "$VERSION" ] && [ -n "$SOVERSION" ] || { echo "install.sh: no version in Cargo.toml or build.rs" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$REPO/$target
REL=$target/release
LIB=liberofs_snapshotter

# What a static link needs besides the archive, as rustc prints it (this
# relinks the library once more with the flag; the build is otherwise fresh).
"$CARGO" build --release --locked --quiet
private=$("$CARGO" rustc --release --locked --lib --quiet -- --print native-static-libs 2>&1 |
	sed -n 's/.*native-static-libs: //p' | tail -n1)
[ -n "$private" ] || { echo "install.sh: rustc did not print the native static libraries" >&2; exit 1; }
"$CARGO" build --release --locked --quiet

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The shared library, its debug info split off.
cp "$REL/$LIB.so" "$work/$LIB.so.$VERSION"
objcopy --only-keep-debug "$work/$LIB.so.$VERSION" "$work/$LIB.so.$VERSION.debug"
objcopy --strip-debug --add-gnu-debuglink="$work/$LIB.so.$VERSION.debug" "$work/$LIB.so.$VERSION"

# The static library: every member linked into one relocatable object, then
# every global symbol but the API's made local, so nothing bundled (SQLite,
# zstd, Rust's runtime) can meet a host's own copy.
nm -g --defined-only "$REL/$LIB.a" 2>/dev/null | awk '$3 ~ /^erofs_snapshotter_/ { print $3 }' | sort -u >"$work/api.syms"
[ -s "$work/api.syms" ] || { echo "install.sh: no erofs_snapshotter_* symbol in $REL/$LIB.a" >&2; exit 1; }
ld -r --whole-archive "$REL/$LIB.a" -o "$work/$LIB.o"
# Without its debug info (a host's build adds its own) and without the LLVM
# bitcode rustc embeds, which binutils' LTO plugins would try to read.
objcopy --strip-debug --remove-section=.llvmbc --remove-section=.llvmcmd \
	--keep-global-symbols="$work/api.syms" "$work/$LIB.o"
ar rcsD "$work/$LIB.a" "$work/$LIB.o"

sed -e "s|@PREFIX@|$PREFIX|; s|@LIBDIR@|$LIBDIR|; s|@INCLUDEDIR@|$INCLUDEDIR|; s|@VERSION@|$VERSION|; s|@PRIVATE@|$private|" \
	packaging/erofs-snapshotter.pc.in >"$work/erofs-snapshotter.pc"

install -d "$DESTDIR$LIBDIR" "$DESTDIR$INCLUDEDIR" "$DESTDIR$PKGCONFIGDIR"
install -m 0755 "$work/$LIB.so.$VERSION" "$DESTDIR$LIBDIR/"
install -m 0644 "$work/$LIB.so.$VERSION.debug" "$DESTDIR$LIBDIR/"
ln -sfn "$LIB.so.$VERSION" "$DESTDIR$LIBDIR/$LIB.so.$SOVERSION"
ln -sfn "$LIB.so.$SOVERSION" "$DESTDIR$LIBDIR/$LIB.so"
install -m 0644 "$work/$LIB.a" "$DESTDIR$LIBDIR/"
install -m 0644 include/erofs_snapshotter.h "$DESTDIR$INCLUDEDIR/"
install -m 0644 "$work/erofs-snapshotter.pc" "$DESTDIR$PKGCONFIGDIR/"
echo "installed $LIB $VERSION (SONAME $LIB.so.$SOVERSION) into ${DESTDIR:-}$LIBDIR, ${DESTDIR:-}$INCLUDEDIR, ${DESTDIR:-}$PKGCONFIGDIR"
