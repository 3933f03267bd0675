"""Outbound webhook deliveries: the signed body as sent, and every attempt made."""
from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Iterator

from shared.clock import to_iso
from shared.storage.logs import inverted_time_key
from shared.storage.tables import TableStore

TABLE = "WebhookDeliveries"


class WebhookDeliveryRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    def create(self, *, integration_id: str, user_id: str, url: str, event: str, body: str, at: datetime) -> dict[str, Any]:
        delivery_id = f"whd-{uuid.uuid4().hex[:16]}"
        entity = {
            "PartitionKey": integration_id,
            "RowKey": f"{inverted_time_key(at)}-{delivery_id}",
            "id": delivery_id,
            "userId": user_id,
            "url": url,
            "event": event,
            "body": body,
            "status": "pending",
            "attempts": "[]",
            "nextAttemptAt": to_iso(at),
            "createdAt": to_iso(at),
        }
        self._store.table(TABLE).upsert_entity(entity)
        return entity

    def save(self, entity: dict[str, Any]) -> None:
        self._store.table(TABLE).upsert_entity(entity, mode="replace")

    def due(self, now: datetime) -> Iterator[dict[str, Any]]:
        return self._store.query(TABLE, "status eq 'pending' and nextAttemptAt le @now", parameters={"now": to_iso(now)})

    def list(self, integration_id: str, *, top: int, continuation_token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        entities, token = self._store.query_page(
            TABLE, "PartitionKey eq @pk", parameters={"pk": integration_id}, top=top, continuation_token=continuation_token
        )
        return [to_api(e) for e in entities], token


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
