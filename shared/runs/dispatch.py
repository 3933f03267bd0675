"""Starting a run: claim the integration (one active run at a time), record the run, queue its
first slice. The claim is the integration's `activeRunId`, written under its ETag, so two
instances asking at once cannot both start one."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from shared.app import App
from shared.clock import to_iso
from shared.errors import ConflictError, ServiceError
from shared.runs.model import FAILED, QUEUED, Run
from shared.runs.queue import SliceMessage
from shared.runs.repository import new_run_id
from shared.storage.integrations import Integration

log = logging.getLogger(__name__)


@dataclass
class RunRequest:
    mode: str = "full"  # full | delta | since | reconcile
    modified_since: datetime | None = None
    entities: list[str] | None = None  # None = the integration's own
    trigger: str = "manual"  # manual | timer | notification


@dataclass
class Started:
    run: Run
    integration: Integration  # as claimed (its activeRunId is the run's)
    created: bool = True  # False: coalesced into the run already queued or running


class RunActive(ConflictError):
    code = "sync_in_progress"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"A sync of this integration is already queued or running (run {run_id}); try again when it ends")
        self.run_id = run_id


def disconnected_error() -> ConflictError:
    return ConflictError("The integration is disconnected: PATCH new credentials to reconnect it", code="integration_disconnected")


def start_run(app: App, integration: Integration, request: RunRequest, *, enqueue: bool) -> Started:
    """Claim, record and (when `enqueue`) queue a run. A manual request while another run is
    active raises RunActive (409); the timer and notifications coalesce into that run."""
    now = app.clock.now()
    run = Run(
        runId=new_run_id(now),
        integrationId=integration.id,
        userId=integration.userId,
        trigger=request.trigger,
        mode=request.mode,
        entities=list(request.entities or integration.entities),
        modifiedSince=to_iso(request.modified_since) if request.modified_since else None,
        createdAt=to_iso(now),
        updatedAt=to_iso(now),
    )

    def claim(current: Integration) -> None:
        if current.status == "disconnected":
            raise disconnected_error()
        if current.activeRunId and current.activeRunId != run.runId:
            holder = app.runs.get(current.id, current.activeRunId)
            if holder is not None and holder.active:
                raise RunActive(holder.runId)
        current.activeRunId = run.runId

    try:
        claimed = app.integrations.update(integration.userId, integration.id, claim)
    except RunActive as busy:
        if request.trigger == "manual":
            raise
        holder = app.runs.get(integration.id, busy.run_id)
        if holder is None:
            raise
        return Started(holder, integration, created=False)
    if claimed is None:
        raise ServiceError("The integration was deleted meanwhile", code="not_found", status=404)
    app.runs.create(run)
    if enqueue:
        try:
            app.queue.send(SliceMessage(run.userId, run.integrationId, run.runId, run.seq))
        except ServiceError as error:
            abandon(app, run, error)
            raise
    return Started(run, claimed)


def abandon(app: App, run: Run, error: ServiceError) -> None:
    """A run that could not be queued: failed at once, the claim released, nothing half-queued."""
    now = to_iso(app.clock.now())

    def fail(current: Run) -> None:
        current.status = FAILED
        current.error = error.to_dict()
        current.finishedAt = now
        current.updatedAt = now

    app.runs.update(run.integrationId, run.runId, fail)
    release(app, run)


def release(app: App, run: Run) -> None:
    def clear(current: Integration) -> None:
        if current.activeRunId == run.runId:
            current.activeRunId = None

    app.integrations.update(run.userId, run.integrationId, clear)


def enqueue_next(app: App, run: Run, *, delay_seconds: int = 0) -> bool:
    """Queue the run's next slice (its `seq`); False when the queue refused (housekeeping's
    watchdog re-queues runs that stalled)."""
    try:
        app.queue.send(SliceMessage(run.userId, run.integrationId, run.runId, run.seq), delay_seconds=delay_seconds)
        return True
    except ServiceError:
        log.warning("could not queue slice %d of run %s; the watchdog will", run.seq, run.runId)
        return False


__all__ = ["QUEUED", "RunActive", "RunRequest", "Started", "abandon", "enqueue_next", "release", "start_run"]
