"""Behaviour `Lines`: a document's lines are read with it, written before it, and lines BC no
longer has are deleted (design.md §3). The stored lines of a changed document are one range
query, so no list of line ids is kept on it (a document with thousands of lines fits).

A document flagged deletedInBC takes its lines with it (`flag_lines`: the same range query,
the flag merged onto each line), and a document BC has again gets them back (`restore_lines`);
a sync that rewrites the document rewrites its lines whole, which clears their flags too."""
from __future__ import annotations

from typing import Any

from shared.entities import EntityType, Lines
from shared.keys import child_row_key, children_range, record_partition
from shared.mapping import PlatformRecord
from shared.storage.records import Existing, RecordWriter
from shared.storage.tables import TableStore
from shared.sync.behaviour import Behaviour, PassContext
from shared.sync.outcome import Change, Part
from shared.sync.rows import storage_message


class DocumentLines(Behaviour):
    def __init__(self, declared: Lines, ctx: PassContext) -> None:
        super().__init__(ctx)
        self.declared = declared
        self.table = declared.type.table

    def expand(self) -> str | None:
        return self.declared.type.navigation

    def before_parents(self, changes: list[Change], now: str) -> Part | None:
        if not changes:
            return None
        part = Part()
        writer = RecordWriter(self.ctx.store, self.table)
        for change in changes:
            self._stage(change.record, change.before, writer, now, part)
        by_key = {change.record.row_key: change.record for change in changes}
        for failure in writer.flush():
            parent_key = str(failure.entity["RowKey"]).split("|", 1)[0]
            record = by_key.get(parent_key)
            if record is not None and parent_key not in part.refused:
                part.refused[parent_key] = (storage_message(failure.error), {"line": failure.entity.get("externalId") or failure.entity["RowKey"]})
        return part

    def _stage(self, record: PlatformRecord, before: Existing | None, writer: RecordWriter, now: str, part: Part) -> None:
        rows = self.ctx.rows
        partition = rows.partition_of(record.row_key)
        keep = {child_row_key(record.row_key, c.row_key) for c in record.children}
        for child in record.children:
            writer.upsert(rows.line(record, child, now))
        gone: list[str] = []
        if before is not None:
            low, high = children_range(record.row_key)
            stored = self.ctx.store.query(
                self.table,
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                parameters={"pk": partition, "low": low, "high": high},
                select=["RowKey"],
            )
            gone = [row["RowKey"] for row in stored if row["RowKey"] not in keep]
        for row_key in gone:
            writer.delete(partition, row_key)
        part.counters.lines_written += len(record.children)
        part.counters.lines_deleted += len(gone)


FLAGS = ("deletedInBC", "deletedAt", "deletedReason")


def _stored_lines(store: TableStore, integration_id: str, table: str, row_key: str, select: list[str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    partition = record_partition(integration_id, row_key)
    low, high = children_range(row_key)
    rows = store.query(table, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                       parameters={"pk": partition, "low": low, "high": high}, select=select)
    return partition, list(rows)


def flag_lines(store: TableStore, integration_id: str, entity: EntityType, flags: dict[str, dict[str, Any]]) -> int:
    """Merge each document's flags (row key -> properties) onto its stored lines; returns how
    many lines were flagged. Types without lines: nothing to do."""
    declared = entity.lines
    if declared is None or not flags:
        return 0

    def one(item: tuple[str, dict[str, Any]]) -> int:
        row_key, properties = item
        partition, rows = _stored_lines(store, integration_id, declared.type.table, row_key, ["RowKey"])
        writer = RecordWriter(store, declared.type.table)
        for row in rows:
            writer.merge({"PartitionKey": partition, "RowKey": row["RowKey"], **properties})
        return len(rows) - len(writer.flush())

    # Sequential: callers may already run on the store's thread pool (a reconcile sweep), and
    # flagged documents are few.
    return sum(one(item) for item in flags.items())


def restore_lines(store: TableStore, integration_id: str, entity: EntityType, row_keys: list[str]) -> int:
    """Remove the flags from the lines of documents BC has again (each line replaced whole)."""
    declared = entity.lines
    if declared is None or not row_keys:
        return 0

    def one(row_key: str) -> int:
        _, rows = _stored_lines(store, integration_id, declared.type.table, row_key)
        writer = RecordWriter(store, declared.type.table)
        flagged = [row for row in rows if any(name in row for name in FLAGS)]
        for row in flagged:
            writer.upsert({k: v for k, v in row.items() if k not in FLAGS and not k.startswith("odata")})
        return len(flagged) - len(writer.flush())

    return sum(one(row_key) for row_key in row_keys)  # sequential, as flag_lines
