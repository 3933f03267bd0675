"""Request parsing and response shaping shared by every HTTP function.

`handle(req, fn)` is the one place that turns exceptions into the contract's error body, so a
function's `main` stays a line or two."""
from __future__ import annotations

import base64
import binascii
import json
import logging
from urllib.parse import urlsplit
from typing import Any, Callable

import azure.functions as func

from shared.app import App, get_app
from shared.bounds import check_body_size, parse_json
from shared.errors import ConfigurationError, ServiceError, Unauthenticated, ValidationError

log = logging.getLogger(__name__)

IDENTITY_HEADER = "X-MS-CLIENT-PRINCIPAL-ID"
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
#: Claims of X-MS-CLIENT-PRINCIPAL that App Service Authentication puts the id header from.
_ID_CLAIMS = frozenset({
    "http://schemas.microsoft.com/identity/claims/objectidentifier", "oid",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier", "sub",
})
MAX_USER_ID = 256
_config_error_logged: set[str] = set()
#: Content types a cross-site page can send without a CORS preflight (HTML forms, plain fetch).
_SIMPLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})


def check_content_type(req: func.HttpRequest) -> None:
    """A request with a body must say Content-Type: application/json (parameters such as charset
    allowed), so a form or plain-text post from another site can never create or change anything
    (design §12). An empty body needs no type, but an empty one labelled as a form is refused too:
    a cross-site form with no fields must not trigger a sync either."""
    raw = req.headers.get("Content-Type") or ""
    media = raw.split(";", 1)[0].strip().lower()
    body = req.get_body() or b""
    if media == "application/json" or (not body and (not media or media not in _SIMPLE_TYPES)):
        return
    shown = (media or "none")[:100]
    raise ServiceError(f"Content-Type must be application/json for a request with a body (got {shown!r})",
                       code="unsupported_media_type", status=415)


class Request:
    """What a handler needs from the HTTP request, already checked."""

    def __init__(self, req: func.HttpRequest, app: App) -> None:
        self.raw = req
        self.app = app
        self.user_id = caller_identity(req, require_principal=app.settings.require_client_principal)
        self.route = dict(req.route_params or {})
        self.params = dict(req.params or {})

    def json(self, *, required: bool = False) -> dict[str, Any] | None:
        body = self.raw.get_body() or b""
        check_body_size(body)
        if not body.strip():
            if required:
                raise ValidationError("The request body must be a JSON object", code="invalid_json")
            return None
        value = parse_json(body)  # 413 over 1 MiB, 400 deeper than 32 levels
        if not isinstance(value, dict):
            raise ValidationError("The request body must be a JSON object", code="invalid_json")
        return value

    def top(self, default: int = 50) -> int:
        raw = self.params.get("top")
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ValidationError(f"top: must be a whole number from 1 to 1000, got {raw!r}") from None
        if not 1 <= value <= 1000:
            raise ValidationError(f"top: must be from 1 to 1000, got {value}")
        return value


def caller_identity(req: func.HttpRequest, *, require_principal: bool = False) -> str:
    """The id App Service Authentication set (it strips client-sent copies of these headers).
    With REQUIRE_CLIENT_PRINCIPAL=true the full principal must be there too and agree."""
    user = (req.headers.get(IDENTITY_HEADER) or "").strip()
    if not user:
        raise Unauthenticated(f"Sign-in required: the {IDENTITY_HEADER} header is missing")
    if len(user) > MAX_USER_ID or any(ord(c) < 32 or ord(c) == 127 for c in user):
        raise Unauthenticated(f"The {IDENTITY_HEADER} header is not a valid principal id")
    if require_principal:
        _check_principal(req.headers.get(PRINCIPAL_HEADER) or "", user)
    return user


def _check_principal(raw: str, user: str) -> None:
    """X-MS-CLIENT-PRINCIPAL is base64 JSON: App Service's {"claims": [{"typ", "val"}]} or the
    {"userId"} form; one of its id claims must be the id header's value."""
    if not raw.strip():
        raise Unauthenticated(f"Sign-in required: the {PRINCIPAL_HEADER} header is missing")
    try:
        data = json.loads(base64.b64decode(raw.strip() + "=" * (-len(raw.strip()) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Unauthenticated(f"The {PRINCIPAL_HEADER} header is not base64 JSON") from None
    ids: set[str] = set()
    if isinstance(data, dict):
        if isinstance(data.get("userId"), str):
            ids.add(data["userId"])
        for claim in data.get("claims") or []:
            if isinstance(claim, dict) and claim.get("typ") in _ID_CLAIMS and isinstance(claim.get("val"), str):
                ids.add(claim["val"])
    if user not in ids:
        raise Unauthenticated(f"The {PRINCIPAL_HEADER} header does not agree with {IDENTITY_HEADER}")


def respond(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json", charset="utf-8")


def ok(data: Any, *, status: int = 200, continuation_token: str | None | bool = False) -> func.HttpResponse:
    body: dict[str, Any] = {"success": True, "data": data}
    if continuation_token is not False:
        body["continuationToken"] = continuation_token
    return respond(status, body)


def fail(error: ServiceError) -> func.HttpResponse:
    response = respond(error.status, {"success": False, "error": error.to_dict()})
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def handle(req: func.HttpRequest, handler: Callable[[Request], func.HttpResponse]) -> func.HttpResponse:
    """Run a handler: settings checked, caller identified, errors answered as the contract says."""
    try:
        app = get_app()
    except ConfigurationError as error:
        if error.message not in _config_error_logged:
            _config_error_logged.add(error.message)
            log.error("configuration error: %s", error.message)
        return fail(error)
    try:
        check_body_size(req.get_body() or b"")  # before anything else reads it
        check_content_type(req)
        return handler(Request(req, app))
    except ServiceError as error:
        if error.status >= 500:
            log.warning("%s: %s", error.code, error.message)
        return fail(error)
    except Exception:  # never a stack trace to the caller
        # The path only: the query carries the function key (`code=`), which must never be logged.
        log.exception("unhandled error in %s %s", req.method, urlsplit(req.url).path)
        return fail(ServiceError("Internal error"))
