"""The hooks a declared behaviour of a data type carries out (shared/entities.py declares them,
shared/sync/behaviours.py builds them). Every hook defaults to nothing, so a behaviour names
only the moments it cares about:

    expand()                 an extra `$expand` for the pass's reads (a document's lines)
    begin(plan)              the pass starts (plan: window, lower bound, start, watermark)
    observe(raws)            every BC record the pass reads, before mapping
    before_parents(changes)  write what must be stored before the page's records -> Part
    after_parents(written)   the page's records are stored
    after_pass(plan)         the pass completed (not called when it paused or failed)
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol

from shared.clock import Clock
from shared.counters import Counters
from shared.entities import EntityType
from shared.mapping import PlatformRecord
from shared.storage.tables import TableStore
from shared.sync.outcome import Change, PageOutcome, Part
from shared.sync.pages import PassOptions, StateStore
from shared.sync.rows import Rows
from shared.sync.window import Window


class PageSource(Protocol):
    """The part of the BC client a pass reads with."""

    def pages(self, entity_set: str, **query: Any) -> Any: ...


@dataclass
class PassContext:
    """What a behaviour may use of the pass it belongs to (public, so no behaviour reaches
    into the engine)."""

    entity: EntityType
    client: PageSource
    store: TableStore
    states: StateStore
    clock: Clock
    rows: Rows
    integration_id: str
    run_id: str
    select: list[str]  # the type's $select (custom mapped fields included)
    counters: Callable[[], Counters]  # the pass's live counters
    process: Callable[[list[dict[str, Any]]], PageOutcome]  # map -> compare -> write one page


@dataclass
class PassPlan:
    """One pass as it began."""

    window: Window
    options: PassOptions
    lower: datetime | None  # the pass's lower bound (None: it read everything)
    started_at: str
    watermark: str | None  # the watermark stored before the pass


class Behaviour:
    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx

    def expand(self) -> str | None:
        return None

    def begin(self, plan: PassPlan) -> None:
        pass

    def observe(self, raws: list[dict[str, Any]]) -> None:
        pass

    def before_parents(self, changes: list[Change], now: str) -> Part | None:
        return None

    def after_parents(self, written: list[PlatformRecord], now: str) -> None:
        pass

    def after_pass(self, plan: PassPlan) -> None:
        pass
