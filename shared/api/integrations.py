"""Integrations: create, list, get, update, delete (= disconnect)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import azure.functions as func

from shared.api.cursors import open_page, seal_page
from shared.app import App
from shared.bc.auth import TokenProvider
from shared.clock import parse_iso, to_iso
from shared.destinations import check_base_url, check_webhook_url
from shared.entities import ENTITY_TYPES
from shared.errors import ConflictError, NotFound, QuotaExceeded, ValidationError
from shared.http import Request, ok
from shared.keys import KEY_LAYOUT
from shared.models import DelegatedIntegrationCreate, IntegrationCreate, IntegrationUpdate, validate
from shared.realtime import subscriptions as realtime
from shared.storage.integrations import Integration
from shared.storage.quotas import SlotRepository
from shared.storage.state import TypeState
from shared.webhooks import new_secret as new_webhook_secret

WHERE_TO = ("tenantId", "environment", "companyId", "baseUrl")
#: A delegated sign-in is only good for the tenant, environment and host it was made for.
SIGN_IN_BOUND_TO = ("tenantId", "environment", "baseUrl")
#: Fields that decide where the stored secret is sent: changing one needs the secret again.
DESTINATION = ("tenantId", "environment", "baseUrl", "clientId")


def _where(field: str, value: str | None) -> str | None:
    """A WHERE_TO value as compared: GUIDs, tenant domains and environment names ignore case."""
    return value.lower() if value is not None and field != "baseUrl" else value


def check_destinations(app: App, body: object) -> None:
    """baseUrl on an allowed BC host, webhookUrl on a public https host (design.md section 12)."""
    fields = getattr(body, "model_fields_set", set())
    if "baseUrl" in fields:
        check_base_url(getattr(body, "baseUrl", None), app.settings.bc_allowed_hosts)
    if "webhookUrl" in fields:
        check_webhook_url(getattr(body, "webhookUrl", None), allow_private=app.settings.allow_private_webhooks)


def _count(app: App, user_id: str, stop_at: int) -> int:
    """The user's integrations (disconnected ones count too: they keep their data), up to `stop_at`."""
    count, token = 0, None
    while True:
        page, token = app.integrations.list_for_user(user_id, top=1000, continuation_token=token)
        count += len(page)
        if count >= stop_at or not token:
            return count


def _quota_error(limit: int) -> QuotaExceeded:
    return QuotaExceeded(f"This user already has {limit} integrations, the most allowed (MAX_INTEGRATIONS_PER_USER={limit})")


def _check_quota(app: App, user_id: str) -> None:
    """MAX_INTEGRATIONS_PER_USER, early (before any work); `_claim_slot` makes it exact."""
    limit = app.settings.max_integrations_per_user
    if _count(app, user_id, limit) >= limit:
        raise _quota_error(limit)


def _claim_slot(app: App, integration: Integration) -> str:
    """A numbered slot below the limit, won by one insert: parallel creates never exceed it."""
    limit = app.settings.max_integrations_per_user
    slot = SlotRepository(app.store).claim(integration.userId, integration.id,
                                           first=_count(app, integration.userId, limit), limit=limit)
    if slot is None:
        raise _quota_error(limit)
    return slot


def load(request: Request) -> Integration:
    """The caller's integration, or 404 (someone else's id is answered exactly like a missing one)."""
    integration = request.app.integrations.get(request.user_id, request.route.get("id", ""))
    if integration is None:
        raise NotFound("No integration with this id")
    return integration


def require_ready(integration: Integration) -> None:
    """409 authorization_required while nobody has signed in to a delegated integration
    (disconnected ones are left to the disconnected check)."""
    if integration.status == "disconnected" or integration.authMode != "delegated":
        return
    if integration.status == "authorization_required":
        raise ConflictError(
            f"Nobody has signed in for this integration yet: POST /api/integrations/{integration.id}/dynamics/authorize "
            "and open the authorizationUrl", code="authorization_required",
        )


def require_company(integration: Integration) -> None:
    """409 company_not_selected while a (delegated) integration has no companyId."""
    if integration.status != "disconnected" and not integration.companyId:
        raise ConflictError(
            f"No company is selected: list them with GET /api/integrations/{integration.id}/dynamics/companies, "
            "then PATCH companyId", code="company_not_selected",
        )


def view(app: App, integration: Integration, *, details: bool = False) -> dict[str, Any]:
    data = integration.to_api()
    data["realtime"] = realtime.view(app, integration)
    if details:
        data["statistics"] = app.stats.summary(integration.id, app.clock.now())
        data["syncInProgress"] = integration.activeRunId is not None
    return data


