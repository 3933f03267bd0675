"""Platform records (suppliers, products, ...): what is stored now, and batched writes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from azure.core.exceptions import ResourceNotFoundError

from shared.storage.tables import TableStore, WriteFailure

#: Properties read back to decide created / updated / unchanged without loading whole records.
INDEX_FIELDS = ["RowKey", "contentHash", "syncStatus", "platformModifiedAt", "lastSyncedAt", "deletedInBC"]
RANGE_MIN_KEYS = 50  # below this, point reads cost less than range queries over every partition


@dataclass(frozen=True)
class Existing:
    content_hash: str | None
    sync_status: str | None
    platform_modified_at: Any
    last_synced_at: str | None
    deleted_in_bc: bool = False

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> "Existing":
        return cls(
            content_hash=entity.get("contentHash"),
            sync_status=entity.get("syncStatus"),
            platform_modified_at=entity.get("platformModifiedAt"),
            last_synced_at=entity.get("lastSyncedAt"),
            deleted_in_bc=bool(entity.get("deletedInBC")),
        )


class StoredLookup:
    """Answers "what do we hold for these row keys?" one page at a time, so memory never grows
    with the company (design.md §7).

    A page that BC returned in key order ($orderby=id) is a contiguous key range: one projected
    range query per partition reads it. A page in any other order, or a range that turns out to
    hold far more than the page (a sparse delta), falls back to parallel point reads."""

    def __init__(self, store: TableStore, table: str, partition_of: Callable[[str], str]) -> None:
        self._store = store
        self._table = table
        self._partition_of = partition_of

    def lookup(self, row_keys: Iterable[str]) -> dict[str, Existing]:
        keys = list(dict.fromkeys(row_keys))
        if not keys:
            return {}
        by_partition: dict[str, list[str]] = {}
        for key in keys:
            by_partition.setdefault(self._partition_of(key), []).append(key)
        ordered = len(keys) >= RANGE_MIN_KEYS and keys == sorted(keys)
        jobs = list(by_partition.items())
        found: dict[str, Existing] = {}
        for part in self._store.map(lambda job: self._read_partition(job[0], job[1], ordered), jobs):
            found.update(part)
        return found

    def _read_partition(self, partition: str, keys: list[str], ordered: bool) -> dict[str, Existing]:
        if ordered:
            ranged = self._range(partition, keys)
            if ranged is not None:
                return ranged
        client = self._store.table(self._table)
        found: dict[str, Existing] = {}
        for key in keys:
            try:
                found[key] = Existing.from_entity(client.get_entity(partition, key, select=INDEX_FIELDS))
            except ResourceNotFoundError:
                continue
        return found

    def _range(self, partition: str, keys: list[str]) -> dict[str, Existing] | None:
        """The keys' range in one query, or None when it holds many more rows than asked for."""
        wanted = set(keys)
        limit = 2 * len(keys) + 50
        rows = self._store.query(
            self._table,
            "PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
            parameters={"pk": partition, "low": keys[0], "high": keys[-1]},
            select=INDEX_FIELDS,
        )
        found: dict[str, Existing] = {}
        for count, row in enumerate(rows, start=1):
            if count > limit:
                return None
            if row["RowKey"] in wanted:
                found[row["RowKey"]] = Existing.from_entity(row)
        return found


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

    def __len__(self) -> int:
        return len(self._ops)

    def flush(self) -> list[WriteFailure]:
        ops, self._ops = self._ops, []
        return self._store.write(self.table, ops)
