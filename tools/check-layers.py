#!/usr/bin/env python3
"""The import graph of src/ against the layers docs/design.md describes.

    tools/check-layers.py [SRC]

Reads every `crate::MODULE` a module of SRC (default src) names outside
comments and its unit tests, and fails (exit 1) when a module uses one of a
higher layer, when the graph has a loop, or when a module is in no layer
(a new file must be placed, here and in docs/design.md "Code layout").
`make lint` runs it.
"""

import os
import re
import sys

# docs/design.md, "Code layout": a module uses only its own layer or below.
LAYERS = [
    ["sys"],
    ["error", "json", "logging", "filters", "idmap"],
    ["info", "tar", "integrity", "dmverity", "trash", "subprocess", "loopdev"],
    ["mkfs_options", "lowers", "layout", "mounts", "config", "metastore", "layer_out", "layer_cache"],
    ["mkfs", "layer_tar", "layer_mounts", "block_layer"],
    ["upper_dir", "differ"],
    ["snapshotter"],
    ["ffi"],
    ["lib"],
]


def graph(src):
    deps = {}
    for root, _, files in os.walk(src):
        rel_root = os.path.relpath(root, src)
        if rel_root.split(os.sep)[0] == "bin":
            continue
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.normpath(os.path.join(rel_root, f[:-3]))
            module = rel.split(os.sep)[0]
            text = open(os.path.join(root, f)).read()
            text = re.sub(r"(?m)//.*$", "", text)
            text = re.sub(r"(?s)#\[cfg\(test\)\]\s*mod tests \{.*", "", text)
            uses = deps.setdefault(module, set())
            uses.update(m for m in re.findall(r"crate::([a-z_]+)", text) if m != module)
    return deps


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    layer = {m: i for i, ms in enumerate(LAYERS) for m in ms}
    deps = graph(src)
    errors = []
    for m in sorted(deps):
        if m not in layer:
            errors.append(f"{m}: in no layer (add it to tools/check-layers.py and docs/design.md)")
            continue
        for d in sorted(deps[m]):
            if d in layer and layer[d] > layer[m]:
                errors.append(f"{m} (layer {layer[m] + 1}) uses {d} (layer {layer[d] + 1})")
    # Loops inside a layer.
    state = {}

    def visit(m, path):
        state[m] = 1
        for d in sorted(deps.get(m, ())):
            if state.get(d) == 1:
                errors.append("loop: " + " -> ".join(path[path.index(d):] + [d]))
            elif d in deps and not state.get(d):
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(deps):
        if not state.get(m):
            visit(m, [m])
    for e in errors:
        print(f"check-layers: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    edges = sum(len(v) for v in deps.values())
    print(f"check-layers: {len(deps)} modules, {edges} imports, no loop, none upward")


if __name__ == "__main__":
    main()
