#!/usr/bin/env python3
"""Where the Open row of the scale benchmark stands: SQLite on its own
against this library's whole open, on one root, in one run.

    sqlite_open.py [SNAPSHOTS] [RUNS]      (as root; defaults 1000 and 300)

Makes a root of SNAPSHOTS active snapshots (labelled as the scale
benchmark's) in a temporary directory, then times, RUNS times each, with
nothing else holding the database:

- sqlite3: Python's sqlite3 (the system's SQLite) connecting to the root's
  metadata.db and running one point query: the first connection's WAL
  index and schema read, and nothing of this project;
- library: erofs_snapshotter.Snapshotter on the root (the library's open,
  through ctypes), then close, untimed.

Prints a table of medians. containerd's Open (bolt) is in the scale
benchmark's table (`make bench-scale`): compare this table's sqlite3 row
with it.
"""

import hashlib
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))
os.environ.setdefault(
    "EROFS_SNAPSHOTTER_LIB", os.path.join(HERE, "..", "target", "release", "liberofs_snapshotter.so")
)
import erofs_snapshotter as es  # noqa: E402


def populate(root, n):
    s = es.Snapshotter({"root": root}, logger=None)
    for i in range(n):
        ref = "sha256:" + hashlib.sha256(str(i).encode()).hexdigest()
        s.prepare(
            f"snap-{i:07d}",
            labels={
                "containerd.io/gc.root": "2026-01-01T00:00:00Z",
                "containerd.io/snapshot.ref": ref,
            },
        )
    s.close()


def median_us(fn, runs):
    times = []
    for _ in range(runs):
        times.append(fn())
    return statistics.median(times) * 1e6


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    with tempfile.TemporaryDirectory(prefix="sqlite-open-") as tmp:
        root = os.path.join(tmp, "root")
        populate(root, n)
        # The population's dirty pages written back first: the timings
        # below are of opening, not of the journal committing them.
        os.sync()
        db = os.path.join(root, "metadata.db")

        def sqlite_open():
            t0 = time.perf_counter()
            c = sqlite3.connect(db)
            c.execute("SELECT key FROM snapshots WHERE key = 'snap-0000005'").fetchall()
            t = time.perf_counter() - t0
            c.close()
            return t

        def library_open():
            t0 = time.perf_counter()
            s = es.Snapshotter({"root": root}, logger=None)
            t = time.perf_counter() - t0
            s.close()
            return t

        # Alternated, so both see the same machine.
        a, b = [], []
        for _ in range(runs):
            a.append(sqlite_open())
            b.append(library_open())
        sq, lib = statistics.median(a) * 1e6, statistics.median(b) * 1e6
    print(f"# {' '.join(sys.argv)}; {platform.node()}, {os.cpu_count()} CPUs, "
          f"kernel {platform.release()}; SQLite (Python's) {sqlite3.sqlite_version}; "
          f"{n} snapshots, {runs} runs each, medians")
    print("| open | median | vs sqlite3 |")
    print("|---|---:|---:|")
    print(f"| sqlite3: connect + one point query | {sq:.0f} µs | 1.00 |")
    print(f"| library: Snapshotter(...) (ctypes) | {lib:.0f} µs | {lib / sq:.2f} |")


if __name__ == "__main__":
    main()