def _seal(app: App, integration: Integration, secret: str, *, webhook: bool = False) -> str:
    context = integration.secret_context + (":webhook" if webhook else "")
    return app.box.encrypt(secret, context=context)


def _new_webhook_secret(app: App, integration: Integration) -> str:
    secret = new_webhook_secret()  # whsec_ + standard base64: the Standard Webhooks libraries take it as is
    integration.webhookSecretEnc = _seal(app, integration, secret, webhook=True)
    return secret


def _ensure_single(app: App, integration: Integration) -> None:
    """One integration per company and user: a second one would double every record's owner."""
    if not integration.companyId:
        return  # delegated, company not chosen yet: checked when it is
    token = None
    while True:
        page, token = app.integrations.list_for_user(integration.userId, top=1000, continuation_token=token)
        for other in page:
            same = all(_where(f, getattr(other, f)) == _where(f, getattr(integration, f)) for f in WHERE_TO)
            if other.id != integration.id and same:
                raise ConflictError(
                    f"Integration {other.id} already connects this company; update it instead", code="integration_exists"
                )
        if not token:
            return


def create(request: Request) -> func.HttpResponse:
    app = request.app
    raw = request.json(required=True) or {}
    delegated = raw.get("authMode") == "delegated"
    body: IntegrationCreate = validate(DelegatedIntegrationCreate if delegated else IntegrationCreate, raw)
    check_destinations(app, body)
    _check_quota(app, request.user_id)
    now = to_iso(app.clock.now())
    integration = Integration(
        id=Integration.new_id(),
        userId=request.user_id,
        name=body.name,
        tenantId=body.tenantId.lower(),
        environment=body.environment,
        companyId=(body.companyId or "").lower(),
        clientId="" if delegated else body.clientId.lower(),
        authMode="delegated" if delegated else "app",
        status="authorization_required" if delegated else "never_synced",
        entities=list(body.entities),
        syncIntervalMinutes=body.syncIntervalMinutes,
        baseUrl=body.baseUrl,
        fieldMappings={k: [m.model_dump() for m in v] for k, v in body.fieldMappings.items()},
        webhookUrl=body.webhookUrl,
        realtime=body.realtime,
        nextSyncAt=now,
        keyLayout=KEY_LAYOUT,  # nothing of it is under a legacy key: its runs skip the migration
        createdAt=now,
        updatedAt=now,
    )
    _ensure_single(app, integration)
    if not delegated:
        integration.clientSecretEnc = _seal(app, integration, body.clientSecret)
    webhook_secret = _new_webhook_secret(app, integration) if integration.webhookUrl else None
    slot = _claim_slot(app, integration)
    try:
        app.integrations.upsert(integration)
    except Exception:
        SlotRepository(app.store).release(integration.userId, slot)
        raise
    if integration.realtime:
        realtime.apply(app, integration)  # BC's handshake reaches PUBLIC_BASE_URL meanwhile
    data = view(app, integration)
    if webhook_secret:
        data["webhookSecret"] = webhook_secret  # shown once, never again
    return ok(data, status=201)


def list_(request: Request) -> func.HttpResponse:
    settings = request.app.settings
    top = request.top()
    after = open_page(settings, request.params.get("continuationToken"), kind="integrations", scope=request.user_id)
    items, token = request.app.integrations.list_for_user(request.user_id, top=top, continuation_token=after)
    return ok([view(request.app, i) for i in items], continuation_token=seal_page(settings, "integrations", request.user_id, token))


def get(request: Request) -> func.HttpResponse:
    return ok(view(request.app, load(request), details=True))


