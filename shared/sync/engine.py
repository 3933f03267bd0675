"""One data type's pass: read BC pages, map, compare with what is stored, write what changed.

Rules kept here (design.md §1 and the issues):
- created / updated / unchanged are decided by comparing a content hash with the stored one,
  so re-reads (full syncs, the look-back window of deltas, resumed pages) rewrite nothing;
- a record that fails mapping or storage is counted in `errors`, logged, and skipped;
- children (sales order lines) are written before their parent, so a crash in between leaves
  the parent's old hash and the next run redoes the order;
- the checkpoint (next page) is saved after each page is durably written, the watermark only
  when the whole pass is written, capped at the pass's start and never moved backwards."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from shared.bc.client import BCClient
from shared.clock import Clock, parse_iso, to_iso
from shared.entities import EntityType
from shared.errors import BCError, RecordError
from shared.keys import child_row_key, children_range, record_partition, record_row_key
from shared.mapping import PlatformRecord, check_table_limits, map_record
from shared.storage.changes import tracked  # change feed (issue 13): writes carry change rows
from shared.storage.records import Existing, RecordWriter, StoredLookup
from shared.storage.state import Checkpoint, SyncStateRepository, TypeState
from shared.storage.tables import TableStore
from shared.sync.prefetch import prefetch
from shared.sync.stock import NUMBER_FILTER_CHUNK, STOCK_FEED, StockRefresh

log = logging.getLogger(__name__)

MAX_ERROR_RECORDS = 20  # failed records kept with their data per pass; the rest only counted
SINCE_SUFFIX = ".since"  # state key of a modifiedSince pass's checkpoint (never its watermark)


class Paused(Exception):
    """The time budget ran out at a clean point; the checkpoint lets the next run continue."""


@dataclass
class PassOptions:
    mode: str  # "full" | "delta" | "since"
    modified_since: datetime | None = None
    lookback: timedelta = timedelta(minutes=10)
    deadline: float | None = None  # clock.monotonic() value after which to pause
    keep_alive: Callable[[], None] = lambda: None  # renews the run's lease after each page
    on_page: Callable[["TypeResult"], None] = lambda result: None  # live progress


@dataclass
class TypeResult:
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: int = 0
    lines_written: int = 0
    lines_deleted: int = 0
    stock_refreshed: int = 0
    error_records: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False

    def fail(self, external_id: str | None, message: str, data: dict[str, Any]) -> None:
        """Count every failure; keep the first MAX_ERROR_RECORDS with their data (bounded memory)."""
        self.errors += 1
        if len(self.error_records) < MAX_ERROR_RECORDS:
            self.error_records.append({"externalId": external_id, "error": message, "data": _printable(data)})


def _printable(data: dict[str, Any]) -> dict[str, Any]:
    """Offending data for the log: JSON-safe and short."""
    text = json.dumps(data, default=str)
    if len(text) > 1000:
        return {"truncated": text[:1000]}
    return json.loads(text)


class TypeSync:
    """Syncs one data type of one integration. Collaborators are passed in so tests use real
    ones pointed at the simulator and Azurite."""

    def __init__(
        self,
        *,
        entity: EntityType,
        client: BCClient,
        store: TableStore,
        states: SyncStateRepository,
        clock: Clock,
        user_id: str,
        integration_id: str,
        run_id: str,
        custom_fields: list[dict[str, str]] | None = None,
    ) -> None:
        self.entity = entity
        self.client = client
        self.store = store
        self.states = states
        self.clock = clock
        self.user_id = user_id
        self.integration_id = integration_id
        self.run_id = run_id
        self.custom = custom_fields or []
        self.result = TypeResult()
        self._seen_numbers: set[str] = set()  # items a delta already read (bounded by the delta)
        self._track_numbers = False
        self._failed_floor: str | None = None  # oldest stamp of a record that failed to store

    def partition_of(self, row_key: str) -> str:
        return record_partition(self.integration_id, row_key)

    # -- the pass -------------------------------------------------------------------------
    def run(self, options: PassOptions) -> TypeResult:
        state = self.states.get(self.integration_id, self._state_key(options))
        lower = self._lower_bound(options, state)
        checkpoint = self._resumable(options, state, lower)
        started_at = checkpoint.started_at if checkpoint else to_iso(self.clock.now())
        max_seen = checkpoint.max_seen if checkpoint else None
        lookup = StoredLookup(self.store, self.entity.table, self.partition_of)
        self.result.resumed = checkpoint is not None
        self._track_numbers = self.entity.stock_feed and lower is not None

        try:
            max_seen = self._read_pages(options, lower, checkpoint, started_at, max_seen, lookup, state.watermark)
        except BCError as error:
            if checkpoint is None or error.fatal_for_run:
                raise
            # The saved nextLink no longer works (BC dropped its skiptoken): redo the pass.
            log.info("resume of %s failed (%s); restarting the pass", self.entity.key, error.code)
            self._save(options, state.watermark, None)
            self.result = TypeResult()
            return self.run(options)

        if self._may_advance(options, state, lower):
            self._save(options, _advance(state.watermark, max_seen, started_at, self._failed_floor), None)
        else:
            self._save(options, state.watermark, None)

        # The stock feed is a pass of its own after the items pass (its own checkpoint and mark,
        # shared/sync/stock.py): pausing in it never redoes the items.
        if self.entity.stock_feed and lower is not None:
            self._refresh_stock(options, lookup, state.watermark)
        elif self.entity.stock_feed and options.mode != "since":
            # The stock mark of a full pass is the pass's start (also when it was resumed), so
            # postings made while it ran are read by the next delta.
            self._save_stock_mark(started_at)
        return self.result

    def _state_key(self, options: PassOptions) -> str:
        """A modifiedSince pass keeps its checkpoint apart: it must never touch the watermark."""
        return self.entity.key + (SINCE_SUFFIX if options.mode == "since" else "")

    def _lower_bound(self, options: PassOptions, state: TypeState) -> datetime | None:
        if options.mode == "since":
            return options.modified_since
        if options.mode == "delta" and state.watermark:
            return parse_iso(state.watermark) - options.lookback
        return None

    def _resumable(self, options: PassOptions, state: TypeState, lower: datetime | None) -> Checkpoint | None:
        """Continue an interrupted pass when it covers what this run asks for (a modifiedSince
        pass only continues its own run: another run may ask for another date)."""
        checkpoint = state.checkpoint
        if checkpoint is None:
            return None
        if options.mode == "since":
            return checkpoint if checkpoint.run_id == self.run_id else None
        if checkpoint.lower_bound is None or (lower is not None and parse_iso(checkpoint.lower_bound) <= lower):
            return checkpoint
        return None

    def _may_advance(self, options: PassOptions, state: TypeState, lower: datetime | None) -> bool:
        """Only a pass that read everything after the stored watermark may move it."""
        if options.mode == "since":
            return False
        if lower is None:
            return True
        return state.watermark is not None and lower <= parse_iso(state.watermark)

    def _read_pages(
        self,
        options: PassOptions,
        lower: datetime | None,
        checkpoint: Checkpoint | None,
        started_at: str,
        max_seen: str | None,
        lookup: StoredLookup,
        watermark: str | None,
    ) -> str | None:
        op = "ge" if options.mode == "since" else "gt"
        pass_lower = checkpoint.lower_bound if checkpoint else (to_iso(lower) if lower else None)
        pages = self.client.pages(
            self.entity.entity_set,
            select=self.entity.select([m["source"] for m in self.custom]),
            filter=f"lastModifiedDateTime {op} {pass_lower}" if pass_lower else None,
            expand=self.entity.child.navigation if self.entity.child else None,
            orderby="id",  # pages in key order: the stored side of a page is one range per partition
            start_url=checkpoint.next_link if checkpoint else None,
        )
        for page in prefetch(pages):
            newest = self.process(page.records, lookup)
            if newest and (max_seen is None or newest > max_seen):
                max_seen = newest
            if page.next_link:
                self._save(options, watermark, Checkpoint(self.run_id, pass_lower, page.next_link, started_at, max_seen))
            options.keep_alive()
            options.on_page(self.result)
            if page.next_link and options.deadline is not None and self.clock.monotonic() >= options.deadline:
                raise Paused(f"{self.entity.key}: time budget reached, continues from the checkpoint")
        return max_seen

    # -- one page -------------------------------------------------------------------------
    def process(self, records: Iterable[dict[str, Any]], lookup: StoredLookup) -> str | None:
        """Map, compare and write one page; returns the newest lastModifiedDateTime in it."""
        now = to_iso(self.clock.now())
        mapped: list[PlatformRecord] = []
        failed: list[tuple[dict[str, Any], RecordError]] = []
        newest: str | None = None
        for raw in records:
            self.result.read += 1
            if self._track_numbers and isinstance(raw.get("number"), str):
                self._seen_numbers.add(raw["number"])
            try:
                record = map_record(
                    self.entity, raw, user_id=self.user_id, integration_id=self.integration_id, custom=self.custom
                )
                check_table_limits(self._entity_for(record, "synced", now))
                for child in record.children:
                    check_table_limits(self._child_entity(record, child, now))
                mapped.append(record)
                stamp = record.source_modified_at
            except RecordError as error:
                failed.append((raw, error))
                stamp = _stamp(raw.get("lastModifiedDateTime"))
            if stamp and (newest is None or stamp > newest):
                newest = stamp

        existing = lookup.lookup([r.row_key for r in mapped] + [_safe_key(raw) for raw, _ in failed if _safe_key(raw)])
        parents = RecordWriter(tracked(self.store, self.clock), self.entity.table)  # change feed (issue 13)
        children = RecordWriter(self.store, self.entity.child.table) if self.entity.child else None
        outcome: dict[str, tuple[PlatformRecord, str]] = {}

        for record in mapped:
            before = existing.get(record.row_key)
            if _unchanged(before, record):
                self.result.unchanged += 1
                continue
            status = "conflict" if _edited_on_platform(before) else "synced"
            outcome[record.row_key] = (record, "updated" if before else "created")
            parents.upsert(self._entity_for(record, status, now))
            if children is not None:
                self._stage_children(record, before, children, now)

        if children is not None:
            for failure in children.flush():
                parent_key = str(failure.entity["RowKey"]).split("|", 1)[0]
                if parent_key in outcome:
                    record = outcome.pop(parent_key)[0]
                    parents.drop(parent_key)  # the order keeps its old hash: the next run redoes it
                    self._storage_failed(record)
                    self.result.fail(record.external_id, _storage_message(failure.error), {"line": failure.entity.get("externalId") or failure.entity["RowKey"]})
        failures = {f.entity["RowKey"]: f for f in parents.flush()}
        for row_key, (record, kind) in outcome.items():
            if row_key in failures:
                self._storage_failed(record)
                self.result.fail(record.external_id, _storage_message(failures[row_key].error), {})
                continue
            setattr(self.result, kind, getattr(self.result, kind) + 1)

        marks = RecordWriter(tracked(self.store, self.clock), self.entity.table)  # change feed (issue 13)
        for raw, error in failed:
            self.result.fail(raw.get("id"), error.message, error.data or _summary(raw))
            key = _safe_key(raw)
            if key and key in existing:
                # Keep the last good version; flag it so the platform knows BC's is unusable.
                marks.merge({"PartitionKey": self.partition_of(key), "RowKey": key, "syncStatus": "error", "syncError": error.message[:1000]})
        marks.flush()
        return newest

    def _stage_children(self, record: PlatformRecord, before: Existing | None, children: RecordWriter, now: str) -> None:
        """An order's lines are written with it; lines BC no longer has are deleted (design.md §3).
        The stored lines of a changed order are one range query, so no list of line ids is kept
        on the order (an order with thousands of lines fits)."""
        partition = self.partition_of(record.row_key)
        keep = {child_row_key(record.row_key, c.row_key) for c in record.children}
        for child in record.children:
            children.upsert(self._child_entity(record, child, now))
        gone: list[str] = []
        if before is not None:
            low, high = children_range(record.row_key)
            rows = self.store.query(
                self.entity.child.table,
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                parameters={"pk": partition, "low": low, "high": high},
                select=["RowKey"],
            )
            gone = [row["RowKey"] for row in rows if row["RowKey"] not in keep]
        for row_key in gone:
            children.delete(partition, row_key)
        self.result.lines_written += len(record.children)
        self.result.lines_deleted += len(gone)

    def _storage_failed(self, record: PlatformRecord) -> None:
        """The watermark must never pass a record that is not stored: remember the oldest."""
        stamp = record.source_modified_at
        if stamp and (self._failed_floor is None or stamp < self._failed_floor):
            self._failed_floor = stamp

    def _entity_for(self, record: PlatformRecord, status: str, now: str) -> dict[str, Any]:
        entity = {"PartitionKey": self.partition_of(record.row_key), "RowKey": record.row_key, **record.properties}
        entity.update(syncStatus=status, lastSyncedAt=now, contentHash=record.content_hash)
        if status == "conflict":
            entity["conflictAt"] = now
        return entity

    def _child_entity(self, parent: PlatformRecord, child: PlatformRecord, now: str) -> dict[str, Any]:
        entity = {"PartitionKey": self.partition_of(parent.row_key), "RowKey": child_row_key(parent.row_key, child.row_key), **child.properties}
        entity.update(syncStatus="synced", lastSyncedAt=now, contentHash=child.content_hash)
        return entity

    # -- stock levels -----------------------------------------------------------------------
    def _stock_key(self) -> str:
        return f"{self.entity.key}.stock"

    def _save_stock_mark(self, mark: str) -> None:
        current = self.states.get(self.integration_id, self._stock_key()).watermark
        if current is None or mark > current:
            self.states.save(self.integration_id, self._stock_key(), TypeState(watermark=mark))

    def _refresh_stock(self, options: PassOptions, lookup: StoredLookup, watermark: str | None) -> None:
        """Stock postings do not touch items' lastModifiedDateTime: read item ledger entries
        since the stock mark and re-read just the items they name (paged, resumable)."""
        StockRefresh(self, options, lookup).run(watermark)

    # -- state ----------------------------------------------------------------------------
    def _save(self, options: PassOptions, watermark: str | None, checkpoint: Checkpoint | None) -> None:
        key = self._state_key(options)
        self.states.save(self.integration_id, key, TypeState(watermark=None if key.endswith(SINCE_SUFFIX) else watermark, checkpoint=checkpoint))


def _advance(previous: str | None, max_seen: str | None, started_at: str, failed_floor: str | None = None) -> str | None:
    """New watermark: the newest timestamp written, capped at the pass's start and just below
    the oldest record that failed to store (so the next delta reads it again), never backwards."""
    if max_seen is None:
        return previous
    candidate = min(max_seen, started_at)
    if failed_floor is not None:
        candidate = min(candidate, to_iso(parse_iso(failed_floor) - timedelta(milliseconds=1)))
    return candidate if previous is None or candidate > previous else previous


def _unchanged(before: Existing | None, record: PlatformRecord) -> bool:
    """Same content and nothing to clear: no write (re-reads, look-back windows, resumed pages)."""
    return bool(
        before
        and before.content_hash == record.content_hash
        and before.sync_status not in ("pending", "error")
        and not before.deleted_in_bc
    )


def _stamp(value: Any) -> str | None:
    try:
        return to_iso(parse_iso(str(value))) if value else None
    except ValueError:
        return None


def _safe_key(raw: dict[str, Any]) -> str | None:
    try:
        return record_row_key(raw["id"]) if isinstance(raw.get("id"), str) else None
    except RecordError:
        return None


def _edited_on_platform(before: Existing | None) -> bool:
    """The platform changed the record after our last sync. `platformModifiedAt` may be stored
    as a date-time or as ISO-8601 text with an offset; anything else never counts as an edit."""
    if not (before and before.platform_modified_at and before.last_synced_at):
        return False
    edited = _as_datetime(before.platform_modified_at)
    synced = _as_datetime(before.last_synced_at)
    return edited is not None and synced is not None and edited > synced


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        return parse_iso(str(value))
    except ValueError:
        return None


def _storage_message(error: Exception) -> str:
    code = getattr(error, "error_code", None) or type(error).__name__
    return f"Table Storage refused the record ({code})"


def _summary(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if not k.startswith("@")}
