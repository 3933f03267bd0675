"""BC's request limits held across every instance (design.md §7): per BC credential at most
BC_MAX_IN_FLIGHT requests at once and BC_REQUESTS_PER_5_MINUTES in any five minutes.

Both live in Table Storage, so they hold whichever instances run:
- in flight: N slot rows (`slot-0`..): a request takes a free one by inserting it and gives it
  back by deleting it (one storage request each); a crashed holder's row expires after the
  request timeout and is then taken over under its ETag;
- rate: a true sliding window (design.md §14 "Limits": BC counts the window as it slides, not
  in fixed buckets). One row per credential (`window`) holds the reservations of the last five
  minutes as [epoch second, count] pairs, read and replaced under its ETag, so two instances
  never both take the last room. Each instance reserves a few requests at a time (fewer near the
  limit) and may use them only for ALLOWANCE_SECONDS; a reservation is stamped with the end of
  that time (rounded up to the second), so every request it covers stays counted for a full five
  minutes after it was sent. A request may go only when the stamps of the last five minutes plus
  it stay within the limit, for any five minutes, across every instance. Pairs of one second are
  merged, so the row stays small (at most 300 pairs).
Waiting uses the clock, so tests run it without real sleeps."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.clock import Clock, parse_iso, to_iso
from shared.errors import BCUnavailable
from shared.storage.tables import TableStore

log = logging.getLogger(__name__)
TABLE = "BCRequestBudget"
WINDOW_SECONDS = 300
WINDOW_ROW = "window"
RESERVE_AT_ONCE = 10
ALLOWANCE_SECONDS = 5  # a reserved request not sent within this is given up
POLL_SECONDS = 0.2
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def credential_key(tenant_id: str, client_id: str) -> str:
    """One budget per BC credential (the app registration in its tenant, or a delegated user)."""
    return hashlib.sha256(f"{tenant_id.lower()}|{client_id.lower()}".encode()).hexdigest()[:32]


class RequestBudget:
    def __init__(self, store: TableStore, clock: Clock, key: str, *, max_in_flight: int, per_5_minutes: int,
                 slot_seconds: float, max_wait_seconds: float = 300.0) -> None:
        self._store = store
        self._clock = clock
        self._key = key
        self._slots = max_in_flight
        self._limit = per_5_minutes
        self._slot_seconds = slot_seconds
        self._max_wait = max_wait_seconds
        self._holder = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._allowance = 0
        self._allowance_until = 0.0  # epoch seconds
        #: when a slot seen taken expires: until then it is read (cheap) rather than inserted
        self._held_until: dict[str, datetime] = {}

    @contextmanager
    def request(self) -> Iterator[None]:
        """Hold one slot and one unit of the rate for the duration of one BC request."""
        started = self._clock.monotonic()
        self._take_rate(started)
        slot, etag = self._take_slot(started)
        try:
            yield
        finally:
            self._give_back(slot, etag)

    # -- the rate ------------------------------------------------------------------------------
    def _now(self) -> float:
        return (self._clock.now() - _EPOCH).total_seconds()

    def _take_rate(self, started: float) -> None:
        while True:
            with self._lock:
                now = self._now()
                if self._allowance > 0 and now <= self._allowance_until:
                    self._allowance -= 1
                    return
                granted, free_at = self._reserve(now)
                if granted:
                    self._allowance, self._allowance_until = granted - 1, now + ALLOWANCE_SECONDS
                    return
            self._wait(started, "the five-minute request budget")
            # until the oldest counted reservation leaves the window
            self._clock.sleep(max(POLL_SECONDS, free_at - self._now()))

    def _reserve(self, now: float) -> tuple[int, float]:
        """Reserve up to RESERVE_AT_ONCE requests if the last five minutes have room; returns
        (how many, when room frees up if none)."""
        client = self._store.table(TABLE)
        stamp = int(math.ceil(now + ALLOWANCE_SECONDS))
        for _ in range(20):
            try:
                row = client.get_entity(self._key, WINDOW_ROW)
                entries = _entries(row.get("entries"))
            except ResourceNotFoundError:
                row, entries = None, []
            live = [(at, count) for at, count in entries if at > now - WINDOW_SECONDS]
            used = sum(count for _, count in live)
            room = self._limit - used
            if room <= 0:
                return 0, min(at for at, _ in live) + WINDOW_SECONDS
            grant = max(1, min(RESERVE_AT_ONCE, room // max(1, self._slots)))
            if live and live[-1][0] == stamp:
                live[-1] = (stamp, live[-1][1] + grant)
            else:
                live.append((stamp, grant))
                live.sort()
            entity = {"PartitionKey": self._key, "RowKey": WINDOW_ROW, "entries": json.dumps(live, separators=(",", ":"))}
            try:
                if row is None:
                    client.create_entity(entity)
                else:
                    client.update_entity(entity, mode="replace", etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified)
                return grant, now
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another instance reserved at the same moment: read again
        return 0, now + POLL_SECONDS

    # -- requests in flight --------------------------------------------------------------------
    def _take_slot(self, started: float) -> tuple[str, str]:
        client = self._store.table(TABLE)
        while True:
            order = list(range(self._slots))
            random.shuffle(order)
            for index in order:
                taken = self._try_slot(client, f"slot-{index}")
                if taken is not None:
                    return taken
            self._wait(started, "requests in flight")
            self._clock.sleep(POLL_SECONDS)

    def _try_slot(self, client, row_key: str) -> tuple[str, str] | None:  # type: ignore[no-untyped-def]
        """Insert the slot row (free slots have none); a row that is there is taken over only
        once its holder's time ran out (or it was given back by an older version, holder "")."""
        now = self._clock.now()
        mine = {"PartitionKey": self._key, "RowKey": row_key, "holder": self._holder, "expiresAt": to_iso(now + timedelta(seconds=self._slot_seconds))}
        if self._held_until.get(row_key, now) <= now:  # not known to be taken: try to insert it
            try:
                return row_key, client.create_entity(mine)["etag"]
            except ResourceExistsError:
                pass
        try:
            current = client.get_entity(self._key, row_key)
        except ResourceNotFoundError:
            self._held_until.pop(row_key, None)  # given back meanwhile
            try:
                return row_key, client.create_entity(mine)["etag"]
            except ResourceExistsError:
                return None
        expires = parse_iso(current["expiresAt"])
        if current.get("holder") and expires > now:
            self._held_until[row_key] = expires
            return None
        try:
            meta = client.update_entity(mine, mode="replace", etag=current.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return row_key, meta["etag"]

    def _give_back(self, row_key: str, etag: str) -> None:
        try:
            self._store.table(TABLE).delete_entity(self._key, row_key, etag=etag, match_condition=MatchConditions.IfNotModified)
        except Exception:  # noqa: BLE001 - it expires by itself (or another holder took it over)
            log.info("could not give back BC request slot %s; it expires by itself", row_key)

    def _wait(self, started: float, what: str) -> None:
        if self._clock.monotonic() - started > self._max_wait:
            raise BCUnavailable(f"Business Central's request limit for this credential stayed exhausted ({what}); try again later")


def _entries(raw: object) -> list[tuple[int, int]]:
    """The stored [epoch second, count] pairs; anything unreadable counts as nothing stored."""
    try:
        return [(int(at), int(count)) for at, count in json.loads(str(raw))] if raw else []
    except (ValueError, TypeError):
        return []
