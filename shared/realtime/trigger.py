"""Queue a delta because BC said something changed, without ever losing the change.

A notification coalesces into the run already queued or running (design.md §7). That is enough
when the run is still queued and covers the type: it has not read anything yet, so it will see
the change. Otherwise (it is running, maybe past that type, or it syncs other types) the types
are recorded on the integration as `realtimeFollowUp`, in the same ETag-guarded write that checks
which run is active; `finish_run` takes them when it releases the claim and calls
`start_follow_up`. Either the note lands before the claim is released (and the finishing run
sees it) or after (and the note sees no active run and starts one itself)."""
from __future__ import annotations

import logging

from shared.app import App
from shared.runs.dispatch import RunRequest, Started, start_run
from shared.runs.model import QUEUED
from shared.storage.integrations import Integration

log = logging.getLogger(__name__)
TRIGGER = "notification"


def queue_delta(app: App, integration: Integration, types: list[str]) -> str:
    """Queue (or coalesce into) a delta of these types. Returns "queued", "coalesced" or
    "follow_up". Raises QueueUnavailable (503) when the queue refuses: nothing is lost then,
    BC retries the notification."""
    types = [t for t in dict.fromkeys(types) if t in integration.entities]
    if not types:
        return "ignored"
    for _ in range(5):
        started: Started = start_run(app, integration, RunRequest(mode="delta", entities=types, trigger=TRIGGER), enqueue=True)
        if started.created:
            return "queued"
        holder = started.run
        if holder.status == QUEUED and set(types) <= set(holder.entities):
            return "coalesced"
        noted: list[bool] = []

        def note(current: Integration) -> None:
            noted.clear()
            if current.activeRunId == holder.runId:
                current.realtimeFollowUp = sorted(set(current.realtimeFollowUp or []) | set(types))
                noted.append(True)

        updated = app.integrations.update(integration.userId, integration.id, note)
        if updated is None:
            return "ignored"
        if noted:
            return "follow_up"
        integration = updated  # the run ended meanwhile: try again, a new run will start
    log.warning("realtime: integration %s kept changing; the next poll picks the change up", integration.id)
    return "ignored"


def start_follow_up(app: App, integration: Integration, types: list[str]) -> None:
    """Called by finish_run with the follow-up types it took when releasing the claim."""
    try:
        queue_delta(app, integration, types)
    except Exception:  # noqa: BLE001 - the next poll (syncIntervalMinutes) still catches the change
        log.exception("realtime: could not start the follow-up delta of integration %s", integration.id)
