"""The watermark and mode rules of a pass, as one small object and pure functions (singer's
state helpers, dlt's incremental window). This is the only module that branches on the mode.

    full       reads everything; resumes any interrupted pass; moves the watermark
    delta      reads `lastModifiedDateTime gt (watermark - lookback)`; resumes a pass whose
               lower bound is at or below its own; moves the watermark only when it read
               everything after the stored one
    since      reads `lastModifiedDateTime ge modifiedSince` under its own state key
               (`<type>.since`), resumes only its own run, never touches the watermark
    reconcile  reads ids only under `<type>.reconcile`, resumes only its own run

A watermark moves to the newest stamp written, capped at the pass's start and just below the
oldest record that failed to store, and never backwards (`advance`)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.clock import parse_iso, to_iso
from shared.storage.state import Checkpoint

FULL, DELTA, SINCE, RECONCILE = "full", "delta", "since", "reconcile"
SINCE_SUFFIX = ".since"  # state key of a modifiedSince pass's checkpoint (never its watermark)
RECONCILE_SUFFIX = ".reconcile"
STOCK_SUFFIX = ".stock"


@dataclass(frozen=True)
class Window:
    """What one pass of one mode reads and what it may do to the saved state."""

    mode: str  # full | delta | since | reconcile
    modified_since: datetime | None = None
    lookback: timedelta = timedelta(minutes=10)

    def state_key(self, type_key: str) -> str:
        """A modifiedSince pass keeps its checkpoint apart: it must never touch the watermark."""
        if self.mode == SINCE:
            return type_key + SINCE_SUFFIX
        if self.mode == RECONCILE:
            return type_key + RECONCILE_SUFFIX
        return type_key

    def lower_bound(self, watermark: str | None) -> datetime | None:
        """The pass's $filter lower bound (None = everything)."""
        if self.mode == SINCE:
            return self.modified_since
        if self.mode == DELTA and watermark:
            return parse_iso(watermark) - self.lookback
        return None

    def filter(self, lower_bound: str | None) -> str | None:
        if not lower_bound or self.mode == RECONCILE:
            return None
        op = "ge" if self.mode == SINCE else "gt"
        return f"lastModifiedDateTime {op} {lower_bound}"

    def resumable(self, checkpoint: Checkpoint | None, lower: datetime | None, run_id: str) -> Checkpoint | None:
        """Continue an interrupted pass when it covers what this run asks for (a modifiedSince
        pass or a reconcile only continues its own run: another run may ask for another date)."""
        if checkpoint is None:
            return None
        if self.mode in (SINCE, RECONCILE):
            return checkpoint if checkpoint.run_id == run_id else None
        if checkpoint.lower_bound is None or (lower is not None and parse_iso(checkpoint.lower_bound) <= lower):
            return checkpoint
        return None

    def may_advance(self, watermark: str | None, lower: datetime | None) -> bool:
        """Only a pass that read everything after the stored watermark may move it."""
        if self.mode in (SINCE, RECONCILE):
            return False
        if lower is None:
            return True
        return watermark is not None and lower <= parse_iso(watermark)

    def kept_watermark(self, watermark: str | None) -> str | None:
        """The watermark saved beside a checkpoint (a modifiedSince state keeps none)."""
        return None if self.mode == SINCE else watermark

    @property
    def moves_marks(self) -> bool:
        """Whether the pass may move marks kept beside the watermark (the stock mark)."""
        return self.mode in (FULL, DELTA)

    def since_mark(self, mark: str | None) -> str | None:
        """The lower bound of a feed read since `mark`, with the look-back window."""
        return to_iso(parse_iso(mark) - self.lookback) if mark else None


def advance(previous: str | None, max_seen: str | None, started_at: str, failed_floor: str | None = None) -> str | None:
    """New watermark: the newest timestamp written, capped at the pass's start and just below
    the oldest record that failed to store (so the next delta reads it again), never backwards."""
    if max_seen is None:
        return previous
    candidate = min(max_seen, started_at)
    if failed_floor is not None:
        candidate = min(candidate, to_iso(parse_iso(failed_floor) - timedelta(milliseconds=1)))
    return candidate if previous is None or candidate > previous else previous


def newest(current: str | None, stamp: str | None) -> str | None:
    return stamp if stamp and (current is None or stamp > current) else current


def oldest(current: str | None, stamp: str | None) -> str | None:
    return stamp if stamp and (current is None or stamp < current) else current


def stamp(value: Any) -> str | None:
    """BC's lastModifiedDateTime as our ISO text, or None when absent or unreadable."""
    try:
        return to_iso(parse_iso(str(value))) if value else None
    except ValueError:
        return None
