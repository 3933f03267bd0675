"""The read side of the platform records (design.md §13): pages over an integration's
partitions, single records, sales orders with their lines, and the view callers get (storage
internals left out)."""
from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import EntityProperty

from shared.clock import to_iso
from shared.entities import EntityType, lineages_into
from shared.errors import RecordError
from shared.keys import children_range, current_row_key, record_partition, record_partitions, record_row_key
from shared.storage.changes import RECORDS_END
from shared.storage.tables import TableStore
from shared.sync.lineage import links_of

#: Bookkeeping of the store, never shown (syncError stays: it explains syncStatus "error").
INTERNAL = frozenset({"PartitionKey", "RowKey", "Timestamp", "contentHash", "sourceHash", "changeKey", "lineIds"})


def view(entity: dict[str, Any]) -> dict[str, Any]:
    """A stored entity as callers see it: JSON values, no keys, hashes, ETags or odata metadata."""
    return {name: _json_value(value) for name, value in entity.items() if name not in INTERNAL and not name.startswith("odata.")}


def _json_value(value: Any) -> Any:
    if isinstance(value, EntityProperty):
        value = value.value
    if isinstance(value, datetime):
        return to_iso(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


@dataclass(frozen=True)
class StoredRecord:
    view: dict[str, Any]
    change_key: str | None  # the change row that last wrote it (shared/storage/changes.py)


@dataclass(frozen=True)
class ListPosition:
    """Where a listing stands: the partition (by index) and Azure's continuation inside it."""

    partition: int = 0
    token: dict[str, Any] | None = None


class PlatformRecords:
    """One integration's stored records of one data type."""

    def __init__(self, store: TableStore, integration_id: str, entity: EntityType) -> None:
        self._store = store
        self._integration_id = integration_id
        self.entity = entity
        self.partitions = record_partitions(integration_id)

    def page(self, top: int, position: ListPosition) -> tuple[list[dict[str, Any]], ListPosition | None]:
        """Up to `top` records walking the partitions in order, and where the next page starts."""
        client = self._store.table(self.entity.table)
        rows: list[dict[str, Any]] = []
        index, token = position.partition, position.token
        while index < len(self.partitions) and len(rows) < top:
            pages = client.query_entities(
                "PartitionKey eq @pk and RowKey lt @end",
                parameters={"pk": self.partitions[index], "end": RECORDS_END},
                results_per_page=top - len(rows),
            ).by_page(continuation_token=token)
            rows.extend(next(pages, []))
            token = pages.continuation_token
            if not token:
                index, token = index + 1, None
        following = ListPosition(index, token) if index < len(self.partitions) else None
        return self.with_lines(rows), following

    def get(self, row_key: str) -> StoredRecord | None:
        return self.fetch([row_key]).get(row_key)

    def fetch(self, row_keys: list[str]) -> dict[str, StoredRecord]:
        """Point reads in parallel (records of one change batch), views with lines; missing
        keys are simply absent."""
        client = self._store.table(self.entity.table)

        def read(key: str) -> dict[str, Any] | None:
            try:
                return client.get_entity(record_partition(self._integration_id, key), key)
            except ResourceNotFoundError:
                return None

        keys = list(dict.fromkeys(row_keys))
        rows = {key: row for key, row in zip(keys, self._store.map(read, keys)) if row is not None}
        # A key of the legacy layout (a change row written before shared/sync/rekey.py moved
        # the record) that is gone is read under the record's current key, answered as asked.
        moved = {key: current for key in keys if key not in rows and (current := current_row_key(key)) not in (None, key)}
        for key, row in zip(moved, self._store.map(read, list(moved.values()))):
            if row is not None:
                rows[key] = row
        views = self.with_lines(list(rows.values()))
        return {key: StoredRecord(view_row, row.get("changeKey")) for (key, row), view_row in zip(rows.items(), views)}

    def _with_documents(self, rows: list[dict[str, Any]], views: list[dict[str, Any]]) -> None:
        """A document others are made from lists them (a sales order's `invoiceExternalIds`,
        from the lineage index: one range query per record, in parallel), posted or not."""
        if not rows or not lineages_into(self.entity.key):
            return
        found = self._store.map(lambda row: _documents_of(self._store, self._integration_id, self.entity, row), rows)
        for record, documents in zip(views, found):
            record.update(documents)

    def with_lines(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Views of `rows`; a sales order carries its `lines` (one range query per order, in
        parallel), ordered by their sequence."""
        views = [view(row) for row in rows]
        self._with_documents(rows, views)
        declared = self.entity.lines
        if declared is None or not rows:
            return views
        lines_table = self._store.table(declared.type.table)

        def lines(row: dict[str, Any]) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            for parent_key in _parent_keys(row):  # two only while an order moves to its current key
                low, high = children_range(parent_key)
                found.extend(lines_table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                    parameters={"pk": row["PartitionKey"], "low": low, "high": high},
                ))
            ordered = sorted(found, key=lambda line: (_sequence(line), str(line["RowKey"])))
            return [view(line) for line in ordered]

        for record, record_lines in zip(views, self._store.map(lines, rows)):
            record[declared.name] = record_lines
        return views


def _documents_of(store: TableStore, integration_id: str, entity: EntityType, row: dict[str, Any]) -> dict[str, list[str]]:
    links = links_of(store, integration_id, entity.key, str(row["RowKey"]))
    return {
        lineage.backlink: sorted({str(link["documentExternalId"]) for link in links if link.get("documentType") == document.key})
        for document, lineage in lineages_into(entity.key)
    }


def _parent_keys(row: dict[str, Any]) -> list[str]:
    """The keys an order's lines may sit under: its own, and its current key when the order
    itself still has a legacy key (its lines move first, shared/sync/rekey.py)."""
    key = str(row["RowKey"])
    external_id = row.get("externalId")
    try:
        current = record_row_key(external_id) if isinstance(external_id, str) else key
    except RecordError:
        current = key
    return [key] if current == key else [key, current]


def _sequence(line: dict[str, Any]) -> int:
    value = line.get("sequence")
    if isinstance(value, EntityProperty):
        value = value.value
    return value if isinstance(value, int) else 0
