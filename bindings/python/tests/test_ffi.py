"""The ctypes layer: every function of the header declared with the right
types, and the library search order."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from ctypes import POINTER, c_char_p, c_int32, c_int64, c_uint32, c_void_p
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import erofs_snapshotter as es
from erofs_snapshotter import _ffi

from conftest import HEADER, PKG_DIR, REPO

# The ctypes type each C type of the header must be declared as. String
# out-parameters are raw pointers (never c_char_p) so they can be freed.
C_TO_CTYPES = {
    "void": None,
    "int32_t": c_int32,
    "uint32_t": c_uint32,
    "int64_t": c_int64,
    "int64_t *": POINTER(c_int64),
    "void *": c_void_p,
    "const char *": c_char_p,
    # Only erofs_snapshotter_string_free takes one: the raw returned address.
    "char *": c_void_p,
    "char **": POINTER(c_void_p),
    "erofs_snapshotter *": c_void_p,
    "erofs_snapshotter **": POINTER(c_void_p),
    "erofs_snapshotter_log_fn": _ffi.LOG_FN,
}


def _header_text() -> str:
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _c_type(decl: str) -> str:
    """`const char *config_json` -> `const char *`."""
    decl = " ".join(decl.split())
    m = re.fullmatch(r"(.*?)\s*(\**)\s*([A-Za-z_]\w*)", decl)
    assert m, decl
    base, stars = m.group(1), m.group(2)
    return f"{base} {stars}" if stars else base


def header_functions() -> Dict[str, Tuple[str, List[str]]]:
    out = {}
    proto = re.compile(
        r"((?:const\s+)?[A-Za-z_]\w*(?:\s*\*)*)\s*(erofs_snapshotter_\w+)\s*\(([^()]*)\)\s*;"
    )
    for ret, name, params in proto.findall(_header_text()):
        ret = " ".join(ret.replace("*", " *").split()).replace("* *", "**")
        args = [] if params.strip() in ("", "void") else [_c_type(p) for p in params.split(",")]
        out[name] = (ret, args)
    return out


def test_header_is_parsed() -> None:
    fns = header_functions()
    # A sanity floor, so that a parser regression cannot pass the next test vacuously.
    assert len(fns) >= 18, sorted(fns)
    assert fns["erofs_snapshotter_version"] == ("const char *", [])
    assert fns["erofs_snapshotter_usage"][1] == [
        "erofs_snapshotter *",
        "const char *",
        "int64_t *",
        "int64_t *",
        "char **",
    ]


def test_every_header_function_is_declared(lib: _ffi.Library) -> None:
    fns = header_functions()
    assert set(_ffi.SIGNATURES) == set(fns), "SIGNATURES and the header list different functions"
    for name, (ret, args) in fns.items():
        fn = getattr(lib.cdll, name)
        assert fn.argtypes is not None, f"{name}: argtypes not declared"
        expected_args = [C_TO_CTYPES[a] for a in args]
        assert list(fn.argtypes) == expected_args, f"{name}: argtypes {fn.argtypes} != {expected_args}"
        assert fn.restype is C_TO_CTYPES[ret], f"{name}: restype {fn.restype} != {ret}"


def test_log_fn_typedef_matches() -> None:
    m = re.search(
        r"typedef\s+void\s*\(\s*\*\s*erofs_snapshotter_log_fn\s*\)\s*\(([^)]*)\)", _header_text()
    )
    assert m
    args = [C_TO_CTYPES[_c_type(p)] for p in m.group(1).split(",")]
    assert list(_ffi.LOG_FN._argtypes_) == args
    assert _ffi.LOG_FN._restype_ is None


def test_constants_match_header() -> None:
    # Status codes, log levels, flags (not the header's version macros).
    defines = dict(re.findall(r"#define\s+(EROFS_(?!SNAPSHOTTER_)\w+)\s+(\d+)", _header_text()))
    assert defines, "no #define found"
    for name, value in defines.items():
        assert getattr(_ffi, name) == int(value), name


def test_version_matches_cargo(lib: _ffi.Library) -> None:
    cargo = (REPO / "Cargo.toml").read_text()
    expected = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M).group(1)  # type: ignore[union-attr]
    assert es.version() == expected == lib.version()


def test_counter_sees_an_unfreed_string(lib: _ffi.Library) -> None:
    """The leak check means something: a string not freed is counted."""
    before = lib.strings_outstanding()
    err = c_void_p()
    code = lib.cdll.erofs_snapshotter_open(b"{", None, ctypes.byref(err))
    assert code == _ffi.EROFS_ERR_INVALID_ARGUMENT and err.value
    assert lib.strings_outstanding() == before + 1
    assert "config" in (lib.take_string(err) or "")
    assert err.value is None
    assert lib.strings_outstanding() == before


# ---- search order -------------------------------------------------------------


def test_explicit_path_comes_first(monkeypatch: pytest.MonkeyPatch, lib: _ffi.Library) -> None:
    monkeypatch.setenv(_ffi.ENV_VAR, "/nonexistent/liberofs_snapshotter.so")
    assert _ffi.candidates("/x/lib.so") == [("lib_path argument", "/x/lib.so")]
    assert _ffi.load(lib.path) is lib
    with pytest.raises(es.LibraryNotFoundError, match="lib_path argument"):
        _ffi.load("/nonexistent/elsewhere.so")


def test_env_var_comes_second(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lib: _ffi.Library) -> None:
    link = tmp_path / "liberofs_snapshotter.so"
    link.symlink_to(lib.path)
    monkeypatch.setenv(_ffi.ENV_VAR, str(link))
    assert _ffi.candidates() == [(f"${_ffi.ENV_VAR}", str(link))]
    assert _ffi.load().version() == lib.version()
    monkeypatch.setenv(_ffi.ENV_VAR, str(tmp_path / "missing.so"))
    with pytest.raises(es.LibraryNotFoundError, match=re.escape(_ffi.ENV_VAR)) as e:
        _ffi.load()
    assert isinstance(e.value, OSError)
    (tmp_path / "not-a-library.so").write_text("nope")
    with pytest.raises(es.LibraryNotFoundError):
        _ffi.load(tmp_path / "not-a-library.so")


def test_repository_build_then_system(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(_ffi.ENV_VAR, raising=False)
    assert _ffi.repository_root() == REPO
    for profile in ("release", "debug"):
        d = tmp_path / "target" / profile
        d.mkdir(parents=True)
        (d / _ffi.LIB_FILE).write_bytes(b"")
    monkeypatch.setattr(_ffi, "repository_root", lambda: tmp_path)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: f"lib{name}.so.0")
    assert _ffi.candidates() == [
        ("repository target/release", str(tmp_path / "target/release" / _ffi.LIB_FILE)),
        ("repository target/debug", str(tmp_path / "target/debug" / _ffi.LIB_FILE)),
        ("system library path", "liberofs_snapshotter.so.0"),
        ("dlopen search path", _ffi.LIB_FILE),
    ]
    (tmp_path / "target/release" / _ffi.LIB_FILE).unlink()
    assert _ffi.candidates()[0][0] == "repository target/debug"


def _copy_package(dest: Path) -> Path:
    """The package outside the repository, so that it cannot find target/."""
    shutil.copytree(PKG_DIR / "erofs_snapshotter", dest / "erofs_snapshotter",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _run(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", _ffi.ENV_VAR)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_system_library_path(tmp_path: Path, lib: _ffi.Library) -> None:
    pkg = _copy_package(tmp_path)
    code = "import erofs_snapshotter as e; from erofs_snapshotter import _ffi; print(e.version(), _ffi.default_library().path)"
    r = _run(code, pkg, PYTHONPATH=str(pkg), LD_LIBRARY_PATH=str(Path(lib.path).parent))
    assert r.returncode == 0, r.stderr
    # find_library answers with the SONAME (liberofs_snapshotter.so.0).
    version, path = r.stdout.split()
    assert version == lib.version() and path in (_ffi.LIB_FILE, _ffi.LIB_FILE + ".0"), r.stdout
    if ctypes.util.find_library(_ffi.LIB_NAME) is None:
        r = _run(code, pkg, PYTHONPATH=str(pkg))
        assert r.returncode != 0
        assert "LibraryNotFoundError" in r.stderr and "cargo build --release" in r.stderr


def test_import_from_repository() -> None:
    """As the README documents it: PYTHONPATH=bindings/python from the checkout."""
    r = _run("import erofs_snapshotter as e; print(e.version())", REPO, PYTHONPATH="bindings/python")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == es.version()
