"""Records a notification named, waiting to be read again by id (design.md §10, §14 "Lines").

BC notifies a document header when only a line changed, and the header's lastModifiedDateTime
need not move, so a timestamp delta alone can miss the change. Each `created`/`updated` item
that names one record leaves a row here (table `BCNotifiedRecords`, PartitionKey = the
integration, RowKey = `{type}|{id}`); the next run of that type reads each one by id
(shared/realtime/byid.py) and removes the row under the ETag it read, so a notification that
arrives meanwhile rewrites the row and is never lost. Rows are small and bounded by what BC
sends (over 1,000 changes it sends one `collection` instead of records)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.clock import to_iso
from shared.keys import encode_key
from shared.storage.tables import TableStore

TABLE = "BCNotifiedRecords"
MAX_IDS_PER_REQUEST = 1000  # per type and notification: BC sends a collection above ~1,000
MAX_ATTEMPTS = 3  # a record that keeps failing is left to the delta and reconcile after this


@dataclass(frozen=True)
class Pending:
    record_id: str
    etag: str
    attempts: int


class PendingReads:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    def add(self, integration_id: str, data_type: str, record_ids: Iterable[str], at: datetime) -> int:
        """Note these ids (upserts: a repeated id is one row, its attempts reset). Raises when
        storage refuses, so the notification is answered 503 and BC sends it again."""
        ids = list(dict.fromkeys(record_ids))[:MAX_IDS_PER_REQUEST]
        ops = [("upsert", {"PartitionKey": encode_key(integration_id), "RowKey": f"{data_type}|{rid}", "notifiedAt": to_iso(at), "attempts": 0})
               for rid in ids]
        failures = self._store.write(TABLE, ops)
        if failures:
            raise failures[0].error
        return len(ids)

    def batch(self, integration_id: str, data_type: str, *, after: str | None, limit: int) -> list[Pending]:
        """Up to `limit` waiting ids of a type, in key order after `after` (a pass walks them once)."""
        low = f"{data_type}|{after}" if after else f"{data_type}|"
        rows = self._store.query(
            TABLE, "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
            parameters={"pk": encode_key(integration_id), "low": low, "high": f"{data_type}}}"}, page_size=limit,
        )
        found: list[Pending] = []
        for row in rows:
            found.append(Pending(row["RowKey"].split("|", 1)[1], row.metadata["etag"], int(row.get("attempts") or 0)))
            if len(found) >= limit:
                break
        return found

    def done(self, integration_id: str, data_type: str, item: Pending) -> None:
        """Remove the row if no notification rewrote it since it was read."""
        try:
            self._store.table(TABLE).delete_entity(encode_key(integration_id), f"{data_type}|{item.record_id}",
                                                   etag=item.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass  # notified again meanwhile: the next run reads it again

    def failed(self, integration_id: str, data_type: str, item: Pending) -> None:
        """Count a failed read or write; after MAX_ATTEMPTS the row goes (polling and reconcile
        remain the net) so one bad record never makes every run retry it forever."""
        if item.attempts + 1 >= MAX_ATTEMPTS:
            self.done(integration_id, data_type, item)
            return
        try:
            self._store.table(TABLE).update_entity(
                {"PartitionKey": encode_key(integration_id), "RowKey": f"{data_type}|{item.record_id}", "attempts": item.attempts + 1},
                mode="merge", etag=item.etag, match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            pass

    def clear(self, integration_id: str) -> None:
        """An integration deleted: its waiting ids go with it."""
        pk = encode_key(integration_id)
        rows = self._store.query(TABLE, "PartitionKey eq @pk", parameters={"pk": pk}, select=["PartitionKey", "RowKey"])
        self._store.write(TABLE, [("delete", {"PartitionKey": pk, "RowKey": r["RowKey"]}) for r in rows])
