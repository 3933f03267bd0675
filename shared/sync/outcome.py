"""What each stage of a page hands to the next (read pages -> map -> compare -> write), as data."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.counters import Counters
from shared.errors import RecordError
from shared.mapping import PlatformRecord
from shared.storage.records import Existing


@dataclass
class Mapped:
    """The map stage's result: records that mapped, records that did not, the newest stamp."""

    records: list[PlatformRecord]
    failed: list[tuple[dict[str, Any], RecordError]]
    newest: str | None
    read: int
    skipped: int = 0  # read again exactly as stored (same source hash): unchanged, not mapped


@dataclass
class Change:
    """A record whose content differs from what is stored (or that is not stored yet)."""

    record: PlatformRecord
    before: Existing | None
    kind: str  # created | updated
    status: str  # synced | conflict (the platform edited it after our last sync)


@dataclass
class Compared:
    """The compare stage's result: what to write, what is unchanged, what was stored."""

    changes: list[Change]
    unchanged: int
    existing: dict[str, Existing]


@dataclass
class Prepared:
    """A page mapped and compared, ready for the write stage."""

    mapped: Mapped
    compared: Compared
    now: str


@dataclass
class Part:
    """What a behaviour wrote beside the page's records before them (a document's lines):
    its counters, and the records it could not complete (row key -> message, data), which
    are then not written so they keep their old hash and the next run redoes them."""

    counters: Counters = field(default_factory=Counters)
    refused: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class PageOutcome:
    """One page, written: its counters, the newest stamp read, the oldest stamp of a record
    that failed to store (the watermark must stay below it), the records written, and the row
    keys of every record the page named (ids seen, mapped or not)."""

    counters: Counters
    newest: str | None = None
    failed_floor: str | None = None
    written: list[PlatformRecord] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
