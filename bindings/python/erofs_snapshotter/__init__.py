"""Python binding of erofs-snapshotter, a containerd-style EROFS snapshotter.

    from erofs_snapshotter import Snapshotter

    with Snapshotter({"root": "/var/lib/erofs-snapshotter"}) as snap:
        snap.prepare("work")
        with snap.mounted("work") as root:
            (root / "hello.txt").write_text("hello\\n")
        snap.commit("layer-1", "work")

The shared library is found through ``lib_path=``, ``$EROFS_SNAPSHOTTER_LIB``,
this repository's ``target/release`` then ``target/debug``, then the system
library path.
"""

from ._errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    LibraryNotFoundError,
    NotFoundError,
    PanicError,
    PathNotFoundError,
    PathPermissionError,
    SnapshotterError,
    UnavailableError,
    UnimplementedError,
)
from ._ffi import ENV_VAR, Library, load as load_library
from ._snapshotter import (
    Snapshotter,
    media_types,
    mount_all,
    mounted,
    strings_outstanding,
    unmount_all,
    version,
)
from ._types import Applied, Info, Kind, Mount, Usage

__version__ = "0.1.0"

__all__ = [
    "Snapshotter",
    "Kind",
    "Mount",
    "Info",
    "Usage",
    "Applied",
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
    "Library",
    "load_library",
    "mount_all",
    "unmount_all",
    "mounted",
    "media_types",
    "version",
    "strings_outstanding",
    "ENV_VAR",
]
