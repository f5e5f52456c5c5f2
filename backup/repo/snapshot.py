"""Snapshots: the last object a backup writes, naming its source, time and root tree.

The object's key carries the source and UTC time (``snapshots/<source>/<time>-<hash>``), so
listing, retention and freshness need no key; the body is encrypted to the recipients.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

# Microseconds in the name: two runs within one second must still sort in the order they ran
# ('latest' and retention depend on it).
TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_NAME = re.compile(
    r"^snapshots/(?P<source>[^/]+)/(?P<time>\d{8}T\d{6}\.\d{6}Z)-(?P<id>[0-9a-f]{64})$"
)


# How far a writer's clock may run ahead of the storage's before its snapshot's stated time is
# not believed. A genuine snapshot states when its backup started, so it is normally *earlier*
# than the storage's time for the object (written when the backup ended).
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=15)


@dataclass(frozen=True, order=True)
class SnapshotRef:
    """What a snapshot's name tells without decrypting it, and what the storage says of it.

    The name's time is stated by the writer, who may be hostile; ``stored`` is the storage's
    own time for the object (S3 LastModified, a local file's mtime), the witness a writer does
    not control (on S3; on a local directory the writer's user can set mtimes). A snapshot
    stated later than its witness allows is ``future_dated``: never ``latest``, never counted
    by retention, never drilled, and named by ``check``.
    """

    time: datetime
    source: str
    id: str  # SHA-256 of the stored object, hex
    stored: datetime | None = field(default=None, compare=False)

    @property
    def future_dated(self) -> bool:
        return self.stored is not None and self.time > self.stored + CLOCK_SKEW_ALLOWANCE

    @property
    def retention_time(self) -> datetime:
        """The time retention buckets go by: the witness's where there is one, so a writer
        cannot place snapshots in past days' buckets (or future ones) by stating a time."""
        return self.stored if self.stored is not None else self.time

    def with_stored(self, stored: datetime | None) -> SnapshotRef:
        return SnapshotRef(self.time, self.source, self.id, stored)

    @property
    def key(self) -> str:
        return f"snapshots/{self.source}/{self.time.strftime(TIME_FORMAT)}-{self.id}"

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @classmethod
    def parse(cls, key: str) -> SnapshotRef | None:
        """None for a key that is not a snapshot's name (``check`` names those)."""
        match = _NAME.match(key)
        if not match:
            return None
        try:
            time = datetime.strptime(match["time"], TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:  # digits in the right places, but no such date (month 13)
            return None
        return cls(time, match["source"], match["id"])

    @classmethod
    def for_object(cls, source: str, time: datetime, stored: bytes) -> SnapshotRef:
        return cls(time.astimezone(UTC), source, hashlib.sha256(stored).hexdigest())


class SnapshotFormatError(ValueError):
    """A snapshot body that is not what FORMAT.md describes (says which field is wrong)."""


BODY_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_BODY_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_BODY_TIME_SHOWN = "YYYY-MM-DDTHH:MM:SS.ffffffZ"
_TREE_ID = re.compile(r"[0-9a-f]{64}")
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_KINDS: dict[type, str] = {str: "text", list: "a list", dict: "an object"}
T = TypeVar("T")


@dataclass(frozen=True)
class Snapshot:
    """The decrypted body."""

    source: str
    category: str
    host: str
    time: datetime
    tree: bytes  # root tree blob id
    paths: list[str]
    tool: str
    summary: dict[str, Any] = field(default_factory=dict)  # files, dirs, bytes, bytes_added...
    stats: dict[str, Any] = field(default_factory=dict)  # free: database sources' row counts
    run: str | None = None  # 32 hex digits shared by every snapshot one `ops backup run` wrote

    def encode(self) -> bytes:
        doc = {
            "version": 1,
            "source": self.source,
            "category": self.category,
            "host": self.host,
            "time": self.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "tree": self.tree.hex(),
            "paths": self.paths,
            "tool": self.tool,
            "summary": self.summary,
            "stats": self.stats,
        }
        if self.run is not None:
            doc["run"] = self.run
        return json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        """The body, every field's type checked: SnapshotFormatError naming the first field
        that is wrong (a backup host may have written anything here)."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise SnapshotFormatError("not UTF-8") from None
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
            raise SnapshotFormatError(f"not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise SnapshotFormatError("not a JSON object")
        if doc.get("version", 1) != 1:
            raise SnapshotFormatError(f"version {cls._shown(doc['version'])}, this tool reads 1")
        time = cls._field(doc, "time", str)
        if not _BODY_TIME.fullmatch(time):
            raise SnapshotFormatError(f"time {cls._shown(time)} is not {_BODY_TIME_SHOWN}")
        tree = cls._field(doc, "tree", str)
        if not _TREE_ID.fullmatch(tree):
            raise SnapshotFormatError(f"tree {cls._shown(tree)} is not a blob id (64 hex digits)")
        paths = cls._field(doc, "paths", list)
        if not all(isinstance(p, str) for p in paths):
            raise SnapshotFormatError("paths holds something other than text")
        summary = cls._field(doc, "summary", dict, {})
        for key, value in summary.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SnapshotFormatError(
                    f"summary {key!r:.40} is {cls._shown(value)}, not a count"
                )
        run = doc.get("run")
        if run is not None and not (isinstance(run, str) and _RUN_ID.fullmatch(run)):
            raise SnapshotFormatError(f"run {cls._shown(run)} is not a run id (32 hex digits)")
        try:
            stated = datetime.strptime(time, BODY_TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise SnapshotFormatError(f"time {cls._shown(time)} is not a real date") from None
        return cls(
            source=cls._field(doc, "source", str),
            category=cls._field(doc, "category", str),
            host=cls._field(doc, "host", str),
            time=stated,
            tree=bytes.fromhex(tree),
            paths=list(paths),
            tool=cls._field(doc, "tool", str),
            summary=dict(summary),
            stats=dict(cls._field(doc, "stats", dict, {})),
            run=run,
        )

    @classmethod
    def _field(cls, doc: dict[str, Any], key: str, kind: type[T], default: T | None = None) -> T:
        """``doc[key]``, which must be a ``kind`` (``default`` when absent, if given)."""
        if key not in doc:
            if default is None:
                raise SnapshotFormatError(f"no {key!r}")
            return default
        value = doc[key]
        if not isinstance(value, kind):
            raise SnapshotFormatError(f"{key} is {cls._shown(value)}, not {_KINDS[kind]}")
        return value

    @staticmethod
    def _shown(value: object) -> str:
        """A writer-chosen value in a message: its repr, cut short."""
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
