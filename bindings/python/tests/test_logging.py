"""The logger callback through erofs_snapshotter_open_with_logger."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import erofs_snapshotter as es


def test_callable_logger_gets_debug_records(root: Path) -> None:
    records: list[tuple[int, str, str]] = []

    def log(level: int, message: str) -> None:
        records.append((level, message, threading.current_thread().name))

    with es.Snapshotter({"root": str(root)}, logger=log, log_level=logging.DEBUG) as s:
        s.prepare("a")
        with pytest.raises(es.NotFoundError):
            s.stat("missing")
    messages = [m for _, m, _ in records]
    assert any(m.startswith('prepare "a": ok in') for m in messages), messages
    assert any(m.startswith('stat "missing": not found') for m in messages), messages
    assert all(level == logging.DEBUG for level, m, _ in records if " in " in m)


def test_logging_logger(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.erofs")
    logger.setLevel(logging.DEBUG)
    with caplog.at_level(logging.DEBUG, logger="test.erofs"):
        with es.Snapshotter({"root": str(root)}, logger=logger) as s:
            s.walk()
    assert any(r.name == "test.erofs" and r.levelno == logging.DEBUG and r.getMessage().startswith("walk")
               for r in caplog.records)


def test_default_logger_forwards_warnings_only(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="erofs_snapshotter"):
        with es.Snapshotter({"root": str(root)}) as s:
            s.prepare("a")
            s.walk()
    assert not [r for r in caplog.records if r.levelno < logging.WARNING]
    with es.Snapshotter({"root": str(root)}, logger=None) as s:  # no callback at all
        assert s.stat("a").name == "a"


def test_callback_outlives_its_creator(root: Path) -> None:
    """The CFUNCTYPE trampoline is kept alive by the handle, not the caller."""
    got: list[str] = []
    s = es.Snapshotter({"root": str(root)}, logger=lambda lvl, m: got.append(m), log_level=logging.DEBUG)
    gc.collect()
    try:
        for i in range(20):
            s.prepare(f"k{i}")
            gc.collect()
    finally:
        s.close()
    assert len([m for m in got if m.startswith("prepare")]) == 20


def test_failing_logger_does_not_break_calls(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))

    def bad(level: int, message: str) -> None:
        raise RuntimeError("logger bug")

    with es.Snapshotter({"root": str(root)}, logger=bad, log_level=logging.DEBUG) as s:
        s.prepare("a")
        assert s.stat("a").name == "a"
    assert seen and all(isinstance(e, RuntimeError) for e in seen)


def test_bad_logger_argument(root: Path) -> None:
    with pytest.raises(TypeError):
        es.Snapshotter({"root": str(root)}, logger="not a logger")  # type: ignore[arg-type]


def test_default_logger_gets_library_warnings(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cleanup that cannot finish is a warning on logging.getLogger("erofs_snapshotter")."""
    with es.Snapshotter({"root": str(root)}) as s:
        (m,) = s.prepare("a")
        pinned = Path(m.source) / "pinned"
        pinned.write_text("x")
        subprocess.run(["chattr", "+i", str(pinned)], check=True)
        try:
            s.remove("a")
            with caplog.at_level(logging.WARNING, logger="erofs_snapshotter"):
                s.cleanup()
        finally:
            subprocess.run(["chattr", "-R", "-i", str(root / "trash")], check=True)
        s.cleanup()
    warnings = [r for r in caplog.records if r.name == "erofs_snapshotter" and r.levelno == logging.WARNING]
    assert any("could not delete" in r.getMessage() for r in warnings), caplog.records
    assert not any((root / "trash").iterdir())
