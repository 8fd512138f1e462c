"""The values the snapshotter returns: Kind, Mount, Info, Usage."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Mapping, Optional


class Kind(str, enum.Enum):
    """The kind of a snapshot (containerd's ``snapshots.Kind``)."""

    VIEW = "view"
    ACTIVE = "active"
    COMMITTED = "committed"

    def __str__(self) -> str:
        return self.value


@dataclass
class Mount:
    """One mount, as containerd's ``mount.Mount``."""

    type: str
    source: str
    options: List[str] = field(default_factory=list)
    # Sub-path below the mount point; None is the mount point itself.
    target: Optional[str] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Mount":
        return cls(
            type=d["type"],
            source=d["source"],
            options=list(d.get("options") or []),
            target=d.get("target"),
        )

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"type": self.type, "source": self.source, "options": list(self.options)}
        if self.target is not None:
            d["target"] = self.target
        return d


@dataclass(frozen=True)
class Usage:
    """Resources a snapshot takes by itself (containerd's ``snapshots.Usage``)."""

    size: int
    inodes: int


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
def ns_to_datetime(ns: int) -> datetime:
    """An aware UTC datetime; datetime holds microseconds, so the rest is cut."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


@dataclass
class Info:
    """Information about a snapshot (containerd's ``snapshots.Info``).

    ``created``/``updated`` are UTC datetimes (microseconds); the library's
    nanosecond timestamps are kept in ``created_ns``/``updated_ns`` (read
    from its integer fields, so no date is parsed).
    """

    kind: Kind
    name: str
    parent: Optional[str]
    labels: Dict[str, str]
    created: datetime
    updated: datetime
    created_ns: int = field(repr=False)
    updated_ns: int = field(repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Info":
        created_ns = int(d["created_ns"])
        updated_ns = int(d["updated_ns"])
        return cls(
            kind=Kind(d["kind"]),
            name=d["name"],
            parent=d.get("parent") or None,
            labels=dict(d.get("labels") or {}),
            created=ns_to_datetime(created_ns),
            updated=ns_to_datetime(updated_ns),
            created_ns=created_ns,
            updated_ns=updated_ns,
        )


@dataclass(frozen=True)
class Applied:
    """The uncompressed layer an apply produced (containerd's descriptor):
    ``digest`` is its diffID."""

    digest: str
    size: int
    media_type: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Applied":
        return cls(digest=str(d["digest"]), size=int(d["size"]), media_type=str(d["media_type"]))
