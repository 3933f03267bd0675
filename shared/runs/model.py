"""A run as stored and as the API shows it (design.md §7)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.counters import Counters

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
ACTIVE = (QUEUED, RUNNING)


@dataclass
class TypeProgress(Counters):
    """One data type within a run: its counters summed over its slices, and how it ended."""

    done: bool = False
    status: str | None = None  # SUCCESS | PARTIAL | FAILED once done
    error: dict[str, Any] | None = None

    def to_api(self) -> dict[str, Any]:
        return {"read": self.read, "created": self.created, "updated": self.updated, "unchanged": self.unchanged, "errors": self.errors, "done": self.done}

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

    def merged(self, slice_counts: Counters) -> "TypeProgress":
        """This progress plus one slice's counters (a new object: the run's copy stays as read)."""
        total = TypeProgress.from_dict(self.to_dict())
        total.add(slice_counts)
        return total


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
            entity[f"p_{key}"] = json.dumps(progress.to_dict(), default=str)
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
            run.progress[key] = TypeProgress.from_dict(json.loads(raw)) if raw else TypeProgress()
        return run
