"""/api/bc/notifications: Business Central's webhook calls (design.md §10).

authLevel anonymous: BC calls with no identity header and no function key of ours; each item's
clientState (random, per subscription, stored only as a hash) is the credential, and the
handshake reveals nothing. See shared/realtime/notifications.py."""
import logging

import azure.functions as func

from shared.app import get_app
from shared.errors import ConfigurationError
from shared.realtime.notifications import handle

log = logging.getLogger(__name__)


def main(req: func.HttpRequest) -> func.HttpResponse:
    try:
        app = get_app()
    except ConfigurationError as error:
        log.error("configuration error: %s", error.message)
        return func.HttpResponse('{"success": false, "error": {"code": "configuration_error", "message": "configuration error"}}',
                                 status_code=503, mimetype="application/json")  # 503: BC retries once it is fixed
    try:
        reply = handle(app, req.method.upper(), dict(req.params or {}), req.get_body() or b"")
    except Exception:  # noqa: BLE001 - never a stack trace; 503 so BC retries
        log.exception("notification failed")
        return func.HttpResponse('{"success": false, "error": {"code": "unavailable", "message": "retry later"}}',
                                 status_code=503, mimetype="application/json")
    return func.HttpResponse(reply.body, status_code=reply.status, mimetype=reply.content_type, headers=reply.headers, charset="utf-8")
