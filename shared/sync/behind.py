"""Write-behind for the page loop: a page's write runs on a worker thread while the loop
prepares the next page (read, map, compare), so the storage writer is rarely idle.

    behind = WriteBehind("products")
    staged = behind.stage(write, settle)   # a Staged for PageLoop.walk (shared/sync/pages.py)
    ...
    behind.close()

One worker per pass: writes run one after another, in page order. `settle(result)` runs on the
loop's thread when the loop waits for the page, so whatever it folds into the pass (counters,
the newest stamp, the failed floor) is only touched by that thread."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, TypeVar

from shared.sync.pages import Position

T = TypeVar("T")


class _Staged(Generic[T]):
    def __init__(self, pool: ThreadPoolExecutor, write: Callable[[], T], settle: Callable[[T], Position | None]) -> None:
        self._pool = pool
        self._write = write
        self._settle = settle
        self._future: Future[T] | None = None

    def start(self) -> None:
        self._future = self._pool.submit(self._write)

    def done(self) -> bool:
        return self._future is not None and self._future.done()

    def wait(self) -> Position | None:
        if self._future is None:  # never started: write it here
            return self._settle(self._write())
        return self._settle(self._future.result())


class WriteBehind:
    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"write-{name}")

    def stage(self, write: Callable[[], T], settle: Callable[[T], Position | None]) -> _Staged[T]:
        return _Staged(self._pool, write, settle)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
