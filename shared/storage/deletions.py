"""Records BC deleted are flagged, never removed (design.md §10, §11): `deletedInBC: true`,
`deletedAt` and `deletedReason` merged into the stored record, its lines flagged with it. The sync engine rewrites a flagged record whole when
BC returns it (see `_unchanged` in shared/sync/engine.py), which clears both again."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Iterable

from shared.clock import to_iso
from shared.entities import ENTITY_TYPES
from shared.keys import record_row_key
from shared.app import App
from shared.errors import RecordError
from shared.sync.flags import flag_gone

log = logging.getLogger(__name__)


def flag_deleted(app: App, integration_id: str, data_type: str, external_ids: Iterable[str], at: datetime) -> int:
    """Flag the stored records of these BC ids; ids never stored are skipped (nothing is
    created: the merge only updates). Each flag goes with its change row in one transaction, so
    the change feed reports it. Returns how many records were flagged."""
    keys: list[str] = []
    for external_id in dict.fromkeys(external_ids):
        try:
            keys.append(record_row_key(external_id))
        except RecordError:
            continue
    # With the reason (posted or deleted) and the document's lines (shared/sync/flags.py).
    failures = flag_gone(app.store, app.clock, integration_id, ENTITY_TYPES[data_type], keys, to_iso(at))
    return len(keys) - len(failures)
