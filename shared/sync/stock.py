"""The stock feed of a products delta, as a pass of its own (issue 8, defect 3).

Stock postings do not touch an item's lastModifiedDateTime, so after the items delta the engine
reads item ledger entries posted since the stock mark and re-reads just the items they name.
Like any pass it is paged and bounded: after each ledger page the items that page names are
re-read and written, the feed's checkpoint (its nextLink) is saved under the state key
`<type>.stock`, the lease is renewed and the deadline checked (Paused: the next slice continues
from the checkpoint). The stock mark moves only when the feed pass completes, capped at the
feed pass's start and just below any ledger page whose items failed to store."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.clock import parse_iso, to_iso
from shared.errors import BCError
from shared.storage.records import StoredLookup
from shared.storage.state import Checkpoint, TypeState

if TYPE_CHECKING:  # the engine imports this module
    from shared.sync.engine import PassOptions, TypeSync

log = logging.getLogger(__name__)

STOCK_FEED = "itemLedgerEntries"
NUMBER_FILTER_CHUNK = 15  # `number eq 'A' or ...` clauses per request


class StockRefresh:
    """One stock feed pass for one TypeSync (it shares the pass's result and lookups)."""

    def __init__(self, sync: "TypeSync", options: "PassOptions", lookup: StoredLookup) -> None:
        self.sync = sync
        self.options = options
        self.lookup = lookup
        self.key = f"{sync.entity.key}.stock"

    def run(self, products_watermark: str | None) -> None:
        from shared.sync.engine import Paused, _advance, _stamp

        sync, options = self.sync, self.options
        state = sync.states.get(sync.integration_id, self.key)
        checkpoint = state.checkpoint
        # No stock mark yet (an upgrade, a reset): the items were read with their stock up to
        # the products watermark, so the feed starts there instead of at the first entry ever.
        base = state.watermark or products_watermark
        lower = to_iso(parse_iso(base) - options.lookback) if base else None
        if checkpoint is not None:
            lower = checkpoint.lower_bound  # continue the interrupted feed pass as it began
        started_at = checkpoint.started_at if checkpoint else to_iso(sync.clock.now())
        newest = checkpoint.max_seen if checkpoint else None
        floor: str | None = None
        try:
            pages = sync.client.pages(
                STOCK_FEED,
                select=["id", "itemNumber", "lastModifiedDateTime"],
                filter=f"lastModifiedDateTime gt {lower}" if lower else None,
                start_url=checkpoint.next_link if checkpoint else None,
            )
            for page in pages:
                numbers: set[str] = set()
                oldest: str | None = None
                for entry in page.records:
                    if isinstance(entry.get("itemNumber"), str) and entry["itemNumber"]:
                        numbers.add(entry["itemNumber"])
                    stamp = _stamp(entry.get("lastModifiedDateTime"))
                    if stamp and (newest is None or stamp > newest):
                        newest = stamp
                    if stamp and (oldest is None or stamp < oldest):
                        oldest = stamp
                if self._refresh(sorted(numbers - sync._seen_numbers)) and oldest:
                    floor = oldest if floor is None or oldest < floor else floor
                if page.next_link:
                    sync.states.save(sync.integration_id, self.key, TypeState(state.watermark, Checkpoint(sync.run_id, lower, page.next_link, started_at, newest)))
                options.keep_alive()
                options.on_page(sync.result)
                if page.next_link and options.deadline is not None and sync.clock.monotonic() >= options.deadline:
                    raise Paused(f"{sync.entity.key}: time budget reached in the stock feed, continues from its checkpoint")
        except BCError as error:
            if checkpoint is None or error.fatal_for_run:
                raise
            log.info("resume of the stock feed of %s failed (%s); restarting it", sync.entity.key, error.code)
            sync.states.save(sync.integration_id, self.key, TypeState(state.watermark, None))
            return self.run(products_watermark)
        mark = _advance(state.watermark, newest, started_at, floor)
        sync.states.save(sync.integration_id, self.key, TypeState(mark, None))

    def _refresh(self, numbers: list[str]) -> bool:
        """Re-read and write the named items; True when one of them failed to store."""
        sync = self.sync
        failed_before = sync._failed_floor
        sync._failed_floor = None
        select = sync.entity.select([m["source"] for m in sync.custom])
        for start in range(0, len(numbers), NUMBER_FILTER_CHUNK):
            chunk = numbers[start : start + NUMBER_FILTER_CHUNK]
            clause = " or ".join(f"number eq '{n.replace(chr(39), chr(39) * 2)}'" for n in chunk)
            for page in sync.client.pages(sync.entity.entity_set, select=select, filter=clause):
                before = sync.result.created + sync.result.updated
                sync.process(page.records, self.lookup)
                sync.result.stock_refreshed += sync.result.created + sync.result.updated - before
        failed = sync._failed_floor is not None
        sync._failed_floor = failed_before
        return failed
