"""Every method of Snapshotter against the real library."""

from __future__ import annotations

import gc
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import erofs_snapshotter as es
from erofs_snapshotter import Info, Kind, Mount, Usage, _ffi
from erofs_snapshotter._snapshotter import _call, _cstr
from erofs_snapshotter._types import ns_to_datetime


def committed(snap: es.Snapshotter, name: str, parent: str | None = None, files: dict | None = None,
              labels: dict | None = None) -> None:
    key = f"{name}-active"
    snap.prepare(key, parent)
    if files:
        with snap.mounted(key) as p:
            for rel, text in files.items():
                (p / rel).parent.mkdir(parents=True, exist_ok=True)
                (p / rel).write_text(text)
    snap.commit(name, key, labels)


# ---- opening and closing ---------------------------------------------------------


def test_config_forms(root: Path) -> None:
    with es.Snapshotter({"root": root}) as s:  # a Path is accepted in the mapping
        assert s.walk() == []
        assert s.config["root"] == str(root)
    with es.Snapshotter(json.dumps({"root": str(root), "sync_commit": True})) as s:
        assert s.config["sync_commit"] is True
    with es.Snapshotter({"root_path": str(root), "mkfs_options": ["-T0"]}) as s:
        committed(s, "c", files={"f": "x"})
        assert s.stat("c").kind is Kind.COMMITTED
    with pytest.raises(TypeError):
        es.Snapshotter(["root"])  # type: ignore[arg-type]


def test_lib_path(root: Path, lib: _ffi.Library) -> None:
    # The file, as str or Path, the loaded library, or the directory holding it.
    for choice in (lib.path, Path(lib.path), lib, Path(lib.path).parent):
        with es.Snapshotter({"root": str(root)}, lib_path=choice) as s:
            assert s.lib is lib
    with pytest.raises(es.LibraryNotFoundError, match="cargo build"):
        es.Snapshotter({"root": str(root)}, lib_path=root / "missing.so")


def test_context_manager_and_close(root: Path) -> None:
    with es.Snapshotter({"root": str(root)}) as s:
        assert not s.closed and "open" in repr(s)
        s.prepare("a")
    assert s.closed and "closed" in repr(s)
    s.close()  # idempotent
    # As the Go package's calls after Close: failed-precondition.
    with pytest.raises(es.FailedPreconditionError, match="closed"):
        s.stat("a")
    # A second handle on the same root sees what the first one made.
    with es.Snapshotter({"root": str(root)}) as s2:
        assert s2.stat("a").kind is Kind.ACTIVE


def test_del_is_a_safety_net(root: Path) -> None:
    s = es.Snapshotter({"root": str(root)})
    s.prepare("a")
    with pytest.warns(ResourceWarning, match="unclosed"):
        del s
        gc.collect()
    with es.Snapshotter({"root": str(root)}) as s:
        assert [i.name for i in s.walk()] == ["a"]


def test_two_handles_share_a_root(root: Path) -> None:
    with es.Snapshotter({"root": str(root)}) as a, es.Snapshotter({"root": str(root)}) as b:
        committed(a, "base", files={"f": "x"})
        b.view("v", "base")
        with b.mounted("v") as p:
            assert (p / "f").read_text() == "x"
        assert [i.name for i in a.walk()] == ["base", "v"]


# ---- operations -------------------------------------------------------------------


def test_prepare_and_view_mounts(snap: es.Snapshotter, root: Path) -> None:
    mounts = snap.prepare("a")
    assert len(mounts) == 1 and isinstance(mounts[0], Mount)
    assert mounts[0].type == "bind" and "rw" in mounts[0].options
    assert mounts[0].source.startswith(os.path.realpath(root))
    assert snap.mounts("a") == mounts
    assert snap.view("empty")[0].options[0] == "ro"

    committed(snap, "one", files={"f": "1"})
    (m,) = snap.view("v1", "one")
    assert m.type == "erofs" and m.source.endswith("layer.erofs")  # a one-layer view is the image
    committed(snap, "two", "one")
    (m,) = snap.view("v2", "two")
    assert m.type == "overlay" and any(o.startswith("lowerdir=") for o in m.options)
    (m,) = snap.prepare("a2", "two")
    assert m.type == "overlay" and any(o.startswith("upperdir=") for o in m.options)
    assert m.to_dict() == {"type": m.type, "source": m.source, "options": m.options}
    assert Mount.from_dict({**m.to_dict(), "target": "sub"}).target == "sub"


