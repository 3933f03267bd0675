"""BC webhook subscriptions (design.md §10), one row per integration and data type, plus two
small tables kept in step with it:

- `BCSubscriptionIds` (PartitionKey = BC's subscriptionId): a notification names only the
  subscription, so finding its integration is one point read;
- `BCSubscriptionDue` (RowKey = `{dueAt}|{integration}|{type}`): when each row next needs the
  timer (renewal 24 h before expiry, or a retry of a failed one), so renewal reads only what is
  due: the pattern of the schedule index (shared/storage/schedule.py).

The clientState is never stored: only its SHA-256, compared in constant time."""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from azure.core.exceptions import ResourceNotFoundError

from shared.keys import encode_key
from shared.storage.tables import TableStore

TABLE = "BCSubscriptions"
IDS_TABLE = "BCSubscriptionIds"
DUE_TABLE = "BCSubscriptionDue"
DUE_PARTITION = "due"
ACTIVE, FAILED = "active", "failed"


def hash_client_state(client_state: str) -> str:
    return hashlib.sha256(client_state.encode("utf-8")).hexdigest()


def client_state_matches(given: Any, stored_hash: str | None) -> bool:
    """Constant-time comparison of hashes (the length of what was given leaks nothing)."""
    if not isinstance(given, str) or not stored_hash:
        return False
    exact = hmac.compare_digest(hash_client_state(given).encode(), stored_hash.encode())
    folded = hmac.compare_digest(hash_client_state(given.lower()).encode(), stored_hash.encode())  # BC may fold case
    return exact | folded


@dataclass
class Subscription:
    integrationId: str
    userId: str
    dataType: str
    status: str = FAILED  # active | failed
    subscriptionId: str | None = None
    etag: str | None = None  # BC's @odata.etag: If-Match of renewals and deletes
    expiresAt: str | None = None
    clientStateHash: str | None = None
    resource: str | None = None
    error: dict[str, Any] | None = None  # {code, message} when failed
    dueAt: str | None = None  # when the timer should look at it next
    updatedAt: str | None = None
    attempts: int = 0  # refusals in a row (the retry pause grows with it); 0 once BC accepts

    def to_api(self) -> dict[str, Any]:
        return {"status": self.status, "expiresAt": self.expiresAt, "error": self.error}

    def to_entity(self) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": encode_key(self.integrationId), "RowKey": self.dataType}
        for key, value in asdict(self).items():
            if key not in ("integrationId", "dataType") and value is not None:
                entity[key] = json.dumps(value) if key == "error" else value
        entity["integrationId"] = self.integrationId
        return entity

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> "Subscription":
        values = {name: entity[name] for name in cls.__dataclass_fields__ if name in entity}
        values["dataType"] = entity["RowKey"]
        if isinstance(values.get("error"), str):
            values["error"] = json.loads(values["error"])
        return cls(**values)

    @property
    def due_key(self) -> str | None:
        if not self.dueAt:
            return None
        return f"{self.dueAt}|{encode_key(self.integrationId)}|{self.dataType}"


class SubscriptionRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    def list_for(self, integration_id: str) -> list[Subscription]:
        rows = self._store.query(TABLE, "PartitionKey eq @pk", parameters={"pk": encode_key(integration_id)})
        return [Subscription.from_entity(r) for r in rows]

    def get(self, integration_id: str, data_type: str) -> Subscription | None:
        try:
            return Subscription.from_entity(self._store.table(TABLE).get_entity(encode_key(integration_id), data_type))
        except ResourceNotFoundError:
            return None

    def by_subscription_id(self, subscription_id: str) -> Subscription | None:
        """The row a notification's subscriptionId names (None when unknown or stale)."""
        if not isinstance(subscription_id, str) or not 0 < len(subscription_id) <= 200:
            return None
        try:
            pointer = self._store.table(IDS_TABLE).get_entity(encode_key(subscription_id), "s")
        except ResourceNotFoundError:
            return None
        current = self.get(pointer["integrationId"], pointer["dataType"])
        if current is None or current.subscriptionId != subscription_id:
            return None
        return current

    def save(self, sub: Subscription, previous: Subscription | None = None) -> None:
        """Write the row, then its pointer and due entry (old ones removed)."""
        self._store.table(TABLE).upsert_entity(sub.to_entity(), mode="replace")
        if sub.subscriptionId and (previous is None or previous.subscriptionId != sub.subscriptionId):
            self._store.table(IDS_TABLE).upsert_entity(
                {"PartitionKey": encode_key(sub.subscriptionId), "RowKey": "s", "integrationId": sub.integrationId, "dataType": sub.dataType}
            )
        if previous is not None and previous.subscriptionId and previous.subscriptionId != sub.subscriptionId:
            self._delete(IDS_TABLE, encode_key(previous.subscriptionId), "s")
        if previous is None or previous.due_key != sub.due_key:
            if sub.due_key:
                self._store.table(DUE_TABLE).upsert_entity(
                    {"PartitionKey": DUE_PARTITION, "RowKey": sub.due_key, "integrationId": sub.integrationId, "userId": sub.userId, "dataType": sub.dataType}
                )
            if previous is not None and previous.due_key:
                self._delete(DUE_TABLE, DUE_PARTITION, previous.due_key)

    def delete(self, sub: Subscription) -> None:
        self._delete(TABLE, encode_key(sub.integrationId), sub.dataType)
        if sub.subscriptionId:
            self._delete(IDS_TABLE, encode_key(sub.subscriptionId), "s")
        if sub.due_key:
            self._delete(DUE_TABLE, DUE_PARTITION, sub.due_key)

    def due(self, now_iso: str, *, limit: int) -> Iterator[tuple[str, str, str, str]]:
        """(due row key, user, integration, type) of rows due at `now_iso`, oldest first."""
        rows = self._store.query(
            DUE_TABLE, "PartitionKey eq @pk and RowKey lt @upper", parameters={"pk": DUE_PARTITION, "upper": f"{now_iso}}}"}, page_size=min(limit, 1000)
        )
        for count, row in enumerate(rows):
            if count >= limit:
                return
            yield row["RowKey"], row["userId"], row["integrationId"], row["dataType"]

    def drop_due(self, row_key: str) -> None:
        self._delete(DUE_TABLE, DUE_PARTITION, row_key)

    def _delete(self, table: str, partition: str, row_key: str) -> None:
        try:
            self._store.table(table).delete_entity(partition, row_key)
        except ResourceNotFoundError:
            pass
