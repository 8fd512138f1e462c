"""Mounting through the library: Snapshotter.mounted, mount_all, unmount_all."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

import erofs_snapshotter as es
from erofs_snapshotter import Mount

from conftest import is_mount, mounts_under


def tree(p: Path) -> dict[str, str]:
    """Every file below p with its contents; directories end with '/'."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(p):
        rel = os.path.relpath(dirpath, p)
        for d in dirs:
            out[os.path.normpath(os.path.join(rel, d)) + "/"] = ""
        for f in files:
            out[os.path.normpath(os.path.join(rel, f))] = Path(dirpath, f).read_text()
    return out


def test_full_cycle(snap: es.Snapshotter) -> None:
    snap.prepare("work")
    with snap.mounted("work") as p:
        assert is_mount(p)
        (p / "etc").mkdir()
        (p / "etc" / "hostname").write_text("box\n")
        os.symlink("etc/hostname", p / "link")
    assert not p.exists()  # the temporary directory is gone
    snap.commit("layer", "work")
    snap.view("ro", "layer")
    with snap.mounted("ro") as p:
        assert (p / "etc" / "hostname").read_text() == "box\n"
        assert os.readlink(p / "link") == "etc/hostname"
        with pytest.raises(OSError):
            (p / "new").write_text("read-only")
    snap.remove("ro")
    snap.remove("layer")


def test_three_layers_with_whiteouts(snap: es.Snapshotter) -> None:
    snap.prepare("a1")
    with snap.mounted("a1") as p:
        (p / "keep").write_text("1")
        (p / "gone").write_text("1")
        (p / "mod").write_text("1")
        (p / "dir").mkdir()
        (p / "dir" / "old").write_text("1")
        (p / "dir2").mkdir()
        (p / "dir2" / "x").write_text("1")
    snap.commit("l1", "a1")

    snap.prepare("a2", "l1")
    with snap.mounted("a2") as p:
        (p / "gone").unlink()  # a whiteout
        shutil.rmtree(p / "dir2")  # a whiteout of a directory
        (p / "mod").write_text("2")
        (p / "added2").write_text("2")
    snap.commit("l2", "a2")

    snap.prepare("a3", "l2")
    with snap.mounted("a3") as p:
        shutil.rmtree(p / "dir")  # removed, then made again: an opaque directory
        (p / "dir").mkdir()
        (p / "dir" / "fresh").write_text("3")
        (p / "added2").unlink()
        (p / "gone").write_text("3")  # back after its whiteout
    snap.commit("l3", "a3")

    expected = {
        "l1": {"keep": "1", "gone": "1", "mod": "1", "dir/": "", "dir/old": "1", "dir2/": "", "dir2/x": "1"},
        "l2": {"keep": "1", "mod": "2", "dir/": "", "dir/old": "1", "added2": "2"},
        "l3": {"keep": "1", "mod": "2", "dir/": "", "dir/fresh": "3", "gone": "3"},
    }
    for name, files in expected.items():
        snap.view(f"view-{name}", name)
        with snap.mounted(f"view-{name}") as p:
            assert tree(p) == files, name
            # No whiteout device or overlay xattr leaks into the merged view.
            for dirpath, _, fnames in os.walk(p):
                for f in fnames:
                    assert not stat.S_ISCHR(os.lstat(os.path.join(dirpath, f)).st_mode)

    # A fourth, active layer on the stack sees the same and can write.
    snap.prepare("a4", "l3")
    with snap.mounted("a4") as p:
        assert tree(p) == expected["l3"]
        (p / "keep").write_text("4")
    assert snap.usage("a4").size > 0
    # Removal goes top down; a parent with children is refused.
    with pytest.raises(es.FailedPreconditionError):
        snap.remove("l2")
    for key in ("a4", "view-l3", "view-l2", "view-l1", "l3", "l2", "l1"):
        snap.remove(key)
    assert snap.walk() == []


