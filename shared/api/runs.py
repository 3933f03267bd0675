"""GET /api/integrations/{id}/sync-runs and /sync-runs/{runId} (design.md §7)."""
from __future__ import annotations

import azure.functions as func

from shared.api.cursors import open_page, seal_page
from shared.api.integrations import load
from shared.errors import NotFound
from shared.http import Request, ok


def list_runs(request: Request) -> func.HttpResponse:
    integration = load(request)
    top = request.top()
    after = open_page(request.app.settings, request.params.get("continuationToken"), kind="sync-runs", scope=integration.id)
    runs, token = request.app.runs.list(integration.id, top=top, continuation_token=after)
    return ok([run.to_api() for run in runs], continuation_token=seal_page(request.app.settings, "sync-runs", integration.id, token))


def get_run(request: Request) -> func.HttpResponse:
    integration = load(request)
    run = request.app.runs.get(integration.id, request.route.get("runId") or "")
    if run is None:
        raise NotFound("No run with this id")
    return ok(run.to_api())


def runs(request: Request) -> func.HttpResponse:
    return get_run(request) if request.route.get("runId") else list_runs(request)
