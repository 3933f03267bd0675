"""One run of one integration: lease, each data type's pass, logs, status, stats, webhook."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.app import App
from shared.clock import to_iso
from shared.entities import ENTITY_TYPES
from shared.errors import BCAuthError, BCError, ConflictError, ServiceError
from shared.storage.integrations import Integration
from shared.storage.leases import LeaseLost
from shared.storage.logs import new_run_id
from shared.sync.engine import PassOptions, Paused, TypeResult, TypeSync
from shared.webhooks import WebhookNotifier
from shared import telemetry

log = logging.getLogger(__name__)

REAUTHENTICATE = "re-authenticate: send a new clientId/clientSecret with PATCH /api/integrations/{id}"


@dataclass
class SyncRequest:
    mode: str = "full"  # "full" | "delta" | "since"
    modified_since: datetime | None = None
    entities: list[str] | None = None  # None = the integration's own
    trigger: str = "manual"  # "manual" | "timer"


@dataclass
class TypeOutcome:
    result: TypeResult
    status: str  # SUCCESS | PARTIAL | FAILED
    error: ServiceError | None = None
    paused: bool = False
    started: bool = True

    def to_api(self) -> dict[str, Any]:
        r = self.result
        data: dict[str, Any] = {"created": r.created, "updated": r.updated, "errors": r.errors, "unchanged": r.unchanged, "status": self.status}
        if r.lines_written or r.lines_deleted:
            data.update(linesWritten=r.lines_written, linesDeleted=r.lines_deleted)
        if r.stock_refreshed:
            data["stockRefreshed"] = r.stock_refreshed
        if self.error:
            data["error"] = self.error.to_dict()
        if self.paused:
            data["paused"] = True
        return data


@dataclass
class RunOutcome:
    run_id: str
    types: dict[str, TypeOutcome] = field(default_factory=dict)
    fatal: ServiceError | None = None
    paused: bool = False
    bc_requests: int = 0  # against BC's 6,000 per 5 minutes

    @property
    def failed(self) -> bool:
        return self.fatal is not None or any(t.status == "FAILED" for t in self.types.values())

    def counts(self) -> dict[str, Any]:
        return {key: outcome.to_api() for key, outcome in self.types.items()}


class SyncRunner:
    def __init__(self, app: App) -> None:
        self.app = app
        self.notifier = WebhookNotifier(app.deliveries, app.integrations, app.box, app.clock)

    def sync(self, integration: Integration, request: SyncRequest, *, budget_seconds: float) -> RunOutcome:
        """Run under the integration's lease; 409 when disconnected or already running."""
        if integration.status == "disconnected":
            raise ConflictError("The integration is disconnected: PATCH new credentials to reconnect it", code="integration_disconnected")
        run_id = new_run_id()
        lease = self.app.leases.acquire(integration.id, run_id)
        if lease is None:
            raise ConflictError("A sync of this integration is already running; try again when it ends", code="sync_in_progress")
        try:
            return self._run(integration, request, run_id, lease, budget_seconds)
        finally:
            lease.release()

    def _run(self, integration: Integration, request: SyncRequest, run_id: str, lease: Any, budget_seconds: float) -> RunOutcome:
        app, clock = self.app, self.app.clock
        started = clock.now()
        outcome = RunOutcome(run_id)
        options = PassOptions(
            mode=request.mode,
            modified_since=request.modified_since,
            lookback=timedelta(minutes=app.settings.lookback_minutes),
            deadline=clock.monotonic() + budget_seconds,
            keep_alive=lease.renew,
        )
        keys = request.entities or integration.entities
        client = None
        try:
            client = app.bc_client(integration)
        except ServiceError as error:
            outcome.fatal = error
        for key in keys:
            if outcome.fatal is not None or outcome.paused:
                failed = outcome.fatal is not None
                outcome.types[key] = TypeOutcome(TypeResult(), "FAILED" if failed else "PARTIAL", outcome.fatal, paused=not failed, started=False)
            else:
                outcome.types[key] = self._sync_type(key, integration, client, run_id, options, outcome)
            self._log(integration, request, run_id, key, outcome.types[key], started)
        if client is not None:
            outcome.bc_requests = client.requests_made
            client.close()
        self._finish(integration, request, outcome, started)
        return outcome

    def _sync_type(self, key: str, integration: Integration, client: Any, run_id: str, options: PassOptions, outcome: RunOutcome) -> TypeOutcome:
        pass_ = TypeSync(
            entity=ENTITY_TYPES[key],
            client=client,
            store=self.app.store,
            states=self.app.states,
            clock=self.app.clock,
            user_id=integration.userId,
            integration_id=integration.id,
            run_id=run_id,
            custom_fields=(integration.fieldMappings or {}).get(key),
        )
        try:
            result = pass_.run(options)
            return TypeOutcome(result, "PARTIAL" if result.errors else "SUCCESS")
        except Paused:
            outcome.paused = True
            return TypeOutcome(pass_.result, "PARTIAL", paused=True)
        except BCError as error:
            if error.fatal_for_run:
                outcome.fatal = error
            log.warning("sync of %s for integration %s failed: %s", key, integration.id, error.message)
            return TypeOutcome(pass_.result, "FAILED", error)
        except LeaseLost as error:
            outcome.fatal = ConflictError(str(error), code="sync_in_progress")
            return TypeOutcome(pass_.result, "FAILED", outcome.fatal)
        except Exception as error:  # storage down, a bug: this type fails, the run reports it
            log.exception("sync of %s for integration %s failed unexpectedly", key, integration.id)
            outcome.fatal = ServiceError(f"Internal error while syncing {key} ({type(error).__name__})")
            return TypeOutcome(pass_.result, "FAILED", outcome.fatal)

    def _log(self, integration: Integration, request: SyncRequest, run_id: str, key: str, outcome: TypeOutcome, started: datetime) -> None:
        r = outcome.result
        metadata: dict[str, Any] = {
            "created": r.created,
            "updated": r.updated,
            "unchanged": r.unchanged,
            "errorCount": r.errors,
            "errors": r.error_records,
            "mode": request.mode,
            "trigger": request.trigger,
        }
        if request.modified_since:
            metadata["modifiedSince"] = to_iso(request.modified_since)
        if r.lines_written or r.lines_deleted:
            metadata.update(linesWritten=r.lines_written, linesDeleted=r.lines_deleted)
        if r.stock_refreshed:
            metadata["stockRefreshed"] = r.stock_refreshed
        if r.resumed:
            metadata["resumed"] = True
        if outcome.error:
            metadata["error"] = outcome.error.to_dict()
        if outcome.paused:
            metadata["paused"] = True
            metadata["note"] = "time budget reached; the next run continues from the checkpoint" if outcome.started else "not started; the next run does it"
        self.app.logs.add(
            integration_id=integration.id,
            run_id=run_id,
            entity_type=ENTITY_TYPES[key].log_type,
            status=outcome.status,
            records_affected=r.created + r.updated,
            metadata=metadata,
            created_at=self.app.clock.now(),
        )
        telemetry.type_finished(integration_id=integration.id, run_id=run_id, data_type=key, status=outcome.status,
                                counts=outcome.to_api(), trigger=request.trigger, mode=request.mode,
                                error=outcome.error, paused=outcome.paused)

    def _finish(self, integration: Integration, request: SyncRequest, outcome: RunOutcome, started: datetime) -> None:
        now = self.app.clock.now()
        failure = outcome.fatal or next((t.error for t in outcome.types.values() if t.error), None)
        summary = {
            "runId": outcome.run_id,
            "trigger": request.trigger,
            "mode": request.mode,
            "status": "failed" if outcome.failed else ("paused" if outcome.paused else "succeeded"),
            "startedAt": to_iso(started),
            "finishedAt": to_iso(now),
            "counts": outcome.counts(),
            "bcRequests": outcome.bc_requests,
        }

        def change(current: Integration) -> None:
            current.lastRun = summary
            if current.status == "disconnected":
                return  # disconnected while the run went on: stays so
            if failure is not None:
                message = failure.message
                if isinstance(failure, BCAuthError):
                    current.status = "auth_expired"
                    message = f"{message}. To fix it, {REAUTHENTICATE}"
                else:
                    current.status = "error"
                current.lastError = {"code": failure.code, "message": message, "at": to_iso(now)}
            else:
                current.status = "connected"
                if not outcome.paused:
                    current.lastSyncedAt = to_iso(now)
                    current.lastError = None
            current.nextSyncAt = to_iso(now if outcome.paused else now + timedelta(minutes=current.syncIntervalMinutes))

        updated = self.app.integrations.update(integration.userId, integration.id, change) or integration
        records = {k: t.result.created + t.result.updated for k, t in outcome.types.items()}
        self.app.stats.record(integration.id, now, failed=outcome.failed, records=records)
        telemetry.run_finished(integration_id=integration.id, run_id=outcome.run_id, status=summary["status"],
                               trigger=request.trigger, mode=request.mode, bc_requests=outcome.bc_requests,
                               duration_ms=(now - started).total_seconds() * 1000, counts=summary["counts"], error=failure)
        event = "sync.failed" if outcome.failed else "sync.completed"
        self.notifier.notify(
            updated,
            {
                "event": event,
                "integrationId": integration.id,
                "runId": outcome.run_id,
                "status": summary["status"],
                "counts": summary["counts"],
                "error": failure.to_dict() if failure else None,
                "occurredAt": to_iso(now),
            },
        )
