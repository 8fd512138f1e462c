"""Loads liberofs_snapshotter and declares the C signature of every function.

Private: the public API is in ``erofs_snapshotter``. Every function of
``include/erofs_snapshotter.h`` is listed in ``SIGNATURES``; a test checks the
list against the header so that no pointer argument or result is left to
ctypes' ``int`` default (which truncates pointers to 32 bits).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import CFUNCTYPE, POINTER, c_char_p, c_int32, c_int64, c_uint32, c_void_p
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ENV_VAR = "EROFS_SNAPSHOTTER_LIB"
LIB_NAME = "erofs_snapshotter"
LIB_FILE = "liberofs_snapshotter.so"

# Status codes, stable, as include/erofs_snapshotter.h defines them (ctypes
# cannot read #defines; tests/test_ffi.py checks these against the header).
EROFS_OK = 0
EROFS_ERR_INVALID_ARGUMENT = 1
EROFS_ERR_NOT_FOUND = 2
EROFS_ERR_ALREADY_EXISTS = 3
EROFS_ERR_FAILED_PRECONDITION = 4
EROFS_ERR_UNAVAILABLE = 5
EROFS_ERR_NOT_IMPLEMENTED = 6
EROFS_ERR_INTERNAL = 7
EROFS_ERR_PANIC = 8

EROFS_LOG_ERROR = 1
EROFS_LOG_WARN = 2
EROFS_LOG_INFO = 3
EROFS_LOG_DEBUG = 4

EROFS_UNMOUNT_DETACH = 1

# void (*)(void *user_data, int32_t level, const char *message)
LOG_FN = CFUNCTYPE(None, c_void_p, c_int32, c_char_p)

# Returned strings stay raw addresses (not c_char_p, which would copy them
# into bytes and lose the pointer) so that they can be freed.
OUT_STRING = POINTER(c_void_p)
HANDLE = c_void_p
OUT_HANDLE = POINTER(c_void_p)

SIGNATURES: Dict[str, Tuple[Any, List[Any]]] = {
    "erofs_snapshotter_open": (c_int32, [c_char_p, OUT_HANDLE, OUT_STRING]),
    "erofs_snapshotter_open_with_logger": (
        c_int32,
        [c_char_p, LOG_FN, c_void_p, c_int32, OUT_HANDLE, OUT_STRING],
    ),
    "erofs_snapshotter_close": (None, [HANDLE]),
    "erofs_snapshotter_prepare": (
        c_int32,
        [HANDLE, c_char_p, c_char_p, c_char_p, OUT_STRING, OUT_STRING],
    ),
    "erofs_snapshotter_view": (
        c_int32,
        [HANDLE, c_char_p, c_char_p, c_char_p, OUT_STRING, OUT_STRING],
    ),
    "erofs_snapshotter_commit": (
        c_int32,
        [HANDLE, c_char_p, c_char_p, c_char_p, OUT_STRING],
    ),
    "erofs_snapshotter_commit_with_parent": (
        c_int32,
        [HANDLE, c_char_p, c_char_p, c_char_p, c_char_p, OUT_STRING],
    ),
    "erofs_snapshotter_mounts": (c_int32, [HANDLE, c_char_p, OUT_STRING, OUT_STRING]),
    "erofs_snapshotter_remove": (c_int32, [HANDLE, c_char_p, OUT_STRING]),
    "erofs_snapshotter_stat": (c_int32, [HANDLE, c_char_p, OUT_STRING, OUT_STRING]),
    "erofs_snapshotter_update": (
        c_int32,
        [HANDLE, c_char_p, c_char_p, OUT_STRING, OUT_STRING],
    ),
    "erofs_snapshotter_usage": (
        c_int32,
        [HANDLE, c_char_p, POINTER(c_int64), POINTER(c_int64), OUT_STRING],
    ),
    "erofs_snapshotter_walk": (c_int32, [HANDLE, c_char_p, OUT_STRING, OUT_STRING]),
    "erofs_snapshotter_export_layer": (
        c_int32,
        [HANDLE, c_char_p, c_char_p, OUT_STRING, OUT_STRING],
    ),
    "erofs_snapshotter_cleanup": (c_int32, [HANDLE, OUT_STRING]),
    "erofs_snapshotter_apply": (
        c_int32,
        [HANDLE, c_char_p, c_int32, c_char_p, c_char_p, OUT_STRING, OUT_STRING],
    ),
    "erofs_snapshotter_check": (c_int32, [HANDLE, OUT_STRING, OUT_STRING]),
    "erofs_snapshotter_capabilities": (c_int32, [HANDLE, OUT_STRING, OUT_STRING]),
    "erofs_snapshotter_repair": (
        c_int32,
        [HANDLE, c_char_p, c_int32, c_char_p, c_char_p, OUT_STRING, OUT_STRING],
    ),
    "erofs_snapshotter_apply_mounts": (
        c_int32,
        [HANDLE, c_char_p, c_int32, c_char_p, c_char_p, OUT_STRING, OUT_STRING],
    ),
    "erofs_snapshotter_media_types": (c_int32, [OUT_STRING, OUT_STRING]),
    "erofs_snapshotter_mount_all": (c_int32, [c_char_p, c_char_p, OUT_STRING]),
    "erofs_snapshotter_unmount_all": (c_int32, [c_char_p, c_uint32, OUT_STRING]),
    "erofs_snapshotter_string_free": (None, [c_void_p]),
    "erofs_snapshotter_strings_outstanding": (c_int64, []),
    # A static string: c_char_p's copy is right, and it must not be freed.
    "erofs_snapshotter_version": (c_char_p, []),
}


class LibraryNotFoundError(OSError):
    """The shared library could not be found or loaded."""


class Library:
    """A loaded liberofs_snapshotter with every signature declared."""

    def __init__(self, path: str, cdll: ctypes.CDLL) -> None:
        self.path = path
        self.cdll = cdll
        for name, (restype, argtypes) in SIGNATURES.items():
            fn = getattr(cdll, name)
            fn.restype = restype
            fn.argtypes = argtypes

    def __repr__(self) -> str:
        return f"<erofs_snapshotter library {self.path!r}>"

    def take_string(self, p: c_void_p) -> Optional[str]:
        """Copies out and frees a string the library returned (NULL: None)."""
        addr = p.value
        if not addr:
            return None
        p.value = None
        try:
            return ctypes.string_at(addr).decode("utf-8", "replace")
        finally:
            self.cdll.erofs_snapshotter_string_free(addr)

    def strings_outstanding(self) -> int:
        return int(self.cdll.erofs_snapshotter_strings_outstanding())

    def version(self) -> str:
        v = self.cdll.erofs_snapshotter_version()
        return v.decode("utf-8") if v else ""


def repository_root() -> Optional[Path]:
    """The erofs-snapshotter checkout this package sits in, if any."""
    here = Path(__file__).resolve()
    # <repo>/bindings/python/erofs_snapshotter/_ffi.py
    if len(here.parents) < 4:
        return None
    repo = here.parents[3]
    if (repo / "Cargo.toml").is_file() and (repo / "include" / "erofs_snapshotter.h").is_file():
        return repo
    return None


def candidates(lib_path: Optional["os.PathLike[str] | str"] = None) -> List[Tuple[str, str]]:
    """Where to look, in order, as (origin, path-or-name) pairs.

    An explicit ``lib_path`` or ``$EROFS_SNAPSHOTTER_LIB`` is the only
    candidate when given: a wrong explicit choice must fail, not fall through.
    """
    # A directory names the library file in it.
    def file_in(p: str) -> str:
        return os.path.join(p, LIB_FILE) if os.path.isdir(p) else p

    if lib_path is not None:
        return [("lib_path argument", file_in(os.fspath(lib_path)))]
    env = os.environ.get(ENV_VAR)
    if env:
        return [(f"${ENV_VAR}", file_in(env))]
    out: List[Tuple[str, str]] = []
    # A wheel carries the library next to the package.
    bundled = Path(__file__).resolve().parent / LIB_FILE
    if bundled.is_file():
        out.append(("the package's own copy", str(bundled)))
    repo = repository_root()
    if repo is not None:
        for profile in ("release", "debug"):
            p = repo / "target" / profile / LIB_FILE
            if p.is_file():
                out.append((f"repository target/{profile}", str(p)))
    found = ctypes.util.find_library(LIB_NAME)
    if found:
        out.append(("system library path", found))
    # dlopen also searches LD_LIBRARY_PATH, which find_library may miss.
    out.append(("dlopen search path", LIB_FILE))
    return out


_cache: Dict[str, Library] = {}
_cache_lock = threading.Lock()


def load(lib_path: Optional["os.PathLike[str] | str"] = None) -> Library:
    """Loads (once per file) the library, following ``candidates`` order."""
    tried: List[str] = []
    for origin, path in candidates(lib_path):
        is_file_path = os.sep in path
        if is_file_path and not os.path.isfile(path):
            tried.append(f"{origin}: {path} (no such file)")
            continue
        key = os.path.realpath(path) if is_file_path else path
        with _cache_lock:
            lib = _cache.get(key)
            if lib is not None:
                return lib
            try:
                cdll = ctypes.CDLL(path)
            except OSError as e:
                tried.append(f"{origin}: {e}")
                continue
            try:
                lib = Library(path, cdll)
            except AttributeError as e:
                tried.append(f"{origin}: {path} is not liberofs_snapshotter ({e})")
                continue
            _cache[key] = lib
            return lib
    raise LibraryNotFoundError(
        "cannot load liberofs_snapshotter: build it with `cargo build --release` "
        f"or set ${ENV_VAR}; tried: " + "; ".join(tried)
    )


_default: Optional[Library] = None


def default_library() -> Library:
    """The library found by the default search, loaded on first use."""
    global _default
    if _default is None:
        _default = load()
    return _default


def get(lib: "Library | os.PathLike[str] | str | None") -> Library:
    if isinstance(lib, Library):
        return lib
    if lib is None:
        return default_library()
    return load(lib)
