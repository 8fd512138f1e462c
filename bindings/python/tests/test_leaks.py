"""Every C string the library returns is freed, on success and on error.

conftest's autouse fixture already checks the counter around every test;
here each method runs its success and error paths many times, and a spy
checks that the binding freed exactly the strings the library handed out.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import erofs_snapshotter as es
from erofs_snapshotter import _ffi

ROUNDS = 25


def workload(s: es.Snapshotter, i: int) -> None:
    def fails(exc: type, fn, *args, **kw) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(exc):
            fn(*args, **kw)

    k = f"a{i}"
    s.prepare(k, labels={"i": str(i)})
    fails(es.AlreadyExistsError, s.prepare, k)
    fails(es.NotFoundError, s.prepare, f"x{i}", "missing")
    fails(es.InvalidArgumentError, s.prepare, "")
    s.mounts(k)
    fails(es.NotFoundError, s.mounts, "missing")
    s.stat(k)
    fails(es.NotFoundError, s.stat, "missing")
    s.update(k, {"j": "1"}, ["labels.j"])
    fails(es.InvalidArgumentError, s.update, k, {}, ["parent"])
    s.usage(k)
    fails(es.NotFoundError, s.usage, "missing")
    s.walk()
    s.walk("kind==active", "labels.i")
    fails(es.InvalidArgumentError, s.walk, "kind===")
    s.commit(f"c{i}", k)
    fails(es.AlreadyExistsError, s.commit, f"c{i}", k)
    fails(es.NotFoundError, s.commit, f"d{i}", k)
    s.view(f"v{i}", f"c{i}")
    fails(es.FailedPreconditionError, s.mounts, f"c{i}")
    fails(es.FailedPreconditionError, s.commit, "x", f"v{i}")
    fails(es.FailedPreconditionError, s.remove, f"c{i}")
    s.remove(f"v{i}")
    s.remove(f"c{i}")
    fails(es.NotFoundError, s.remove, f"c{i}")
    s.cleanup()
    fails(es.InvalidArgumentError, es.mount_all, [], "/")
    es.unmount_all("/nonexistent-mount-point")


def test_no_string_leaks(root: Path, lib: _ffi.Library, monkeypatch: pytest.MonkeyPatch) -> None:
    freed = [0]
    real = lib.cdll
    real_free = real.erofs_snapshotter_string_free

    class Spy:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(real, name)

        def erofs_snapshotter_string_free(self, p: int) -> None:
            freed[0] += 1
            real_free(p)

    before = lib.strings_outstanding()
    with es.Snapshotter({"root": str(root)}, logger=logging.getLogger("leaks"), log_level=logging.DEBUG) as s:
        monkeypatch.setattr(lib, "cdll", Spy())
        for i in range(ROUNDS):
            workload(s, i)
        monkeypatch.undo()
    assert lib.strings_outstanding() == before
    # Each round frees a string for every call that returned one.
    assert freed[0] >= ROUNDS * 20


def test_open_errors_do_not_leak(root: Path, lib: _ffi.Library) -> None:
    before = lib.strings_outstanding()
    for _ in range(ROUNDS):
        for bad in ({"root": str(root), "bogus": 1}, {"root": "rel"}, {"root": str(root), "mkfs_path": "/none", "mkfs_options": ["-x2"]}):
            with pytest.raises(es.SnapshotterError):
                es.Snapshotter(bad)
            with pytest.raises(es.SnapshotterError):
                es.Snapshotter(bad, logger=lambda lvl, m: None)
    assert lib.strings_outstanding() == before
