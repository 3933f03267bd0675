"""The stages of one page (dlt's extract -> normalize -> load): map, compare, write. Each is a
small object with one job that returns its result instead of changing the pass.

- map: BC records -> platform records; a record that fails mapping or Table Storage's limits
  is kept aside with its error (counted, logged, skipped);
- compare: created / updated / unchanged by comparing the content hash with the stored one, so
  re-reads (full syncs, the look-back window of deltas, resumed pages) rewrite nothing;
- write: behaviours write first (a document's lines before the document, so a crash in
  between leaves the document's old hash and the next run redoes it), then the records with
  their change rows; records that failed mapping but are stored are flagged `syncStatus:
  error` (the last good version stays)."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Iterable

from shared.clock import Clock, parse_iso
from shared.counters import Counters
from shared.entities import EntityType
from shared.errors import RecordError
from shared.keys import record_row_key
from shared.mapping import PlatformRecord, check_table_limits, map_record, source_hash, source_salt
from shared.storage.changes import tracked  # change feed (issue 13): writes carry change rows
from shared.storage.records import Existing, RecordWriter, StoredLookup
from shared.storage.tables import TableStore
from shared.sync.behaviour import Behaviour
from shared.sync.outcome import Change, Compared, Mapped, PageOutcome
from shared.sync.rows import Rows, storage_message
from shared.sync.window import newest, oldest, stamp


class MapStage:
    def __init__(self, entity: EntityType, rows: Rows, *, user_id: str, custom: list[dict[str, str]]) -> None:
        self.entity = entity
        self.rows = rows
        self.user_id = user_id
        self.custom = custom
        self._salt = source_salt(entity.key, custom)
        #: the last page was mostly re-reads (a re-sync): wait for the stored lookup before mapping,
        #: since most records then need no mapping; otherwise map beside the lookup (first syncs)
        self.expect_rereads = False

    def run(self, raws: Iterable[dict[str, Any]], now: str, stored: "Future[dict[str, Existing]] | None" = None) -> Mapped:
        """Map each BC record. A record whose source hash equals the stored one is not mapped at
        all (a re-read: full re-syncs, look-back windows) once `stored` (the page's lookup) has
        answered; the map waits for it only while pages are mostly re-reads."""
        mapped: list[PlatformRecord] = []
        failed: list[tuple[dict[str, Any], RecordError]] = []
        latest: str | None = None
        read = skipped = 0
        known = stored.result() if stored is not None and self.expect_rereads else None
        for raw in raws:
            read += 1
            digest = source_hash(raw, self._salt)
            if known is None and stored is not None and stored.done():
                known = stored.result()
            if known and _same_source(known.get(safe_key(raw) or ""), digest):
                skipped += 1
                latest = newest(latest, stamp(raw.get("lastModifiedDateTime")))
                continue
            try:
                record = map_record(self.entity, raw, user_id=self.user_id, integration_id=self.rows.integration_id, custom=self.custom)
                record.source_hash = digest
                check_table_limits(self.rows.record(record, "synced", now))
                for child in record.children:
                    check_table_limits(self.rows.line(record, child, now))
                mapped.append(record)
                seen = record.source_modified_at
            except RecordError as error:
                failed.append((raw, error))
                seen = stamp(raw.get("lastModifiedDateTime"))
            latest = newest(latest, seen)
        return Mapped(mapped, failed, latest, read, skipped)


def _same_source(before: Existing | None, digest: str) -> bool:
    """Stored from exactly this BC record and nothing to clear (as `_unchanged`)."""
    return bool(
        before
        and before.source_hash == digest
        and before.sync_status not in ("pending", "error")
        and not before.deleted_in_bc
    )


#: Stored lookups started before their page is mapped (shared by the passes of a process).
_LOOKUPS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lookup-ahead")


class CompareStage:
    def __init__(self, lookup: StoredLookup) -> None:
        self.lookup = lookup

    def start(self, raws: list[dict[str, Any]]) -> "Future[dict[str, Existing]]":
        """Look the page's stored records up in the background while the page is mapped: the
        keys come from BC's ids (the same keys mapping gives the records), so the storage round
        trips overlap the mapping's CPU."""
        keys = [k for k in (safe_key(raw) for raw in raws) if k]
        return _LOOKUPS.submit(self.lookup.lookup, keys)

    def run(self, mapped: Mapped, existing: dict[str, Existing] | None = None) -> Compared:
        if existing is None:
            keys = [r.row_key for r in mapped.records] + [k for k in (safe_key(raw) for raw, _ in mapped.failed) if k]
            existing = self.lookup.lookup(keys)
        changes: list[Change] = []
        unchanged = mapped.skipped
        for record in mapped.records:
            before = existing.get(record.row_key)
            if _unchanged(before, record):
                unchanged += 1
                continue
            status = "conflict" if _edited_on_platform(before) else "synced"
            changes.append(Change(record, before, "updated" if before else "created", status))
        return Compared(changes, unchanged, existing)


class WriteStage:
    def __init__(self, entity: EntityType, store: TableStore, clock: Clock, rows: Rows, behaviours: list[Behaviour]) -> None:
        self.entity = entity
        self.store = store
        self.clock = clock
        self.rows = rows
        self.behaviours = behaviours

    def run(self, mapped: Mapped, compared: Compared, now: str) -> PageOutcome:
        seen = [r.row_key for r in mapped.records] + [k for k in (safe_key(raw) for raw, _ in mapped.failed) if k]
        outcome = PageOutcome(Counters(read=mapped.read, unchanged=compared.unchanged), newest=mapped.newest, seen=seen)
        counters = outcome.counters
        refused: dict[str, tuple[str, dict[str, Any]]] = {}
        for behaviour in self.behaviours:
            part = behaviour.before_parents(compared.changes, now)
            if part is not None:
                counters.add(part.counters)
                refused.update(part.refused)

        parents = RecordWriter(tracked(self.store, self.clock), self.entity.table)  # change feed (issue 13)
        staged: list[Change] = []
        for change in compared.changes:
            if change.record.row_key in refused:  # keeps its old hash: the next run redoes it
                message, data = refused[change.record.row_key]
                outcome.failed_floor = oldest(outcome.failed_floor, change.record.source_modified_at)
                counters.fail(change.record.external_id, message, data)
                continue
            parents.upsert(self.rows.record(change.record, change.status, now))
            staged.append(change)
        failures = {f.entity["RowKey"]: f for f in parents.flush()}
        for change in staged:
            record = change.record
            if record.row_key in failures:
                outcome.failed_floor = oldest(outcome.failed_floor, record.source_modified_at)
                counters.fail(record.external_id, storage_message(failures[record.row_key].error), {})
                continue
            setattr(counters, change.kind, getattr(counters, change.kind) + 1)
            outcome.written.append(record)
        for behaviour in self.behaviours:
            behaviour.after_parents(outcome.written, now)

        marks = RecordWriter(tracked(self.store, self.clock), self.entity.table)  # change feed (issue 13)
        for raw, error in mapped.failed:
            counters.fail(raw.get("id"), error.message, error.data or _summary(raw))
            key = safe_key(raw)
            if key and key in compared.existing:
                # Keep the last good version; flag it so the platform knows BC's is unusable.
                marks.merge({"PartitionKey": self.rows.partition_of(key), "RowKey": key, "syncStatus": "error", "syncError": error.message[:1000]})
        marks.flush()
        return outcome


def _unchanged(before: Existing | None, record: PlatformRecord) -> bool:
    """Same content and nothing to clear: no write (re-reads, look-back windows, resumed pages)."""
    return bool(
        before
        and before.content_hash == record.content_hash
        and before.sync_status not in ("pending", "error")
        and not before.deleted_in_bc
    )


def safe_key(raw: dict[str, Any]) -> str | None:
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


def _summary(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if not k.startswith("@")}
