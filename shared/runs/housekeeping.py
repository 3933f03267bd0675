"""The timer's housekeeping: bounded steps within one budget per tick (HOUSEKEEPING_SECONDS).

Order is priority: BC subscription renewal first (realtime stops for everyone if it lapses),
then key rotation, retention (logs, runs, webhook deliveries) and any registered step, and the
webhook retries last with what is left, so a tenant's slow, failing or flooded endpoint can
never delay the rest. A step starts only while budget remains; each is contained (one failing
step never stops the others) and does a bounded amount of work.

Other bounded jobs plug in with `register_step(name, job)`: `job(app, budget)` runs after
retention and before the webhook retries, gets a `Budget` to check (`budget.remaining()`), and
returns what goes into the tick's summary under `name`."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from azure.core.exceptions import ResourceNotFoundError

from shared.app import App
from shared.keyrotation import rotation_step
from shared.webhooks import WebhookNotifier

log = logging.getLogger(__name__)
RETENTION_BATCH = 50
CURSOR_TABLE = "SyncHousekeeping"


@dataclass
class Budget:
    """The tick's time budget (monotonic clock: real time, whatever the app's clock says)."""

    deadline: float

    @classmethod
    def of(cls, seconds: float) -> "Budget":
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def spent(self) -> bool:
        return self.remaining() <= 0.0


Job = Callable[[App, Budget], Any]
#: Steps other modules add (see the module docstring): (name, job), run in this order.
_EXTRA_STEPS: list[tuple[str, Job]] = []


def register_step(name: str, job: Job) -> None:
    """Add a bounded job to every tick (idempotent by name: a module imported twice adds it once)."""
    if all(existing != name for existing, _ in _EXTRA_STEPS):
        _EXTRA_STEPS.append((name, job))


def _subscriptions(app: App, budget: Budget) -> Any:
    from shared.realtime.subscriptions import renew_due  # realtime (issue 11): bounded per tick

    return renew_due(app)


def _keys(app: App, budget: Budget) -> Any:
    return rotation_step(app)


def _retention(app: App, budget: Budget) -> Any:
    removed, checked, deliveries = _retention_batch(app, budget)
    return {"logsRemoved": removed, "retentionChecked": checked, "deliveriesRemoved": deliveries}


def _changes(app: App, budget: Budget) -> Any:
    return _prune_changes(app, seconds=min(20.0, budget.remaining()))


def _webhook_index(app: App, budget: Budget) -> Any:
    """Once: index the deliveries an older version left pending (it had no due index)."""
    table = app.store.table(CURSOR_TABLE)
    try:
        ledger = dict(table.get_entity("cursor", "webhookindex"))
    except ResourceNotFoundError:
        ledger = {"done": False, "token": ""}
    if ledger.get("done"):
        return "done"
    token = app.deliveries.index_unindexed(token=ledger.get("token") or None)
    table.upsert_entity({"PartitionKey": "cursor", "RowKey": "webhookindex", "done": token is None, "token": token or ""})
    return "done" if token is None else "indexing"


def _webhooks(app: App, budget: Budget) -> Any:
    notifier = WebhookNotifier(app.deliveries, app.integrations, app.box, app.clock,
                               allow_private=app.settings.allow_private_webhooks)
    return notifier.retry_due(seconds=budget.remaining())


def steps() -> list[tuple[str, Job]]:
    """This tick's steps, in priority order."""
    return [("subscriptions", _subscriptions), ("keysReencrypted", _keys), ("retention", _retention),
            ("changesPruned", _changes), *_EXTRA_STEPS, ("webhookIndex", _webhook_index), ("webhookRetries", _webhooks)]


def housekeeping(app: App, *, seconds: float | None = None) -> dict[str, Any]:
    budget = Budget.of(float(seconds if seconds is not None else app.settings.housekeeping_seconds))
    summary: dict[str, Any] = {}
    for name, job in steps():
        if budget.spent():
            summary[name] = "skipped: the tick's budget is spent"
            log.warning("housekeeping: %s skipped, HOUSEKEEPING_SECONDS spent", name)
            continue
        try:
            result = job(app, budget)
        except Exception:  # noqa: BLE001 - one step never stops the others
            log.exception("housekeeping: %s failed", name)
            continue
        if name == "retention" and isinstance(result, dict):
            summary.update(result)  # the summary's long-standing keys
        elif name == "webhookRetries" and isinstance(result, dict):
            summary[name] = result.get("attempted", 0)
            summary["webhookRetryDetail"] = result
        else:
            summary[name] = result
    return summary


