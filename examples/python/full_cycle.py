#!/usr/bin/env python3
"""A full snapshot cycle with the Python binding of erofs-snapshotter:
prepare, write files, commit, view, read back, remove.

Run as root (it mounts), from the repository after `cargo build --release`:

    sudo python3 examples/python/full_cycle.py [ROOT]

ROOT is the snapshotter's directory (default: a temporary one, deleted at
the end).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

try:
    import erofs_snapshotter as es
except ImportError:  # not installed: use the checkout this example sits in
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings" / "python"))
    import erofs_snapshotter as es


def main() -> int:
    if os.geteuid() != 0:
        print("full_cycle.py: run as root (mounting needs CAP_SYS_ADMIN)", file=sys.stderr)
        return 1
    own_root = len(sys.argv) < 2
    root = Path(tempfile.mkdtemp(prefix="erofs-example-")) if own_root else Path(sys.argv[1])
    try:
        with es.Snapshotter({"root": str(root)}) as snap:
            print(f"erofs-snapshotter {es.version()}, root {root}")

            # 1. An active snapshot to write into.
            snap.prepare("build", labels={"example": "full-cycle"})
            with snap.mounted("build") as rootfs:
                (rootfs / "etc").mkdir()
                (rootfs / "etc" / "os-release").write_text('NAME="example"\n')
                (rootfs / "hello.txt").write_text("hello from an EROFS layer\n")

            # 2. Commit it: the upper dir becomes an EROFS image.
            snap.commit("layer-1", "build", labels={"example": "full-cycle"})
            info = snap.stat("layer-1")
            print(f"committed {info.name} ({info.kind}, {snap.usage(info.name).size} bytes, "
                  f"created {info.created.isoformat()})")

            # 3. A read-only view of it, mounted to read the files back.
            mounts = snap.view("reader", "layer-1")
            print(f"view mounts: {[(m.type, m.source) for m in mounts]}")
            with snap.mounted("reader") as rootfs:
                for path in sorted(p for p in rootfs.rglob("*") if p.is_file()):
                    print(f"read back /{path.relative_to(rootfs)}: {path.read_text()!r}")

            print("snapshots:", ", ".join(f"{i.name} ({i.kind})" for i in snap.walk()))
            print("labelled:", [i.name for i in snap.walk("labels.example==full-cycle")])

            # 4. Remove the view, then the layer it depends on.
            snap.remove("reader")
            snap.remove("layer-1")
            snap.cleanup()
            print("removed; snapshots left:", [i.name for i in snap.walk()])
    except es.SnapshotterError as e:
        print(f"full_cycle.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if own_root:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
