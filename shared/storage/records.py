"""Platform records (suppliers, products, ...): what is stored now, and batched writes."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from azure.core.exceptions import ResourceNotFoundError

from shared.storage.tables import TableStore, WriteFailure

#: Properties read back to decide created / updated / unchanged without loading whole records.
INDEX_FIELDS = ["RowKey", "contentHash", "sourceHash", "syncStatus", "platformModifiedAt", "lastSyncedAt", "deletedInBC"]
RANGE_MIN_KEYS = 20  # below this (a small delta), point reads cost less than a range query per partition


@dataclass(frozen=True)
class Existing:
    content_hash: str | None
    sync_status: str | None
    platform_modified_at: Any
    last_synced_at: str | None
    deleted_in_bc: bool = False
    source_hash: str | None = None  # of BC's record as last mapped (shared/mapping.py source_hash)

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> "Existing":
        return cls(
            content_hash=entity.get("contentHash"),
            sync_status=entity.get("syncStatus"),
            platform_modified_at=entity.get("platformModifiedAt"),
            last_synced_at=entity.get("lastSyncedAt"),
            deleted_in_bc=bool(entity.get("deletedInBC")),
            source_hash=entity.get("sourceHash"),
        )


@dataclass
class LookupStats:
    """Storage queries spent on stored-record lookups (range queries, their extra server pages,
    point reads) per BC page: the benchmarks print them (issue 16: a few per page, not one per
    record). Process-wide and thread-safe; `reset` between measurements."""

    pages: int = 0
    range_queries: int = 0
    point_reads: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, pages: int = 0, range_queries: int = 0, point_reads: int = 0) -> None:
        with self._lock:
            self.pages += pages
            self.range_queries += range_queries
            self.point_reads += point_reads

    @property
    def queries(self) -> int:
        return self.range_queries + self.point_reads

    def per_page(self) -> float:
        return self.queries / self.pages if self.pages else 0.0

    def reset(self) -> None:
        with self._lock:
            self.pages = self.range_queries = self.point_reads = 0


LOOKUP_STATS = LookupStats()


class StoredLookup:
    """Answers "what do we hold for these row keys?" one page at a time, so memory never grows
    with the company (design.md §7).

    RowKeys sort as BC sorts ids (shared/keys.py), so a page of BC records is one contiguous key
    range in every partition, whatever order the page's records came in: one projected range
    query per partition, bounded by the page's smallest and largest key there, reads it. A range
    that turns out to hold far more rows than the page asks for (a sparse delta, or ids BC sent
    in another order, so the page is scattered over the key space) falls back to parallel point
    reads for that partition. `queries` counts what it cost (also into LOOKUP_STATS)."""

    def __init__(self, store: TableStore, table: str, partition_of: Callable[[str], str]) -> None:
        self._store = store
        self._table = table
        self._partition_of = partition_of
        self.stats = LookupStats()

    def lookup(self, row_keys: Iterable[str]) -> dict[str, Existing]:
        keys = list(dict.fromkeys(row_keys))
        if not keys:
            return {}
        by_partition: dict[str, list[str]] = {}
        for key in keys:
            by_partition.setdefault(self._partition_of(key), []).append(key)
        ranged = len(keys) >= RANGE_MIN_KEYS
        jobs = [(partition, sorted(part)) for partition, part in by_partition.items()]
        found: dict[str, Existing] = {}
        for part in self._store.map(lambda job: self._read_partition(job[0], job[1], ranged), jobs):
            found.update(part)
        self._count(pages=1)
        return found

    def _count(self, **counts: int) -> None:
        self.stats.add(**counts)
        LOOKUP_STATS.add(**counts)

    def _read_partition(self, partition: str, keys: list[str], ranged: bool) -> dict[str, Existing]:
        # A key holding '%' (a percent-encoded id that is no GUID: rare) is read by a point read:
        # Azurite decodes '%XX' inside a filter's string literal, so a range bound holding one
        # would compare as another key and miss the row.
        plain = [key for key in keys if "%" not in key]
        found: dict[str, Existing] = {}
        if ranged and len(plain) > 1:
            ranged_found = self._range(partition, plain)
            if ranged_found is not None:
                found.update(ranged_found)
                keys = [key for key in keys if "%" in key]
        client = self._store.table(self._table)
        for key in keys:
            self._count(point_reads=1)
            try:
                found[key] = Existing.from_entity(client.get_entity(partition, key, select=INDEX_FIELDS))
            except ResourceNotFoundError:
                continue
        return found

    def _range(self, partition: str, keys: list[str]) -> dict[str, Existing] | None:
        """The sorted keys' range in one query, or None when it holds many more rows than asked
        for (then the first server page already says so: it is asked for just past the limit)."""
        wanted = set(keys)
        limit = 2 * len(keys) + 50
        pages = self._store.query_pages(
            self._table,
            "PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
            parameters={"pk": partition, "low": keys[0], "high": keys[-1]},
            select=INDEX_FIELDS,
            page_size=min(1000, limit + 1),
        )
        found: dict[str, Existing] = {}
        count = 0
        for page in pages:
            self._count(range_queries=1)
            for row in page:
                count += 1
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
