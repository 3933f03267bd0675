"""Records BC deleted are flagged, never removed (design.md §10, §11): `deletedInBC: true` and
`deletedAt` merged into the stored record. The sync engine rewrites a flagged record whole when
BC returns it (see `_unchanged` in shared/sync/engine.py), which clears both again."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Iterable

from shared.clock import to_iso
from shared.entities import ENTITY_TYPES
from shared.keys import record_partition, record_row_key
from shared.app import App
from shared.errors import RecordError
from shared.storage.changes import tracked

log = logging.getLogger(__name__)


def flag_deleted(app: App, integration_id: str, data_type: str, external_ids: Iterable[str], at: datetime) -> int:
    """Flag the stored records of these BC ids; ids never stored are skipped (nothing is
    created: the merge only updates). Each flag goes with its change row in one transaction, so
    the change feed reports it. Returns how many records were flagged."""
    when = to_iso(at)
    ops: list[tuple[str, dict[str, object]]] = []
    for external_id in dict.fromkeys(external_ids):
        try:
            row_key = record_row_key(external_id)
        except RecordError:
            continue
        ops.append(("update", {"PartitionKey": record_partition(integration_id, row_key), "RowKey": row_key, "deletedInBC": True, "deletedAt": when}))
    failures = tracked(app.store, app.clock).write(ENTITY_TYPES[data_type].table, ops)
    return len(ops) - len(failures)
