"""BC's operational limits: a sliding request window and a few requests at once per credential,
and operations that take long when a page is heavy (408 after BC's operation limit, 504 past the
gateway's, or simply an answer later than the client waits).

Numbers default to BC's (6,000 requests per 5 minutes sliding, 5 processed at once, 95 queued);
tests make them small. The window slides on the simulator's clock, so `advance()` moves it.
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .odata import ODataError


class TooManyRequests(ODataError):
    """429 as BC answers it; `retry_after` None means no Retry-After header (BC often sends none)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(429, "Application_TooManyRequests", message)
        self.retry_after = retry_after


@dataclass
class RateLimits:
    """Per credential (app registration or signed-in user): a true sliding window over
    `window_seconds` and at most `concurrent` requests in process, `queued` more waiting."""

    clock: Callable[[], float]
    per_window: int = 6000
    window_seconds: float = 300.0
    concurrent: int = 5
    queued: int = 95
    retry_after: float | None = None  # seconds for a Retry-After header, or None for none
    enabled: bool = True
    rejected: int = 0
    _seen: dict[str, deque[float]] = field(default_factory=dict)
    _busy: dict[str, int] = field(default_factory=dict)
    _waiting: dict[str, int] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def configure(self, **values: float | int | bool | None) -> None:
        with self._cond:
            for key, value in values.items():
                if key not in ("per_window", "window_seconds", "concurrent", "queued", "retry_after", "enabled"):
                    raise ValueError(f"unknown limit {key!r}")
                setattr(self, key, value)
            self._cond.notify_all()

    def reset(self) -> None:
        with self._cond:
            self._seen.clear()
            self.rejected = 0

    def _refuse(self, message: str) -> TooManyRequests:
        self.rejected += 1
        return TooManyRequests(message, self.retry_after)

    @contextmanager
    def admit(self, credential: str) -> Iterator[None]:
        """Count the request in the credential's window, then hold a processing slot for it
        (waiting in the queue if all are busy); 429 when the window or the queue is full."""
        if not self.enabled:
            yield
            return
        with self._cond:
            now = self.clock()
            seen = self._seen.setdefault(credential, deque())
            while seen and seen[0] <= now - self.window_seconds:
                seen.popleft()
            if len(seen) >= self.per_window:
                raise self._refuse(f"Too many requests reached. Actual ({len(seen) + 1}). Maximum ({self.per_window}).")
            seen.append(now)
            if self._busy.get(credential, 0) >= self.concurrent:
                if self._waiting.get(credential, 0) >= self.queued:
                    raise self._refuse("Too many requests reached: the request queue is full. "
                                       f"Maximum ({self.concurrent} running, {self.queued} queued).")
                self._waiting[credential] = self._waiting.get(credential, 0) + 1
                try:
                    while self._busy.get(credential, 0) >= self.concurrent:
                        self._cond.wait()
                finally:
                    self._waiting[credential] -= 1
            self._busy[credential] = self._busy.get(credential, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._busy[credential] -= 1
                self._cond.notify_all()

    def in_flight(self, credential: str) -> int:
        with self._cond:
            return self._busy.get(credential, 0)


@dataclass
class SlowPages:
    """List requests asking for more than `threshold` rows per page take `seconds` (or until
    `release()`), then answer normally (status None), 408 (BC's operation limit) or 504 (the
    gateway's). Requests at or under the threshold are answered at once."""

    threshold: int | None = None  # None: off
    seconds: float = 0.0
    status: int | None = None
    path_contains: str | None = None
    slowed: int = 0
    _release: threading.Event = field(default_factory=threading.Event)

    def configure(self, threshold: int | None, seconds: float, status: int | None = None,
                  path_contains: str | None = None) -> None:
        if status not in (None, 408, 504):
            raise ValueError("status must be None (slow answer), 408 or 504")
        self.threshold, self.seconds, self.status, self.path_contains = threshold, seconds, status, path_contains
        self._release.clear()

    def off(self) -> None:
        self.threshold = None
        self._release.set()

    def release(self) -> None:
        """Let every held request go on now (tests that do not want to wait for `seconds`)."""
        self._release.set()

    def hold(self, page_size: int, path: str) -> int | None:
        """Called for a list request: waits if the page is too heavy; returns the status to
        answer instead of the page (408/504) or None."""
        if self.threshold is None or page_size <= self.threshold:
            return None
        if self.path_contains and self.path_contains not in path:
            return None
        self.slowed += 1
        self._release.wait(self.seconds)
        return self.status
