"""The timer's housekeeping, bounded per tick: webhook retries that are due, and log and run
retention for a batch of integrations taken round-robin (a cursor over the integrations table
is kept between ticks), so no tick walks every integration. One failing item never stops the
rest."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.app import App
from shared.keyrotation import reencrypt_integrations
from shared.webhooks import WebhookNotifier

log = logging.getLogger(__name__)
RETENTION_BATCH = 50
CURSOR_TABLE = "SyncHousekeeping"


def housekeeping(app: App) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    try:
        summary["webhookRetries"] = WebhookNotifier(
            app.deliveries, app.integrations, app.box, app.clock, allow_private=app.settings.allow_private_webhooks
        ).retry_due()
    except Exception:  # noqa: BLE001
        log.exception("housekeeping: webhook retries failed")
    summary["logsRemoved"], summary["retentionChecked"] = _retention_batch(app)
    summary["changesPruned"] = _prune_changes(app)
    try:  # secrets still under a previous CREDENTIALS_KEY, a bounded batch per tick
        summary["keysReencrypted"] = reencrypt_integrations(app, limit=200).to_dict()
    except Exception:  # noqa: BLE001
        log.exception("housekeeping: key re-encryption failed")
    try:  # realtime (issue 11): renew BC subscriptions expiring within 24 h, bounded per tick
        from shared.realtime.subscriptions import renew_due

        summary["subscriptions"] = renew_due(app)
    except Exception:  # noqa: BLE001
        log.exception("housekeeping: subscription renewal failed")
    return summary


def _retention_batch(app: App, batch: int = RETENTION_BATCH) -> tuple[int, int]:
    cursor_table = app.store.table(CURSOR_TABLE)
    try:
        token = cursor_table.get_entity("cursor", "retention").get("token") or None
    except ResourceNotFoundError:
        token = None
    except Exception:  # noqa: BLE001
        token = None
    cutoff = app.clock.now() - timedelta(days=app.settings.log_retention_days)
    removed = checked = 0
    try:
        items, next_token = app.integrations.list_page_all(top=batch, continuation_token=token)
    except Exception:  # noqa: BLE001 - a bad cursor starts over
        log.exception("housekeeping: retention listing failed; starting over")
        items, next_token = [], None
    for integration in items:
        checked += 1
        try:
            removed += app.logs.delete_older_than(integration.id, cutoff)
            app.runs.delete_older_than(integration.id, cutoff)
        except Exception:  # noqa: BLE001
            log.exception("housekeeping: retention of integration %s failed", integration.id)
    try:
        cursor_table.upsert_entity({"PartitionKey": "cursor", "RowKey": "retention", "token": next_token or ""})
    except Exception:  # noqa: BLE001
        log.exception("housekeeping: could not save the retention cursor")
    return removed, checked


def _prune_changes(app: App, seconds: float = 20.0) -> int:
    """Change feed retention (design.md §13) for the integrations of this tick's retention
    batch would be the natural unit; until housekeeping is split into budgeted steps, a
    bounded pass over a round-robin batch of its own."""
    from shared.entities import ENTITY_TYPES
    from shared.keys import record_partitions
    from shared.storage.changes import prune_changes

    cursor_table = app.store.table(CURSOR_TABLE)
    try:
        token = cursor_table.get_entity("cursor", "changes").get("token") or None
    except Exception:  # noqa: BLE001 - missing or unreadable: start over
        token = None
    deadline = app.clock.monotonic() + seconds
    cutoff = app.clock.now() - timedelta(days=app.settings.change_feed_retention_days)
    tables = list(dict.fromkeys(entity.table for entity in ENTITY_TYPES.values()))
    removed = 0
    try:
        items, next_token = app.integrations.list_page_all(top=RETENTION_BATCH, continuation_token=token)
    except Exception:  # noqa: BLE001 - a bad cursor starts over
        log.exception("housekeeping: change feed retention listing failed; starting over")
        items, next_token = [], None
    for integration in items:
        try:
            result = prune_changes(app.store, tables, record_partitions(integration.id), cutoff, deadline=deadline, monotonic=app.clock.monotonic)
        except Exception:  # noqa: BLE001
            log.exception("housekeeping: change feed retention of integration %s failed", integration.id)
            continue
        removed += result.removed
        if not result.complete:
            next_token = token  # out of budget: this batch again next tick
            break
    try:
        cursor_table.upsert_entity({"PartitionKey": "cursor", "RowKey": "changes", "token": next_token or ""})
    except Exception:  # noqa: BLE001
        log.exception("housekeeping: could not save the change feed retention cursor")
    return removed