def update(request: Request) -> func.HttpResponse:
    app = request.app
    current = load(request)
    body: IntegrationUpdate = validate(IntegrationUpdate, request.json(required=True) or {})
    fields = body.model_fields_set
    check_destinations(app, body)
    webhook_secret: list[str] = []
    moved = any(f in fields and _where(f, getattr(body, f)) != _where(f, getattr(current, f)) for f in WHERE_TO)
    delegated = current.authMode == "delegated"
    if delegated and fields & {"clientId", "clientSecret"}:
        name = "clientId" if "clientId" in fields else "clientSecret"
        raise ValidationError(f"{name}: a delegated integration has no app credentials; sign in with POST .../dynamics/authorize")
    signed_out = delegated and any(
        f in fields and _where(f, getattr(body, f)) != _where(f, getattr(current, f)) for f in SIGN_IN_BOUND_TO
    )
    redirected = [f for f in DESTINATION if f in fields and _where(f, getattr(body, f)) != _where(f, getattr(current, f))]
    if not delegated and redirected and "clientSecret" not in fields:
        # Otherwise the stored secret (and the token it buys) would go to a new destination.
        raise ValidationError(f"clientSecret: is required when {', '.join(redirected)} changes; send the secret again in the same body")

    def change(integration: Integration) -> None:
        for name in fields - {"clientSecret", "fieldMappings"}:
            setattr(integration, name, getattr(body, name))
        if "companyId" in fields:
            integration.companyId = integration.companyId.lower()
            if integration.companyId != current.companyId:
                integration.companyName = None  # learned again from the new company (test or sync)
        if "clientId" in fields:
            integration.clientId = integration.clientId.lower()
        if "tenantId" in fields:
            integration.tenantId = integration.tenantId.lower()
        if "fieldMappings" in fields:
            integration.fieldMappings = {k: [m.model_dump() for m in v] for k, v in (body.fieldMappings or {}).items()}
        if "clientSecret" in fields:
            integration.clientSecretEnc = _seal(app, integration, body.clientSecret or "")
        if "webhookUrl" in fields:
            webhook_secret.clear()
            if integration.webhookUrl:
                webhook_secret.append(_new_webhook_secret(app, integration))
            else:
                integration.webhookSecretEnc = None
        if fields & {"clientId", "clientSecret", "tenantId"} and integration.clientSecretEnc:
            if integration.status in ("disconnected", "auth_expired", "error"):
                integration.status = "connected" if integration.lastSyncedAt else "never_synced"
                integration.lastError = None
                integration.nextSyncAt = to_iso(app.clock.now())
        if moved:
            # Runs in flight for the old target stop at their next page and save nothing
            # (shared/runs/cancel.py); a queued one is cancelled when its slice comes up.
            integration.configVersion += 1
            integration.activeRunId = None
        if signed_out and integration.status != "disconnected":
            # The stored sign-in belongs to the old tenant or host: never send it to the new one.
            integration.status = "authorization_required"
            integration.oauthFlow = None
            integration.authorizedAt = integration.authorizedUser = None
        if "syncIntervalMinutes" in fields and integration.nextSyncAt:
            latest = app.clock.now() + timedelta(minutes=integration.syncIntervalMinutes)
            if parse_iso(integration.nextSyncAt) > latest:
                integration.nextSyncAt = to_iso(latest)
        integration.updatedAt = to_iso(app.clock.now())

    preview = Integration.from_entity(current.to_entity())
    change(preview)
    if moved:
        _ensure_single(app, preview)
    if signed_out:
        app.token_caches.delete(current.userId, current.id)  # before the new destination is saved
    updated = app.integrations.update(current.userId, current.id, change)
    if updated is None:
        raise NotFound("No integration with this id")
    if moved:
        # Another company (or environment): the old watermarks would skip its records.
        for key in ENTITY_TYPES:
            for state_key in (key, f"{key}.stock", f"{key}.since", f"{key}.reconcile"):
                app.states.save(updated.id, state_key, TypeState(), version=updated.configVersion)
    if current.realtime or updated.realtime:
        realtime.apply(app, updated, previous=current)
    data = view(app, updated, details=True)
    if webhook_secret:
        data["webhookSecret"] = webhook_secret[-1]
    return ok(data)


def delete(request: Request) -> func.HttpResponse:
    """Disconnect: credentials erased, schedule stopped; the integration, logs and data stay.
    A run in flight sees the status at its next page and stops there (shared/runs/cancel.py);
    watermarks stay, so a reconnect to the same company goes on from them."""
    app = request.app
    current = load(request)
    if current.clientSecretEnc:
        try:  # drop any token this process still holds for these credentials
            TokenProvider(
                authority_host=app.settings.authority_host,
                tenant_id=current.tenantId,
                client_id=current.clientId,
                client_secret=app.client_secret(current),
            ).forget()
        except Exception:  # noqa: BLE001 - nothing to forget is fine
            pass
    realtime.remove_all(app, current)  # while the credentials still exist

    if current.authMode == "delegated":
        app.token_caches.delete(current.userId, current.id)  # the refresh token is erased

    def change(integration: Integration) -> None:
        integration.status = "disconnected"
        integration.oauthFlow = None  # a sign-in started before the disconnect cannot complete
        integration.clientSecretEnc = None
        integration.webhookSecretEnc = None
        integration.nextSyncAt = None
        integration.updatedAt = to_iso(app.clock.now())

    updated = app.integrations.update(current.userId, current.id, change)
    return ok(view(app, updated or current))
