"""POST /api/integrations/{id}/dynamics/sync: synchronous by default, asynchronous with
`Prefer: respond-async` (design.md §7). Both start a run the same way; the synchronous call
runs slices inline until the run ends or SYNC_HTTP_BUDGET_SECONDS, then answers `paused` and
leaves the rest to the queue."""
from __future__ import annotations

import azure.functions as func

from shared.api.integrations import load, require_company, require_ready
from typing import Any

from shared.errors import ServiceError, ValidationError
from shared.http import Request, ok
from shared.models import SyncBody, parse_since, validate
from shared.runs.dispatch import RunActive, RunRequest, abandon, start_run
from shared.runs.model import FAILED, Run
from shared.runs.slices import run_slice
from shared.storage.integrations import Integration
from shared.storage.ratelimits import check_manual_sync

RETRY_AFTER_SECONDS = 2


def wants_async(request: Request) -> bool:
    prefer = request.raw.headers.get("Prefer") or ""
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


def parse_request(request: Request, integration: Integration) -> RunRequest:
    body: SyncBody = validate(SyncBody, request.json() or {})
    if body.entities is not None:
        if not body.entities:
            raise ValidationError("entities: must name at least one data type")
        for key in body.entities:
            if key not in integration.entities:
                raise ValidationError(
                    f"entities: '{key}' is not one of this integration's data types ({', '.join(integration.entities)})"
                )
    if body.modifiedSince is not None:
        run_request = RunRequest(mode="since", modified_since=parse_since(body.modifiedSince, "modifiedSince"))
    else:
        run_request = RunRequest(mode=body.mode or "full")
    run_request.entities = list(dict.fromkeys(body.entities)) if body.entities else None
    return run_request


def sync(request: Request) -> func.HttpResponse:
    integration = load(request)
    require_ready(integration)  # delegated: 409 authorization_required before the first sign-in
    require_company(integration)  # delegated: 409 company_not_selected until PATCH companyId
    run_request = parse_request(request, integration)
    app = request.app
    check_manual_sync(app, integration.id)  # 429 beyond MANUAL_SYNCS_PER_HOUR
    if wants_async(request):
        started = start_run(app, integration, run_request, enqueue=True)
        location = f"/api/integrations/{integration.id}/sync-runs/{started.run.runId}"
        response = ok({"runId": started.run.runId, "status": started.run.status}, status=202)
        response.headers["Location"] = location
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    started = start_run(app, integration, run_request, enqueue=False)
    outcome = run_slice(app, started.integration, started.run, budget_seconds=app.settings.http_sync_budget_seconds)
    run = outcome.run or started.run
    if outcome.state == "skipped":  # another run's lease (one that crashed) is still held
        busy = RunActive(run.runId)
        abandon(app, run, busy)
        raise busy
    if run.status == FAILED:
        _raise_failure(run)
    data: dict[str, object] = run.counts()
    if outcome.state == "continued":  # the queued continuation goes on in the background
        data = {**data, "paused": True, "runId": run.runId}
    response = ok(data)
    response.headers["X-Sync-Run-Id"] = run.runId
    return response


#: Errors that mean the whole run could not work: the call answers them instead of counts.
RUN_WIDE = frozenset({"bc_auth_failed", "bc_forbidden", "bc_company_not_found", "bc_unavailable", "integration_disconnected", "internal_error", "configuration_error", "sync_in_progress"})
STATUS_OF = {"integration_disconnected": 409, "sync_in_progress": 409, "not_found": 404, "company_not_selected": 409}


def _raise_failure(run: Run) -> None:
    """A run-wide failure (credentials, company, outage) or every type failed: answer its error;
    otherwise the counts (with the failed types' errors) are the answer."""
    errors = [p.error for p in run.progress.values() if p.error]
    if run.error and (len(errors) == len(run.progress) or run.error.get("code") in RUN_WIDE):
        raise _as_error(run.error)


def _as_error(error: dict[str, Any]) -> ServiceError:
    code = str(error.get("code") or "internal_error")
    status = 502 if code.startswith("bc_") else STATUS_OF.get(code, 500)
    return ServiceError(str(error.get("message") or "The sync failed"), code=code, status=status)
