"""Outbound webhook deliveries: the signed body as sent, every attempt made, and a due index.

A delivery keeps the URL and (encrypted) secret of its first attempt, so a retry goes where the
first one went, under the same secret, whatever the integration says now. Pending retries are
found through `WebhookDue` (one partition, RowKey = due time first), never by scanning the
deliveries table; an index row whose delivery moved on is dropped when met. Deliveries older
than WEBHOOK_DELIVERY_RETENTION_DAYS are pruned per integration (its partition, oldest rows)."""
from __future__ import annotations

import itertools
import json
import uuid
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.clock import to_iso
from shared.storage.logs import inverted_time_key
from shared.storage.tables import TableStore

TABLE = "WebhookDeliveries"
DUE_TABLE = "WebhookDue"
_DUE_PARTITION = "due"


def due_key(delivery: dict[str, Any]) -> str:
    """The index RowKey: due time first, so a range query returns what is due, oldest first."""
    return f"{delivery['nextAttemptAt']}|{delivery['PartitionKey']}|{delivery['RowKey']}"


class WebhookDeliveryRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    def create(self, *, integration_id: str, user_id: str, url: str, event: str, body: str, at: datetime,
               secret_enc: str = "", delivery_id: str | None = None) -> dict[str, Any]:
        delivery_id = delivery_id or f"whd-{uuid.uuid4().hex[:16]}"
        entity = {
            "PartitionKey": integration_id,
            "RowKey": f"{inverted_time_key(at)}-{delivery_id}",
            "id": delivery_id,
            "userId": user_id,
            "url": url,
            "secretEnc": secret_enc,  # the first attempt's secret: every retry signs with it
            "event": event,
            "body": body,
            "status": "pending",
            "attempts": "[]",
            "nextAttemptAt": to_iso(at),
            "createdAt": to_iso(at),
        }
        self._store.table(TABLE).upsert_entity(entity)
        # due at once: a crash before the first attempt leaves it to the timer
        self._store.table(DUE_TABLE).upsert_entity({"PartitionKey": _DUE_PARTITION, "RowKey": due_key(entity), "userId": user_id})
        return entity

    def save(self, entity: dict[str, Any], *, was_due: str | None = None) -> None:
        """Write the delivery and keep its due index row in step (`was_due`: its old index key)."""
        self._store.table(TABLE).upsert_entity(entity, mode="replace")
        key = due_key(entity) if entity.get("status") == "pending" else None
        if key and key != was_due:
            self._store.table(DUE_TABLE).upsert_entity(
                {"PartitionKey": _DUE_PARTITION, "RowKey": key, "userId": entity.get("userId", "")})
        if was_due and was_due != key:
            self.drop_due(was_due)

    def drop_due(self, key: str) -> None:
        try:
            self._store.table(DUE_TABLE).delete_entity(_DUE_PARTITION, key)
        except ResourceNotFoundError:
            pass

    def due_keys(self, now: datetime, *, limit: int) -> list[tuple[str, str, str]]:
        """Up to `limit` index rows due by `now`, oldest first: (index key, integration id, RowKey).
        One ranged query on one partition: its cost is what is due, not the table's size."""
        rows = self._store.query(
            DUE_TABLE, "PartitionKey eq @pk and RowKey le @upto",
            parameters={"pk": _DUE_PARTITION, "upto": f"{to_iso(now)}|~"}, select=["RowKey"], page_size=min(limit, 1000),
        )
        found: list[tuple[str, str, str]] = []
        for row in rows:
            parts = row["RowKey"].split("|")
            if len(parts) == 3:
                found.append((row["RowKey"], parts[1], parts[2]))
            if len(found) >= limit:
                break
        return found

    def get(self, integration_id: str, row_key: str) -> dict[str, Any] | None:
        try:
            return dict(self._store.table(TABLE).get_entity(integration_id, row_key))
        except ResourceNotFoundError:
            return None

    def pending_count(self, integration_id: str, *, at_most: int) -> int:
        """How many deliveries of this integration still wait for a retry (counted up to `at_most`)."""
        rows = self._store.query(TABLE, "PartitionKey eq @pk and status eq 'pending'", parameters={"pk": integration_id},
                                 select=["RowKey"], page_size=at_most)
        count = 0
        for _ in rows:
            count += 1
            if count >= at_most:
                break
        return count

    def prune(self, integration_id: str, cutoff: datetime, *, limit: int = 500) -> int:
        """Delete this integration's deliveries created before `cutoff` (RowKeys are newest first,
        so they are the partition's last rows); their index rows go with them."""
        rows = self._store.query(TABLE, "PartitionKey eq @pk and RowKey gt @from",
                                 parameters={"pk": integration_id, "from": inverted_time_key(cutoff)},
                                 select=["PartitionKey", "RowKey", "status", "nextAttemptAt"], page_size=min(limit, 1000))
        old = list(itertools.islice(rows, limit))
        # Index rows first: a tick cut short never leaves one pointing at a delivery that is gone.
        # Batched deletes; a row someone else removed meanwhile just fails alone (and is gone).
        self._store.write(DUE_TABLE, [("delete", {"PartitionKey": _DUE_PARTITION, "RowKey": due_key(row)}) for row in old if row.get("status") == "pending"])
        self._store.write(TABLE, [("delete", {"PartitionKey": integration_id, "RowKey": row["RowKey"]}) for row in old])
        return len(old)

    def list(self, integration_id: str, *, top: int, continuation_token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        entities, token = self._store.query_page(
            TABLE, "PartitionKey eq @pk", parameters={"pk": integration_id}, top=top, continuation_token=continuation_token
        )
        return [to_api(e) for e in entities], token

    def index_unindexed(self, *, token: str | None, top: int = 100) -> str | None:
        """One page of the one-time pass that indexes deliveries left pending by a version without
        the due index; returns the cursor of the next page (None: done)."""
        rows, token = self._store.query_page(TABLE, "status eq 'pending'", top=top, continuation_token=token)
        for row in rows:  # this version's rows carry secretEnc and are indexed when written
            if "secretEnc" not in row and row.get("nextAttemptAt"):
                self._store.table(DUE_TABLE).upsert_entity(
                    {"PartitionKey": _DUE_PARTITION, "RowKey": due_key(row), "userId": row.get("userId", "")})
        return token


def to_api(entity: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": entity["id"],
        "event": entity["event"],
        "url": entity["url"],
        "status": entity["status"],
        "attempts": json.loads(entity.get("attempts") or "[]"),
        "nextAttemptAt": entity.get("nextAttemptAt") if entity["status"] == "pending" else None,
        "createdAt": entity["createdAt"],
        "payload": json.loads(entity["body"]),
    }
