"""The change feed's log (design.md §13): one tiny row per write transaction of platform records,
ordered by a per-partition sequence every writer agrees on.

Every transaction that writes records of a type (the engine's pages, its error marks, a
reconcile's deletedInBC flags, realtime deletes) also writes, in the SAME transaction and
partition:
- the change row `~c|s<sequence, 12 digits>` listing the RowKeys it wrote (each record gets
  `changeKey` = that row's key), and
- the partition's sequence row `~s`, moved from n-1 to n under its ETag (If-Match; created when
  missing). Two writers that take the same number cannot both commit: the loser's transaction
  fails on that row (412, or 409 for a create) and is sent again with the next number.

So the committed change rows of a partition are numbered 1, 2, 3, ... without gaps and commit in
that order: a reader that has read through n can move its cursor past n at once, because any
later commit gets a larger number, whatever the writers' clocks. Reading what changed is a range
query per partition over these rows: O(changes), never a scan of the records.

Rows written before sequences (`~c|<stamp>|<random>`) stay readable: digits sort before `s`, so
a partition's old rows come first, in stamp order, then its numbered ones. Nothing is migrated;
old rows age out with retention (`prune_changes`)."""
from __future__ import annotations

import asyncio
import heapq
import time
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable, Iterator, Mapping

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.clock import Clock
from shared.storage.tables import Entity, Joined, Operation, TableStore

CHANGE_PREFIX = "~c|"  # record RowKeys sort before '~': they never reach the feed's rows
CHANGE_END = "~c}"  # just after every change row ('}' follows '|')
RECORDS_END = CHANGE_PREFIX  # records of a partition: RowKey < RECORDS_END
SEQUENCED = CHANGE_PREFIX + "s"  # numbered change rows; older stamped ones start with a digit
SEQUENCE_DIGITS = 12
SEQUENCE_KEY = "~s"  # the partition's sequence row (after every change row, never in a range of them)
KEYS_SEPARATOR = ","  # encoded RowKeys never contain ',' (it is %2C)
MAX_KEYS_PROPERTY = 30000  # characters per keys property (strings are at most 64 KiB)
CONFLICT_CODES = frozenset({"UpdateConditionNotSatisfied", "EntityAlreadyExists"})


def is_change_row(row_key: str) -> bool:
    """True for the feed's own rows (change rows and the sequence row): scans of a records table
    (reconcile) must skip them."""
    return row_key.startswith(CHANGE_PREFIX) or row_key == SEQUENCE_KEY


def stamp(moment: datetime) -> str:
    """Sortable UTC text with microseconds (fixed width, so text order is time order)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sequenced_key(sequence: int) -> str:
    return f"{SEQUENCED}{sequence:0{SEQUENCE_DIGITS}d}"


def sequence_of(row_key: str) -> int | None:
    """The number of a sequenced change row; None for a row written before sequences."""
    if not row_key.startswith(SEQUENCED):
        return None
    digits = row_key[len(SEQUENCED) :]
    return int(digits) if len(digits) == SEQUENCE_DIGITS and digits.isdigit() else None


def row_stamp(row: Mapping[str, Any]) -> str:
    """When a change row was written (its writer's clock): the `at` property, or the stamp in
    the key of a row written before sequences."""
    at = row.get("at")
    if isinstance(at, str):
        return at
    return str(row["RowKey"])[len(CHANGE_PREFIX) :].split("|", 1)[0]


def change_row(partition: str, row_keys: list[str], change_key: str) -> Entity:
    """The change row naming `row_keys` (records of `partition`) as changed at `change_key`."""
    joined = KEYS_SEPARATOR.join(row_keys)
    entity: Entity = {"PartitionKey": partition, "RowKey": change_key}
    for index in range(0, max(len(joined), 1), MAX_KEYS_PROPERTY):
        entity[f"k{index // MAX_KEYS_PROPERTY}"] = joined[index : index + MAX_KEYS_PROPERTY]
    return entity


def row_keys_of(row: Mapping[str, Any]) -> list[str]:
    """The record RowKeys a change row lists, in the order written."""
    parts = []
    index = 0
    while f"k{index}" in row:
        parts.append(row[f"k{index}"])
        index += 1
    joined = "".join(parts)
    return joined.split(KEYS_SEPARATOR) if joined else []


# -- writing ------------------------------------------------------------------------------------
@dataclass
class _Counter:
    """What this writer last knew of one partition's sequence row: its value and ETag (None:
    read it first). The lock keeps this writer's own transactions on the partition in turn, so
    they never race each other for a number."""

    value: int | None = None
    etag: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Sequences:
    """The sequence rows a writer has seen, per table and partition, so a sync that writes the
    same partitions again and again reads each one once (and again only after losing a race).
    Used only on the store's writer loop (shared/storage/tables.py), hence no thread lock."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str], _Counter] = {}
        self.reads = 0
        self.conflicts = 0

    def counter(self, table: str, partition: str) -> _Counter:
        key = (table, partition)
        found = self._counters.get(key)
        if found is None:
            found = self._counters[key] = _Counter()
        return found


