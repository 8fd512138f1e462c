#!/usr/bin/env bash
# The Python package as pip users get it: `pip wheel bindings/python` makes a
# platform wheel carrying the library; installed into a fresh venv and
# imported from another directory, with no EROFS_SNAPSHOTTER_LIB and nothing
# from the checkout on sys.path, it finds its own copy and works (as root: a
# snapshot prepared, mounted, written, committed and read back).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; rm -rf "$REPO/bindings/python/build" "$REPO"/bindings/python/*.egg-info' EXIT

pip wheel --no-deps -q -w "$tmp/dist" "$REPO/bindings/python" >"$tmp/wheel.log" 2>&1 ||
	{ cat "$tmp/wheel.log"; echo "FAIL  pip wheel"; exit 1; }
whl=$(ls "$tmp"/dist/*.whl)
case $whl in
*-py3-none-linux_*.whl) echo "PASS  platform wheel $(basename "$whl") ($(du -k "$whl" | cut -f1) KiB)" ;;
*) echo "FAIL  not a platform wheel: $(basename "$whl")"; exit 1 ;;
esac
python3 -m zipfile -l "$whl" >"$tmp/contents"
grep -q 'erofs_snapshotter/liberofs_snapshotter.so' "$tmp/contents" ||
	{ echo "FAIL  the wheel does not carry the library"; exit 1; }

python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --no-index "$whl"
mkdir "$tmp/elsewhere"
cd "$tmp/elsewhere"
env -u EROFS_SNAPSHOTTER_LIB -u PYTHONPATH "$tmp/venv/bin/python" - "$tmp/work" <<'PY'
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
