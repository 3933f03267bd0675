"""A run as stored and as the API shows it (design.md §7)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
ACTIVE = (QUEUED, RUNNING)
MAX_ERROR_RECORDS = 20  # failed records kept per type with their data; the rest only counted


@dataclass
class TypeProgress:
    """One data type within a run, summed over its slices."""

    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: int = 0
    done: bool = False
    status: str | None = None  # SUCCESS | PARTIAL | FAILED once done
    linesWritten: int = 0
    linesDeleted: int = 0
    stockRefreshed: int = 0
    deleted: int = 0  # reconcile: records newly flagged deletedInBC
    restored: int = 0  # reconcile: ids BC has that were not stored, read by id and stored
    undeleted: int = 0  # reconcile: flags removed because BC has the record again
    resumed: bool = False
    error: dict[str, Any] | None = None
    errorRecords: list[dict[str, Any]] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        return {"read": self.read, "created": self.created, "updated": self.updated, "unchanged": self.unchanged, "errors": self.errors, "done": self.done}

    def extras(self) -> dict[str, Any]:
        """The counters only some types have (lines, stock, reconcile), when non-zero."""
        data: dict[str, Any] = {}
        if self.linesWritten or self.linesDeleted:
            data.update(linesWritten=self.linesWritten, linesDeleted=self.linesDeleted)
        for name in ("stockRefreshed", "deleted", "restored", "undeleted"):
            if getattr(self, name):
                data[name] = getattr(self, name)
        return data

    def counts(self) -> dict[str, Any]:
        """The sync response's per-type entry (design.md §3) with the extra counters."""
        data: dict[str, Any] = {"created": self.created, "updated": self.updated, "errors": self.errors, "unchanged": self.unchanged}
        if self.status:
            data["status"] = self.status
        data.update(self.extras())
        if self.error:
            data["error"] = self.error
        if not self.done:
            data["paused"] = True
        return data


@dataclass
class Run:
    runId: str
    integrationId: str
    userId: str
    trigger: str  # manual | timer | notification
    mode: str  # full | delta | since | reconcile
    entities: list[str]
    status: str = QUEUED
    modifiedSince: str | None = None
    createdAt: str | None = None
    startedAt: str | None = None
    finishedAt: str | None = None
    updatedAt: str | None = None
    progress: dict[str, TypeProgress] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    slices: int = 0  # slices that have run
    seq: int = 0  # the slice the run expects next: a message with another seq is stale
    bcRequests: int = 0
    configVersion: int = 0  # the integration's configVersion when the run was claimed

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def pending_types(self) -> list[str]:
        return [key for key in self.entities if not self.progress.setdefault(key, TypeProgress()).done]

    def counts(self) -> dict[str, Any]:
        return {key: self.progress.setdefault(key, TypeProgress()).counts() for key in self.entities}

    def to_api(self) -> dict[str, Any]:
        return {
            "runId": self.runId,
            "integrationId": self.integrationId,
            "status": self.status,
            "trigger": self.trigger,
            "mode": self.mode,
            "modifiedSince": self.modifiedSince,
            "entities": self.entities,
            "createdAt": self.createdAt,
            "startedAt": self.startedAt,
            "finishedAt": self.finishedAt,
            "progress": {key: self.progress.setdefault(key, TypeProgress()).to_api() for key in self.entities},
            "counts": self.counts(),
            "error": self.error,
            "slices": self.slices,
            "bcRequests": self.bcRequests,
        }

    # -- storage shape ---------------------------------------------------------------------
    def to_entity(self) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": self.integrationId, "RowKey": self.runId}
        for key, value in asdict(self).items():
            if key in ("runId", "integrationId", "progress") or value is None:
                continue
            entity[key] = json.dumps(value) if key in ("entities", "error") else value
        for key, progress in self.progress.items():
            entity[f"p_{key}"] = json.dumps(asdict(progress), default=str)
        return entity

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> "Run":
        values: dict[str, Any] = {"runId": entity["RowKey"], "integrationId": entity["PartitionKey"]}
        for name in cls.__dataclass_fields__:
            if name in entity and name not in values:
                raw = entity[name]
                values[name] = json.loads(raw) if name in ("entities", "error") and isinstance(raw, str) else raw
        run = cls(**values)
        for key in run.entities:
            raw = entity.get(f"p_{key}")
            run.progress[key] = TypeProgress(**json.loads(raw)) if raw else TypeProgress()
        return run
