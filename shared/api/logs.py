"""GET /api/integrations/{id}/sync-logs and /webhook-deliveries"""
from __future__ import annotations

import azure.functions as func

from shared.api.cursors import open_page, seal_page
from shared.api.integrations import load
from shared.entities import LOG_TYPES
from shared.errors import ValidationError
from shared.http import Request, ok
from shared.models import parse_since

STATUSES = ("SUCCESS", "PARTIAL", "FAILED")


def sync_logs(request: Request) -> func.HttpResponse:
    integration = load(request)
    params = request.params
    entity_type = params.get("entityType") or None
    if entity_type is not None and entity_type not in LOG_TYPES:
        raise ValidationError(f"entityType: must be one of {', '.join(LOG_TYPES)}")
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise ValidationError(f"status: must be one of {', '.join(STATUSES)}")
    since = None
    if params.get("since"):
        try:
            since = parse_since(params["since"], "since")
        except ValueError as error:
            raise ValidationError(f"since: {error}") from None
    top = request.top()
    after = open_page(request.app.settings, params.get("continuationToken"), kind="sync-logs", scope=integration.id)
    entries, token = request.app.logs.list(
        integration.id,
        entity_type=entity_type,
        status=status,
        since=since,
        top=top,
        continuation_token=after,
    )
    return ok(entries, continuation_token=seal_page(request.app.settings, "sync-logs", integration.id, token))


def webhook_deliveries(request: Request) -> func.HttpResponse:
    integration = load(request)
    top = request.top()
    after = open_page(request.app.settings, request.params.get("continuationToken"), kind="webhook-deliveries", scope=integration.id)
    items, token = request.app.deliveries.list(integration.id, top=top, continuation_token=after)
    return ok(items, continuation_token=seal_page(request.app.settings, "webhook-deliveries", integration.id, token))
