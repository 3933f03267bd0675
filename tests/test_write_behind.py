"""The page loop's write-behind (shared/sync/pages.py, shared/sync/behind.py): page N+1 is
prepared while page N is written, and page N's checkpoint is saved only once its write is
durable, in page order, also when a later page fails or the slice pauses. Checkpoints go to the
real state repository on Azurite; writes are held by explicit events, never by sleeps."""
from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest

from shared.app import App
from shared.bc.client import Page
from shared.errors import BCError
from shared.sync.behind import WriteBehind
from shared.sync.pages import PageLoop, PassOptions, Paused, Position
from tests.support import FakeClock

WAIT = 30  # seconds: a bound for a broken build, never a synchronisation


def _pages(count: int) -> list[Page]:
    return [Page(records=[{"id": f"r{i}"}], next_link=f"L{i + 1}" if i + 1 < count else None) for i in range(count)]


class Harness:
    """A pass over `pages` whose page writes wait for `release[i]` (set by the test)."""

    def __init__(self, app: App, clock: FakeClock, pages: list[Page], *, deadline: float | None = None) -> None:
        self.app = app
        self.key = f"wb-{id(self)}"
        self.pages = pages
        self.prepared: list[int] = []
        self.written: list[int] = []
        self.release = [threading.Event() for _ in pages]
        self.preparing = [threading.Event() for _ in pages]
        self.loop = PageLoop(app.states, "integration-wb", self.key, "run-1", clock, PassOptions(mode="full", deadline=deadline))
        self.behind = WriteBehind("test")
        self.error: BaseException | None = None

    def read(self, link: str | None) -> Iterator[Page]:
        return iter(self.pages)

    def handle(self, page: Page, closing: bool) -> Any:
        index = self.pages.index(page)
        self.prepared.append(index)
        self.preparing[index].set()
        position = Position(None, "2026-01-01T00:00:00Z", f"stamp{index}")

        def write() -> int:
            assert self.release[index].wait(WAIT)
            self.written.append(index)
            return index

        return self.behind.stage(write, lambda _: position)

    def run(self) -> None:
        try:
            self.loop.walk(self.read, self.handle, resume_link=None, watermark=None, progress=lambda: None)
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            self.error = error
        finally:
            self.behind.close()

    def checkpoint(self) -> str | None:
        state = self.app.states.get("integration-wb", self.key)
        return state.checkpoint.next_link if state.checkpoint else None


def test_the_next_page_is_prepared_while_one_is_written_and_checkpoints_follow_durable_writes(app: App, clock: FakeClock) -> None:
    h = Harness(app, clock, _pages(3))
    runner = threading.Thread(target=h.run)
    runner.start()
    assert h.preparing[1].wait(WAIT)  # page 1 is mapped while page 0's write is held
    assert h.written == [] and h.checkpoint() is None  # nothing durable: no checkpoint
    assert 2 not in h.prepared  # at most one page prepared ahead
    h.release[0].set()
    assert h.preparing[2].wait(WAIT)  # page 0 settled before page 2 was taken
    assert h.checkpoint() == "L1"
    h.release[1].set()
    h.release[2].set()
    runner.join(WAIT)
    assert h.error is None and h.written == [0, 1, 2]
    assert h.checkpoint() == "L2"


def test_a_failing_next_page_still_checkpoints_the_page_that_was_written(app: App, clock: FakeClock) -> None:
    pages = _pages(3)
    h = Harness(app, clock, pages)

    def read(link: str | None) -> Iterator[Page]:
        yield pages[0]
        raise BCError("BC dropped the connection", http_status=503)

    h.read = read  # type: ignore[method-assign]
    h.release[0].set()
    h.run()
    assert isinstance(h.error, BCError)
    assert h.written == [0] and h.checkpoint() == "L1"


def test_at_the_deadline_the_loop_pauses_after_a_durable_page_and_drops_the_prepared_one(app: App, clock: FakeClock) -> None:
    h = Harness(app, clock, _pages(3), deadline=clock.monotonic() + 5)
    for event in h.release:
        event.set()
    original = h.handle

    def handle(page: Page, closing: bool) -> Any:
        staged = original(page, closing)
        if page is h.pages[1]:
            clock.advance(10)  # the budget runs out while page 1 is prepared
        return staged

    h.handle = handle  # type: ignore[method-assign]
    h.run()
    assert isinstance(h.error, Paused)
    assert h.written == [0] and h.prepared == [0, 1]  # page 1 was prepared, never written
    assert h.checkpoint() == "L1"  # the next slice reads page 1 again


def test_a_written_page_is_checkpointed_while_bc_still_holds_the_next_one(app: App, clock: FakeClock) -> None:
    """A slow BC page does not delay the checkpoint (nor the lease renewal) of the page before."""
    pages = _pages(2)
    h = Harness(app, clock, pages)
    gate = threading.Event()
    renewed, settled = threading.Event(), threading.Event()
    h.loop.options.keep_alive = renewed.set
    h.loop.options.on_page = lambda _progress: settled.set()  # after the lease and the checkpoint

    def read(link: str | None) -> Iterator[Page]:
        yield pages[0]
        assert gate.wait(WAIT)  # BC is slow with page 1
        yield pages[1]

    h.read = read  # type: ignore[method-assign]
    h.release[0].set()
    runner = threading.Thread(target=h.run)
    runner.start()
    assert settled.wait(WAIT) and renewed.is_set()  # page 0 settled while page 1 is still held by BC
    assert h.checkpoint() == "L1" and h.prepared == [0]
    gate.set()
    h.release[1].set()
    runner.join(WAIT)
    assert h.error is None and h.written == [0, 1]
