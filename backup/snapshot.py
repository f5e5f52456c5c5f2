"""Snapshots: the last object a backup writes, naming its source, time and root tree.

The object's key carries the source and UTC time (``snapshots/<source>/<time>-<hash>``), so
listing, retention and freshness need no key; the body is encrypted to the recipients.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Microseconds in the name: two runs within one second must still sort in the order they ran
# ('latest' and retention depend on it).
TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_NAME = re.compile(
    r"^snapshots/(?P<source>[^/]+)/(?P<time>\d{8}T\d{6}\.\d{6}Z)-(?P<id>[0-9a-f]{64})$"
)


@dataclass(frozen=True, order=True)
class SnapshotRef:
    """What a snapshot's name tells without decrypting it."""

    time: datetime
    source: str
    id: str  # SHA-256 of the stored object, hex

    @property
    def key(self) -> str:
        return f"snapshots/{self.source}/{self.time.strftime(TIME_FORMAT)}-{self.id}"

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @classmethod
    def parse(cls, key: str) -> SnapshotRef | None:
        match = _NAME.match(key)
        if not match:
            return None
        time = datetime.strptime(match["time"], TIME_FORMAT).replace(tzinfo=UTC)
        return cls(time, match["source"], match["id"])

    @classmethod
    def for_object(cls, source: str, time: datetime, stored: bytes) -> SnapshotRef:
        return cls(time.astimezone(UTC), source, hashlib.sha256(stored).hexdigest())


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
        return json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        doc = json.loads(data)
        return cls(
            source=doc["source"],
            category=doc["category"],
            host=doc["host"],
            time=datetime.strptime(doc["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
            tree=bytes.fromhex(doc["tree"]),
            paths=list(doc["paths"]),
            tool=doc["tool"],
            summary=dict(doc.get("summary", {})),
            stats=dict(doc.get("stats", {})),
        )
