"""Behaviour `StockFeed`: the stock feed of a products delta, as a pass of its own (issue 8,
defect 3).

Stock postings do not touch an item's lastModifiedDateTime, so after the items delta the
behaviour reads item ledger entries posted since the stock mark and re-reads just the items
they name. Like any pass it goes through the page loop (shared/sync/pages.py): after each
ledger page the items that page names are re-read and written, the feed's checkpoint (its
nextLink) is saved under the state key `<type>.stock`, the lease is renewed and the deadline
checked (Paused: the next slice continues from the checkpoint). The stock mark moves only when
the feed pass completes, capped at the feed pass's start and just below any ledger page whose
items failed to store. A full pass sets the stock mark to its own start (also when it was
resumed), so postings made while it ran are read by the next delta."""
from __future__ import annotations

import logging
from typing import Any

from shared.clock import to_iso
from shared.entities import StockFeed
from shared.storage.state import Checkpoint, TypeState
from shared.sync.behaviour import Behaviour, PassContext, PassPlan
from shared.sync.pages import PageLoop, Position
from shared.sync.window import STOCK_SUFFIX, advance, newest, oldest, stamp

log = logging.getLogger(__name__)

STOCK_FEED = "itemLedgerEntries"
NUMBER_FILTER_CHUNK = 15  # `number eq 'A' or ...` clauses per request


class StockRefresh(Behaviour):
    def __init__(self, declared: StockFeed, ctx: PassContext) -> None:
        super().__init__(ctx)
        self.declared = declared
        self.key = ctx.entity.key + STOCK_SUFFIX
        self.seen: set[str] = set()  # items the delta already read (bounded by the delta)
        self.tracking = False

    def begin(self, plan: PassPlan) -> None:
        self.tracking = plan.lower is not None

    def observe(self, raws: list[dict[str, Any]]) -> None:
        if self.tracking:
            field = self.declared.match_field
            self.seen.update(raw[field] for raw in raws if isinstance(raw.get(field), str))

    def after_pass(self, plan: PassPlan) -> None:
        if plan.lower is not None:
            self._feed(plan)
        elif plan.window.moves_marks:
            self._save_mark(plan.started_at)

    def _save_mark(self, mark: str) -> None:
        current = self.ctx.states.get(self.ctx.integration_id, self.key).watermark
        if current is None or mark > current:
            self.ctx.states.save(self.ctx.integration_id, self.key, TypeState(watermark=mark))

    def _feed(self, plan: PassPlan) -> None:
        ctx = self.ctx
        loop = PageLoop(ctx.states, ctx.integration_id, self.key, ctx.run_id, ctx.clock, plan.options,
                        label=f"{ctx.entity.key} stock feed", read_ahead=False)
        state = loop.load()

        def attempt(checkpoint: Checkpoint | None) -> None:
            # No stock mark yet (an upgrade, a reset): the items were read with their stock up to
            # the products watermark, so the feed starts there instead of at the first entry ever.
            lower = checkpoint.lower_bound if checkpoint else plan.window.since_mark(state.watermark or plan.watermark)
            started_at = checkpoint.started_at if checkpoint else to_iso(ctx.clock.now())
            position = Position(lower, started_at, checkpoint.max_seen if checkpoint else None)
            floor: list[str | None] = [None]
            number = self.declared.number_field

            def read(link: str | None) -> Any:
                return ctx.client.pages(
                    self.declared.ledger_set,
                    select=["id", number, "lastModifiedDateTime"],
                    filter=f"lastModifiedDateTime gt {lower}" if lower else None,
                    start_url=link,
                )

            def handle(page: Any, closing: bool) -> Position:
                numbers: set[str] = set()
                first: str | None = None
                for entry in page.records:
                    if isinstance(entry.get(number), str) and entry[number]:
                        numbers.add(entry[number])
                    seen = stamp(entry.get("lastModifiedDateTime"))
                    position.max_seen = newest(position.max_seen, seen)
                    first = oldest(first, seen)
                if self._refresh(sorted(numbers - self.seen)) and first:
                    floor[0] = oldest(floor[0], first)
                return position

            loop.walk(read, handle, resume_link=checkpoint.next_link if checkpoint else None, watermark=state.watermark, progress=ctx.counters)
            loop.save(advance(state.watermark, position.max_seen, started_at, floor[0]))

        loop.restartable(state.checkpoint, state.watermark, attempt)

    def _refresh(self, numbers: list[str]) -> bool:
        """Re-read and write the named items; True when one of them failed to store."""
        ctx = self.ctx
        failed = False
        for start in range(0, len(numbers), NUMBER_FILTER_CHUNK):
            chunk = numbers[start : start + NUMBER_FILTER_CHUNK]
            clause = " or ".join(f"{self.declared.match_field} eq '{n.replace(chr(39), chr(39) * 2)}'" for n in chunk)
            for page in ctx.client.pages(ctx.entity.entity_set, select=ctx.select, filter=clause):
                outcome = ctx.process(page.records)
                ctx.counters().stock_refreshed += outcome.counters.written
                failed = failed or outcome.failed_floor is not None
        return failed