def test_commit_and_stat(snap: es.Snapshotter) -> None:
    snap.prepare("a", labels={"stage": "active"})
    before = snap.stat("a")
    assert before.kind is Kind.ACTIVE and before.name == "a" and before.parent is None
    with snap.mounted("a") as p:
        (p / "f").write_text("x")
    snap.commit("c", "a", labels={"stage": "committed"})
    with pytest.raises(es.NotFoundError):
        snap.stat("a")
    info = snap.stat("c")
    assert info.kind is Kind.COMMITTED and info.labels == {"stage": "committed"}
    snap.prepare("child", "c")
    assert snap.stat("child").parent == "c"


def test_remove(snap: es.Snapshotter) -> None:
    committed(snap, "base", files={"f": "x"})
    snap.view("v", "base")
    snap.prepare("a", "base")
    snap.remove("v")
    snap.remove("a")
    snap.remove("base")
    assert snap.walk() == []


def test_usage(snap: es.Snapshotter) -> None:
    snap.prepare("a")
    empty = snap.usage("a")
    assert isinstance(empty, Usage)
    with snap.mounted("a") as p:
        (p / "big").write_bytes(os.urandom(256 * 1024))
        (p / "d").mkdir()
        (p / "d" / "small").write_text("s")
    u = snap.usage("a")
    assert u.size >= 256 * 1024 and u.inodes >= empty.inodes + 3
    snap.commit("c", "a")
    c = snap.usage("c")
    assert c.size > 0 and c.inodes >= 1


def test_timestamps(snap: es.Snapshotter) -> None:
    t0 = datetime.now(timezone.utc)
    snap.prepare("a")
    info = snap.stat("a")
    assert info.created.tzinfo is not None and info.created.utcoffset() == timedelta(0)
    assert abs(info.created - t0) < timedelta(seconds=30)
    assert info.created == ns_to_datetime(info.created_ns)
    assert info.created_ns == info.updated_ns
    updated = snap.update("a", {"x": "y"})
    assert updated.updated_ns > info.updated_ns and updated.created_ns == info.created_ns


def _rfc3339_ns(text: str) -> int:
    """The library's ``2006-01-02T15:04:05.999999999Z`` in ns (for the test only)."""
    seconds, fraction = text.removesuffix("Z").split(".")
    whole = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(whole.timestamp()) * 1_000_000_000 + int(fraction)


def test_timestamps_as_integers(snap: es.Snapshotter) -> None:
    """The integers the binding reads are the RFC 3339 strings' instants."""
    assert ns_to_datetime(-1) == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    assert _rfc3339_ns("2023-11-14T22:13:20.123456789Z") == 1_700_000_000_123_456_789
    snap.prepare("a")
    snap.commit("c", "a")
    snap.update("c", {"x": "y"})
    snap.view("v", "c")
    lib = snap.lib
    with snap._use() as h:
        raw = [json.loads(_call(lib, lib.cdll.erofs_snapshotter_stat, h, _cstr(k, "key"), out=True) or "")
               for k in ("c", "v")]
        raw += json.loads(_call(lib, lib.cdll.erofs_snapshotter_walk, h, None, out=True) or "")
    assert len(raw) == 4
    for d in raw:
        assert d["created_ns"] == _rfc3339_ns(d["created"]), d
        assert d["updated_ns"] == _rfc3339_ns(d["updated"]), d
        info = Info.from_dict(d)
        assert (info.created_ns, info.updated_ns) == (d["created_ns"], d["updated_ns"])
    assert snap.stat("c").updated_ns > snap.stat("c").created_ns


