"""POST /api/integrations/{id}/dynamics/sync"""
from __future__ import annotations

import azure.functions as func

from shared.api.integrations import load
from shared.errors import ValidationError
from shared.http import Request, ok
from shared.models import SyncBody, parse_since, validate
from shared.storage.ratelimits import check_manual_sync
from shared.sync.runner import SyncRequest, SyncRunner


def sync(request: Request) -> func.HttpResponse:
    integration = load(request)
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
        sync_request = SyncRequest(mode="since", modified_since=parse_since(body.modifiedSince, "modifiedSince"))
    else:
        sync_request = SyncRequest(mode=body.mode or "full")
    sync_request.entities = list(dict.fromkeys(body.entities)) if body.entities else None

    check_manual_sync(request.app, integration.id)  # 429 beyond MANUAL_SYNCS_PER_HOUR
    runner = SyncRunner(request.app)
    outcome = runner.sync(integration, sync_request, budget_seconds=request.app.settings.http_sync_budget_seconds)
    if outcome.fatal is not None:
        raise outcome.fatal
    failures = [t.error for t in outcome.types.values() if t.error]
    if failures and len(failures) == len(outcome.types):
        raise failures[0]
    response = ok(outcome.counts())
    response.headers["X-Sync-Run-Id"] = outcome.run_id
    return response

