#!/usr/bin/env bash
# `make test-install`: the library as a user of a C system library gets it.
# Installs with `make install PREFIX=/usr DESTDIR=<tmp>`, then, with nothing
# from the build tree on any path:
#   - the shared library has the SONAME liberofs_snapshotter.so.0, its links
#     are in place, and its debug info is split off (a .debug file);
#   - the static library's only global symbols are erofs_snapshotter_*;
#   - the header's version macros agree with erofs_snapshotter_version();
#   - examples/c/example.c builds with `pkg-config --cflags --libs` alone,
#     records liberofs_snapshotter.so.0 and no rpath, and runs end to end
#     (as root) against the installed copy;
#   - it builds statically against the archive with `pkg-config --static`,
#     and runs;
#   - a program that also links the system's SQLite gets the system's
#     (sqlite3_libversion), and linking the system's libsqlite3.a beside the
#     archive meets no duplicate symbol;
#   - the Go example (examples/go, its own module) builds with -tags
#     erofs_pkgconfig against the installed copy, records no build-tree
#     path, and runs.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CC=${CC:-gcc}
fails=0
ok() { echo "PASS  $*"; }
bad() { echo "FAIL  $*"; fails=$((fails + 1)); }
run_root=$(mktemp -d)
trap 'rm -rf "$run_root"' EXIT
DEST=$run_root/dest

make -C "$REPO" --no-print-directory install PREFIX=/usr DESTDIR="$DEST" >/dev/null
LIBDIR=$DEST/usr/lib
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -n1)
export PKG_CONFIG_PATH=$LIBDIR/pkgconfig PKG_CONFIG_SYSROOT_DIR=$DEST PKG_CONFIG_LIBDIR=$LIBDIR/pkgconfig

so=$LIBDIR/liberofs_snapshotter.so.$VERSION
soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = liberofs_snapshotter.so.0 ] && ok "SONAME $soname" || bad "SONAME '$soname', want liberofs_snapshotter.so.0"
[ "$(readlink "$LIBDIR/liberofs_snapshotter.so.0")" = "liberofs_snapshotter.so.$VERSION" ] &&
	[ "$(readlink "$LIBDIR/liberofs_snapshotter.so")" = liberofs_snapshotter.so.0 ] &&
	ok "links .so -> .so.0 -> .so.$VERSION" || bad "the links of the shared library"
if readelf -S "$so" | grep -q '\.debug_info' || [ ! -s "$so.debug" ] ||
	! readelf -S "$so.debug" | grep -q '\.debug_info'; then
	bad "debug info not split off $so"
else
	ok "debug info split off: $(du -k "$so" | cut -f1) KiB library, $(du -k "$so.debug" | cut -f1) KiB .debug"
fi

others=$(nm -g --defined-only "$LIBDIR/liberofs_snapshotter.a" 2>/dev/null | awk 'NF == 3 && $3 !~ /^erofs_snapshotter_/ { print $3 }')
api=$(nm -g --defined-only "$LIBDIR/liberofs_snapshotter.a" 2>/dev/null | awk 'NF == 3 && $3 ~ /^erofs_snapshotter_/' | wc -l)
[ -z "$others" ] && [ "$api" -gt 10 ] && ok "static library: $api global symbols, all erofs_snapshotter_*" ||
	bad "static library exports $(wc -w <<<"$others") other symbols: $(head -c 300 <<<"$others")"

cat >"$run_root/version.c" <<'C'
#include <stdio.h>
#include <string.h>
#include "erofs_snapshotter.h"
int main(void) {
    printf("%s %d.%d.%d so.%d\n", erofs_snapshotter_version(), EROFS_SNAPSHOTTER_VERSION_MAJOR,
           EROFS_SNAPSHOTTER_VERSION_MINOR, EROFS_SNAPSHOTTER_VERSION_PATCH, EROFS_SNAPSHOTTER_SOVERSION);
    return strcmp(erofs_snapshotter_version(), EROFS_SNAPSHOTTER_VERSION) != 0;
}
C
# shellcheck disable=SC2046 # pkg-config's flags, split on purpose
$CC -Wall -Werror -o "$run_root/version" "$run_root/version.c" $(pkg-config --cflags --libs erofs-snapshotter)
out=$(LD_LIBRARY_PATH=$LIBDIR "$run_root/version") && [ "$out" = "$VERSION $VERSION so.0" ] &&
	ok "version macros: $out" || bad "version macros: '$out'"

# shellcheck disable=SC2046
$CC -std=c11 -Wall -Wextra -Werror -o "$run_root/example" "$REPO/examples/c/example.c" \
	$(pkg-config --cflags --libs erofs-snapshotter)
needed=$(readelf -d "$run_root/example" | sed -n 's/.*(NEEDED).*\[\(liberofs.*\)\]/\1/p')
rpath=$(readelf -d "$run_root/example" | grep -E 'RPATH|RUNPATH' || true)
[ "$needed" = liberofs_snapshotter.so.0 ] && [ -z "$rpath" ] &&
	ok "example built with pkg-config: NEEDED $needed, no rpath" || bad "example: NEEDED '$needed', '$rpath'"
if LD_LIBRARY_PATH=$LIBDIR "$run_root/example" "$(mktemp -d "$run_root/ex.XXXXXX")" >"$run_root/example.log" 2>&1; then
	ok "example ran against the installed library: $(tail -n1 "$run_root/example.log")"
