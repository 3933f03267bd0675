"""The scheduled run: delta syncs of the integrations that are due, webhook retries, retention."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from shared.app import App
from shared.clock import parse_iso
from shared.errors import ConflictError
from shared.storage.integrations import Integration
from shared.sync.runner import SyncRequest, SyncRunner

log = logging.getLogger(__name__)
MIN_SLICE_SECONDS = 30.0
#: Statuses the timer leaves alone: disconnected ones, and rejected credentials (retrying them
#: would only hammer Entra ID until the user re-authenticates with a PATCH).
SKIPPED = ("disconnected", "auth_expired")


def due(integrations: list[Integration], app: App) -> list[Integration]:
    """Due integrations, the longest-waiting first, so a slow one cannot starve the others."""
    now = app.clock.now()
    ready = [i for i in integrations if i.status not in SKIPPED and (not i.nextSyncAt or parse_iso(i.nextSyncAt) <= now)]
    return sorted(ready, key=lambda i: i.nextSyncAt or "")


def run_scheduled(app: App) -> dict[str, Any]:
    """One timer tick. Each integration gets a fair slice of the time budget; one failing never
    stops the rest; a run cut short by its slice continues from its checkpoint next tick."""
    clock = app.clock
    deadline = clock.monotonic() + app.settings.timer_budget_seconds
    runner = SyncRunner(app)
    summary: dict[str, Any] = {"synced": [], "failed": [], "skipped": [], "deferred": []}
    everything = list(app.integrations.list_all(include_disconnected=True))  # due() skips disconnected
    queue = due(everything, app)
    for position, integration in enumerate(queue):
        remaining = deadline - clock.monotonic()
        if remaining < 5:
            summary["deferred"].extend(i.id for i in queue[position:])
            break
        share = max(remaining / (len(queue) - position), min(MIN_SLICE_SECONDS, remaining))
        try:
            outcome = runner.sync(integration, SyncRequest(mode="delta", trigger="timer"), budget_seconds=share)
            (summary["failed"] if outcome.failed else summary["synced"]).append(integration.id)
        except ConflictError:
            summary["skipped"].append(integration.id)  # already running (a manual sync)
        except Exception:  # noqa: BLE001 - one integration never stops the others
            log.exception("scheduled sync of integration %s failed", integration.id)
            summary["failed"].append(integration.id)
    try:
        summary["webhookRetries"] = runner.notifier.retry_due()
        cutoff = clock.now() - timedelta(days=app.settings.log_retention_days)
        summary["logsRemoved"] = sum(app.logs.delete_older_than(i.id, cutoff) for i in everything)
    except Exception:  # noqa: BLE001
        log.exception("timer housekeeping failed")
    log.info("timer: %s", {k: (len(v) if isinstance(v, list) else v) for k, v in summary.items()})
    return summary
