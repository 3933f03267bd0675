"""Storage-backed rate limits: every instance of the app counts against the same window.

One entity per (scope, subject): the start of its current hour-long window and the count in it,
updated under its ETag, so concurrent callers on several instances can never both take the last
slot. A fixed window is coarse but cheap (one entity, one read and one write per call) and is
exact about the bound: at most `limit` calls start in any window."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.clock import parse_iso, to_iso
from shared.errors import RateLimited
from shared.storage.tables import TableStore

if TYPE_CHECKING:
    from shared.app import App

TABLE = "RateLimits"
WINDOW = timedelta(hours=1)


class RateLimiter:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    def take(self, scope: str, subject: str, *, limit: int, now: datetime, what: str) -> None:
        """Count one call, or raise RateLimited (429) with the seconds until the window ends."""
        client = self._store.table(TABLE)
        pk, rk = scope, hashlib.sha256(subject.encode("utf-8")).hexdigest()  # any caller id is a valid key
        for _ in range(20):
            try:
                entity = client.get_entity(pk, rk)
            except ResourceNotFoundError:
                try:
                    client.create_entity({"PartitionKey": pk, "RowKey": rk, "windowStart": to_iso(now), "count": 1})
                    return
                except ResourceExistsError:
                    continue
            start = parse_iso(str(entity["windowStart"]))
            count = int(entity["count"])
            if now >= start + WINDOW or now < start - WINDOW:  # a new window (or a clock far behind)
                start, count = now, 0
            if count >= limit:
                wait = (start + WINDOW - now).total_seconds()
                raise RateLimited(f"Too many {what}: at most {limit} per hour; try again in {int(wait) + 1} s", retry_after=int(wait) + 1)
            entity["windowStart"], entity["count"] = to_iso(start), count + 1
            try:
                client.update_entity(entity, mode="replace", etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
                return
            except ResourceModifiedError:
                continue
        raise RateLimited(f"Too many {what} at once; try again shortly", retry_after=1)


def check_manual_sync(app: "App", integration_id: str) -> None:
    """MANUAL_SYNCS_PER_HOUR per integration (the timer's syncs never count)."""
    RateLimiter(app.store).take(
        "manualSync", integration_id, limit=app.settings.manual_syncs_per_hour, now=app.clock.now(), what="manual syncs of this integration"
    )


def check_discovery(app: "App", user_id: str) -> None:
    """DISCOVERIES_PER_HOUR per caller: discovery tries credentials against Entra ID for anyone."""
    RateLimiter(app.store).take(
        "discovery", user_id, limit=app.settings.discoveries_per_hour, now=app.clock.now(), what="company discoveries"
    )
