"""GET /api/integrations/{id}/sync-logs and /webhook-deliveries"""
from __future__ import annotations

import azure.functions as func

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
    entries, token = request.app.logs.list(
        integration.id,
        entity_type=entity_type,
        status=status,
        since=since,
        top=request.top(),
        continuation_token=params.get("continuationToken"),
    )
    return ok(entries, continuation_token=token)


def webhook_deliveries(request: Request) -> func.HttpResponse:
    integration = load(request)
    items, token = request.app.deliveries.list(integration.id, top=request.top(), continuation_token=request.params.get("continuationToken"))
    return ok(items, continuation_token=token)