def _retention_batch(app: App, budget: Budget, batch: int = RETENTION_BATCH) -> tuple[int, int, int]:
    cursor_table = app.store.table(CURSOR_TABLE)
    try:
        token = cursor_table.get_entity("cursor", "retention").get("token") or None
    except ResourceNotFoundError:
        token = None
    except Exception:  # noqa: BLE001
        token = None
    now = app.clock.now()
    cutoff = now - timedelta(days=app.settings.log_retention_days)
    delivery_cutoff = now - timedelta(days=app.settings.webhook_delivery_retention_days)
    removed = checked = deliveries = 0
    try:
        items, next_token = app.integrations.list_page_all(top=batch, continuation_token=token)
    except Exception:  # noqa: BLE001 - a bad cursor starts over
        log.exception("housekeeping: retention listing failed; starting over")
        items, next_token = [], None
    for integration in items:
        if budget.spent():
            next_token = token  # not finished: this page again next tick
            break
        checked += 1
        try:
            removed += app.logs.delete_older_than(integration.id, cutoff)
            app.runs.delete_older_than(integration.id, cutoff)
            deliveries += app.deliveries.prune(integration.id, delivery_cutoff)
        except Exception:  # noqa: BLE001
            log.exception("housekeeping: retention of integration %s failed", integration.id)
    try:
        cursor_table.upsert_entity({"PartitionKey": "cursor", "RowKey": "retention", "token": next_token or ""})
    except Exception:  # noqa: BLE001
        log.exception("housekeeping: could not save the retention cursor")
    return removed, checked, deliveries



CHANGES_PRUNE_EVERY = timedelta(hours=6)  # an integration's change rows are looked at this often at most


def _prune_changes(app: App, seconds: float = 20.0) -> int:
    """Change feed retention (design.md §13): a round-robin batch of integrations per tick, each
    looked at once per CHANGES_PRUNE_EVERY (a marker per integration) and only if it ever
    synced, over the tables of the types it syncs; within a time budget (the rest waits for
    the next tick). The pruning itself is shared/storage/changes.py's `prune_changes`."""
    from shared.entities import ENTITY_TYPES
    from shared.keys import record_partitions
    from shared.storage.changes import prune_changes

    cursor_table = app.store.table(CURSOR_TABLE)
    try:
        token = cursor_table.get_entity("cursor", "changes").get("token") or None
    except Exception:  # noqa: BLE001 - missing or unreadable: start over
        token = None
    now = app.clock.now()
    deadline = app.clock.monotonic() + seconds
    cutoff = now - timedelta(days=app.settings.change_feed_retention_days)
    removed = 0
    try:
        items, next_token = app.integrations.list_page_all(top=RETENTION_BATCH, continuation_token=token)
    except Exception:  # noqa: BLE001 - a bad cursor starts over
        log.exception("housekeeping: change feed retention listing failed; starting over")
        items, next_token = [], None
    synced = [i for i in items if i.lastSyncedAt and any(key in ENTITY_TYPES for key in i.entities)]

    def due(integration: Any) -> bool:
        try:
            marker = cursor_table.get_entity("changes-pruned", integration.id)
        except ResourceNotFoundError:
            return True
        return str(marker.get("at") or "") < (now - CHANGES_PRUNE_EVERY).isoformat()

    for integration, is_due in zip(synced, app.store.map(due, synced)):
        if not is_due:
            continue
        tables = [ENTITY_TYPES[key].table for key in integration.entities if key in ENTITY_TYPES]
        try:
            result = prune_changes(app.store, tables, record_partitions(integration.id), cutoff, deadline=deadline, monotonic=app.clock.monotonic)
        except Exception:  # noqa: BLE001
            log.exception("housekeeping: change feed retention of integration %s failed", integration.id)
            continue
        removed += result.removed
        if not result.complete:
            next_token = token  # out of budget: this batch again next tick
            break
        cursor_table.upsert_entity({"PartitionKey": "changes-pruned", "RowKey": integration.id, "at": now.isoformat()})
    try:
        cursor_table.upsert_entity({"PartitionKey": "cursor", "RowKey": "changes", "token": next_token or ""})
    except Exception:  # noqa: BLE001
        log.exception("housekeeping: could not save the change feed retention cursor")
    return removed
