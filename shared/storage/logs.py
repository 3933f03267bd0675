"""Sync logs: one entry per data type per run. RowKey starts with an inverted timestamp, so a
partition (one integration) reads newest first and `since` is a RowKey range, not a scan."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.clock import to_iso
from shared.storage.tables import TableStore

TABLE = "SyncLogs"
_INVERT_FROM = 10**17  # microseconds; keeps RowKeys fixed-width for millennia
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_METADATA_CHARS = 30_000  # Table Storage strings hold 64 KiB of UTF-16 (32K characters)


def inverted_time_key(moment: datetime) -> str:
    """Newest first: microseconds since the epoch, subtracted from a constant."""
    return f"{_INVERT_FROM - (moment - _EPOCH) // timedelta(microseconds=1):017d}"


def _fit(metadata: dict[str, Any]) -> str:
    """Serialize metadata within the string limit, dropping the tail of the error list if needed."""
    text = json.dumps(metadata, default=str)
    errors = list(metadata.get("errors") or [])
    while len(text) > MAX_METADATA_CHARS and errors:
        errors = errors[: len(errors) // 2]
        trimmed = dict(metadata, errors=errors, errorsOmitted=len(metadata["errors"]) - len(errors))
        text = json.dumps(trimmed, default=str)
    return text


class SyncLogRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    def add(
        self,
        *,
        integration_id: str,
        run_id: str,
        entity_type: str,
        status: str,
        records_affected: int,
        metadata: dict[str, Any],
        created_at: datetime,
    ) -> dict[str, Any]:
        log_id = f"log-{uuid.uuid4().hex[:16]}"
        entity = {
            "PartitionKey": integration_id,
            "RowKey": f"{inverted_time_key(created_at)}-{log_id}",
            "id": log_id,
            "integrationId": integration_id,
            "runId": run_id,
            "entityType": entity_type,
            "action": "UPSERT",
            "status": status,
            "recordsAffected": records_affected,
            "metadata": _fit(metadata),
            "createdAt": to_iso(created_at),
        }
        self._store.table(TABLE).upsert_entity(entity)
        return self.to_api(entity)

    def list(
        self,
        integration_id: str,
        *,
        entity_type: str | None,
        status: str | None,
        since: datetime | None,
        top: int,
        continuation_token: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        clauses, params = ["PartitionKey eq @pk"], {"pk": integration_id}
        if since is not None:
            # Newest first means older entries have larger RowKeys: since -> an upper bound.
            clauses.append("RowKey lt @upper")
            params["upper"] = inverted_time_key(since - timedelta(microseconds=1))
        if entity_type:
            clauses.append("entityType eq @entityType")
            params["entityType"] = entity_type
        if status:
            clauses.append("status eq @status")
            params["status"] = status
        entities, token = self._store.query_page(
            TABLE, " and ".join(clauses), parameters=params, top=top, continuation_token=continuation_token
        )
        return [self.to_api(e) for e in entities], token

    def delete_older_than(self, integration_id: str, cutoff: datetime) -> int:
        """Retention: entries created before `cutoff` go, in transactions."""
        old = self._store.query(
            TABLE,
            "PartitionKey eq @pk and RowKey gt @lower",
            parameters={"pk": integration_id, "lower": inverted_time_key(cutoff) + "."},
            select=["PartitionKey", "RowKey"],
        )
        doomed = [("delete", {"PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]}) for e in old]
        self._store.write(TABLE, doomed)
        return len(doomed)

    @staticmethod
    def to_api(entity: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": entity["id"],
            "integrationId": entity["integrationId"],
            "runId": entity.get("runId"),
            "entityType": entity["entityType"],
            "action": entity.get("action", "UPSERT"),
            "status": entity["status"],
            "recordsAffected": entity.get("recordsAffected", 0),
            "metadata": json.loads(entity.get("metadata") or "{}"),
            "createdAt": entity["createdAt"],
        }


def new_run_id() -> str:
    return f"run-{uuid.uuid4().hex[:16]}"
