"""Behaviour `Lines`: a document's lines are read with it, written before it, and lines BC no
longer has are deleted (design.md §3). The stored lines of a changed document are one range
query, so no list of line ids is kept on it (a document with thousands of lines fits)."""
from __future__ import annotations

from shared.entities import Lines
from shared.keys import child_row_key, children_range
from shared.mapping import PlatformRecord
from shared.storage.records import Existing, RecordWriter
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
