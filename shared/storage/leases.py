"""One run per integration at a time: a lease entity guarded by ETags, with an expiry so a
crashed run never locks an integration for good."""
from __future__ import annotations

from datetime import datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.clock import Clock, parse_iso, to_iso
from shared.errors import Fatal
from shared.storage.tables import TableStore

TABLE = "SyncLeases"
PARTITION = "lease"


class LeaseLost(Fatal):
    """Another run took the lease over (ours had expired): stop writing at once."""


class Lease:
    def __init__(self, store: TableStore, integration_id: str, run_id: str, etag: str, clock: Clock, seconds: int) -> None:
        self._store = store
        self.integration_id = integration_id
        self.run_id = run_id
        self._etag = etag
        self._clock = clock
        self._seconds = seconds

    def renew(self) -> None:
        entity = _entity(self.integration_id, self.run_id, self._clock.now() + timedelta(seconds=self._seconds))
        try:
            meta = self._store.table(TABLE).update_entity(
                entity, mode="replace", etag=self._etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise LeaseLost(f"the sync lease of integration {self.integration_id} was taken over") from None
        self._etag = meta["etag"]

    def release(self) -> None:
        try:
            self._store.table(TABLE).delete_entity(
                PARTITION, self.integration_id, etag=self._etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            pass  # someone took it over after it expired: theirs now


class LeaseRepository:
    def __init__(self, store: TableStore, clock: Clock, *, seconds: int) -> None:
        self._store = store
        self._clock = clock
        self._seconds = seconds

    def acquire(self, integration_id: str, run_id: str) -> Lease | None:
        """The lease, or None while another unexpired run holds it."""
        client = self._store.table(TABLE)
        now = self._clock.now()
        entity = _entity(integration_id, run_id, now + timedelta(seconds=self._seconds))
        try:
            meta = client.create_entity(entity)
            return Lease(self._store, integration_id, run_id, meta["etag"], self._clock, self._seconds)
        except ResourceExistsError:
            pass
        try:
            current = client.get_entity(PARTITION, integration_id)
        except ResourceNotFoundError:
            return self.acquire(integration_id, run_id)
        if parse_iso(current["expiresAt"]) > now:
            return None
        try:
            meta = client.update_entity(
                entity, mode="replace", etag=current.metadata["etag"], match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None  # another run won the race for the expired lease
        return Lease(self._store, integration_id, run_id, meta["etag"], self._clock, self._seconds)

    def holder(self, integration_id: str) -> str | None:
        try:
            current = self._store.table(TABLE).get_entity(PARTITION, integration_id)
        except ResourceNotFoundError:
            return None
        return current["runId"] if parse_iso(current["expiresAt"]) > self._clock.now() else None


def _entity(integration_id: str, run_id: str, expires: datetime) -> dict[str, str]:
    return {"PartitionKey": PARTITION, "RowKey": integration_id, "runId": run_id, "expiresAt": to_iso(expires)}