def test_cleanup(snap: es.Snapshotter, root: Path) -> None:
    committed(snap, "c", files={"f": "x" * 10000})
    snap.prepare("a", "c")
    snap.remove("a")
    snap.remove("c")
    snap.cleanup()
    assert not any((root / "trash").iterdir())
    assert not [d for d in (root / "snapshots").iterdir() if not d.name.startswith(".")]


# ---- labels ---------------------------------------------------------------------------


LABELS = {
    "containerd.io/snapshot.ref": "sha256:" + "ab" * 32,
    "a.b": "c",
    "quote\"key": "välue ✓",
    "empty": "",
    "json": '{"x": [1, 2]}',
    "nul": "a\0b",
}


def test_labels_round_trip(snap: es.Snapshotter) -> None:
    snap.prepare("a", labels=LABELS)
    assert snap.stat("a").labels == LABELS
    assert snap.walk()[0].labels == LABELS
    snap.commit("c", "a", labels=LABELS)
    assert snap.stat("c").labels == LABELS
    snap.view("v", "c", labels={"only": "this"})
    assert snap.stat("v").labels == {"only": "this"}
    big = {"k": "v" * (4096 - 1)}
    assert snap.update("v", big).labels == big
    with pytest.raises(es.InvalidArgumentError, match="4097"):
        snap.update("v", {"k": "v" * 4096})


def test_update_field_paths(snap: es.Snapshotter) -> None:
    snap.prepare("a", labels={"l1": "v1", "l2": "v2", "l3": "v3"})
    new = {"l1": "updated", "l4": "v4"}
    assert snap.update("a", new, ["labels.l1", "labels.l2"]).labels == {"l1": "updated", "l3": "v3"}
    assert snap.update("a", new, ["labels"]).labels == new
    assert snap.update("a", {"z": "1"}).labels == {"z": "1"}
    assert snap.update("a", fieldpaths=["labels.z"]).labels == {}
    # An Info works too, containerd style.
    info = snap.stat("a")
    info.labels["m"] = "n"
    out = snap.update(info, fieldpaths=["labels.m"])
    assert isinstance(out, Info) and out.labels == {"m": "n"} == snap.stat("a").labels
    assert snap.update(info, {"other": "x"}, "labels.other").labels == {"m": "n", "other": "x"}
    with pytest.raises(es.InvalidArgumentError, match="kind"):
        snap.update("a", {}, ["kind"])
    with pytest.raises(TypeError):
        snap.update("a", ["not", "a", "mapping"])  # type: ignore[arg-type]


# ---- walk -----------------------------------------------------------------------------


def test_walk_filters(snap: es.Snapshotter) -> None:
    committed(snap, "base", labels={"layer": "1", "a.b": "c"})
    snap.prepare("work-1", "base", labels={"team": "x", "a.b": "c"})
    snap.prepare("work-2", labels={"team": "y"})
    snap.view("view-1", "base", labels={"team": "x"})

    def names(*filters: str) -> list[str]:
        return [i.name for i in snap.walk(*filters)]

    assert names() == ["base", "view-1", "work-1", "work-2"]
    assert names("kind==active") == ["work-1", "work-2"]
    assert names("kind==committed") == ["base"]
    assert names("kind==view") == ["view-1"]
    assert names("kind!=active") == ["base", "view-1"]
    assert names("name==work-2") == ["work-2"]
    assert names("name~=^work-") == ["work-1", "work-2"]
    assert names("parent==base") == ["view-1", "work-1"]
    assert names('labels."a.b"==c') == ["base", "work-1"]
    assert names("labels.team") == ["view-1", "work-1", "work-2"]
    assert names("labels.team==x,kind==active") == ["work-1"]  # comma: and
    assert names("kind==view", "kind==committed") == ["base", "view-1"]  # several: or
    assert names('kind==active,labels."a.b"==c') == ["work-1"]
    assert names("labels.team==nobody") == []
    with pytest.raises(es.InvalidArgumentError, match="filters"):
        snap.walk("name==")
    with pytest.raises(TypeError):
        snap.walk(["kind==active"])  # type: ignore[arg-type]
    assert all(isinstance(i, Info) for i in snap.walk())
