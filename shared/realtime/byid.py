"""Reading notified records again by id before a type's pass (design.md §10, §14 "Lines").

A line-only edit notifies the header but may leave its lastModifiedDateTime alone, so the
delta's timestamp filter cannot see it. Each id a notification named (shared/realtime/pending.py)
is read with `GET {entitySet}({id})` and the pass's own `$select`/`$expand`, and written through
the engine's normal write stage (`TypeSync.process`): the same mapping, content-hash comparison
(an unchanged record is not rewritten), lines and change feed as every other page.

Bounded: the ids are walked in key order in batches, the lease is renewed and the deadline
checked after each batch (Paused: the next slice continues with what is left, since done rows
are gone). A record BC no longer has (404) is left to the `deleted` notification and reconcile."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shared.errors import BCError
from shared.realtime.pending import PendingReads
from shared.storage.records import StoredLookup

if TYPE_CHECKING:
    from shared.sync.engine import PassOptions, TypeSync

log = logging.getLogger(__name__)
BATCH = 50


def read_notified(sync: "TypeSync", options: "PassOptions") -> int:
    """Read and write the type's notified records; returns how many were read. Raises Paused
    at the deadline, BCError when BC fails for the whole type (the pass would fail as well)."""
    from shared.sync.engine import Paused

    pending = PendingReads(sync.store)
    integration_id, data_type = sync.integration_id, sync.entity.key
    select, expand = sync.select, sync.expand
    lookup = StoredLookup(sync.store, sync.entity.table, sync.partition_of)
    read, after = 0, None
    while True:
        batch = pending.batch(integration_id, data_type, after=after, limit=BATCH)
        if not batch:
            return read
        after = batch[-1].record_id
        records: list[dict[str, Any]] = []
        found = []
        for item in batch:
            try:
                record = sync.client.get_record(sync.entity.entity_set, item.record_id, select=select, expand=expand)
            except BCError as error:
                if error.fatal_for_run:
                    raise
                log.info("notified %s %s not read (%s); the delta and reconcile remain", data_type, item.record_id, error.code)
                pending.failed(integration_id, data_type, item)
                continue
            if record is None:  # deleted meanwhile: the `deleted` notification flags it
                pending.done(integration_id, data_type, item)
                continue
            records.append(record)
            found.append(item)
        read += len(records)
        errors_before = sync.result.errors
        sync.process(records, lookup)
        for item in found:
            if sync.result.errors > errors_before:
                pending.failed(integration_id, data_type, item)  # which one failed is in the run's errors
            else:
                pending.done(integration_id, data_type, item)
        options.keep_alive()
        options.on_page(sync.result)
        if options.deadline is not None and sync.clock.monotonic() >= options.deadline:
            raise Paused(f"{data_type}: time budget reached while reading notified records; continues next slice")
