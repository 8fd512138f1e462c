"""Shared fixtures: each test gets its own snapshotter root; mounts are
cleaned up even when a test fails; every test checks that no C string the
library returned was left unfreed."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List

import pytest

PKG_DIR = Path(__file__).resolve().parents[1]
REPO = PKG_DIR.parents[1]
HEADER = REPO / "include" / "erofs_snapshotter.h"

# Test the source tree, even if another copy is installed.
sys.path.insert(0, str(PKG_DIR))

import erofs_snapshotter as es  # noqa: E402
from erofs_snapshotter import _ffi  # noqa: E402


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points() -> List[str]:
    with open("/proc/self/mountinfo") as f:
        return [_unescape(line.split()[4]) for line in f if line.strip()]


def is_mount(path: "os.PathLike[str] | str") -> bool:
    # os.path.ismount misses bind mounts within one filesystem.
    return os.path.realpath(path) in mount_points()


def mounts_under(prefix: "os.PathLike[str] | str") -> List[str]:
    p = os.path.realpath(prefix).rstrip("/") + "/"
    return [m for m in mount_points() if m.startswith(p)]


def detach_all_under(prefix: "os.PathLike[str] | str") -> List[str]:
    left = mounts_under(prefix)
    for m in sorted(left, key=len, reverse=True):
        es.unmount_all(m, detach=True)
    return left


@pytest.fixture(scope="session")
def lib() -> _ffi.Library:
    return _ffi.default_library()


@pytest.fixture(autouse=True)
def no_string_leaks(lib: _ffi.Library) -> Iterator[None]:
    before = lib.strings_outstanding()
    yield
    after = lib.strings_outstanding()
    assert after == before, f"{after - before} C string(s) returned by the library were not freed"


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "this test needs root (CAP_SYS_ADMIN for mount(2), overlayfs upper dirs); "
            "run the suite as root: sudo python3 -m pytest -q bindings/python/tests",
            pytrace=False,
        )


@pytest.fixture
def root(tmp_path: Path, as_root: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh snapshotter root. Temporary mount points go below the test's
    directory too; whatever is still mounted there at the end is detached,
    and reported."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield tmp_path / "root"
    leftovers = detach_all_under(tmp_path)
    assert not leftovers, f"mounts left behind: {leftovers}"


@pytest.fixture
def snap(root: Path) -> Iterator[es.Snapshotter]:
    s = es.Snapshotter({"root": str(root)})
    try:
        yield s
    finally:
        s.close()
