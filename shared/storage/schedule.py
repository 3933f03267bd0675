"""The index of next-run times the timer reads: one row per scheduled integration, RowKey =
`{nextSyncAt}|{user}|{id}`, so "what is due" is one range query whose cost follows the number of
due integrations, not the number that exist. The integrations repository keeps it in step with
every write; the dispatcher drops rows that no longer match their integration."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

from shared.keys import encode_key
from shared.storage.tables import TableStore


class Schedulable(Protocol):
    """What the index needs of an integration (the integrations repository writes the index,
    so this module names the shape instead of importing it: no import circle)."""

    @property
    def id(self) -> str: ...
    @property
    def userId(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def companyId(self) -> str | None: ...
    @property
    def nextSyncAt(self) -> str | None: ...
    @property
    def createdAt(self) -> str | None: ...

TABLE = "SyncSchedule"
PARTITION = "due"
#: Statuses that wait for a person (new credentials, a sign-in) instead of the clock.
UNSCHEDULED = frozenset({"disconnected", "auth_expired", "authorization_required"})


@dataclass(frozen=True)
class DueEntry:
    row_key: str
    user_id: str
    integration_id: str
    due_at: str


def schedule_key(integration: Schedulable) -> str | None:
    """The row this integration should have in the index, or None when it is not scheduled."""
    if integration.status in UNSCHEDULED or not integration.companyId:
        return None  # waits for a person (credentials, a sign-in, a company to be chosen)
    due = integration.nextSyncAt or integration.createdAt or "0000"
    return f"{due}|{encode_key(integration.userId)}|{encode_key(integration.id)}"


class ScheduleIndex:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    def move(self, old_key: str | None, integration: Schedulable) -> None:
        """Replace the integration's row (if its key changed)."""
        new_key = schedule_key(integration)
        if old_key == new_key:
            return
        ops: list[tuple[str, dict[str, str]]] = []
        if new_key:
            ops.append(("upsert", {"PartitionKey": PARTITION, "RowKey": new_key, "userId": integration.userId, "integrationId": integration.id}))
        if old_key:
            ops.append(("delete", {"PartitionKey": PARTITION, "RowKey": old_key}))
        failures = self._store.write(TABLE, ops)
        for failure in failures:
            if failure.entity.get("userId"):  # the new row is the one that matters
                raise failure.error

    def remove(self, row_key: str) -> None:
        self._store.write(TABLE, [("delete", {"PartitionKey": PARTITION, "RowKey": row_key})])

    def due(self, now_iso: str, *, limit: int) -> Iterator[DueEntry]:
        """Rows due at `now_iso`, oldest first (the longest-waiting integration goes first)."""
        rows = self._store.query(
            TABLE, "PartitionKey eq @pk and RowKey lt @upper", parameters={"pk": PARTITION, "upper": f"{now_iso}}}"}, page_size=min(limit, 1000)
        )
        for count, row in enumerate(rows):
            if count >= limit:
                return
            yield DueEntry(row["RowKey"], row["userId"], row["integrationId"], row["RowKey"].split("|", 1)[0])