else
	bad "example against the installed library:"; sed 's/^/  /' "$run_root/example.log"
fi

# shellcheck disable=SC2046
$CC -std=c11 -Wall -Wextra -Werror -o "$run_root/example-static" "$REPO/examples/c/example.c" \
	$(pkg-config --cflags erofs-snapshotter) -Wl,-Bstatic -lerofs_snapshotter -Wl,-Bdynamic \
	$(pkg-config --static --libs erofs-snapshotter | sed 's/-lerofs_snapshotter//')
if readelf -d "$run_root/example-static" | grep -q 'NEEDED.*liberofs'; then
	bad "the static example needs the shared library"
elif "$run_root/example-static" "$(mktemp -d "$run_root/ex.XXXXXX")" >"$run_root/static.log" 2>&1; then
	ok "example built with pkg-config --static, linked without the shared library, ran"
else
	bad "static example:"; sed 's/^/  /' "$run_root/static.log"
fi

# The host's own SQLite beside ours.
cat >"$run_root/sqlite.c" <<'C'
#include <stdio.h>
#include "erofs_snapshotter.h"
const char *sqlite3_libversion(void);
int main(void) { printf("%s %s\n", sqlite3_libversion(), erofs_snapshotter_version()); return 0; }
C
system_sqlite=$(python3 -c 'import sqlite3; print(sqlite3.sqlite_version)')
sqlite_so=$(ls /usr/lib/*-linux-gnu/libsqlite3.so.0 /usr/lib64/libsqlite3.so.0 2>/dev/null | head -n1 || true)
if [ -n "$sqlite_so" ]; then
	# shellcheck disable=SC2046
	$CC -o "$run_root/sqlite" "$run_root/sqlite.c" $(pkg-config --cflags erofs-snapshotter) \
		-Wl,-Bstatic -lerofs_snapshotter -Wl,-Bdynamic "$sqlite_so" \
		$(pkg-config --static --libs erofs-snapshotter | sed 's/-lerofs_snapshotter//')
	got=$("$run_root/sqlite" | cut -d' ' -f1)
	[ "$got" = "$system_sqlite" ] && ok "a host linking the system's SQLite ($sqlite_so) gets $got, not the bundled one" ||
		bad "sqlite3_libversion() is $got with the system's $system_sqlite linked"
else
	bad "no libsqlite3.so.0 on this machine to link beside the library"
fi
sqlite_a=$(ls /usr/lib/*-linux-gnu/libsqlite3.a 2>/dev/null | head -n1 || true)
if [ -n "$sqlite_a" ]; then
	# shellcheck disable=SC2046
	if $CC -o "$run_root/sqlite-static" "$run_root/sqlite.c" $(pkg-config --cflags erofs-snapshotter) \
		-Wl,-Bstatic -lerofs_snapshotter -Wl,-Bdynamic "$sqlite_a" \
		$(pkg-config --static --libs erofs-snapshotter | sed 's/-lerofs_snapshotter//') 2>"$run_root/link.log"; then
		ok "linked beside the system's libsqlite3.a: no duplicate symbol; $("$run_root/sqlite-static")"
	else
		bad "linking beside $sqlite_a:"; head -n 5 "$run_root/link.log" | sed 's/^/  /'
	fi
else
	bad "no libsqlite3.a (libsqlite3-dev) on this machine"
fi

# The Go example from its own module, linked against the installed library
# with pkg-config (tag erofs_pkgconfig): no path into the build tree.
# (CGO_CFLAGS names the DESTDIR: Go's build cache keeps a cgo package's
# pkg-config answer, and keys it on CGO_CFLAGS, not on PKG_CONFIG_PATH.)
if (cd "$REPO/examples/go" && CGO_CFLAGS="-O2 -g -I$DEST/usr/include" GOFLAGS=-buildvcs=false \
	go build -tags erofs_pkgconfig -o "$run_root/go-example" .) \
	>"$run_root/go-build.log" 2>&1; then
	needed=$(readelf -d "$run_root/go-example" | sed -n 's/.*(NEEDED).*\[\(liberofs.*\)\]/\1/p')
	paths=$(readelf -d "$run_root/go-example" | grep -E 'RPATH|RUNPATH' || true)
	strings "$run_root/go-example" | grep -q "$REPO/target" && in_tree=yes || in_tree=no
	if [ "$needed" = liberofs_snapshotter.so.0 ] && [ -z "$paths" ] && [ "$in_tree" = no ]; then
		ok "Go example built with -tags erofs_pkgconfig: NEEDED $needed, no rpath, no target/ path in it"
	else
		bad "Go example: NEEDED '$needed', '$paths', build-tree path in the binary: $in_tree"
	fi
	printf 'version = 3\nroot = "%s/containerd"\n' "$run_root" >"$run_root/go-example.toml"
	if LD_LIBRARY_PATH=$LIBDIR "$run_root/go-example" -config "$run_root/go-example.toml" >"$run_root/go-run.log" 2>&1 &&
		grep -q 'Committed example' "$run_root/go-run.log"; then
		ok "Go example ran against the installed library"
	else
		bad "Go example run:"; sed 's/^/  /' "$run_root/go-run.log"
	fi
else
	bad "Go example with -tags erofs_pkgconfig:"; tail -n 20 "$run_root/go-build.log" | sed 's/^/  /'
fi

echo "test-install: $([ "$fails" = 0 ] && echo passed || echo "$fails failed")"
[ "$fails" = 0 ]
