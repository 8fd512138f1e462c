"""The Snapshotter handle and the mount helpers."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import tempfile
import threading
import warnings
import weakref
from ctypes import byref, c_int64, c_void_p
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Union,
)

from . import _ffi
from ._errors import FailedPreconditionError, InvalidArgumentError, SnapshotterError, error_for, for_path
from ._types import Applied, Info, Mount, Usage

LOGGER_NAME = "erofs_snapshotter"

LogCallback = Callable[[int, str], None]
LoggerArg = Union[LogCallback, logging.Logger, None]
LibArg = Union[_ffi.Library, "os.PathLike[str]", str, None]
PathArg = Union["os.PathLike[str]", str]
MountsArg = Iterable[Union[Mount, Mapping[str, Any]]]

_FROM_EROFS_LEVEL = {
    _ffi.EROFS_LOG_ERROR: logging.ERROR,
    _ffi.EROFS_LOG_WARN: logging.WARNING,
    _ffi.EROFS_LOG_INFO: logging.INFO,
    _ffi.EROFS_LOG_DEBUG: logging.DEBUG,
}


def _to_erofs_level(level: int) -> int:
    if level <= logging.DEBUG:
        return _ffi.EROFS_LOG_DEBUG
    if level <= logging.INFO:
        return _ffi.EROFS_LOG_INFO
    if level <= logging.WARNING:
        return _ffi.EROFS_LOG_WARN
    return _ffi.EROFS_LOG_ERROR


def _cstr(value: Union[str, bytes, "os.PathLike[str]", None], what: str) -> Optional[bytes]:
    """UTF-8 bytes for a C string argument; None stays NULL."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidArgumentError(f"invalid argument: {what} is not valid UTF-8: {e}") from None
    else:
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    # ctypes would silently cut the string at the first NUL.
    if b"\0" in raw:
        raise InvalidArgumentError(f"invalid argument: {what} contains a NUL byte")
    return raw


def _layer_source(layer: Any) -> "tuple[int, Optional[bytes]]":
    """(fd, path) for the C ABI: exactly one of them is given."""
    if isinstance(layer, int):
        if layer < 0:
            raise InvalidArgumentError(f"invalid argument: fd {layer} is negative")
        return layer, None
    if isinstance(layer, (str, bytes, os.PathLike)):
        return -1, _cstr(layer, "layer path")
    fileno = getattr(layer, "fileno", None)
    if callable(fileno):
        # Buffered Python readers may have read ahead: the library reads the descriptor.
        tell = getattr(layer, "tell", None)
        fd = fileno()
        if callable(tell):
            os.lseek(fd, tell(), os.SEEK_SET)
        return fd, None
    raise TypeError(f"layer must be a path, a file descriptor or a file object, not {type(layer).__name__}")


def _json_default(o: Any) -> Any:
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _json(value: Any, what: str) -> bytes:
    try:
        text = json.dumps(value, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"invalid argument: {what}: {e}") from None
    return text.encode("utf-8")


def _labels_json(labels: Optional[Mapping[str, str]]) -> Optional[bytes]:
    if labels is None:
        return None
    if not isinstance(labels, Mapping):
        raise TypeError(f"labels must be a mapping of str to str, not {type(labels).__name__}")
    return _json(dict(labels), "labels")


def _strings(values: Iterable[str], what: str) -> List[str]:
    if isinstance(values, str):
        values = [values]
    out = list(values)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"{what} must be strings, not {type(v).__name__}")
    return out


def _mounts_json(mounts: MountsArg) -> bytes:
    items = [m.to_dict() if isinstance(m, Mount) else dict(m) for m in mounts]
    return _json(items, "mounts")


def _parse_mounts(text: Optional[str]) -> List[Mount]:
    return [Mount.from_dict(d) for d in json.loads(text or "[]")]


def _call(lib: _ffi.Library, fn: Any, *args: Any, out: bool = False) -> Optional[str]:
    """Calls ``fn(*args[, &out], &err)``; frees whatever strings came back and
    raises the status code's exception on failure."""
    err = c_void_p()
    result = c_void_p()
    try:
        if out:
            code = fn(*args, byref(result), byref(err))
        else:
            code = fn(*args, byref(err))
    finally:
        # Both are freed whatever the status: the contract says only one is
        # ever set, but a leak must not depend on it.
        message = lib.take_string(err)
        text = lib.take_string(result)
    if code != _ffi.EROFS_OK:
        raise error_for(code, message)
    return text


