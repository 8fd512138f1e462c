#!/usr/bin/env bash
# The Python package as pip users get it: `pip wheel bindings/python` makes a
# platform wheel carrying the library; installed into a fresh venv and
# imported from another directory, with no EROFS_SNAPSHOTTER_LIB and nothing
# from the checkout on sys.path, it finds its own copy and works (as root: a
# snapshot prepared, mounted, written, committed and read back). Then the
# same from an sdist (python -m build --sdist, in a venv of its own): the
# wheel built from it compiles the library from the Rust sources it carries
# (a cold cargo build: about 3 minutes on 2 cores).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; rm -rf "$REPO/bindings/python/build" "$REPO"/bindings/python/*.egg-info' EXIT

pip wheel --no-cache-dir --no-deps -q -w "$tmp/dist" "$REPO/bindings/python" >"$tmp/wheel.log" 2>&1 ||
	{ cat "$tmp/wheel.log"; echo "FAIL  pip wheel"; exit 1; }
whl=$(ls "$tmp"/dist/*.whl)
case $whl in
*-py3-none-linux_*.whl) echo "PASS  platform wheel $(basename "$whl") ($(du -k "$whl" | cut -f1) KiB)" ;;
*) echo "FAIL  not a platform wheel: $(basename "$whl")"; exit 1 ;;
esac
python3 -m zipfile -l "$whl" >"$tmp/contents"
grep -q 'erofs_snapshotter/liberofs_snapshotter.so' "$tmp/contents" ||
	{ echo "FAIL  the wheel does not carry the library"; exit 1; }

# use_wheel WHEEL: a fresh venv with WHEEL, used from another directory.
use_wheel() {
	local venv
	venv=$(mktemp -d "$tmp/venv.XXXXXX")
	python3 -m venv "$venv"
	"$venv/bin/pip" install -q --no-index "$1"
	mkdir -p "$tmp/elsewhere"
	(cd "$tmp/elsewhere" && env -u EROFS_SNAPSHOTTER_LIB -u PYTHONPATH "$venv/bin/python" - "$(mktemp -d "$tmp/work.XXXXXX")" <"$tmp/use.py")
}
cat >"$tmp/use.py" <<'PY'
import os, sys
import erofs_snapshotter as es
from erofs_snapshotter import _ffi

path = _ffi.default_library().path
assert "site-packages" in path, path
work = sys.argv[1]
with es.Snapshotter({"root": os.path.join(work, "root")}) as s:
    s.prepare("a")
    with s.mounted("a") as p:
        with open(os.path.join(p, "hello"), "w") as f:
            f.write("world")
    s.commit("layer", "a")
    s.view("v", "layer")
    with s.mounted("v") as p:
        assert open(os.path.join(p, "hello")).read() == "world"
    for key in ("v", "layer"):
        s.remove(key)
print(f"PASS  imported from a fresh venv ({es.version()}, {path}), a layer made and read back")
PY
use_wheel "$whl"

# From an sdist: the Rust sources travel in it.
python3 -m venv "$tmp/build-venv"
"$tmp/build-venv/bin/pip" install -q build
(cd "$REPO/bindings/python" && "$tmp/build-venv/bin/python" -m build --sdist -o "$tmp/sdist" . >"$tmp/sdist.log" 2>&1) ||
	{ cat "$tmp/sdist.log"; echo "FAIL  python -m build --sdist"; exit 1; }
sdist=$(ls "$tmp"/sdist/*.tar.gz)
tar tzf "$sdist" >"$tmp/sdist-contents"
grep -q '/rust/Cargo.toml$' "$tmp/sdist-contents" && grep -q '/rust/src/ffi.rs$' "$tmp/sdist-contents" ||
	{ echo "FAIL  the sdist lacks the Rust sources"; exit 1; }
echo "PASS  sdist $(basename "$sdist") carries the Rust sources ($(grep -c '/rust/' "$tmp/sdist-contents") files)"
t0=$(date +%s)
(cd "$tmp" && env -u EROFS_SNAPSHOTTER_LIB pip wheel --no-cache-dir --no-deps -q -w "$tmp/from-sdist" "$sdist" >"$tmp/sdist-wheel.log" 2>&1) ||
	{ tail -n 30 "$tmp/sdist-wheel.log"; echo "FAIL  pip wheel of the sdist"; exit 1; }
echo "PASS  wheel built from the sdist, the library compiled from its sources ($(($(date +%s) - t0)) s)"
use_wheel "$(ls "$tmp"/from-sdist/*.whl)"
