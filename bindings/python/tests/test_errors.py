"""One exception class per status code, each raised by the real library
where the library can produce it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import erofs_snapshotter as es
from erofs_snapshotter import _ffi
from erofs_snapshotter._errors import ERRORS, error_for

CLASSES = {
    _ffi.EROFS_ERR_INVALID_ARGUMENT: es.InvalidArgumentError,
    _ffi.EROFS_ERR_NOT_FOUND: es.NotFoundError,
    _ffi.EROFS_ERR_ALREADY_EXISTS: es.AlreadyExistsError,
    _ffi.EROFS_ERR_FAILED_PRECONDITION: es.FailedPreconditionError,
    _ffi.EROFS_ERR_UNAVAILABLE: es.UnavailableError,
    _ffi.EROFS_ERR_NOT_IMPLEMENTED: es.UnimplementedError,
    _ffi.EROFS_ERR_INTERNAL: es.InternalError,
    _ffi.EROFS_ERR_PANIC: es.PanicError,
}


@pytest.mark.parametrize("code,cls", sorted(CLASSES.items()), ids=lambda v: getattr(v, "__name__", str(v)))
def test_one_class_per_status(code: int, cls: type) -> None:
    assert ERRORS[code] is cls and cls.code == code
    e = error_for(code, "some message")
    assert type(e) is cls and isinstance(e, es.SnapshotterError)
    assert e.code == code and e.message == "some message" and str(e) == "some message"


def test_builtin_bases() -> None:
    assert issubclass(es.NotFoundError, KeyError)
    assert issubclass(es.InvalidArgumentError, ValueError)
    assert issubclass(es.UnimplementedError, NotImplementedError)
    assert set(ERRORS) == set(range(1, 9))
    # KeyError would otherwise print the repr of its argument.
    assert str(es.NotFoundError("not found: x")) == "not found: x"


def test_unknown_status_and_missing_message() -> None:
    e = error_for(42, None)
    assert type(e) is es.SnapshotterError and e.code == 42 and "42" in str(e)


def test_invalid_argument(snap: es.Snapshotter) -> None:
    snap.prepare("active")
    for call in (
        lambda: snap.prepare(""),
        lambda: snap.walk("kind==="),
        lambda: snap.prepare("k", labels={"": "v"}),
        lambda: snap.prepare("k", labels={"k": 1}),  # type: ignore[dict-item]
        lambda: snap.update("active", {}, ["parent"]),
    ):
        with pytest.raises(es.InvalidArgumentError, match="invalid argument") as e:
            call()
        assert isinstance(e.value, ValueError) and e.value.code == 1
    with pytest.raises(es.InvalidArgumentError):
        snap.prepare("child", parent="active")  # parent not committed
    with pytest.raises(es.InvalidArgumentError, match="NUL"):
        snap.stat("a\0b")  # ctypes would silently pass "a"


def test_invalid_config(root: Path) -> None:
    for config in ({"root": str(root), "set_immutible": True}, {"root": "relative"}, "{not json", {}):
        with pytest.raises(es.InvalidArgumentError, match="config"):
            es.Snapshotter(config)  # type: ignore[arg-type]
    with pytest.raises(es.InvalidArgumentError, match="set_immutible"):
        es.Snapshotter(json.dumps({"root": str(root), "set_immutible": True}))


def test_not_found(snap: es.Snapshotter) -> None:
    for call in (
        lambda: snap.stat("missing"),
        lambda: snap.mounts("missing"),
        lambda: snap.remove("missing"),
        lambda: snap.usage("missing"),
        lambda: snap.commit("c", "missing"),
        lambda: snap.update("missing", {"a": "b"}),
        lambda: snap.prepare("k", parent="missing"),
        lambda: snap.view("k", parent="missing"),
    ):
        with pytest.raises(es.NotFoundError, match='"missing"') as e:
            call()
        assert isinstance(e.value, KeyError) and e.value.code == 2
    # As a KeyError it fits dict-like code.
    try:
        snap.stat("missing")
    except KeyError as e:
        assert "does not exist" in str(e)


def test_already_exists(snap: es.Snapshotter) -> None:
    snap.prepare("a")
    with pytest.raises(es.AlreadyExistsError, match='"a"'):
        snap.prepare("a")
    with pytest.raises(es.AlreadyExistsError):
        snap.view("a")
    snap.commit("c", "a")
    snap.prepare("b")
    with pytest.raises(es.AlreadyExistsError, match='"c"') as e:
        snap.commit("c", "b")
    assert e.value.code == 3


def test_failed_precondition(snap: es.Snapshotter) -> None:
    snap.prepare("a")
    snap.commit("base", "a")
    snap.prepare("child", "base")
    snap.view("v", "base")
    with pytest.raises(es.FailedPreconditionError, match="children"):
        snap.remove("base")
    with pytest.raises(es.FailedPreconditionError, match="not active"):
        snap.commit("x", "v")
    with pytest.raises(es.FailedPreconditionError):
        snap.commit("x", "base")
    with pytest.raises(es.FailedPreconditionError) as e:
        snap.mounts("base")
    assert e.value.code == 4


def test_unavailable(root: Path) -> None:
    # mkfs.erofs is needed only for options the built-in writer lacks.
    config = {"root": str(root), "mkfs_path": str(root / "no-mkfs.erofs"), "mkfs_options": ["-x2"]}
    with pytest.raises(es.UnavailableError, match="mkfs_path") as e:
        es.Snapshotter(config)
    assert e.value.code == 5


def test_internal(tmp_path: Path, as_root: None) -> None:
    # A metadata database that is not one: nothing the caller did wrong.
    root = tmp_path / "root"
    root.mkdir()
    (root / "metadata.db").write_bytes(b"this is not an SQLite database, " * 64)
    with pytest.raises(es.InternalError, match="metadata database") as e:
        es.Snapshotter({"root": str(root)})
    assert e.value.code == 7