# ---- mounting without a handle ---------------------------------------------


def mount_all(mounts: MountsArg, target: PathArg, *, lib_path: LibArg = None) -> None:
    """Mounts ``mounts`` (as ``prepare``/``view``/``mounts`` return them) on
    the existing directory ``target``, in order; on failure nothing stays
    mounted. Needs CAP_SYS_ADMIN. Done by the C library
    (``erofs_snapshotter_mount_all``)."""
    L = _ffi.get(lib_path)
    try:
        _call(L, L.cdll.erofs_snapshotter_mount_all, _mounts_json(mounts), _cstr(target, "target"))
    except SnapshotterError as e:
        raise for_path(e, target) from None


def unmount_all(target: PathArg, *, detach: bool = False, lib_path: LibArg = None) -> None:
    """Unmounts everything stacked on ``target``; ``detach`` unmounts lazily.
    Not being a mount point is not an error."""
    L = _ffi.get(lib_path)
    flags = _ffi.EROFS_UNMOUNT_DETACH if detach else 0
    try:
        _call(L, L.cdll.erofs_snapshotter_unmount_all, _cstr(target, "target"), flags)
    except SnapshotterError as e:
        raise for_path(e, target) from None


@contextlib.contextmanager
def mounted(
    mounts: MountsArg, target: Optional[PathArg] = None, *, lib_path: LibArg = None
) -> Iterator[Path]:
    """Mounts ``mounts`` on ``target`` (default: a new temporary directory),
    yields the path, then unmounts (and removes the directory it created)."""
    L = _ffi.get(lib_path)
    mounts = list(mounts)
    created = target is None
    path = Path(tempfile.mkdtemp(prefix="erofs-snapshotter-")) if created else Path(target)  # type: ignore[arg-type]
    try:
        mount_all(mounts, path, lib_path=L)
        try:
            yield path
        finally:
            try:
                unmount_all(path, lib_path=L)
            except FailedPreconditionError as e:
                # Busy (an open file, a cwd inside): detach rather than leave it mounted.
                logging.getLogger(LOGGER_NAME).warning("%s; detaching it lazily", e)
                unmount_all(path, detach=True, lib_path=L)
    finally:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()


def media_types(*, lib_path: LibArg = None) -> List[str]:
    """The layer media types ``Snapshotter.apply`` reads (besides ``""``, a
    tar with its compression detected), as the library lists them
    (``erofs_snapshotter_media_types``)."""
    L = _ffi.get(lib_path)
    text = _call(L, L.cdll.erofs_snapshotter_media_types, out=True)
    return [str(t) for t in json.loads(text or "[]")]


def version(*, lib_path: LibArg = None) -> str:
    """The version of the loaded library, e.g. ``"0.1.0"``."""
    return _ffi.get(lib_path).version()


def strings_outstanding(*, lib_path: LibArg = None) -> int:
    """Strings the library returned (process-wide) that are not freed yet."""
    return _ffi.get(lib_path).strings_outstanding()


# ---- the handle -------------------------------------------------------------

# Open handles, closed at exit: the library may call a Python logger from its
# own thread until close returns, which must not happen during finalization.
_live: "weakref.WeakSet[Snapshotter]" = weakref.WeakSet()


@atexit.register
def _close_all_at_exit() -> None:
    for s in list(_live):
        s.close()


_DEFAULT: Any = object()


