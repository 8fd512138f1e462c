#!/usr/bin/env bash
# The default path needs no erofs-utils at run time: the C example, the
# Python example and the Go example run with a PATH on which there is no
# mkfs.erofs (erofs-utils stays a test-time tool: fsck.erofs judges images).
set -euo pipefail
cd "$(dirname "$0")/.."

# PATH without any directory that holds mkfs.erofs.
path=""
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
    [ -n "$d" ] && [ ! -e "$d/mkfs.erofs" ] && path="${path:+$path:}$d"
done
if PATH="$path" command -v mkfs.erofs >/dev/null; then
    echo "no-erofs-utils: could not hide mkfs.erofs" >&2
    exit 1
fi
echo "PATH without mkfs.erofs: $path"
PATH="$path" ./target/c/example
PATH="$path" python3 examples/python/full_cycle.py
(cd examples/go && PATH="$path" ../../scripts/go-with-lib test -count=1 ./...)
echo "no-erofs-utils: the C, Python and Go examples ran without mkfs.erofs"
