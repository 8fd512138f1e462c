"""The EROFS differ from Python: OCI layers applied straight into EROFS."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

import erofs_snapshotter as es


def layer(files: dict, whiteouts: tuple = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(content))
        for name in whiteouts:
            parent, _, base = name.rpartition("/")
            info = tarfile.TarInfo(f"{parent}/.wh.{base}" if parent else f".wh.{base}")
            t.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_apply_two_layers_from_paths_and_files(snap: es.Snapshotter, tmp_path: Path) -> None:
    l1 = layer({"etc/hello": b"one", "etc/gone": b"x"})
    l2 = layer({"etc/new": b"two"}, whiteouts=("etc/gone",))
    (tmp_path / "l1.tar.gz").write_bytes(gzip.compress(l1))
    snap.prepare("l1-extract")
    got = snap.apply(
        "l1-extract",
        tmp_path / "l1.tar.gz",
        media_type="application/vnd.oci.image.layer.v1.tar+gzip",
        digest=digest((tmp_path / "l1.tar.gz").read_bytes()),
    )
    assert got == es.Applied(digest=digest(l1), size=len(l1), media_type="application/vnd.oci.image.layer.v1.tar")
    snap.commit("l1", "l1-extract")

    (tmp_path / "l2.tar").write_bytes(l2)
    snap.prepare("l2-extract", "l1")
    with open(tmp_path / "l2.tar", "rb") as f:
        assert snap.apply("l2-extract", f).digest == digest(l2)
    snap.commit("l2", "l2-extract")

    snap.view("v", "l2")
    with snap.mounted("v") as root:
        assert (root / "etc/hello").read_bytes() == b"one"
        assert (root / "etc/new").read_bytes() == b"two"
        assert not (root / "etc/gone").exists()


def opaque(files: dict, dirs: tuple) -> bytes:
    """A layer holding `files` and an opaque marker in each of `dirs`."""
    return layer({**files, **{f"{d}/.wh..wh..opq": b"" for d in dirs}})


def test_parallel_unpack_rebases_at_commit(snap: es.Snapshotter, tmp_path: Path) -> None:
    """containerd's parallel unpack: every layer prepared and applied without
    a parent (here in reverse order), then committed onto the one below.
    Whiteouts and opaque directories in every layer position."""
    layers = [
        layer({"a/keep": b"1", "a/old": b"1", "d/x": b"1", "gone": b"1"}, whiteouts=("never",)),
        opaque({"d/y": b"2", "b/two": b"2"}, dirs=("d",)),
        layer({"c/three": b"3"}, whiteouts=("gone", "a/old")),
        opaque({"a/new": b"4"}, dirs=("a",)),
    ]
    for i in reversed(range(len(layers))):
        (tmp_path / f"{i}.tar").write_bytes(layers[i])
        snap.prepare(f"extract-{i}", labels={"containerd.io/snapshot.ref": f"chain-{i}"})
        snap.apply(f"extract-{i}", tmp_path / f"{i}.tar")
    for i in range(len(layers)):
        snap.commit(f"chain-{i}", f"extract-{i}", parent=f"chain-{i - 1}" if i else None)
        assert snap.stat(f"chain-{i}").parent == (f"chain-{i - 1}" if i else None)

    expected = [
        {"a/keep": b"1", "a/old": b"1", "d/x": b"1", "gone": b"1"},
        {"a/keep": b"1", "a/old": b"1", "d/y": b"2", "gone": b"1", "b/two": b"2"},
        {"a/keep": b"1", "d/y": b"2", "b/two": b"2", "c/three": b"3"},
        {"a/new": b"4", "d/y": b"2", "b/two": b"2", "c/three": b"3"},
    ]
    for i, want in enumerate(expected):
        snap.view(f"v{i}", f"chain-{i}")
        with snap.mounted(f"v{i}") as root:
            got = {
                str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            }
            assert got == want, i
    # The rebased chain is the one removal follows: a parent with children stays.
    with pytest.raises(es.FailedPreconditionError):
        snap.remove("chain-2")
    # containerd's WithParent semantics.
    snap.prepare("late")
    with pytest.raises(es.NotFoundError):
        snap.commit("late-c", "late", parent="nope")
    with pytest.raises(es.FailedPreconditionError):
        snap.commit("late-c", "late", parent="v0")
    snap.prepare("on-top", "chain-0")
    snap.commit("on-top-c", "on-top", parent="chain-0")  # its own parent: no change
    snap.prepare("on-top2", "chain-0")
    with pytest.raises(es.InvalidArgumentError):
        snap.commit("on-top2-c", "on-top2", parent="chain-1")
    assert snap.stat("on-top2").kind == "active"


def test_apply_errors(snap: es.Snapshotter, tmp_path: Path) -> None:
    good = layer({"f": b"x" * 10000})
    (tmp_path / "cut.tar").write_bytes(good[:700])
    snap.prepare("a")
    with pytest.raises(es.InvalidArgumentError, match="truncated"):
        snap.apply("a", tmp_path / "cut.tar")
    with pytest.raises(es.InvalidArgumentError, match="digest mismatch"):
        snap.apply("a", _file(tmp_path, good), digest=digest(b"other"))
    with pytest.raises(es.NotFoundError):
        snap.apply("missing", _file(tmp_path, good))
    with pytest.raises(es.NotFoundError, match="open layer"):
        snap.apply("a", tmp_path / "no-such.tar")
    snap.view("v")
    with pytest.raises(es.FailedPreconditionError):
        snap.apply("v", _file(tmp_path, good))
    with pytest.raises(TypeError):
        snap.apply("a", 3.5)  # type: ignore[arg-type]
    # The snapshot is unharmed and still takes the good layer.
    assert snap.apply("a", _file(tmp_path, good)).size == len(good)
    snap.commit("c", "a")


def _file(tmp_path: Path, data: bytes):
    p = tmp_path / f"layer-{hashlib.sha256(data).hexdigest()[:8]}.tar"
    p.write_bytes(data)
    return open(p, "rb")


def test_media_types_come_from_the_library(snap: es.Snapshotter, tmp_path: Path) -> None:
    types = es.media_types()
    assert len(types) == len(set(types)) and all(isinstance(t, str) and t for t in types)
    for t in (
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.erofs.layer.v1",
        "application/vnd.erofs.layer.v1+zstd",
    ):
        assert t in types
    assert es.media_types(lib_path=snap.lib) == types
    # apply reads every listed gzip tar type, and refuses what is not listed.
    data = gzip.compress(layer({"f": b"x"}))
    (tmp_path / "l.tar.gz").write_bytes(data)
    snap.prepare("a")
    for t in (t for t in types if t.endswith("gzip")):
        assert snap.apply("a", tmp_path / "l.tar.gz", media_type=t).size > 0
    with pytest.raises(es.InvalidArgumentError, match="not a layer type"):
        snap.apply("a", tmp_path / "l.tar.gz", media_type="application/vnd.oci.image.layer.v1.tar+encrypted")


def test_layer_content_cache_shared_by_two_roots(snap: es.Snapshotter, root: Path, tmp_path: Path) -> None:
    """The first root converts and exports; the second, whose
    layer_content_caches names the cache, converts nothing."""
    cache = tmp_path / "cache"
    layers = [layer({"etc/a": b"1", "etc/gone": b"x"}), layer({"etc/b": b"2"}, whiteouts=("etc/gone",))]
    diff_ids = [digest(data) for data in layers]

    def unpack(s: es.Snapshotter) -> int:
        applied = 0
        for i, data in enumerate(layers):
            labels = {"containerd.io/snapshot.ref": f"chain-{i}", "containerd.io/snapshot/diff-id": diff_ids[i]}
            mounts = s.prepare(f"x{i}", f"chain-{i - 1}" if i else None, labels=labels)
            if "ro" not in mounts[-1].options:  # staged: the cache had it
                (tmp_path / f"{i}.tar").write_bytes(data)
                s.apply(f"x{i}", tmp_path / f"{i}.tar")
                applied += 1
            s.commit(f"chain-{i}", f"x{i}", labels=labels)
        return applied

    assert unpack(snap) == 2
    paths = [snap.export_layer(f"chain-{i}", cache) for i in range(2)]
    assert [p.name for p in paths] == [d.split(":")[1] + ".erofs" for d in diff_ids]
    with es.Snapshotter({"root": str(tmp_path / "second"), "layer_content_caches": [str(cache)]}) as second:
        assert unpack(second) == 0
        second.view("v", "chain-1")
        with second.mounted("v") as p:
            assert (p / "etc/a").read_bytes() == b"1" and (p / "etc/b").read_bytes() == b"2"
            assert not (p / "etc/gone").exists()
        assert not list((tmp_path / "second" / "snapshots").glob("*/layer.erofs"))
    with pytest.raises(es.InvalidArgumentError, match="layer_content_caches"):
        es.Snapshotter({"root": str(tmp_path / "third"), "layer_content_caches": ["relative"]})


def test_a_layer_lost_in_a_crash_is_found_and_repaired(root: Path, tmp_path: Path) -> None:
    l1 = layer({"etc/hello": b"one"})
    labels = {"containerd.io/snapshot/diff-id": digest(l1)}
    with es.Snapshotter({"root": str(root)}) as snap:
        snap.prepare("l1-extract", labels=labels)
        snap.apply("l1-extract", _file(tmp_path, l1))
        snap.commit("l1", "l1-extract", labels=labels)
        assert snap.check() == []
    (blob,) = (root / "snapshots").glob("*/layer.erofs")
    blob.write_bytes(b"")  # what a power cut leaves of a layer not on disk yet
    with es.Snapshotter({"root": str(root)}) as snap:
        assert snap.check() == ["l1"]
        with pytest.raises(es.FailedPreconditionError, match='layer "l1" was lost'):
            snap.view("v", "l1")
        with pytest.raises(es.InvalidArgumentError, match="was committed from"):
            snap.repair("l1", _file(tmp_path, layer({"other": b"x"})))
        assert snap.repair("l1", _file(tmp_path, l1)).digest == digest(l1)
        assert snap.check() == []
        snap.view("v", "l1")
        with snap.mounted("v") as r:
            assert (r / "etc/hello").read_bytes() == b"one"


def _file(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / f"layer-{hashlib.sha256(data).hexdigest()[:8]}.tar"
    p.write_bytes(data)
    return p
