"""Behaviour `Lineage`: documents made from other documents (a sales invoice posted from a sales
order) and the small index that links them (design.md §11, issue 17).

When a document naming its source (`orderExternalId`) is stored, one row per link is written to
`DocumentLinks` in the source's partition:

    PartitionKey  the source's record partition (`<integrationId>|<bucket>`)
    RowKey        `<sourceType>|<source RowKey>|<documentType>|<document RowKey>`
    properties    sourceExternalId, documentType, documentExternalId, documentNumber

so "which documents were made from this order" is one range query, never a table scan. A
source flagged deletedInBC before its document arrived (reconcile or a `deleted` notification
came first) is corrected here: its `deletedReason` becomes "posted" and its backlink lists the
documents. The flag side (`shared/sync/flags.py`) reads the same index."""
from __future__ import annotations

import logging
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.entities import ENTITY_TYPES, EntityType, Lineage
from shared.errors import RecordError
from shared.keys import record_partition, record_row_key
from shared.mapping import PlatformRecord
from shared.storage.changes import tracked
from shared.storage.records import RecordWriter
from shared.storage.tables import TableStore
from shared.sync.behaviour import Behaviour, PassContext
from shared.sync.lines import flag_lines

log = logging.getLogger(__name__)

LINKS_TABLE = "DocumentLinks"
POSTED, DELETED = "posted", "deleted"


def _prefix(source_type: str, source_row: str) -> str:
    return f"{source_type}|{source_row}|"


def links_of(store: TableStore, integration_id: str, source_type: str, source_row: str) -> list[dict[str, Any]]:
    """The documents made from one source document (one range query in its partition)."""
    low = _prefix(source_type, source_row)
    high = low[:-1] + "}"  # "}" sorts right after "|"; encoded keys never contain either
    return list(store.query(
        LINKS_TABLE,
        "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
        parameters={"pk": record_partition(integration_id, source_row), "low": low, "high": high},
    ))


def backlink_value(links: list[dict[str, Any]]) -> str:
    """The documents of a source as stored on it: their externalIds, comma-separated, sorted."""
    return ",".join(sorted({str(link["documentExternalId"]) for link in links}))


class DocumentLineage(Behaviour):
    def __init__(self, declared: Lineage, ctx: PassContext) -> None:
        super().__init__(ctx)
        self.declared = declared
        self.source: EntityType = ENTITY_TYPES[declared.source]

    def after_parents(self, written: list[PlatformRecord], now: str) -> None:
        rows: list[dict[str, Any]] = []
        for record in written:
            source_id = record.properties.get(self.declared.field)
            if not isinstance(source_id, str) or not source_id:
                continue  # made without an order
            try:
                source_row = record_row_key(source_id)
            except RecordError:
                continue
            rows.append({
                "PartitionKey": record_partition(self.ctx.integration_id, source_row),
                "RowKey": _prefix(self.source.key, source_row) + f"{self.ctx.entity.key}|{record.row_key}",
                "sourceExternalId": source_id,
                "documentType": self.ctx.entity.key,
                "documentExternalId": record.external_id,
                "documentNumber": record.properties.get("number"),
            })
        if not rows:
            return
        writer = RecordWriter(self.ctx.store, LINKS_TABLE)
        for row in rows:
            writer.upsert(row)
        for failure in writer.flush():
            # The document is stored; only the posted/deleted reason of its source may be wrong
            # until the document is written again.
            log.warning("could not index the lineage of %s (%s)", failure.entity.get("documentExternalId"), type(failure.error).__name__)
        sources = sorted({str(row["RowKey"]).split("|")[1] for row in rows})
        for source_row, state in zip(sources, self.ctx.store.map(self._flag_state, sources)):
            if state is not None:  # rare: the source left BC before its document was synced
                self._correct(source_row, state)

    def _flag_state(self, source_row: str) -> dict[str, Any] | None:
        """The source's flag, when it is flagged (one point read)."""
        partition = record_partition(self.ctx.integration_id, source_row)
        try:
            row = self.ctx.store.table(self.source.table).get_entity(partition, source_row, select=["deletedInBC", "deletedReason", self.declared.backlink])
        except ResourceNotFoundError:
            return None
        return dict(row) if row.get("deletedInBC") else None

    def _correct(self, source_row: str, state: dict[str, Any]) -> None:
        """A source flagged "deleted" was in fact posted: say so, on it and on its lines."""
        partition = record_partition(self.ctx.integration_id, source_row)
        backlink = backlink_value(links_of(self.ctx.store, self.ctx.integration_id, self.source.key, source_row))
        if state.get("deletedReason") == POSTED and state.get(self.declared.backlink) == backlink:
            return  # already said (the document was written again)
        change = {"PartitionKey": partition, "RowKey": source_row, "deletedReason": POSTED, self.declared.backlink: backlink}
        if tracked(self.ctx.store, self.ctx.clock).write(self.source.table, [("update", change)]):
            return  # refused (or gone meanwhile): the next document of this source corrects it
        flag_lines(self.ctx.store, self.ctx.integration_id, self.source, {source_row: {"deletedInBC": True, "deletedReason": POSTED}})
