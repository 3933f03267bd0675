"""The change feed's log (design.md §13): one tiny row per write transaction of platform records.

Every transaction that writes records of a type (the engine's pages, its error marks, a
reconcile's deletedInBC flags) also writes, in the SAME transaction and partition, a row
`~c|<stamp>|<random>` listing the RowKeys it wrote; each record gets `changeKey` = that row's
key. So a record and its change row commit together or not at all, and reading what changed
is a range query per partition over these rows: O(changes), never a scan of the records.

Why it never skips a change: a reader's position in a partition only moves past rows whose
stamp is older than its own clock minus CHANGE_FEED_SETTLE_SECONDS. Rows newer than that are
returned too, but the cursor stays before them (they come again: at least once). A row is
missed only if it commits more than the settle window after its stamp, counting how far the
reader's clock runs ahead of the writer's (README, "Change feed")."""
from __future__ import annotations

import heapq
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

from shared.clock import Clock
from shared.storage.tables import Entity, Operation, TableStore

CHANGE_PREFIX = "~c|"  # record RowKeys are percent-encoded ids: they never contain '|'
CHANGE_END = "~c}"  # just after every change row ('}' follows '|')
RECORDS_END = CHANGE_PREFIX  # records of a partition: RowKey < RECORDS_END
KEYS_SEPARATOR = ","  # encoded RowKeys never contain ',' (it is %2C)
MAX_KEYS_PROPERTY = 30000  # characters per keys property (strings are at most 64 KiB)


def is_change_row(row_key: str) -> bool:
    """True for the feed's own rows: scans of a records table (reconcile) must skip them."""
    return row_key.startswith(CHANGE_PREFIX)


def stamp(moment: datetime) -> str:
    """Sortable UTC text with microseconds (fixed width, so text order is time order)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_change_key(moment: datetime) -> str:
    """A change row's RowKey: its stamp, then randomness so two writes never share a row."""
    return f"{CHANGE_PREFIX}{stamp(moment)}|{secrets.token_hex(4)}"


def change_row(partition: str, row_keys: list[str], change_key: str) -> Entity:
    """The change row naming `row_keys` (records of `partition`) as changed at `change_key`."""
    joined = KEYS_SEPARATOR.join(row_keys)
    entity: Entity = {"PartitionKey": partition, "RowKey": change_key}
    for index in range(0, max(len(joined), 1), MAX_KEYS_PROPERTY):
        entity[f"k{index // MAX_KEYS_PROPERTY}"] = joined[index : index + MAX_KEYS_PROPERTY]
    return entity


def row_keys_of(row: dict[str, Any]) -> list[str]:
    """The record RowKeys a change row lists, in the order written."""
    parts = []
    index = 0
    while f"k{index}" in row:
        parts.append(row[f"k{index}"])
        index += 1
    joined = "".join(parts)
    return joined.split(KEYS_SEPARATOR) if joined else []


class ChangeLog:
    """The `attach` callback of TableStore.write: stamps each transaction's records and adds
    their change row. Deletes are not changes the feed reports (only order lines are deleted)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def __call__(self, ops: list[Operation]) -> Operation | None:
        written = [entity for op, entity in ops if op != "delete" and not is_change_row(str(entity["RowKey"]))]
        if not written:
            return None
        key = new_change_key(self._clock.now())
        for entity in written:
            entity["changeKey"] = key
        return ("upsert", change_row(str(written[0]["PartitionKey"]), [str(e["RowKey"]) for e in written], key))


class TrackedStore:
    """A TableStore whose writes carry change rows: `RecordWriter(tracked(store, clock), table)`
    is all a writer of platform records needs (reads pass through untouched)."""

    def __init__(self, store: TableStore, clock: Clock) -> None:
        self._store = store
        self._log = ChangeLog(clock)

    def write(self, table: str, operations: list[Operation]) -> list[Any]:
        return self._store.write(table, operations, attach=self._log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def tracked(store: TableStore, clock: Clock) -> TrackedStore:
    return TrackedStore(store, clock)


# -- reading ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Position:
    """Where a reader is in one partition: `consumed` keys of row `row_key` are behind it."""

    row_key: str
    consumed: int


@dataclass(frozen=True)
class Candidate:
    partition: int
    row_key: str
    index: int  # position of the record in its row's key list
    record_key: str

    @property
    def stamp(self) -> str:
        return self.row_key[len(CHANGE_PREFIX) :].split("|", 1)[0]


@dataclass
class ChangeBatch:
    candidates: list[Candidate]
    more: bool  # rows beyond the batch exist (at the time of reading)
    requests: int


class ChangeScanner:
    """Reads change rows of one table after per-partition positions, merged oldest first."""

    def __init__(self, store: TableStore, table: str) -> None:
        self._store = store
        self._table = table

    def scan(self, partitions: list[str], positions: list[Position | None], top: int) -> ChangeBatch:
        page_size = min(1000, max(10, 2 * top // max(1, len(partitions))))
        streams = [_Stream(self._store, self._table, pk, pos, page_size, index) for index, (pk, pos) in enumerate(zip(partitions, positions))]
        self._store.map(lambda stream: stream.prime(), streams)  # first page of every partition at once
        candidates: list[Candidate] = []
        merged = heapq.merge(*(stream.entries() for stream in streams), key=lambda c: (c.row_key, c.partition, c.index))
        more = False
        for candidate in merged:
            if len(candidates) == top:
                more = True
                break
            candidates.append(candidate)
        return ChangeBatch(candidates, more, sum(stream.requests for stream in streams))


class _Stream:
    """One partition's change rows after a position, fetched lazily page by page."""

    def __init__(self, store: TableStore, table: str, partition: str, position: Position | None, page_size: int, index: int) -> None:
        self.index = index
        self.position = position
        self.requests = 0
        low = position.row_key if position else CHANGE_PREFIX
        pages = store.table(table).query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            parameters={"pk": partition, "low": low, "high": CHANGE_END},
            results_per_page=page_size,
        ).by_page()
        self._pages = pages
        self._first: list[dict[str, Any]] | None = None

    def _next_page(self) -> list[dict[str, Any]] | None:
        try:
            page = list(next(self._pages))
        except StopIteration:
            return None
        self.requests += 1
        return page

    def prime(self) -> None:
        self._first = self._next_page()

    def entries(self) -> Iterator[Candidate]:
        page = self._first if self._first is not None else self._next_page()
        self._first = None
        while page is not None:
            for row in page:
                row_key = str(row["RowKey"])
                keys = row_keys_of(row)
                start = 0
                if self.position is not None and row_key == self.position.row_key:
                    start = self.position.consumed
                for index in range(start, len(keys)):
                    yield Candidate(self.index, row_key, index, keys[index])
            if self._pages.continuation_token is None:
                return
            page = self._next_page()