def test_explicit_target_and_exception(snap: es.Snapshotter, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    snap.prepare("a")
    with pytest.raises(RuntimeError, match="boom"):
        with snap.mounted("a", target=target) as p:
            assert p == target and is_mount(target)
            (p / "f").write_text("x")
            raise RuntimeError("boom")
    assert target.is_dir() and not is_mount(target)  # kept, unmounted
    with snap.mounted("a", target=str(target)) as p:
        assert (p / "f").read_text() == "x"


def test_busy_mount_is_detached(snap: es.Snapshotter, caplog: pytest.LogCaptureFixture) -> None:
    snap.prepare("a")
    cwd = os.getcwd()
    try:
        with snap.mounted("a") as p:
            (p / "f").write_text("still readable")
            f = open(p / "f")
            os.chdir(p)
        # The open file kept the mount busy: it was detached, not left behind.
        assert not is_mount(p)
        assert f.read() == "still readable"
        assert any("detaching" in r.getMessage() for r in caplog.records)
        f.close()
    finally:
        os.chdir(cwd)


def test_mount_all_and_unmount_all(snap: es.Snapshotter, tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    mounts = snap.prepare("a")
    es.mount_all(mounts, target)
    es.mount_all([m.to_dict() for m in mounts], target)  # stacked on top
    assert len(mounts_under(tmp_path)) == 2
    (target / "f").write_text("x")
    es.unmount_all(target)  # both layers of the stack
    assert mounts_under(tmp_path) == []
    es.unmount_all(target)  # not a mount point: fine
    es.mount_all(mounts, target)
    es.unmount_all(target, detach=True)
    assert mounts_under(tmp_path) == []
    with es.mounted(mounts, target) as p:
        assert (p / "f").read_text() == "x"


def test_mount_errors(snap: es.Snapshotter, tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(es.InvalidArgumentError, match="no mounts"):
        es.mount_all([], target)
    with pytest.raises(es.InvalidArgumentError, match="mounts"):
        es.mount_all([{"source": "/x"}], target)
    with pytest.raises(es.NotFoundError):
        es.mount_all([Mount("bind", str(tmp_path / "missing"), ["rbind"])], target)
    with pytest.raises(es.NotFoundError):
        es.mount_all(snap.prepare("a"), tmp_path / "no-such-dir")
    with pytest.raises(es.InvalidArgumentError, match="below the mount point"):
        es.mount_all([Mount("bind", str(tmp_path), ["rbind"], target="../escape")], target)
    # A failure part way leaves nothing mounted.
    good = Mount("bind", str(tmp_path), ["rbind"])
    with pytest.raises(es.SnapshotterError):
        es.mount_all([good, Mount("bind", str(tmp_path / "missing"), ["rbind"])], target)
    assert mounts_under(tmp_path) == []
    with pytest.raises(es.InvalidArgumentError, match="NUL"):
        es.unmount_all("/tmp/a\0b")


def test_remap_ids_mounts_layers_with_the_mapped_ids(snap: es.Snapshotter) -> None:
    """containerd's remap-ids: ``mounted`` makes the ID-mapped mounts itself."""
    assert "remap-ids" in snap.capabilities()  # kernel 6.18: ID-mapped EROFS
    snap.prepare("a")
    with snap.mounted("a") as p:
        (p / "f").write_text("x")
    snap.commit("layer", "a")
    labels = {
        "containerd.io/snapshot/uidmapping": "0:100000:65536",
        "containerd.io/snapshot/gidmapping": "0:200000:65536",
    }
    mounts = snap.prepare("ctr", "layer", labels=labels)
    assert "uidmap=0:100000:65536" in mounts[0].options
    with snap.mounted("ctr") as p:
        st = os.lstat(p / "f")
        assert (st.st_uid, st.st_gid) == (100000, 200000)
        (p / "new").write_text("y")
        st = os.lstat(p / "new")
        assert (st.st_uid, st.st_gid) == (0, 0)  # written by the host's root
    with pytest.raises(es.InvalidArgumentError, match="uidmapping"):
        snap.prepare("bad", "layer", labels={"containerd.io/snapshot/uidmapping": "0:1"})


def test_block_mode_bounds_what_a_container_writes(root: Path) -> None:
    """containerd's default_size: the writable layer is an ext4 image."""
    with es.Snapshotter({"root": str(root), "default_size": "8Mi"}) as snap:
        snap.prepare("a")
        with snap.mounted("a") as p:
            (p / "f").write_text("x")
        snap.commit("layer", "a")
        snap.prepare("ctr", "layer")
        with snap.mounted("ctr") as p:
            with open(p / "small", "wb") as f:
                f.write(b"\0" * (2 << 20))
            with pytest.raises(OSError) as e:
                with open(p / "big", "wb") as f:
                    for _ in range(16):
                        f.write(b"\0" * (1 << 20))
                    f.flush()
                    os.fsync(f.fileno())
            assert e.value.errno == 28  # ENOSPC
            os.unlink(p / "big")
        assert 2 << 20 <= snap.usage("ctr").size < 3 << 20
        snap.remove("ctr")
    with pytest.raises(es.InvalidArgumentError, match="default_size"):
        es.Snapshotter({"root": str(root), "default_size": "lots"})


def test_path_errors_are_pythons_own(snap: es.Snapshotter, tmp_path: Path) -> None:
    """A missing mount target is FileNotFoundError (and NotFoundError)."""
    import errno

    mounts = snap.prepare("a")
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError) as e:
        es.mount_all(mounts, missing)
    assert isinstance(e.value, es.NotFoundError) and isinstance(e.value, es.PathNotFoundError)
    assert e.value.errno == errno.ENOENT and e.value.filename == str(missing)
    assert "does not exist" in str(e.value) or "No such file" in str(e.value)
