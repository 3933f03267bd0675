"""The one page loop every pass uses (singer's paginator, dlt's "state after the load").

    PageLoop(states=..., integration_id=..., state_key=..., run_id=..., clock=..., options=...)
    loop.restartable(checkpoint, watermark, attempt)   attempt(checkpoint or None) -> result
    loop.walk(read, handle, position=..., resume_link=..., watermark=..., progress=...)

`walk` reads BC's pages from `read(resume_link)` (the next page is fetched while the current
one is written), and for each page:
1. `handle(page, closing)` writes the page durably and returns the Position to save with the
   page's nextLink, or None for "no checkpoint at this page" (reconcile checkpoints only at a
   sweep). `closing` is True when the time budget is spent and another page follows: the
   handler should leave a clean point, because the loop pauses after this page.
   A handler may instead return a `Staged` page (read, mapped, compared; not written): the loop
   starts its write in the background and prepares the next page meanwhile, so at most one page
   is being written and one prepared. Steps 2-4 for a staged page run once its write is durable,
   in page order, before the next page's write starts (and while waiting for BC's next page, as
   soon as the write is done): the checkpoint never gets ahead of what is stored;
2. the run's lease is renewed (`options.keep_alive`; a run whose integration moved on stops
   here, before its checkpoint);
3. the checkpoint (`Checkpoint(run_id, position..., nextLink)`) is saved under `state_key`,
   beside the unchanged watermark, and live progress reported (`options.on_page(progress())`);
4. at the deadline, with pages left, `Paused` is raised: the next slice continues from the
   checkpoint.

`restartable` runs a pass and, when resuming from a saved nextLink fails with a BC error that
is not fatal for the run (BC dropped its skiptoken), clears the checkpoint and runs it again
from the start."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, TypeVar, Union, runtime_checkable

from shared.clock import Clock
from shared.errors import BCError, Retriable
from shared.storage.state import Checkpoint, TypeState
from shared.sync.prefetch import prefetch

if TYPE_CHECKING:
    from shared.bc.client import Page

log = logging.getLogger(__name__)
T = TypeVar("T")


class Paused(Retriable):
    """The time budget ran out at a clean point; the checkpoint lets the next run continue."""


@dataclass
class PassOptions:
    """What a run asks of one data type's pass (the mode's rules are in shared/sync/window.py)."""

    mode: str  # "full" | "delta" | "since" | "reconcile"
    modified_since: datetime | None = None
    lookback: timedelta = timedelta(minutes=10)
    deadline: float | None = None  # clock.monotonic() value after which to pause
    keep_alive: Callable[[], None] = lambda: None  # renews the run's lease after each page
    on_page: Callable[[Any], None] = lambda counters: None  # live progress (the pass's Counters)


@dataclass
class Position:
    """What a pass saves with BC's nextLink so it can continue as it began."""

    lower_bound: str | None  # the pass's $filter lower bound
    started_at: str  # caps the mark the pass may set
    max_seen: str | None = None  # newest stamp written (reconcile: the last key swept)


@runtime_checkable
class Staged(Protocol):
    """A page ready to write: `start()` begins its write in the background; `done()` says
    whether it has finished; `wait()` blocks until it is durable (re-raising what the write raised) and returns the Position to save."""

    def start(self) -> None: ...
    def done(self) -> bool: ...
    def wait(self) -> Position | None: ...


class StateStore(Protocol):
    def get(self, integration_id: str, key: str) -> TypeState: ...
    def save(self, integration_id: str, key: str, state: TypeState) -> None: ...


@dataclass
class PageLoop:
    states: StateStore
    integration_id: str
    state_key: str
    run_id: str
    clock: Clock
    options: PassOptions
    label: str = ""  # names the pass in logs and in Paused's message
    read_ahead: bool = True  # fetch the next page while this one is written

    def load(self) -> TypeState:
        return self.states.get(self.integration_id, self.state_key)

    def save(self, watermark: str | None, checkpoint: Checkpoint | None = None) -> None:
        self.states.save(self.integration_id, self.state_key, TypeState(watermark=watermark, checkpoint=checkpoint))

    def out_of_time(self) -> bool:
        deadline = self.options.deadline
        return deadline is not None and self.clock.monotonic() >= deadline

    def walk(
        self,
        read: Callable[[str | None], Iterable["Page"]],
        handle: Callable[["Page", bool], Union[Position, None, Staged]],
        *,
        resume_link: str | None,
        watermark: str | None,
        progress: Callable[[], Any],
    ) -> None:
        pages = read(resume_link)
        pending: list[tuple[Page, Staged, bool]] = []  # the page being written in the background

        def settle() -> None:
            page, staged, closing = pending.pop()
            self._settle(page, staged.wait(), closing, watermark, progress)

        def idle() -> None:
            """Waiting for BC's next page: a write that is done gets its checkpoint now."""
            if pending and pending[0][1].done():
                settle()

        source = prefetch(iter(pages), idle=idle) if self.read_ahead else pages
        try:
            for page in source:
                if pending and pending[0][2]:  # the page being written closes the slice
                    settle()
                closing = bool(page.next_link) and self.out_of_time()
                result = handle(page, closing)
                if pending:  # this page is prepared: the previous one must be durable first
                    settle()
                if isinstance(result, Staged):
                    result.start()
                    pending.append((page, result, closing))
                else:
                    self._settle(page, result, closing, watermark, progress)
            if pending:
                settle()
        except BaseException:
            if pending:  # a later page or BC failed: what is durable still gets its checkpoint
                self._durable(pending[0][0], pending[0][1], watermark)
            raise

    def _settle(self, page: "Page", position: Position | None, closing: bool, watermark: str | None, progress: Callable[[], Any]) -> None:
        """After a page is durable: keep-alive, checkpoint, progress; Paused at the deadline."""
        self.options.keep_alive()
        if page.next_link and position is not None:
            self.save(watermark, Checkpoint(self.run_id, position.lower_bound, page.next_link, position.started_at, position.max_seen))
        self.options.on_page(progress())
        # Pause only at a clean point: after a checkpoint, or where the handler was told to close.
        if page.next_link and (closing or (position is not None and self.out_of_time())):
            raise Paused(f"{self.label or self.state_key}: time budget reached, continues from the checkpoint")

    def _durable(self, page: "Page", staged: Staged, watermark: str | None) -> None:
        """Wait for a background write while another error is on its way out; checkpoint it if
        it completed (its own failure is logged: the error in flight is the one reported)."""
        try:
            position = staged.wait()
        except Exception as error:  # noqa: BLE001 - the first error is the one that propagates
            log.info("a page's write failed while another error was raised: %s", error)
            return
        if page.next_link and position is not None:
            self.save(watermark, Checkpoint(self.run_id, position.lower_bound, page.next_link, position.started_at, position.max_seen))

    def restartable(self, checkpoint: Checkpoint | None, watermark: str | None, attempt: Callable[[Checkpoint | None], T]) -> T:
        """Run `attempt` from the checkpoint; a failed resume clears it and runs from the start."""
        try:
            return attempt(checkpoint)
        except BCError as error:
            if checkpoint is None or error.fatal_for_run:
                raise
            log.info("resume of %s failed (%s); restarting the pass", self.label or self.state_key, error.code)
            self.save(watermark, None)
            return attempt(None)
