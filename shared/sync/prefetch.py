"""Read the next BC page while the current one is being written."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


IDLE_SECONDS = 0.05


def prefetch(source: Iterator[T], depth: int = 1, idle: Callable[[], None] | None = None) -> Iterator[T]:
    """Yield from `source`, produced `depth` items ahead in a thread; errors re-raise here.
    `idle` is called every IDLE_SECONDS while the consumer waits for the next item (the page
    loop checkpoints a finished background write then); what it raises ends the iteration."""
    slots: "queue.Queue[tuple[str, object]]" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(("error", error))

    worker = threading.Thread(target=produce, name="bc-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            try:
                kind, value = slots.get(timeout=IDLE_SECONDS) if idle else slots.get()
            except queue.Empty:
                assert idle is not None
                idle()
                continue
            if kind == "item":
                yield value  # type: ignore[misc]
            elif kind == "done":
                return
            else:
                raise value  # type: ignore[misc]
    finally:
        stop.set()
        worker.join(timeout=5)
