"""Sign in with Microsoft (design §9): start the authorization-code flow, complete it in the callback.

The flow msal makes (state, nonce, PKCE verifier) stays server-side, encrypted, single use, for at
most ten minutes, tied to the integration and caller that started it; the integration also points
at the one flow that may complete it, so an older or foreign state never sets its tokens. The
callback is anonymous (the browser comes back from Entra ID with neither function key nor
identity): the state is the credential, which is why it is stored only as a hash. It is not
enough alone (RFC 9700 section 4.7): authorize also sets a binding cookie for the callback's path,
and the callback connects only the browser that carries it, or the person who started the sign-in
(their App Service identity header where authentication covers the callback). A callback from
anyone else changes nothing and leaves the state usable by its owner."""
from __future__ import annotations

import html
import json
import logging
import re
import secrets
import time
import warnings
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
import msal

from shared.api.integrations import load
from shared.app import App, get_app
from shared.bc.delegated import DELEGATED_SCOPES, entra_message, oauth_app, persistable
from shared.clock import to_iso
from shared.errors import ConfigurationError, ServiceError, ValidationError
from shared.http import Request, ok
from shared.models import AuthorizeBody, validate
from shared.storage.integrations import Integration
from shared.http import IDENTITY_HEADER
from shared.storage.oauth import PendingFlow

log = logging.getLogger(__name__)

FLOW_LIFETIME = timedelta(minutes=10)
#: The callback's route: the binding cookie is sent only there.
CALLBACK_PATH = "/api/oauth/callback"
BINDING_COOKIE = "bcsync_signin_"


def binding_cookie_name(flow_key: str) -> str:
    """One cookie per sign-in (named after its state's hash), so two sign-ins started in one
    browser do not overwrite each other's binding."""
    return BINDING_COOKIE + flow_key[:16]


def _binding_cookie(flow_key: str, value: str) -> str:
    max_age = int(FLOW_LIFETIME.total_seconds())
    return (f"{binding_cookie_name(flow_key)}={value}; Path={CALLBACK_PATH}; Max-Age={max_age}; "
            "HttpOnly; Secure; SameSite=Lax")


def _cookies(header: str) -> dict[str, str]:
    """name -> value from a Cookie header; anything malformed is skipped, never an error."""
    found: dict[str, str] = {}
    for part in header[:8192].split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name.startswith(BINDING_COOKIE):
            found.setdefault(name, value.strip().strip('"'))
    return found
_SAFE_TEXT = re.compile(r"[^\w .,:;'()/@+=-]")


def authorize(request: Request) -> func.HttpResponse:
    """POST .../dynamics/authorize -> the URL the person opens to sign in and consent."""
    app = request.app
    integration = load(request)
    if integration.authMode != "delegated":
        raise ValidationError(
            "authMode: this integration uses app credentials (client credentials); authorize is only for "
            "integrations created with authMode delegated"
        )
    body: AuthorizeBody = validate(AuthorizeBody, request.json() or {})
    client = oauth_app(app.settings, integration.tenantId)
    with warnings.catch_warnings():
        # msal recommends response_mode=form_post; §9 fixes a GET callback with the code in the
        # query, which is safe here: the code is single use, PKCE-bound and useless without our secret.
        warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended")
        flow = client.initiate_auth_code_flow(
            DELEGATED_SCOPES, redirect_uri=app.settings.oauth_redirect_uri, state=secrets.token_urlsafe(32),
            login_hint=body.loginHint,
        )
    now = app.clock.now()
    expires_at = now + FLOW_LIFETIME
    binding = secrets.token_urlsafe(32)  # the browser keeps it; storage keeps only its hash
    key = app.oauth_flows.add(user_id=integration.userId, integration_id=integration.id, flow=flow,
                              expires_at=expires_at, binding=binding)

    def point(current: Integration) -> None:
        current.oauthFlow = key  # only the newest sign-in may complete
        current.updatedAt = to_iso(now)

    app.integrations.update(integration.userId, integration.id, point)
    app.oauth_flows.prune(now)
    log.info("sign-in started for integration %s", integration.id)
    response = ok({"authorizationUrl": flow["auth_uri"], "expiresAt": to_iso(expires_at)})
    response.headers["Set-Cookie"] = _binding_cookie(key, binding)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the callback -------------------------------------------------------------------------------
