"""One counters type for a data type's pass: the engine and reconcile count into it, a run sums
its slices with it, and the sync response, run progress and sync log read it.

Python names are snake_case; the stored run and every API or log entry use the camelCase
names below (`to_dict`, `extras`, `log_metadata`), so one table says what each counter is
called outside:

    read, created, updated, unchanged, errors      always shown
    lines_written -> linesWritten                  documents' lines written with them
    lines_deleted -> linesDeleted                  lines BC no longer has, removed
    stock_refreshed -> stockRefreshed              items re-read by the stock feed
    deleted, restored, undeleted                   reconcile: flagged / restored / unflagged
    error_records -> errors (log) / errorRecords   the first MAX_ERROR_RECORDS failures
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

MAX_ERROR_RECORDS = 20  # failed records kept with their data per type; the rest only counted

#: Counters shown only when non-zero (snake name -> outside name), in display order.
OPTIONAL = {
    "lines_written": "linesWritten",
    "lines_deleted": "linesDeleted",
    "stock_refreshed": "stockRefreshed",
    "deleted": "deleted",
    "restored": "restored",
    "undeleted": "undeleted",
}
_OUTSIDE = {"error_records": "errorRecords", **OPTIONAL}
_INSIDE = {outside: inside for inside, outside in _OUTSIDE.items()}
_SUMMED = ("read", "created", "updated", "unchanged", "errors", *OPTIONAL)


@dataclass
class Counters:
    """What a pass (or a page, or a run's slices) did to one data type."""

    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: int = 0
    lines_written: int = 0
    lines_deleted: int = 0
    stock_refreshed: int = 0
    deleted: int = 0  # reconcile: records newly flagged deletedInBC
    restored: int = 0  # reconcile: ids BC has that were not stored, read by id and stored
    undeleted: int = 0  # reconcile: flagged earlier, BC has the record again
    resumed: bool = False
    error_records: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, external_id: str | None, message: str, data: dict[str, Any]) -> None:
        """Count every failure; keep the first MAX_ERROR_RECORDS with their data (bounded memory)."""
        self.errors += 1
        if len(self.error_records) < MAX_ERROR_RECORDS:
            self.error_records.append({"externalId": external_id, "error": message, "data": _printable(data)})

    def add(self, other: "Counters") -> None:
        """Sum `other` into these counters (a page into its pass, a slice into its run)."""
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.resumed = self.resumed or other.resumed
        room = max(0, MAX_ERROR_RECORDS - len(self.error_records))
        self.error_records = self.error_records + other.error_records[:room]

    @property
    def written(self) -> int:
        return self.created + self.updated

    def extras(self) -> dict[str, int]:
        """The counters only some types have (lines, stock, reconcile), when non-zero."""
        data: dict[str, int] = {}
        if self.lines_written or self.lines_deleted:
            data.update(linesWritten=self.lines_written, linesDeleted=self.lines_deleted)
        for name in ("stock_refreshed", "deleted", "restored", "undeleted"):
            if getattr(self, name):
                data[OPTIONAL[name]] = getattr(self, name)
        return data

    def log_metadata(self) -> dict[str, Any]:
        """The counters as a sync log entry's metadata names them."""
        data: dict[str, Any] = {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "read": self.read,
            "errorCount": self.errors,
            "errors": self.error_records,
        }
        if self.errors > len(self.error_records):
            data["errorsOmitted"] = self.errors - len(self.error_records)
        return data

    def to_dict(self) -> dict[str, Any]:
        """The stored form (camelCase, as run progress has always been stored)."""
        return {_OUTSIDE.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def field_values(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments from a stored dict; unknown names are ignored (older or newer runs)."""
        known = {f.name for f in fields(cls)}
        values = {_INSIDE.get(name, name): value for name, value in data.items()}
        return {name: value for name, value in values.items() if name in known}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Counters":
        return cls(**cls.field_values(data))


def _printable(data: dict[str, Any]) -> dict[str, Any]:
    """Offending data for the log: JSON-safe and short."""
    text = json.dumps(data, default=str)
    if len(text) > 1000:
        return {"truncated": text[:1000]}
    return json.loads(text)