_per_store: "weakref.WeakKeyDictionary[TableStore, Sequences]" = weakref.WeakKeyDictionary()


def sequences_of(store: TableStore) -> Sequences:
    """One cache per store: every writer of a process shares what it learnt."""
    found = _per_store.get(store)
    if found is None:
        found = _per_store[store] = Sequences()
    return found


class _Join(Joined):
    def __init__(self, operations: list[Any], counter: _Counter | None, value: int, sequences: Sequences) -> None:
        self.operations = operations
        self._counter = counter
        self._value = value
        self._sequences = sequences

    def committed(self, results: list[Mapping[str, Any]]) -> None:
        if self._counter is not None:
            self._counter.value = self._value
            self._counter.etag = results[-1].get("etag") if results else None

    def conflicted(self, error: HttpResponseError) -> bool:
        """Lost the race for the number (the sequence row changed under us): forget what we
        knew, so the next attempt reads the row again."""
        if self._counter is None or getattr(error, "error_code", None) not in CONFLICT_CODES:
            return False
        self._counter.value = self._counter.etag = None
        self._sequences.conflicts += 1
        return True


class ChangeLog:
    """The `attach` of TableStore.write: numbers each transaction of records, stamps them and
    adds their change row and the sequence row. Deletes are not changes the feed reports (only
    order lines are deleted)."""

    def __init__(self, clock: Clock, sequences: Sequences | None = None) -> None:
        self._clock = clock
        self.sequences = sequences or Sequences()

    @asynccontextmanager
    async def transaction(self, client: Any, ops: list[Operation]) -> AsyncIterator[Joined]:
        written = [entity for op, entity in ops if op != "delete" and not is_change_row(str(entity["RowKey"]))]
        if not written:
            yield _Join([], None, 0, self.sequences)
            return
        partition = str(written[0]["PartitionKey"])
        counter = self.sequences.counter(client.table_name, partition)
        async with counter.lock:
            if counter.value is None:
                await self._read(client, partition, counter)
            assert counter.value is not None
            value = counter.value + 1
            key = sequenced_key(value)
            for entity in written:
                entity["changeKey"] = key
            row = change_row(partition, [str(e["RowKey"]) for e in written], key)
            row["at"] = stamp(self._clock.now())
            sequence_row = {"PartitionKey": partition, "RowKey": SEQUENCE_KEY, "value": value}
            bump: Any = ("create", sequence_row) if counter.etag is None else ("update-if", sequence_row, counter.etag)
            yield _Join([("upsert", row), bump], counter, value, self.sequences)

    async def _read(self, client: Any, partition: str, counter: _Counter) -> None:
        self.sequences.reads += 1
        try:
            entity = await client.get_entity(partition, SEQUENCE_KEY)
        except ResourceNotFoundError:
            counter.value, counter.etag = 0, None
            return
        counter.value = int(entity.get("value") or 0)
        counter.etag = entity.metadata.get("etag")


