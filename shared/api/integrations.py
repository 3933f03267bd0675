"""Integrations: create, list, get, update, delete (= disconnect)."""
from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import azure.functions as func

from shared.app import App
from shared.bc.auth import TokenProvider
from shared.clock import parse_iso, to_iso
from shared.entities import ENTITY_TYPES
from shared.errors import ConflictError, NotFound
from shared.http import Request, ok
from shared.models import IntegrationCreate, IntegrationUpdate, validate
from shared.realtime import subscriptions as realtime
from shared.storage.integrations import Integration
from shared.storage.state import TypeState

WHERE_TO = ("tenantId", "environment", "companyId", "baseUrl")


def _where(field: str, value: str | None) -> str | None:
    """A WHERE_TO value as compared: GUIDs, tenant domains and environment names ignore case."""
    return value.lower() if value is not None and field != "baseUrl" else value


def load(request: Request) -> Integration:
    """The caller's integration, or 404 (someone else's id is answered exactly like a missing one)."""
    integration = request.app.integrations.get(request.user_id, request.route.get("id", ""))
    if integration is None:
        raise NotFound("No integration with this id")
    return integration


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
    secret = "whsec_" + secrets.token_urlsafe(32)
    integration.webhookSecretEnc = _seal(app, integration, secret, webhook=True)
    return secret


def _ensure_single(app: App, integration: Integration) -> None:
    """One integration per company and user: a second one would double every record's owner."""
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
    body: IntegrationCreate = validate(IntegrationCreate, request.json(required=True) or {})
    now = to_iso(app.clock.now())
    integration = Integration(
        id=Integration.new_id(),
        userId=request.user_id,
        name=body.name,
        tenantId=body.tenantId.lower(),
        environment=body.environment,
        companyId=body.companyId.lower(),
        clientId=body.clientId.lower(),
        entities=list(body.entities),
        syncIntervalMinutes=body.syncIntervalMinutes,
        baseUrl=body.baseUrl,
        fieldMappings={k: [m.model_dump() for m in v] for k, v in body.fieldMappings.items()},
        webhookUrl=body.webhookUrl,
        realtime=body.realtime,
        nextSyncAt=now,
        createdAt=now,
        updatedAt=now,
    )
    _ensure_single(app, integration)
    integration.clientSecretEnc = _seal(app, integration, body.clientSecret)
    webhook_secret = _new_webhook_secret(app, integration) if integration.webhookUrl else None
    app.integrations.upsert(integration)
    if integration.realtime:
        realtime.apply(app, integration)  # BC's handshake reaches PUBLIC_BASE_URL meanwhile
    data = view(app, integration)
    if webhook_secret:
        data["webhookSecret"] = webhook_secret  # shown once, never again
    return ok(data, status=201)


def list_(request: Request) -> func.HttpResponse:
    items, token = request.app.integrations.list_for_user(
        request.user_id, top=request.top(), continuation_token=request.params.get("continuationToken")
    )
    return ok([view(request.app, i) for i in items], continuation_token=token)


def get(request: Request) -> func.HttpResponse:
    return ok(view(request.app, load(request), details=True))


def update(request: Request) -> func.HttpResponse:
    app = request.app
    current = load(request)
    body: IntegrationUpdate = validate(IntegrationUpdate, request.json(required=True) or {})
    fields = body.model_fields_set
    webhook_secret: list[str] = []
    moved = any(f in fields and _where(f, getattr(body, f)) != _where(f, getattr(current, f)) for f in WHERE_TO)

    def change(integration: Integration) -> None:
        for name in fields - {"clientSecret", "fieldMappings"}:
            setattr(integration, name, getattr(body, name))
        if "companyId" in fields:
            integration.companyId = integration.companyId.lower()
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
        if "syncIntervalMinutes" in fields and integration.nextSyncAt:
            latest = app.clock.now() + timedelta(minutes=integration.syncIntervalMinutes)
            if parse_iso(integration.nextSyncAt) > latest:
                integration.nextSyncAt = to_iso(latest)
        integration.updatedAt = to_iso(app.clock.now())

    preview = Integration.from_entity(current.to_entity())
    change(preview)
    if moved:
        _ensure_single(app, preview)
    updated = app.integrations.update(current.userId, current.id, change)
    if updated is None:
        raise NotFound("No integration with this id")
    if moved:
        # Another company (or environment): the old watermarks would skip its records.
        for key in ENTITY_TYPES:
            for state_key in (key, f"{key}.stock"):
                app.states.save(updated.id, state_key, TypeState())
    if current.realtime or updated.realtime:
        realtime.apply(app, updated, previous=current)
    data = view(app, updated, details=True)
    if webhook_secret:
        data["webhookSecret"] = webhook_secret[-1]
    return ok(data)


def delete(request: Request) -> func.HttpResponse:
    """Disconnect: credentials erased, schedule stopped; the integration, logs and data stay."""
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

    def change(integration: Integration) -> None:
        integration.status = "disconnected"
        integration.clientSecretEnc = None
        integration.webhookSecretEnc = None
        integration.nextSyncAt = None
        integration.updatedAt = to_iso(app.clock.now())

    updated = app.integrations.update(current.userId, current.id, change)
    return ok(view(app, updated or current))
