"""One exception class per status code of the C ABI."""

from __future__ import annotations

from typing import Dict, Optional, Type

from . import _ffi
from ._ffi import LibraryNotFoundError


class SnapshotterError(Exception):
    """An error reported by liberofs_snapshotter.

    ``code`` is the library's status code (``EROFS_ERR_*``) and ``message``
    its one-line message, e.g. ``not found: snapshot "k" does not exist``.
    """

    code: int = -1

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    # KeyError's own __str__ would print the repr of the message.
    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(SnapshotterError, ValueError):
    """A malformed argument: bad JSON, empty key, bad label or filter, ..."""

    code = _ffi.EROFS_ERR_INVALID_ARGUMENT


class NotFoundError(SnapshotterError, KeyError):
    """The snapshot (or its parent) does not exist."""

    code = _ffi.EROFS_ERR_NOT_FOUND


class AlreadyExistsError(SnapshotterError):
    """A snapshot with that key or name already exists."""

    code = _ffi.EROFS_ERR_ALREADY_EXISTS


class FailedPreconditionError(SnapshotterError):
    """The snapshot's state forbids the operation (e.g. removing a parent)."""

    code = _ffi.EROFS_ERR_FAILED_PRECONDITION


class UnavailableError(SnapshotterError):
    """The machine lacks something (kernel feature, mkfs.erofs, disk space)."""

    code = _ffi.EROFS_ERR_UNAVAILABLE


class UnimplementedError(SnapshotterError, NotImplementedError):
    """The operation is not implemented (``EROFS_ERR_NOT_IMPLEMENTED``)."""

    code = _ffi.EROFS_ERR_NOT_IMPLEMENTED


class InternalError(SnapshotterError):
    """Anything else; the message says what."""

    code = _ffi.EROFS_ERR_INTERNAL


class PanicError(SnapshotterError):
    """A bug in the library, caught at its boundary."""

    code = _ffi.EROFS_ERR_PANIC


class PathNotFoundError(NotFoundError, FileNotFoundError):
    """A path given (a mount target) does not exist: a ``NotFoundError``
    that is also Python's ``FileNotFoundError`` (``errno`` ENOENT,
    ``filename`` the path)."""


class PathPermissionError(FailedPreconditionError, PermissionError):
    """The system refused an operation on a path (EPERM, EACCES): a
    ``FailedPreconditionError`` that is also Python's ``PermissionError``."""


def for_path(e: SnapshotterError, path: object) -> SnapshotterError:
    """``e``, as the ``OSError`` subclass that fits it when it is about the
    mount target ``path`` itself (the library's "mount point ..." and
    "mount target ..." errors; the system's ``(os error N)`` at the end),
    else as it is: a missing source or lower dir keeps its own message and
    is not blamed on the target."""
    import errno as _errno

    if not e.message.split(": ", 1)[-1].startswith(("mount point ", "mount target ")):
        return e

    os_errno = None
    if e.message.endswith(")") and "(os error " in e.message:
        try:
            os_errno = int(e.message.rsplit("(os error ", 1)[1].rstrip(")"))
        except ValueError:
            os_errno = None
    cls: Optional[Type[SnapshotterError]] = None
    if isinstance(e, NotFoundError):
        cls, os_errno = PathNotFoundError, os_errno or _errno.ENOENT
    elif isinstance(e, FailedPreconditionError) and os_errno in (_errno.EPERM, _errno.EACCES):
        cls = PathPermissionError
    if cls is None:
        return e
    out = cls(e.message, e.code)
    out.errno = os_errno
    out.strerror = e.message
    out.filename = str(path)
    return out


ERRORS: Dict[int, Type[SnapshotterError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        UnavailableError,
        UnimplementedError,
        InternalError,
        PanicError,
    )
}


def error_for(code: int, message: Optional[str]) -> SnapshotterError:
    """The exception for a status code; unknown codes get the base class."""
    if not message:
        message = f"liberofs_snapshotter returned status {code} without a message"
    cls = ERRORS.get(code)
    if cls is None:
        return SnapshotterError(message, code)
    return cls(message)


__all__ = [
    "SnapshotterError",
    "InvalidArgumentError",
    "NotFoundError",
    "AlreadyExistsError",
    "FailedPreconditionError",
    "UnavailableError",
    "UnimplementedError",
    "InternalError",
    "PanicError",
    "PathNotFoundError",
    "PathPermissionError",
    "LibraryNotFoundError",
    "ERRORS",
    "error_for",
    "for_path",
]
