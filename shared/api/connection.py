"""Test connection and company discovery: each BC step named when it fails."""
from __future__ import annotations

from typing import Any

import azure.functions as func

from shared.api.cursors import open_page, seal_page
from shared.api.integrations import check_destinations, load, require_company, require_ready
from shared.bc.client import BCClient
from shared.clock import to_iso
from shared.entities import ENTITY_TYPES
from shared.errors import BCAuthError, BCError, ConflictError
from shared.http import Request, ok
from shared.models import CompanyDiscovery, validate
from shared.storage.integrations import Integration
from shared.storage.ratelimits import check_discovery

COUNT_NAMES = {"suppliers": "vendorCount", "products": "itemCount", "customers": "customerCount", "salesOrders": "salesOrderCount", "ledgerEntries": "ledgerEntryCount"}


def test_connection(request: Request) -> func.HttpResponse:
    app = request.app
    integration = load(request)
    if integration.status == "disconnected":
        raise ConflictError("The integration is disconnected: PATCH new credentials to reconnect it", code="integration_disconnected")
    require_ready(integration)
    require_company(integration)
    try:
        with app.bc_client(integration) as client:
            data = _probe(client, integration)
    except BCError as error:
        _record(request, integration, error)
        raise
    _record(request, integration, None)
    return ok(data)


def _probe(client: BCClient, integration: Integration) -> dict[str, Any]:
    client.authenticate()  # step: authentication
    company = client.get_company()  # steps: reachability, company, permission
    counts: dict[str, int] = {}
    for key in dict.fromkeys(["suppliers", "products", *integration.entities]):
        counts[key] = client.count(ENTITY_TYPES[key].entity_set)
    problems = []
    for key, mappings in (integration.fieldMappings or {}).items():
        if not mappings or key not in integration.entities:
            continue
        sample = client.first(ENTITY_TYPES[key].entity_set)
        if sample is None:
            problems.append(f"fieldMappings.{key}: BC has no {ENTITY_TYPES[key].entity_set} yet, so the mapped fields cannot be checked")
            continue
        for mapping in mappings:
            if mapping["source"] not in sample:
                problems.append(
                    f"fieldMappings.{key}: BC does not return the field '{mapping['source']}' on "
                    f"{ENTITY_TYPES[key].entity_set} (is the extension that adds it installed and published in the API?)"
                )
    data: dict[str, Any] = {
        "connected": True,
        "company": company.get("displayName") or company.get("name"),
        "companyId": company.get("id"),
        "environment": integration.environment,
    }
    data.update({COUNT_NAMES[k]: v for k, v in counts.items()})
    data["counts"] = counts
    data["warnings"] = problems
    return data


def _record(request: Request, integration: Integration, error: BCError | None) -> None:
    """A test tells the truth about the connection: auth failures show as auth_expired."""
    now = to_iso(request.app.clock.now())

    def change(current: Integration) -> None:
        if current.status == "disconnected":
            return
        if error is None:
            if current.status in ("auth_expired", "error"):
                current.status = "connected" if current.lastSyncedAt else "never_synced"
            return
        if isinstance(error, BCAuthError):
            current.status = "auth_expired"
        current.lastError = {"code": error.code, "message": error.message, "at": now}

    request.app.integrations.update(integration.userId, integration.id, change)


def companies(request: Request) -> func.HttpResponse:
    """The companies the integration's app registration (or, delegated, the signed-in person)
    can see in its environment."""
    integration = load(request)
    top = request.top()
    after = open_page(request.app.settings, request.params.get("continuationToken"), kind="companies", scope=integration.id)
    if integration.status == "disconnected":
        raise ConflictError("The integration is disconnected: PATCH new credentials to reconnect it", code="integration_disconnected")
    require_ready(integration)
    try:
        with request.app.bc_client(integration) as client:
            listed = sorted((_company(c) for c in client.list_companies()), key=lambda c: str(c["id"] or ""))
    except BCAuthError as error:
        if integration.authMode == "delegated":
            _record(request, integration, error)  # an expired sign-in shows as auth_expired here too
        raise
    # BC answers the whole (short) list; it is paged here like every list, by id, so a page
    # boundary holds even when companies are added or removed between pages.
    remaining = [c for c in listed if after is None or str(c["id"] or "") > after]
    page = remaining[:top]
    following = str(page[-1]["id"] or "") if len(remaining) > top else None
    return ok(page, continuation_token=seal_page(request.app.settings, "companies", integration.id, following))


def discover_companies(request: Request) -> func.HttpResponse:
    """Before an integration exists: list companies for credentials given in the body."""
    body: CompanyDiscovery = validate(CompanyDiscovery, request.json(required=True) or {})
    check_destinations(request.app, body)
    check_discovery(request.app, request.user_id)  # 429 beyond DISCOVERIES_PER_HOUR per caller
    with request.app.bc_client_for(
        tenant_id=body.tenantId, environment=body.environment, client_id=body.clientId, client_secret=body.clientSecret,
        base_url=body.baseUrl, cache_tokens=False,  # guesses must not crowd out real tenants' cached tokens
    ) as client:
        return ok([_company(c) for c in client.list_companies()])


def _company(raw: dict[str, Any]) -> dict[str, Any]:
    return {"id": raw.get("id"), "name": raw.get("name"), "displayName": raw.get("displayName") or raw.get("name")}
