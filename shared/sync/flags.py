"""Records BC no longer has are flagged, never removed (design.md §11), with why they left:

    deletedInBC: true, deletedAt      as always
    deletedReason: "posted"           a synced document names it (a sales order that was posted
                                      as an invoice: the lineage index, shared/sync/lineage.py),
                                      and the backlink lists those documents
                                      (`invoiceExternalIds` on a sales order)
    deletedReason: "deleted"          anything else

A flagged document's lines are flagged with it (never left as live lines). Reconcile and a
`deleted` notification both flag through `flag_gone`; a reason found later (the invoice synced
after the order was flagged) is corrected by the lineage behaviour."""
from __future__ import annotations

from typing import Any

from shared.clock import Clock
from shared.entities import EntityType, lineages_into
from shared.keys import record_partition
from shared.storage.changes import tracked
from shared.storage.tables import TableStore, WriteFailure
from shared.sync.lineage import DELETED, POSTED, backlink_value, links_of
from shared.sync.lines import flag_lines


def deletion_reasons(store: TableStore, integration_id: str, entity: EntityType, row_keys: list[str]) -> dict[str, dict[str, Any]]:
    """Row key -> the reason properties to merge with the flag (one range query per record,
    only for types other documents are made from)."""
    lineages = lineages_into(entity.key)
    reasons: dict[str, dict[str, Any]] = {key: {"deletedReason": DELETED} for key in row_keys}
    if not lineages:
        return reasons

    def one(row_key: str) -> tuple[str, dict[str, Any]]:
        links = links_of(store, integration_id, entity.key, row_key)
        found: dict[str, Any] = {}
        for document, lineage in lineages:
            mine = [link for link in links if link.get("documentType") == document.key]
            if mine:
                found.update({"deletedReason": POSTED, lineage.backlink: backlink_value(mine)})
        return row_key, found or {"deletedReason": DELETED}

    # Sequential (one range query per flagged record): a reconcile flags from the store's
    # thread pool, where a nested map could wait on itself.
    reasons.update(dict(one(key) for key in row_keys))
    return reasons


def flag_gone(store: TableStore, clock: Clock, integration_id: str, entity: EntityType, row_keys: list[str], when: str,
              *, op: str = "update") -> list[WriteFailure]:
    """Flag these stored records (with their change rows) and their lines; returns the refused
    flags. `op` "update" never creates a record BC named but we never stored."""
    keys = list(dict.fromkeys(row_keys))
    if not keys:
        return []
    reasons = deletion_reasons(store, integration_id, entity, keys)
    ops = [(op, {"PartitionKey": record_partition(integration_id, key), "RowKey": key, "deletedInBC": True, "deletedAt": when, **reasons[key]})
           for key in keys]
    failures = tracked(store, clock).write(entity.table, ops)
    refused = {str(f.entity["RowKey"]) for f in failures}
    flag_lines(store, integration_id, entity, {
        key: {"deletedInBC": True, "deletedAt": when, "deletedReason": reasons[key]["deletedReason"]} for key in keys if key not in refused
    })
    return failures


def add_reasons(context: Any, flags: list[dict[str, Any]]) -> None:
    """For a pass that writes its own flag entities (reconcile's flag hook: `context` has
    entity, store, clock, integration_id): add the reason (and backlink) to each flag before it
    is written, and flag the documents' lines."""
    keys = [str(flag["RowKey"]) for flag in flags]
    reasons = deletion_reasons(context.store, context.integration_id, context.entity, keys)
    for flag in flags:
        flag.update(reasons[str(flag["RowKey"])])
    flag_lines(context.store, context.integration_id, context.entity, {
        str(flag["RowKey"]): {"deletedInBC": True, "deletedAt": flag.get("deletedAt"), "deletedReason": flag["deletedReason"]} for flag in flags
    })