def callback(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/oauth/callback?code=...&state=... (or ?error=...&state=...)."""
    wants_json = "application/json" in (req.headers.get("Accept") or "")
    try:
        app = get_app()
    except ConfigurationError as error:
        log.error("configuration error: %s", error.message)
        return _page(500, "Sign-in is not available", error.message, wants_json, code=error.code)
    try:
        return _complete(app, req, wants_json)
    except Exception:  # never a stack trace (or a code) to the browser
        log.exception("the sign-in callback failed")
        return _page(500, "Sign-in failed", "Internal error; start the sign-in again.", wants_json, code="internal_error")


def _invalid_state(wants_json: bool) -> func.HttpResponse:
    log.info("sign-in callback with an unknown, expired, used or replaced state")
    return _page(400, "This sign-in link is no longer valid",
                 "It is unknown, expired (after 10 minutes), already used, or replaced by a newer sign-in. "
                 "Start the sign-in again from the app.", wants_json, code="invalid_state")


def _complete(app: App, req: func.HttpRequest, wants_json: bool) -> func.HttpResponse:
    params: dict[str, str] = dict(req.params or {})
    pending = app.oauth_flows.find(params.get("state", ""), app.clock.now())
    integration = app.integrations.get(pending.user_id, pending.integration_id) if pending else None
    if pending is None:
        return _invalid_state(wants_json)
    if integration is None or integration.authMode != "delegated" or integration.oauthFlow != pending.key:
        app.oauth_flows.spend(pending)  # replaced by a newer sign-in or its integration is gone: dead either way
        return _invalid_state(wants_json)
    cookie = _cookies(req.headers.get("Cookie") or "").get(binding_cookie_name(pending.key))
    if not pending.bound_to(cookie=cookie, principal=(req.headers.get(IDENTITY_HEADER) or "").strip()):
        # Not the browser or person that started it (RFC 9700 §4.7): someone was sent the link.
        # Nothing changes and the state stays usable by its owner until it expires.
        log.warning("sign-in callback for integration %s from another browser refused", pending.integration_id)
        return _unbound(app, integration, wants_json)
    if not app.oauth_flows.spend(pending):
        return _invalid_state(wants_json)
    response = _redeem(app, pending, integration, params, wants_json)
    # The flow is spent: its binding cookie has nothing left to bind.
    response.headers["Set-Cookie"] = (f"{binding_cookie_name(pending.key)}=; Path={CALLBACK_PATH}; Max-Age=0; "
                                      "HttpOnly; Secure; SameSite=Lax")
    return response


def _redeem(app: App, pending: PendingFlow, integration: Integration, params: dict[str, str],
            wants_json: bool) -> func.HttpResponse:
    """The error Entra ID sent back, or the code exchanged for tokens (stored encrypted)."""
    if params.get("error"):
        denied = params["error"] == "access_denied"
        code = "authorization_denied" if denied else "authorization_failed"
        detail = _clean(f"{params['error']}: {params.get('error_description', '')}")
        message = ("The person declined the consent: nothing was connected" if denied
                   else f"Microsoft Entra ID answered the sign-in with an error ({detail})")
        _record(app, pending, error={"code": code, "message": message})
        return _finish(app, integration, "denied" if denied else "error", message, wants_json)
    if not params.get("code"):
        _record(app, pending, error={"code": "authorization_failed", "message": "Microsoft Entra ID sent no code back"})
        return _finish(app, integration, "error", "Microsoft Entra ID sent no code back", wants_json)
    cache = msal.SerializableTokenCache()
    try:
        client = oauth_app(app.settings, integration.tenantId, cache)
        result = client.acquire_token_by_auth_code_flow(pending.flow, params, scopes=DELEGATED_SCOPES)
    except ServiceError as error:
        _record(app, pending, error=error.to_dict())
        return _finish(app, integration, "error", error.message, wants_json)
    except (ValueError, RuntimeError) as error:  # msal: state or nonce mismatch
        message = f"The sign-in answer did not match the request ({type(error).__name__}); start again"
        _record(app, pending, error={"code": "authorization_failed", "message": message})
        return _finish(app, integration, "error", message, wants_json)
    if "access_token" not in result:
        message = f"Microsoft Entra ID refused the sign-in ({entra_message(result)})"
        _record(app, pending, error={"code": "authorization_failed", "message": message})
        return _finish(app, integration, "error", message, wants_json)
    app.token_caches.put(pending.user_id, pending.integration_id, persistable(cache), refreshed_ns=time.time_ns(), etag=None)
    claims: dict[str, Any] = result.get("id_token_claims") or {}
    user = str(claims.get("preferred_username") or claims.get("name") or "")[:256] or None
    _record(app, pending, user=user)
    log.info("sign-in completed for integration %s", pending.integration_id)
    return _finish(app, integration, "connected", "Business Central is connected.", wants_json)


def _record(app: App, pending: PendingFlow, *, error: dict[str, str] | None = None, user: str | None = None) -> None:
    """The outcome on the integration: the flow is spent either way; success signs it in."""
    now = to_iso(app.clock.now())

    def change(current: Integration) -> None:
        if current.oauthFlow != pending.key:
            return  # a newer sign-in or a disconnect came in between: leave it alone
        current.oauthFlow = None
        current.updatedAt = now
        if error is not None:
            current.lastError = {**error, "at": now}
            return
        current.status = "connected" if current.lastSyncedAt else "never_synced"
        current.lastError = None
        current.authorizedAt = now
        current.authorizedUser = user
        current.nextSyncAt = now

    app.integrations.update(pending.user_id, pending.integration_id, change)


def _unbound(app: App, integration: Integration, wants_json: bool) -> func.HttpResponse:
    message = ("This sign-in was started in another browser or by another person: open the sign-in from the "
               "app in the browser where you started it. Nothing was connected.")
    if app.settings.oauth_return_url:
        return _finish(app, integration, "error", message, wants_json)
    return _page(400, "This sign-in belongs to another browser", message, wants_json, code="sign_in_not_bound")


def _finish(app: App, integration: Integration, result: str, message: str, wants_json: bool) -> func.HttpResponse:
    """302 to OAUTH_RETURN_URL with the outcome, or a small page saying it."""
    return_url = app.settings.oauth_return_url
    if return_url:
        query = urlencode({"integrationId": integration.id, "result": result})
        return func.HttpResponse(status_code=302, headers={"Location": f"{return_url}{'&' if '?' in return_url else '?'}{query}",
                                                           "Cache-Control": "no-store"})
    if wants_json:
        return _json(200, {"success": True, "data": {"integrationId": integration.id, "result": result, "message": message}})
    title = {"connected": "Signed in", "denied": "Consent declined"}.get(result, "Sign-in failed")
    return _page(200, title, f"{message} You can close this window. (integration {integration.id}, result={result})", False)


def _page(status: int, title: str, text: str, wants_json: bool, *, code: str = "") -> func.HttpResponse:
    if wants_json:
        return _json(status, {"success": False, "error": {"code": code, "message": f"{title}: {text}"}})
    body = (f"<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(text)}</p></body></html>")
    return func.HttpResponse(body, status_code=status, mimetype="text/html", charset="utf-8",
                             headers={"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


def _json(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", charset="utf-8",
                             headers={"Cache-Control": "no-store"})


def _clean(text: str) -> str:
    """An error text from the query string (attacker-controlled): plain characters, short."""
    return _SAFE_TEXT.sub("", text.split(" Trace ID")[0])[:300]
