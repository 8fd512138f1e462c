"""Builds a platform wheel that carries liberofs_snapshotter.so.

Everything else is in pyproject.toml. `pip wheel bindings/python` (or
`pip install bindings/python`) from a checkout runs `cargo build --release`
in the repository and puts the library, its debug info stripped, inside the
package, where the package looks first: the installed package needs no
environment variable. $EROFS_SNAPSHOTTER_LIB names a library built
elsewhere instead.
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
LIB = "liberofs_snapshotter.so"


def library() -> Path:
    """The library the wheel carries."""
    env = os.environ.get("EROFS_SNAPSHOTTER_LIB")
    if env:
        return Path(env)
    repo = HERE.parent.parent
    if not (repo / "Cargo.toml").is_file():
        raise SystemExit(
            "erofs-snapshotter: no Rust sources at ../../Cargo.toml to build "
            f"{LIB} from; build from a checkout of the repository, or set "
            "EROFS_SNAPSHOTTER_LIB to a built library"
        )
    cargo = shutil.which("cargo")
    if cargo is None:
        raise SystemExit(f"erofs-snapshotter: building {LIB} needs cargo (Rust) on PATH")
    subprocess.run([cargo, "build", "--release", "--locked", "--lib"], cwd=repo, check=True)
    return repo / "target" / "release" / LIB


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "erofs_snapshotter" / LIB
        shutil.copyfile(library(), dest)
        if shutil.which("objcopy"):
            subprocess.run(["objcopy", "--strip-debug", str(dest)], check=True)
        os.chmod(dest, 0o755)


class BdistWheel(bdist_wheel):
    """A platform wheel (it carries a shared library), for any Python 3."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):  # type: ignore[no-untyped-def]
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel})
