"""Builds a platform wheel that carries liberofs_snapshotter.so.

Everything else is in pyproject.toml. `pip wheel bindings/python` (or
`pip install bindings/python`) from a checkout runs `cargo build --release`
in the repository and puts the library, its debug info stripped, inside the
package, where the package looks first: the installed package needs no
environment variable. $EROFS_SNAPSHOTTER_LIB names a library built
elsewhere instead. An sdist carries the Rust sources (under rust/), so a
wheel built from it builds the library from source (cargo needed).
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
LIB = "liberofs_snapshotter.so"
# What of the repository an sdist carries, to build the library from.
RUST_SOURCES = ["Cargo.toml", "Cargo.lock", "build.rs", "src", "erofs-writer", "benches", "include"]


def library() -> Path:
    """The library the wheel carries."""
    env = os.environ.get("EROFS_SNAPSHOTTER_LIB")
    if env:
        # A directory names the library in it, as at run time.
        return Path(env) / LIB if Path(env).is_dir() else Path(env)
    # An unpacked sdist's copy, else the checkout this directory is in.
    repo = next((d for d in (HERE / "rust", HERE.parent.parent) if (d / "Cargo.toml").is_file()), None)
    if repo is None:
        raise SystemExit(
            f"erofs-snapshotter: no Rust sources (rust/ or ../../) to build {LIB} "
            "from; build from a checkout or an sdist, or set EROFS_SNAPSHOTTER_LIB "
            "to a built library"
        )
    cargo = shutil.which("cargo")
    if cargo is None:
        raise SystemExit(f"erofs-snapshotter: building {LIB} needs cargo (Rust) on PATH")
    subprocess.run([cargo, "build", "--release", "--locked", "--lib"], cwd=repo, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    return (target if target.is_absolute() else repo / target) / "release" / LIB


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "erofs_snapshotter" / LIB
        shutil.copyfile(library(), dest)
        if shutil.which("objcopy"):
            subprocess.run(["objcopy", "--strip-debug", str(dest)], check=True)
        os.chmod(dest, 0o755)


class SDist(sdist):
    """An sdist with the Rust sources of the library under rust/."""

    def make_release_tree(self, base_dir: str, files) -> None:  # type: ignore[no-untyped-def]
        super().make_release_tree(base_dir, files)
        repo = HERE.parent.parent
        for name in RUST_SOURCES:
            src, dst = repo / name, Path(base_dir) / "rust" / name
            if not src.exists():
                raise SystemExit(f"erofs-snapshotter: sdist: {src} is missing (build the sdist from a checkout)")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("target", "__pycache__"))
            else:
                shutil.copy2(src, dst)


class BdistWheel(bdist_wheel):
    """A platform wheel (it carries a shared library), for any Python 3."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):  # type: ignore[no-untyped-def]
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel, "sdist": SDist})
