"""One data type's pass: the stages a slice goes through, wired together.

    PageLoop (pages.py)   read BC pages from the checkpoint; after each page is written:
                          checkpoint, keep-alive, progress, deadline -> Paused
      prepare             observe + map + compare page N+1 while page N is written (the
                          stored lookup starts from BC's ids while the page is mapped)
                          (behind.py: one write in flight, checkpoints in page order)
      map     (stages.py) BC records -> platform records (failures aside)
      compare (stages.py) content hash vs stored: created / updated / unchanged
      write   (stages.py) behaviours first (lines), then records + change rows -> PageOutcome
    save state (window.py) the watermark only when the whole pass is written, capped at the
                          pass's start, below the oldest record that failed, never backwards
    behaviours            declared per data type (entities.py), e.g. the stock feed after a delta

The mode's rules are in window.py; nothing here branches on the mode or on a data type."""
from __future__ import annotations

import logging
from typing import Any, Iterable

from shared.bc.client import BCClient
from shared.clock import Clock, to_iso
from shared.counters import MAX_ERROR_RECORDS, Counters
from shared.entities import EntityType
from shared.storage.records import StoredLookup
from shared.storage.state import Checkpoint, SyncStateRepository
from shared.storage.tables import TableStore
from shared.sync import behaviours as declared_behaviours
from shared.sync.behaviour import Behaviour, PassContext, PassPlan
from shared.sync.behind import WriteBehind
from shared.sync.outcome import PageOutcome, Prepared
from shared.sync.pages import PageLoop, PassOptions, Paused, Position, Staged
from shared.sync.rows import Rows, storage_message
from shared.sync.stages import CompareStage, MapStage, WriteStage
from shared.sync.window import SINCE_SUFFIX, Window, advance, newest, oldest

log = logging.getLogger(__name__)

#: Kept for callers written before the counters had one type (reconcile, runs).
TypeResult = Counters
_storage_message = storage_message
__all__ = ["TypeSync", "PassOptions", "Paused", "TypeResult", "SINCE_SUFFIX", "MAX_ERROR_RECORDS"]


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
        self.result = Counters()
        self.rows = Rows(integration_id)
        self.lookup = StoredLookup(store, entity.table, self.rows.partition_of)
        self.select = entity.select([m["source"] for m in self.custom])
        self.behaviours: list[Behaviour] = declared_behaviours.build(entity, self._context())
        #: the pass's `$expand` (a document's lines): by-id reads ask for the same
        self.expand = ",".join(e for e in (b.expand() for b in self.behaviours) if e) or None
        self._map = MapStage(entity, self.rows, user_id=user_id, custom=self.custom)
        self._compare = CompareStage(self.lookup)
        self._write = WriteStage(entity, store, clock, self.rows, self.behaviours)

    def partition_of(self, row_key: str) -> str:
        return self.rows.partition_of(row_key)

    def _context(self) -> PassContext:
        return PassContext(
            entity=self.entity, client=self.client, store=self.store, states=self.states, clock=self.clock,
            rows=self.rows, integration_id=self.integration_id, run_id=self.run_id, select=self.select,
            counters=lambda: self.result, process=self.process,
        )

    # -- the pass -------------------------------------------------------------------------
    def run(self, options: PassOptions) -> Counters:
        window = Window(options.mode, options.modified_since, options.lookback)
        loop = PageLoop(self.states, self.integration_id, window.state_key(self.entity.key), self.run_id, self.clock, options, label=self.entity.key)
        state = loop.load()
        lower = window.lower_bound(state.watermark)
        kept = window.kept_watermark(state.watermark)
        expand = self.expand
        carried = self.result  # what this slice already did for the type (records read by id first)

        def attempt(checkpoint: Checkpoint | None) -> PassPlan:
            self.result = Counters(resumed=checkpoint is not None)
            self.result.add(carried)
            started_at = checkpoint.started_at if checkpoint else to_iso(self.clock.now())
            pass_lower = checkpoint.lower_bound if checkpoint else (to_iso(lower) if lower else None)
            position = Position(pass_lower, started_at, checkpoint.max_seen if checkpoint else None)
            plan = PassPlan(window, options, lower, started_at, state.watermark)
            for behaviour in self.behaviours:
                behaviour.begin(plan)
            floor: list[str | None] = [None]  # oldest stamp of a record that failed to store

            def read(link: str | None) -> Any:
                return self.client.pages(
                    self.entity.entity_set,
                    select=self.select,
                    filter=window.filter(pass_lower),
                    expand=expand,
                    orderby="id",  # pages in key order: the stored side of a page is one range per partition
                    start_url=link,
                )

            def settle(outcome: PageOutcome) -> Position:
                self.result.add(outcome.counters)
                position.max_seen = newest(position.max_seen, outcome.newest)
                floor[0] = oldest(floor[0], outcome.failed_floor)
                return position

            def handle(page: Any, closing: bool) -> Staged:
                prepared = self.prepare(page.records)  # while the previous page is written
                return behind.stage(lambda: self.write(prepared), settle)

            behind = WriteBehind(self.entity.key)
            try:
                loop.walk(read, handle, resume_link=checkpoint.next_link if checkpoint else None, watermark=kept, progress=lambda: self.result)
            finally:
                behind.close()
            if window.may_advance(state.watermark, lower):
                loop.save(advance(state.watermark, position.max_seen, started_at, floor[0]))
            else:
                loop.save(kept)
            return plan

        plan = loop.restartable(window.resumable(state.checkpoint, lower, self.run_id), kept, attempt)
        # Behaviours that are passes of their own (the stock feed: its own checkpoint and mark)
        # run after the records' pass: pausing in them never redoes the records.
        for behaviour in self.behaviours:
            behaviour.after_pass(plan)
        return self.result

    # -- one page -------------------------------------------------------------------------
    def process(self, records: Iterable[dict[str, Any]], lookup: StoredLookup | None = None) -> PageOutcome:
        """Map, compare and write one page; its counters are added to the pass's."""
        outcome = self.write(self.prepare(records, lookup))
        self.result.add(outcome.counters)
        return outcome

    def prepare(self, records: Iterable[dict[str, Any]], lookup: StoredLookup | None = None) -> Prepared:
        """Map and compare one page (nothing written): the part that overlaps the previous
        page's write."""
        raws = records if isinstance(records, list) else list(records)
        for behaviour in self.behaviours:
            behaviour.observe(raws)
        now = to_iso(self.clock.now())
        compare = self._compare if lookup is None else CompareStage(lookup)
        stored = compare.start(raws)  # the stored lookup runs while the page is mapped
        mapped = self._map.run(raws, now, stored)
        compared = compare.run(mapped, stored.result())
        self._map.expect_rereads = compared.unchanged * 2 >= mapped.read > 0  # a re-sync: see MapStage
        return Prepared(mapped, compared, now)

    def write(self, prepared: Prepared) -> PageOutcome:
        """Write a prepared page (the pass's counters are the caller's to add)."""
        return self._write.run(prepared.mapped, prepared.compared, prepared.now)
