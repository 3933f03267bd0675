"""A platform record as the Table Storage entity that holds it (the record's and its lines')."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.keys import child_row_key, record_partition
from shared.mapping import PlatformRecord


@dataclass(frozen=True)
class Rows:
    integration_id: str

    def partition_of(self, row_key: str) -> str:
        return record_partition(self.integration_id, row_key)

    def record(self, record: PlatformRecord, status: str, now: str) -> dict[str, Any]:
        entity = {"PartitionKey": self.partition_of(record.row_key), "RowKey": record.row_key, **record.properties}
        entity.update(syncStatus=status, lastSyncedAt=now, contentHash=record.content_hash)
        if record.source_hash:
            entity["sourceHash"] = record.source_hash
        if status == "conflict":
            entity["conflictAt"] = now
        return entity

    def line(self, parent: PlatformRecord, child: PlatformRecord, now: str) -> dict[str, Any]:
        entity = {"PartitionKey": self.partition_of(parent.row_key), "RowKey": child_row_key(parent.row_key, child.row_key), **child.properties}
        entity.update(syncStatus="synced", lastSyncedAt=now, contentHash=child.content_hash)
        return entity


def storage_message(error: Exception) -> str:
    code = getattr(error, "error_code", None) or type(error).__name__
    return f"Table Storage refused the record ({code})"
