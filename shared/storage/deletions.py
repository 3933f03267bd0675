"""Records BC deleted are flagged, never removed (design.md §10, §11): `deletedInBC: true` and
`deletedAt` merged into the stored record. The sync engine rewrites a flagged record whole when
BC returns it (see `_unchanged` in shared/sync/engine.py), which clears both again."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Iterable

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError

from shared.clock import to_iso
from shared.entities import ENTITY_TYPES
from shared.keys import record_partition, record_row_key
from shared.app import App
from shared.errors import RecordError

log = logging.getLogger(__name__)


def flag_deleted(app: App, integration_id: str, data_type: str, external_ids: Iterable[str], at: datetime) -> int:
    """Flag the stored records of these BC ids; ids never stored are skipped (nothing is
    created). Returns how many records were flagged."""
    table = app.store.table(ENTITY_TYPES[data_type].table)
    when = to_iso(at)

    def flag(external_id: str) -> int:
        try:
            row_key = record_row_key(external_id)
        except RecordError:
            return 0
        entity = {"PartitionKey": record_partition(integration_id, row_key), "RowKey": row_key, "deletedInBC": True, "deletedAt": when}
        try:  # merge, only if it exists (an upsert would create a record BC never gave us)
            table.update_entity(entity, mode="merge", match_condition=MatchConditions.Unconditionally)
        except ResourceNotFoundError:
            return 0
        return 1

    return sum(app.store.map(flag, list(dict.fromkeys(external_ids))))
