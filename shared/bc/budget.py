"""BC's request limits held across every instance (design.md §7): per BC credential at most
BC_MAX_IN_FLIGHT requests at once and BC_REQUESTS_PER_5_MINUTES in any five minutes.

Both live in Table Storage, so they hold whichever instances run:
- in flight: N slot rows (`slot-0`..), each taken under its ETag for one request and given back
  after it (a crashed holder's slot expires after the request timeout);
- rate: one counter row per minute (`w-<minute>`); a request may go when the current minute and
  the four before it hold fewer than the limit. Each instance reserves a few requests at a time
  (fewer near the limit), so the counter costs one write per reservation, not per request.
Waiting uses the clock, so tests run it without real sleeps."""
from __future__ import annotations

import hashlib
import logging
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
WINDOW_MINUTES = 5
RESERVE_AT_ONCE = 10
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
        self._allowance_minute = -1

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
    def _minute(self) -> int:
        return int((self._clock.now() - _EPOCH) // timedelta(minutes=1))

    def _take_rate(self, started: float) -> None:
        while True:
            with self._lock:
                minute = self._minute()
                if self._allowance > 0 and self._allowance_minute == minute:
                    self._allowance -= 1
                    return
                granted = self._reserve(minute)
                if granted:
                    self._allowance, self._allowance_minute = granted - 1, minute
                    return
            self._wait(started, "the five-minute request budget")
            # wait for the next minute, when the oldest counted minute leaves the window
            now = self._clock.now()
            next_minute = _EPOCH + timedelta(minutes=self._minute() + 1)
            self._clock.sleep(max(POLL_SECONDS, (next_minute - now).total_seconds()))

    def _reserve(self, minute: int) -> int:
        """Add up to RESERVE_AT_ONCE to this minute's counter if the window has room."""
        client = self._store.table(TABLE)
        for _ in range(20):
            rows = client.query_entities(
                "PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
                parameters={"pk": self._key, "low": _window_key(minute - WINDOW_MINUTES + 1), "high": _window_key(minute)},
            )
            current = None
            used = 0
            for row in rows:
                used += int(row.get("count", 0))
                if row["RowKey"] == _window_key(minute):
                    current = row
            room = self._limit - used
            if room <= 0:
                return 0
            grant = max(1, min(RESERVE_AT_ONCE, room // max(1, self._slots)))
            try:
                if current is None:
                    client.create_entity({"PartitionKey": self._key, "RowKey": _window_key(minute), "count": grant})
                else:
                    current["count"] = int(current.get("count", 0)) + grant
                    client.update_entity(current, mode="replace", etag=current.metadata["etag"], match_condition=MatchConditions.IfNotModified)
                return grant
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another instance counted at the same moment: read again
        return 0

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
        now = self._clock.now()
        mine = {"PartitionKey": self._key, "RowKey": row_key, "holder": self._holder, "expiresAt": to_iso(now + timedelta(seconds=self._slot_seconds))}
        try:
            current = client.get_entity(self._key, row_key)
        except ResourceNotFoundError:
            try:
                return row_key, client.create_entity(mine)["etag"]
            except ResourceExistsError:
                return None
        if current.get("holder") and parse_iso(current["expiresAt"]) > now:
            return None
        try:
            meta = client.update_entity(mine, mode="replace", etag=current.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return row_key, meta["etag"]

    def _give_back(self, row_key: str, etag: str) -> None:
        try:
            self._store.table(TABLE).update_entity(
                {"PartitionKey": self._key, "RowKey": row_key, "holder": "", "expiresAt": to_iso(self._clock.now())},
                mode="replace", etag=etag, match_condition=MatchConditions.IfNotModified,
            )
        except Exception:  # noqa: BLE001 - it expires by itself
            log.info("could not give back BC request slot %s; it expires by itself", row_key)

    def _wait(self, started: float, what: str) -> None:
        if self._clock.monotonic() - started > self._max_wait:
            raise BCUnavailable(f"Business Central's request limit for this credential stayed exhausted ({what}); try again later")


def _window_key(minute: int) -> str:
    return f"w-{minute:012d}"
