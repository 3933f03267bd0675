"""Platform records (suppliers, products, ...): what is stored now, and batched writes."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from azure.core.exceptions import ResourceNotFoundError

from shared.storage.tables import TableStore, WriteFailure

#: Properties read back to decide created / updated / unchanged without loading whole records.
INDEX_FIELDS = ["RowKey", "contentHash", "syncStatus", "lineIds", "platformModifiedAt", "lastSyncedAt"]
POINT_READ_LIMIT = 500  # past this many point reads in one run, one projected scan is cheaper


@dataclass(frozen=True)
class Existing:
    content_hash: str | None
    sync_status: str | None
    line_ids: tuple[str, ...]
    platform_modified_at: str | None
    last_synced_at: str | None

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> "Existing":
        lines = entity.get("lineIds")
        return cls(
            content_hash=entity.get("contentHash"),
            sync_status=entity.get("syncStatus"),
            line_ids=tuple(json.loads(lines)) if lines else (),
            platform_modified_at=entity.get("platformModifiedAt"),
            last_synced_at=entity.get("lastSyncedAt"),
        )


class ExistingIndex:
    """Answers "what do we hold for these row keys?" for one table partition.

    A full sync loads a projection of the whole partition once (1,000 rows a request); a delta
    reads its few records point by point, in parallel, and switches to the projection if the
    delta turns out large."""

    def __init__(self, store: TableStore, table: str, partition: str, *, preload: bool) -> None:
        self._store = store
        self._table = table
        self._partition = partition
        self._loaded: dict[str, Existing] | None = None
        self._point_reads = 0
        self._preload = preload

    def lookup(self, row_keys: Iterable[str]) -> dict[str, Existing]:
        keys = list(dict.fromkeys(row_keys))
        if self._loaded is None and (self._preload or self._point_reads + len(keys) > POINT_READ_LIMIT):
            self._load()
        if self._loaded is not None:
            return {k: self._loaded[k] for k in keys if k in self._loaded}
        self._point_reads += len(keys)
        client = self._store.table(self._table)

        def read(key: str) -> tuple[str, Existing | None]:
            try:
                return key, Existing.from_entity(client.get_entity(self._partition, key, select=INDEX_FIELDS))
            except ResourceNotFoundError:
                return key, None

        return {k: v for k, v in self._store.map(read, keys) if v is not None}

    def remember(self, row_key: str, existing: Existing) -> None:
        if self._loaded is not None:
            self._loaded[row_key] = existing

    def _load(self) -> None:
        self._loaded = {
            e["RowKey"]: Existing.from_entity(e)
            for e in self._store.query(self._table, "PartitionKey eq @pk", parameters={"pk": self._partition}, select=INDEX_FIELDS)
        }


class RecordWriter:
    """Collects upserts, merges and deletes for one table and writes them in transactions."""

    def __init__(self, store: TableStore, table: str) -> None:
        self._store = store
        self.table = table
        self._ops: list[tuple[str, dict[str, Any]]] = []

    def upsert(self, entity: dict[str, Any]) -> None:
        self._ops.append(("upsert", entity))

    def merge(self, entity: dict[str, Any]) -> None:
        self._ops.append(("merge", entity))

    def delete(self, partition: str, row_key: str) -> None:
        self._ops.append(("delete", {"PartitionKey": partition, "RowKey": row_key}))

    def drop(self, row_key: str) -> None:
        """Withdraw the pending operations on one row (its children failed to write)."""
        self._ops = [op for op in self._ops if op[1]["RowKey"] != row_key]

    def flush(self) -> list[WriteFailure]:
        ops, self._ops = self._ops, []
        return self._store.write(self.table, ops)