class TrackedStore:
    """A TableStore whose writes carry change rows: `RecordWriter(tracked(store, clock), table)`
    is all a writer of platform records needs (reads pass through untouched)."""

    def __init__(self, store: TableStore, clock: Clock) -> None:
        self._store = store
        self._log = ChangeLog(clock, sequences_of(store))

    def write(self, table: str, operations: list[Operation]) -> list[Any]:
        return self._store.write(table, operations, attach=self._log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def tracked(store: TableStore, clock: Clock) -> TrackedStore:
    return TrackedStore(store, clock)


# -- reading ----------------------------------------------------------------------------------
class ChangesPruned(Exception):
    """The position points at change rows retention has removed: the reader missed changes."""


@dataclass(frozen=True)
class Position:
    """Where a reader stands in one partition: the next row to read (`row_key`, which may be a
    numbered row not written yet) and how many of its keys are already behind it."""

    row_key: str
    consumed: int = 0


@dataclass(frozen=True)
class Candidate:
    partition: int
    row_key: str
    index: int  # position of the record in its row's key list
    record_key: str
    stamp: str  # when the row was written (its writer's clock)


class ChangeScanner:
    """Reads change rows of one table from per-partition positions, merged oldest first (by the
    writers' stamps: only an order of presentation; what is read is decided per partition by
    sequence, so a stamp never hides a change)."""

    def __init__(self, store: TableStore, table: str) -> None:
        self._store = store
        self._table = table
        self.requests = 0

    def open(self, partitions: list[str], positions: list[Position | None], top: int) -> "ChangeReader":
        page_size = min(1000, max(10, 2 * top // max(1, len(partitions))))
        streams = [_Stream(self._store, self._table, pk, pos, page_size, index) for index, (pk, pos) in enumerate(zip(partitions, positions))]
        self._store.map(lambda stream: stream.prime(), streams)  # first page of every partition at once
        for stream in streams:
            stream.check()
        return ChangeReader(streams)


class ChangeReader:
    """The merged candidates of every partition, taken a batch at a time; `positions()` says
    where a reader stands after what has been taken."""

    def __init__(self, streams: list["_Stream"]) -> None:
        self._streams = streams
        self._merged = heapq.merge(*(stream.entries() for stream in streams), key=lambda c: (c.stamp, c.partition, c.row_key, c.index))
        self._ahead: Candidate | None = None

    def take(self, count: int) -> list[Candidate]:
        taken: list[Candidate] = []
        while len(taken) < count:
            candidate = self._ahead or next(self._merged, None)
            self._ahead = None
            if candidate is None:
                break
            self._streams[candidate.partition].taken(candidate)
            taken.append(candidate)
        return taken

    @property
    def more(self) -> bool:
        """Rows beyond what was taken exist (as of reading)."""
        if self._ahead is None:
            self._ahead = next(self._merged, None)
        return self._ahead is not None

    @property
    def requests(self) -> int:
        return sum(stream.requests for stream in self._streams)

    def positions(self) -> list[Position]:
        return [stream.position() for stream in self._streams]


class _Stream:
    """One partition's change rows from a position, fetched lazily page by page."""

    def __init__(self, store: TableStore, table: str, partition: str, start: Position | None, page_size: int, index: int) -> None:
        self.index = index
        self.start = start
        self.requests = 0
        low = start.row_key if start else CHANGE_PREFIX
        self._pages = store.table(table).query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            parameters={"pk": partition, "low": low, "high": CHANGE_END},
            results_per_page=page_size,
        ).by_page()
        self._rows: list[dict[str, Any]] = []  # fetched so far (only ever appended to)
        self._done = False
        self._current = 0  # index in _rows of the first row not fully taken
        self._taken = start.consumed if start else 0  # its keys already taken

    def _fetch(self) -> bool:
        """One more page into the buffer; False at the end."""
        if self._done:
            return False
        try:
            page = list(next(self._pages))
        except StopIteration:
            self._done = True
            return False
        self.requests += 1
        if self._pages.continuation_token is None:
            self._done = True
        self._rows.extend(page)
        return True

    def prime(self) -> None:
        self._fetch()

    def check(self) -> None:
        """Retention removed rows this position had not read? Sequence numbers have no gaps
        and retention keeps each partition's newest row, so the first row found must be the
        position's own, or none at all for a number not written yet."""
        if self.start is None:
            return
        while not self._rows and self._fetch():
            pass
        first = str(self._rows[0]["RowKey"]) if self._rows else None
        if first == self.start.row_key:
            return
        waiting = sequence_of(self.start.row_key) is not None and self.start.consumed == 0
        if first is None and waiting:
            return  # the next number, not written yet
        raise ChangesPruned(self.start.row_key)

    def entries(self) -> Iterator[Candidate]:
        position = 0
        while True:
            while position >= len(self._rows):
                if not self._fetch():
                    return
            row = self._rows[position]
            row_key = str(row["RowKey"])
            keys = row_keys_of(row)
            first = self.start.consumed if (self.start is not None and row_key == self.start.row_key) else 0
            written = row_stamp(row)
            for index in range(first, len(keys)):
                yield Candidate(self.index, row_key, index, keys[index], written)
            position += 1

    def taken(self, candidate: Candidate) -> None:
        """The reader took this candidate: the rows before its row are fully behind it."""
        while str(self._rows[self._current]["RowKey"]) != candidate.row_key:
            self._current += 1
        self._taken = candidate.index + 1
        if self._taken >= len(row_keys_of(self._rows[self._current])):
            self._current, self._taken = self._current + 1, 0

    def position(self) -> Position:
        """The next row to read: one fetched and not fully taken, else the number after the
        last row read (rows written before sequences are followed by number 1)."""
        if self._current >= len(self._rows):
            self._fetch()
        if self._current < len(self._rows):
            return Position(str(self._rows[self._current]["RowKey"]), self._taken)
        if self._current > 0:
            return Position(sequenced_key((sequence_of(str(self._rows[self._current - 1]["RowKey"])) or 0) + 1), 0)
        return self.start or Position(sequenced_key(1), 0)


# -- retention ----------------------------------------------------------------------------------
@dataclass
class PruneResult:
    removed: int = 0
    partitions: int = 0
    complete: bool = True  # False: the budget ran out first (the next tick goes on)


def prune_changes(
    store: TableStore,
    tables: list[str],
    partitions: list[str],
    cutoff: datetime,
    *,
    deadline: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    max_rows: int = 20000,
) -> PruneResult:
    """Delete the change rows of these partitions written before `cutoff`, oldest first, within
    a time (`deadline`, on the `monotonic` clock) and row budget. Only a prefix of each partition goes
    (the first row not old enough stops it) and its newest row always stays: that is what lets
    a reader tell a pruned position (410) from one that is simply up to date."""
    limit = stamp(cutoff)
    result = PruneResult()
    for table in tables:
        for partition in partitions:
            if (deadline is not None and monotonic() >= deadline) or result.removed >= max_rows:
                result.complete = False
                return result
            rows = store.query(
                table,
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                parameters={"pk": partition, "low": CHANGE_PREFIX, "high": CHANGE_END},
                select=["RowKey", "at"],
            )
            old: list[str] = []
            newest: str | None = None
            for row in rows:
                newest = str(row["RowKey"])
                if len(old) + result.removed >= max_rows or row_stamp(row) >= limit:
                    break
                old.append(newest)
            if old and old[-1] == newest:
                old.pop()  # the partition's newest row stays
            result.partitions += 1
            if old:
                failures = store.write(table, [("delete", {"PartitionKey": partition, "RowKey": key}) for key in old])
                result.removed += len(old) - len(failures)
    return result
