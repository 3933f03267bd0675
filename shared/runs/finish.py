"""The end of a run: one log entry per data type, the run's final status, the integration's
status and next run time, hourly statistics and the outbound webhook."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from shared import telemetry
from shared.app import App
from shared.clock import parse_iso, to_iso
from shared.entities import ENTITY_TYPES
from shared.errors import BCAuthError, ServiceError
from shared.runs.model import FAILED, SUCCEEDED, Run, TypeProgress
from shared.storage.integrations import Integration
from shared.webhooks import WebhookNotifier

log = logging.getLogger(__name__)

REAUTHENTICATE = "re-authenticate: send a new clientId/clientSecret with PATCH /api/integrations/{id}"


def finish_run(app: App, run: Run, integration: Integration | None, *, fatal: ServiceError | None) -> Run:
    """Close the run once (a second call for a finished run does nothing)."""
    now = app.clock.now()
    for key in run.entities:
        progress = run.progress.setdefault(key, TypeProgress())
        if not progress.done:
            progress.done, progress.status = True, "FAILED"
            progress.error = (fatal or ServiceError("The run ended before this type")).to_dict()
    failure = fatal.to_dict() if fatal else next((p.error for p in run.progress.values() if p.error), None)
    failed = fatal is not None or any(p.status == "FAILED" for p in run.progress.values())
    closed: list[bool] = []

    def close(current: Run) -> bool:
        if not current.active:
            return False
        current.progress = run.progress
        current.status = FAILED if failed else SUCCEEDED
        current.error = failure if failed else None
        current.finishedAt = to_iso(now)
        current.updatedAt = to_iso(now)
        closed.append(True)
        return True

    run = app.runs.update(run.integrationId, run.runId, close) or run
    if not closed:
        return run
    for key in run.entities:
        _log(app, run, key, run.progress[key], now)
    follow_up: list[str] = []  # realtime (issue 11): types notified while this run was past them
    reconcile: list[str] = []  # realtime (issue 16): types a `collection` owes a reconcile, after the deltas
    records = {k: p.written for k, p in run.progress.items()}
    try:  # before the integration records the run: whoever sees its lastRun sees its statistics too
        app.stats.record(run.integrationId, now, failed=failed, records=records)
    except Exception:  # noqa: BLE001 - statistics never fail a run
        log.warning("could not record statistics of run %s", run.runId)
    updated = _update_integration(app, run, failed=failed, failure=fatal or _first_error(run), now=now, follow_up=follow_up, reconcile=reconcile)
    _telemetry(run, now)
    if (follow_up or reconcile) and updated is not None:
        from shared.realtime.trigger import start_follow_up

        start_follow_up(app, updated, follow_up, reconcile=reconcile)
    if updated is not None:
        _notify(app, updated, run, now)
    return run


def _first_error(run: Run) -> ServiceError | None:
    for progress in run.progress.values():
        if progress.error:
            error = ServiceError(progress.error.get("message", ""), code=progress.error.get("code"))
            error.auth = progress.error.get("code") == "bc_auth_failed"  # type: ignore[attr-defined]
            return error
    return None


def _update_integration(
    app: App, run: Run, *, failed: bool, failure: ServiceError | None, now: Any, follow_up: list[str] | None = None,
    reconcile: list[str] | None = None,
) -> Integration | None:
    summary = {
        "runId": run.runId,
        "trigger": run.trigger,
        "mode": run.mode,
        "status": FAILED if failed else SUCCEEDED,
        "startedAt": run.startedAt,
        "finishedAt": run.finishedAt,
        "counts": run.counts(),
        "bcRequests": run.bcRequests,
        "slices": run.slices,
    }

    def change(current: Integration) -> None:
        if current.activeRunId == run.runId:
            current.activeRunId = None
            if follow_up is not None:  # taken in the same write that releases the claim
                follow_up[:] = current.realtimeFollowUp or []
                current.realtimeFollowUp = None
            if reconcile is not None:
                reconcile[:] = []
                if not follow_up:  # the deltas first: the reconcile waits for them
                    reconcile[:] = current.realtimeReconcile or []
                    current.realtimeReconcile = None
        current.lastRun = summary
        if run.mode == "reconcile":
            current.lastReconcileAt = to_iso(now)  # the timer's next reconcile counts from here
        if current.status == "disconnected":
            return  # disconnected while the run went on: stays so
        if failure is not None and failure.code == "run_cancelled":
            return  # the integration points elsewhere now: this run says nothing about it
        if failed and failure is not None:
            message = failure.message
            if isinstance(failure, BCAuthError) or getattr(failure, "auth", False) or failure.code == "bc_auth_failed":
                current.status = "auth_expired"
                # A delegated token's error already says to sign in again; app credentials get the PATCH hint.
                message = message if current.authMode == "delegated" else f"{message}. To fix it, {REAUTHENTICATE}"
            else:
                current.status = "error"
            current.lastError = {"code": failure.code, "message": message, "at": to_iso(now)}
        else:
            current.status = "connected"
            if run.mode != "reconcile":  # a reconcile reads no data: the data is as fresh as before
                current.lastSyncedAt = to_iso(now)
            current.lastError = None
        current.nextSyncAt = to_iso(now + timedelta(minutes=current.syncIntervalMinutes))

    return app.integrations.update(run.userId, run.integrationId, change)


def _log(app: App, run: Run, key: str, progress: TypeProgress, now: Any) -> None:
    metadata: dict[str, Any] = {**progress.log_metadata(), "mode": run.mode, "trigger": run.trigger}
    if run.modifiedSince:
        metadata["modifiedSince"] = run.modifiedSince
    metadata.update(progress.extras())
    if progress.resumed:
        metadata["resumed"] = True
    if run.slices > 1:
        metadata["slices"] = run.slices
    if progress.error:
        metadata["error"] = progress.error
    try:
        app.logs.add(
            integration_id=run.integrationId,
            run_id=run.runId,
            entity_type=ENTITY_TYPES[key].log_type,
            status=progress.status or "FAILED",
            records_affected=progress.written,
            metadata=metadata,
            created_at=now,
        )
    except Exception:  # noqa: BLE001 - one log entry never stops the others
        log.exception("could not write the %s log of run %s", key, run.runId)


def _telemetry(run: Run, now: Any) -> None:
    """One structured record per data type and one per run (shared/telemetry.py)."""
    counts = run.counts()
    for key in run.entities:
        progress = run.progress[key]
        telemetry.type_finished(integration_id=run.integrationId, run_id=run.runId, data_type=key,
                                status=progress.status or "FAILED", counts=counts[key], trigger=run.trigger,
                                mode=run.mode, error=progress.error)
    began = parse_iso(run.startedAt or run.createdAt) if (run.startedAt or run.createdAt) else now
    telemetry.run_finished(integration_id=run.integrationId, run_id=run.runId, status=run.status, trigger=run.trigger,
                           mode=run.mode, duration_ms=(now - began).total_seconds() * 1000,
                           bc_requests=run.bcRequests, counts=counts, error=run.error)


def _notify(app: App, integration: Integration, run: Run, now: Any) -> None:
    failed = run.status == FAILED
    try:
        WebhookNotifier(
            app.deliveries, app.integrations, app.box, app.clock, allow_private=app.settings.allow_private_webhooks
        ).notify(
            integration,
            {
                "event": "sync.failed" if failed else "sync.completed",
                "integrationId": run.integrationId,
                "runId": run.runId,
                "status": run.status,
                "counts": run.counts(),
                "error": run.error,
                "occurredAt": to_iso(now),
            },
        )
    except Exception:  # noqa: BLE001 - a webhook never fails a run
        log.exception("webhook of run %s failed", run.runId)
