"""Per integration and data type: the watermark of the last complete pass, and the checkpoint
of a pass in progress (its next page), so an interrupted run resumes instead of restarting."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.storage.tables import TableStore

TABLE = "SyncState"


@dataclass
class Checkpoint:
    run_id: str
    lower_bound: str | None  # the pass's $filter lower bound (None = everything)
    next_link: str  # BC's nextLink for the first page not yet durably written
    started_at: str  # when the pass began (caps the watermark it may set)
    max_seen: str | None  # newest lastModifiedDateTime written so far


@dataclass
class TypeState:
    watermark: str | None = None
    checkpoint: Checkpoint | None = None


class SyncStateRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    def get(self, integration_id: str, key: str, *, version: int | None = None) -> TypeState:
        """The state; with `version`, a row written under another configuration version (the
        integration pointed elsewhere then) reads as empty."""
        try:
            entity = self._store.table(TABLE).get_entity(integration_id, key)
        except ResourceNotFoundError:
            return TypeState()
        if version is not None and int(entity.get("configVersion") or 0) != version:
            return TypeState()
        raw = entity.get("checkpoint")
        return TypeState(
            watermark=entity.get("watermark"),
            checkpoint=Checkpoint(**json.loads(raw)) if raw else None,
        )

    def save(self, integration_id: str, key: str, state: TypeState, *, version: int | None = None) -> None:
        entity: dict[str, Any] = {"PartitionKey": integration_id, "RowKey": key}
        if version:
            entity["configVersion"] = version
        if state.watermark:
            entity["watermark"] = state.watermark
        if state.checkpoint:
            entity["checkpoint"] = json.dumps(asdict(state.checkpoint))
        self._store.table(TABLE).upsert_entity(entity, mode="replace")