class Snapshotter:
    """An open erofs-snapshotter on one root directory.

    ``config`` is the JSON configuration, as a mapping or a JSON string, e.g.
    ``{"root": "/var/lib/erofs-snapshotter"}``. ``lib_path`` is the shared
    library's path (or a loaded ``Library``); by default it is searched for.

    ``logger`` receives the library's log records: a ``logging.Logger``, or a
    callable ``(level, message)`` with a ``logging`` level, or None for no
    records. By default warnings and errors go to
    ``logging.getLogger("erofs_snapshotter")``. ``log_level`` (a ``logging``
    level) selects how much is sent: WARNING by default, or the effective
    level of a given ``logging.Logger``; DEBUG adds one record per operation.
    The logger may be called from any thread and must not call back into
    this snapshotter.

    Thread safe: one handle may be shared by many threads. ``close`` waits for
    calls in progress in other threads.
    """

    def __init__(
        self,
        config: Union[Mapping[str, Any], str],
        *,
        lib_path: LibArg = None,
        logger: LoggerArg = _DEFAULT,
        log_level: Optional[int] = None,
    ) -> None:
        self._handle: Optional[c_void_p] = None
        self._log_fn: Any = None
        self._cond = threading.Condition()
        self._busy = 0
        self._lib = _ffi.get(lib_path)
        if isinstance(config, str):
            config_json = _cstr(config, "config")
            try:
                parsed = json.loads(config)
            except ValueError:
                parsed = None  # the library names what is wrong
            self.config: Dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        elif isinstance(config, Mapping):
            config_json = _json(dict(config), "config")
            self.config = json.loads(config_json)
        else:
            raise TypeError(f"config must be a mapping or a JSON string, not {type(config).__name__}")

        if logger is _DEFAULT:
            logger = logging.getLogger(LOGGER_NAME)
            if log_level is None:
                log_level = logging.WARNING
        handle = c_void_p()
        L = self._lib
        if logger is None:
            _call(L, L.cdll.erofs_snapshotter_open, config_json, byref(handle))
        else:
            sink = self._make_sink(logger)
            if log_level is None:
                log_level = logger.getEffectiveLevel() if isinstance(logger, logging.Logger) else logging.WARNING
            # Kept alive until close returns: the library holds its address.
            log_fn = _ffi.LOG_FN(sink)
            _call(
                L,
                L.cdll.erofs_snapshotter_open_with_logger,
                config_json,
                log_fn,
                None,
                _to_erofs_level(log_level),
                byref(handle),
            )
            self._log_fn = log_fn
        if not handle.value:
            raise error_for(_ffi.EROFS_ERR_INTERNAL, "internal: open returned no handle")
        self._handle = handle
        _live.add(self)

    @staticmethod
    def _make_sink(logger: Union[LogCallback, logging.Logger]) -> Callable[[Any, int, Optional[bytes]], None]:
        emit: LogCallback
        if isinstance(logger, logging.Logger):
            emit = logger.log
        elif callable(logger):
            emit = logger
        else:
            raise TypeError(f"logger must be a logging.Logger or a callable, not {type(logger).__name__}")

        def sink(_user_data: Any, level: int, message: Optional[bytes]) -> None:
            text = message.decode("utf-8", "replace") if message else ""
            emit(_FROM_EROFS_LEVEL.get(level, logging.WARNING), text)

        return sink

    # -- lifetime -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._handle is None

    @property
    def lib(self) -> _ffi.Library:
        return self._lib

    def close(self) -> None:
        """Closes the handle (idempotent): waits for calls in progress and for
        background deletion; the last handle on a root detaches its layer
        mounts (overlays already mounted keep working)."""
        with self._cond:
            handle = self._handle
            if handle is None:
                return
            self._handle = None
            while self._busy:
                self._cond.wait()
        try:
            self._lib.cdll.erofs_snapshotter_close(handle)
        finally:
            self._log_fn = None
            _live.discard(self)

    def __enter__(self) -> "Snapshotter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # A safety net only: close explicitly or use `with`.
        if getattr(self, "_handle", None) is None:
            return
        try:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<erofs_snapshotter.Snapshotter root={self.config.get('root')!r} {state}>"

    @contextlib.contextmanager
    def _use(self) -> Iterator[c_void_p]:
        with self._cond:
            if self._handle is None:
                raise FailedPreconditionError("failed precondition: the snapshotter is closed")
            self._busy += 1
            handle = self._handle
        try:
            yield handle
        finally:
            with self._cond:
                self._busy -= 1
                if not self._busy:
                    self._cond.notify_all()

    # -- operations -----------------------------------------------------------

    def prepare(
        self, key: str, parent: Optional[str] = None, labels: Optional[Mapping[str, str]] = None
    ) -> List[Mount]:
        """Creates active snapshot ``key`` on committed ``parent`` (None: empty)
        and returns the mounts to write into it."""
        args = (_cstr(key, "key"), _cstr(parent or None, "parent"), _labels_json(labels))
        with self._use() as h:
            text = _call(self._lib, self._lib.cdll.erofs_snapshotter_prepare, h, *args, out=True)
        return _parse_mounts(text)

    def view(
        self, key: str, parent: Optional[str] = None, labels: Optional[Mapping[str, str]] = None
    ) -> List[Mount]:
        """Creates read-only view ``key`` of committed ``parent`` (None: empty)."""
        args = (_cstr(key, "key"), _cstr(parent or None, "parent"), _labels_json(labels))
        with self._use() as h:
            text = _call(self._lib, self._lib.cdll.erofs_snapshotter_view, h, *args, out=True)
        return _parse_mounts(text)

    def commit(
        self,
        name: str,
        key: str,
        labels: Optional[Mapping[str, str]] = None,
        parent: Optional[str] = None,
    ) -> None:
        """Commits active snapshot ``key`` as ``name`` (its labels replace the
        active snapshot's). ``key`` must not be mounted any more.

        ``parent`` (containerd's ``WithParent``) commits a snapshot prepared
        without a parent on top of committed snapshot ``parent``, as
        containerd's parallel unpack does; the parent it was prepared on
        changes nothing, another one raises ``InvalidArgumentError``."""
        args = (
            _cstr(name, "name"),
            _cstr(key, "key"),
            _cstr(parent or None, "parent"),
            _labels_json(labels),
        )
        with self._use() as h:
            _call(self._lib, self._lib.cdll.erofs_snapshotter_commit_with_parent, h, *args)

    def mounts(self, key: str) -> List[Mount]:
        """The mounts of active snapshot or view ``key``."""
        k = _cstr(key, "key")
        with self._use() as h:
            text = _call(self._lib, self._lib.cdll.erofs_snapshotter_mounts, h, k, out=True)
        return _parse_mounts(text)

    def remove(self, key: str) -> None:
        """Removes snapshot ``key`` (which must have no children)."""
        k = _cstr(key, "key")
        with self._use() as h:
            _call(self._lib, self._lib.cdll.erofs_snapshotter_remove, h, k)

    def stat(self, key: str) -> Info:
        """Information about snapshot ``key``."""
        k = _cstr(key, "key")
        with self._use() as h:
            text = _call(self._lib, self._lib.cdll.erofs_snapshotter_stat, h, k, out=True)
        return Info.from_dict(json.loads(text or "{}"))

    def update(
        self,
        info: Union[Info, str],
        labels: Optional[Mapping[str, str]] = None,
        fieldpaths: Optional[Sequence[str]] = None,
    ) -> Info:
        """Updates the labels of a snapshot, given by name or by an ``Info``
        (whose labels are used unless ``labels`` is given). No ``fieldpaths``
        or ``["labels"]`` replaces all labels; ``"labels.<key>"`` sets or (when
        absent from ``labels``) removes one. Returns the updated info."""
        if isinstance(info, Info):
            name = info.name
            if labels is None:
                labels = info.labels
        else:
            name = info
        if not isinstance(name, str):
            raise TypeError(f"info must be an Info or a snapshot name, not {type(name).__name__}")
        _cstr(name, "name")
        if labels is not None and not isinstance(labels, Mapping):
            raise TypeError(f"labels must be a mapping of str to str, not {type(labels).__name__}")
        info_json = _json({"name": name, "labels": dict(labels or {})}, "info")
        paths = None if fieldpaths is None else _json(_strings(fieldpaths, "fieldpaths"), "fieldpaths")
        with self._use() as h:
            text = _call(self._lib, self._lib.cdll.erofs_snapshotter_update, h, info_json, paths, out=True)
        return Info.from_dict(json.loads(text or "{}"))

    def usage(self, key: str) -> Usage:
        """Disk usage of ``key``: its upper dir now if active, else as committed."""
        k = _cstr(key, "key")
        size, inodes = c_int64(), c_int64()
        with self._use() as h:
            _call(self._lib, self._lib.cdll.erofs_snapshotter_usage, h, k, byref(size), byref(inodes))
        return Usage(size=size.value, inodes=inodes.value)

    def export_layer(self, key: str, cache_dir: PathArg) -> Path:
        """Puts the layer of committed snapshot ``key`` into layer content
        cache ``cache_dir`` (an absolute path; what another root's
        ``layer_content_caches`` names) by the diffID of its
        ``containerd.io/snapshot/diff-id`` label, and returns the file's path.
        A root using that cache then converts the layer no more."""
        args = (_cstr(key, "key"), _cstr(cache_dir, "cache_dir"))
        with self._use() as h:
            text = _call(self._lib, self._lib.cdll.erofs_snapshotter_export_layer, h, *args, out=True)
        return Path(text or "")

    def walk(self, *filters: str) -> List[Info]:
        """Every snapshot matching any of ``filters`` (containerd filter
        syntax, e.g. ``'kind==active,labels."a.b"==c'``), ordered by name."""
        fj = _json(_strings(filters, "filters"), "filters") if filters else None
        with self._use() as h:
            text = _call(self._lib, self._lib.cdll.erofs_snapshotter_walk, h, fj, out=True)
        return [Info.from_dict(d) for d in json.loads(text or "[]")]

    def cleanup(self) -> None:
        """Deletes what no snapshot owns (removed snapshots' files, the
        trash), then checks every committed layer as ``check`` does."""
        with self._use() as h:
            _call(self._lib, self._lib.cdll.erofs_snapshotter_cleanup, h)

    def check(self) -> List[str]:
        """Checks the blob of every committed layer against what its commit
        recorded and returns the keys of every lost layer (cut short,
        missing, or with blocks that never reached the disk after a crash;
        found now, logged as a warning, or before).
        A snapshot whose chain holds a lost layer is refused
        (``FailedPreconditionError``) until ``repair`` makes it again."""
        with self._use() as h:
            text = _call(self._lib, self._lib.cdll.erofs_snapshotter_check, h, out=True)
        return list(json.loads(text or "[]"))

    def capabilities(self) -> List[str]:
        """What a containerd plugin of this snapshotter advertises:
        ``"rebase"`` (parallel unpack), ``"only-remap-ids"``, and
        ``"remap-ids"`` when this kernel mounts EROFS layers through ID-mapped
        mounts. With it, a snapshot labelled
        ``containerd.io/snapshot/uidmapping`` and ``.../gidmapping``
        (``"0:100000:65536"``) has an upper dir owned by the mapped root, and
        ``mount_all`` / ``mounted`` make its layers' mounts ID-mapped."""
        with self._use() as h:
            text = _call(self._lib, self._lib.cdll.erofs_snapshotter_capabilities, h, out=True)
        return list(json.loads(text or "[]"))

    def repair(
        self,
        key: str,
        layer: Union[PathArg, int, Any],
        media_type: str = "",
        digest: Optional[str] = None,
    ) -> Applied:
        """Makes lost layer ``key`` (see ``check``) again from its OCI layer,
        given as to ``apply``; checked against the diffID its commit recorded
        (label ``containerd.io/snapshot/diff-id``) when there is one. The
        snapshot keeps its key, labels and children; on failure it stays lost."""
        return self._apply_call(self._lib.cdll.erofs_snapshotter_repair, key, layer, media_type, digest)

    def apply(
        self,
        key: str,
        layer: Union[PathArg, int, Any],
        media_type: str = "",
        digest: Optional[str] = None,
    ) -> Applied:
        """Applies an OCI layer to active snapshot ``key``: converted straight
        into its EROFS image (which ``commit`` then uses) instead of being
        unpacked into the upper dir.

        ``layer`` is a path, a file descriptor, or an object with
        ``fileno()`` (read from its current position; not closed).
        ``media_type`` is the layer descriptor's (empty: a tar, compression
        detected; ``application/vnd.erofs.layer.v1`` for a native EROFS blob;
        ``media_types()`` lists the others)
        and ``digest`` its digest, verified when given. Returns the
        uncompressed layer's digest (diffID) and size.
        """
        return self._apply_call(self._lib.cdll.erofs_snapshotter_apply, key, layer, media_type, digest)

    def _apply_call(
        self, fn: Any, key: str, layer: Union[PathArg, int, Any], media_type: str, digest: Optional[str]
    ) -> Applied:
        k = _cstr(key, "key")
        fd, path = _layer_source(layer)
        opts: Dict[str, Any] = {"media_type": media_type}
        if digest is not None:
            opts["digest"] = digest
        oj = _json(opts, "options")
        with self._use() as h:
            text = _call(self._lib, fn, h, k, fd, path, oj, out=True)
        return Applied.from_dict(json.loads(text or "{}"))

    @contextlib.contextmanager
    def mounted(self, key: str, target: Optional[PathArg] = None) -> Iterator[Path]:
        """Mounts what ``mounts(key)`` returns on ``target`` (default: a new
        temporary directory), yields its path, then unmounts it::

            with snap.mounted("my-active") as root:
                (root / "hello").write_text("hi")
        """
        with mounted(self.mounts(key), target, lib_path=self._lib) as path:
            yield path
