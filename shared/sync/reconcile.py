"""Delete detection (design.md §11, issue 8): a reconcile pass flags stored records BC no
longer has with `deletedInBC: true` and `deletedAt`, and never deletes anything.

Memory stays bounded: BC's ids are read with `$select=id&$orderby=id`, page by page, and merged
with the stored side in the same key order. For each batch of about SWEEP_KEYS ids (whole BC
pages) the key range (previous batch's last key, this batch's last key] is swept in every partition of the
integration (records are spread over 16 partitions by hash; Table Storage returns each in
RowKey order) with one projected range query each: a stored row in that range that the page
did not name is gone from BC. The first page's range starts at the beginning, the last one's
runs to the end, so stored records before the first and after the last BC id are covered too.

A record that BC has again (it was flagged by an earlier reconcile) has its flag removed here;
a delta that reads it rewrites it whole, which clears the flag as well (engine `_unchanged`).
Sales order lines are not reconciled: they live in their own table and belong to their order.

The pass saves a checkpoint (BC's nextLink and the last key swept) under `<type>.reconcile`
after every sweep, renews the lease after every page, and at the deadline sweeps what it has
read and pauses like any pass."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from azure.core.exceptions import ResourceNotFoundError

from shared.bc.client import BCClient
from shared.clock import Clock, to_iso
from shared.entities import EntityType
from shared.errors import BCError, RecordError
from shared.keys import record_partitions, record_row_key
from shared.storage.changes import RECORDS_END, is_change_row, tracked
from shared.storage.records import RecordWriter
from shared.storage.state import Checkpoint, TypeState
from shared.storage.tables import TableStore
from shared.sync.engine import PassOptions, Paused, TypeResult, _storage_message
from shared.sync.prefetch import prefetch

log = logging.getLogger(__name__)

RECONCILE_SUFFIX = ".reconcile"
FLUSH_EVERY = 500  # flags written in batches while a partition's range is swept
SWEEP_KEYS = 5000  # BC ids gathered (over pages) per sweep: fewer range queries, memory still bounded


class UnorderedIds(BCError):
    """BC did not return ids in our key order: the merge cannot tell what is missing, so the
    pass stops rather than flag records that exist."""

    code = "bc_ids_unordered"


@dataclass
class ReconcileResult(TypeResult):
    deleted: int = 0  # newly flagged deletedInBC
    restored: int = 0  # flags removed: BC has the record again


class ReconcilePass:
    def __init__(
        self,
        *,
        entity: EntityType,
        client: BCClient,
        store: TableStore,
        states: Any,
        clock: Clock,
        integration_id: str,
        run_id: str,
    ) -> None:
        self.entity = entity
        self.client = client
        self.store = store
        self.states = states
        self.clock = clock
        self.integration_id = integration_id
        self.run_id = run_id
        self.key = entity.key + RECONCILE_SUFFIX
        self.result = ReconcileResult()

    def run(self, options: PassOptions) -> ReconcileResult:
        state = self.states.get(self.integration_id, self.key)
        checkpoint = state.checkpoint if state.checkpoint and state.checkpoint.run_id == self.run_id else None
        started_at = checkpoint.started_at if checkpoint else to_iso(self.clock.now())
        cursor = checkpoint.max_seen if checkpoint else None  # every key <= cursor is reconciled
        self.result.resumed = checkpoint is not None
        pages = self.client.pages(
            self.entity.entity_set, select=["id"], orderby="id", start_url=checkpoint.next_link if checkpoint else None
        )
        batch: list[str] = []  # BC keys read but not yet swept (at most ~SWEEP_KEYS + a page)
        for page in prefetch(pages):
            keys = self._keys(page.records)
            previous = batch[-1] if batch else cursor
            if keys and previous is not None and keys[0] <= previous:
                raise UnorderedIds(f"{self.entity.key}: BC returned ids out of key order; nothing more was flagged")
            batch.extend(keys)
            last = not page.next_link
            out_of_time = options.deadline is not None and self.clock.monotonic() >= options.deadline
            if last or out_of_time or len(batch) >= SWEEP_KEYS:
                if batch or last:
                    high = None if last else batch[-1]
                    self._sweep(cursor, high, set(batch))
                    cursor, batch = high, []
                if page.next_link:  # only at a sweep boundary: every key <= cursor is done
                    self.states.save(self.integration_id, self.key, TypeState(state.watermark, Checkpoint(self.run_id, None, page.next_link, started_at, cursor)))
            options.keep_alive()
            options.on_page(self.result)
            if page.next_link and out_of_time:
                raise Paused(f"{self.entity.key}: time budget reached, the reconcile continues from its checkpoint")
        self.states.save(self.integration_id, self.key, TypeState(started_at, None))  # watermark = last complete reconcile
        return self.result

    def _keys(self, records: list[dict[str, Any]]) -> list[str]:
        keys: list[str] = []
        for raw in records:
            self.result.read += 1
            try:
                key = record_row_key(raw["id"]) if isinstance(raw.get("id"), str) else None
            except RecordError:
                key = None  # an id no record could be stored under
            if key is None:
                continue
            if keys and key <= keys[-1]:
                raise UnorderedIds(f"{self.entity.key}: BC returned ids out of key order; nothing more was flagged")
            keys.append(key)
        return keys

    def _sweep(self, low: str | None, high: str | None, present: set[str]) -> None:
        """Flag the stored rows in (low, high] that BC did not name; unflag those it named."""
        now = to_iso(self.clock.now())
        for flagged, restored, failures in self.store.map(lambda p: self._sweep_partition(p, low, high, present, now), record_partitions(self.integration_id)):
            self.result.deleted += flagged
            self.result.restored += restored
            for external_id, message in failures:
                self.result.fail(external_id, message, {})

    def _sweep_partition(self, partition: str, low: str | None, high: str | None, present: set[str], now: str) -> tuple[int, int, list[tuple[str, str]]]:
        clauses, parameters = ["PartitionKey eq @pk"], {"pk": partition}
        if low is not None:
            clauses.append("RowKey gt @low")
            parameters["low"] = low
        if high is not None:
            clauses.append("RowKey le @high")
            parameters["high"] = high
        else:  # to the end of the records: the change feed's rows sort after them
            clauses.append("RowKey lt @end")
            parameters["end"] = RECORDS_END
        rows = self.store.query(self.entity.table, " and ".join(clauses), parameters=parameters, select=["RowKey", "externalId", "deletedInBC"])
        writer = RecordWriter(tracked(self.store, self.clock), self.entity.table)  # flags reach the change feed
        flagged, restored, pending = 0, 0, 0
        failures: list[tuple[str, str]] = []

        def flush() -> int:
            refused = writer.flush()
            for failure in refused:
                failures.append((unquote(str(failure.entity["RowKey"])), _storage_message(failure.error)))
            return len(refused)

        for row in rows:
            key = row["RowKey"]
            if "|" in key or is_change_row(key):
                continue  # a child row, should one ever share the table: it goes with its parent
            if key in present:
                if row.get("deletedInBC"):
                    restored += self._restore(partition, key)
                continue
            if row.get("deletedInBC"):
                continue  # flagged by an earlier reconcile: not new
            writer.merge({"PartitionKey": partition, "RowKey": key, "deletedInBC": True, "deletedAt": now})
            pending += 1
            if pending >= FLUSH_EVERY:
                flagged += pending - flush()
                pending = 0
        flagged += pending - flush()
        return flagged, restored, failures

    def _restore(self, partition: str, key: str) -> int:
        """Remove the flag (a replace without it, guarded by the ETag; rare, so a point read)."""
        try:
            entity = self.store.table(self.entity.table).get_entity(partition, key)
        except ResourceNotFoundError:
            return 0
        fresh = {k: v for k, v in entity.items() if k not in ("deletedInBC", "deletedAt", "changeKey")}
        # Replaced whole (the run holds the integration's lease), with its change row.
        return 0 if tracked(self.store, self.clock).write(self.entity.table, [("upsert", fresh)]) else 1
