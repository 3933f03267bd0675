"""The OpenAPI 3.1 description of the HTTP API, built from the pydantic request models.

Served at GET /api/openapi.json and checked into the repository as openapi.yaml (a test keeps
the two equal); the schemathesis run in the test suite fuzzes every operation against it."""
from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from shared.entities import ENTITY_TYPES, LOG_TYPES
from shared.models import AuthorizeBody, CompanyDiscovery, IntegrationCreate, IntegrationUpdate, SyncBody

REF = "#/components/schemas/{model}"
PAGE_OR_JSON = {"text/html": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}}
NULLABLE_STRING = {"type": ["string", "null"]}
ERROR_CODES = {
    400: "invalid_json or validation_error: the message names the field and the rule",
    401: "unauthenticated: no or an invalid caller identity",
    403: "quota_exceeded",
    404: "not_found (also someone else's integration)",
    405: "method_not_allowed",
    409: "sync_in_progress, integration_disconnected or integration_exists",
    410: "cursor_expired: the cursor points before the change rows kept (CHANGE_FEED_RETENTION_DAYS); read again without a cursor",
    413: "payload_too_large: a body over 1 MiB",
    429: "rate_limited: see Retry-After",
    500: "configuration_error: a setting is missing or malformed",
    502: "bc_auth_failed, bc_forbidden, bc_company_not_found, bc_unavailable or bc_error",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _bc_notifications() -> dict[str, Any]:
    """Business Central's webhook calls (design.md §10): anonymous, the clientState is the credential."""
    token = {"name": "validationToken", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "BC's handshake (on create and on every renewal): answered 200 text/plain with the token"}
    handshake = {"description": "The validation token, echoed", "content": {"text/plain": {"schema": {"type": "string"}}}}
    error = {"content": {"application/json": {"schema": _ref("Error")}}}
    responses = {"200": handshake, "400": {"description": "invalid_json or a bad validationToken", **error},
                 "405": {"description": "a GET without validationToken", **error}}
    notification = {"type": "object", "required": ["value"], "properties": {"value": {"type": "array", "items": {
        "type": "object", "properties": {k: {"type": "string"} for k in (
            "subscriptionId", "clientState", "expirationDateTime", "resource", "changeType", "lastModifiedDateTime")}}}}}
    accepted = {"description": "Taken: deltas queued, deletes flagged", "content": {"application/json": {"schema": _success(
        {"type": "object", "properties": {"accepted": {"type": "integer"}, "outcome": {"type": "object"}}})}}}
    post_responses = {**responses, "202": accepted,
                      "401": {"description": "no item names a known subscription with its clientState", **error},
                      "413": {"description": "payload_too_large: a body over 1 MiB", **error},
                      "503": {"description": "the queue or storage is unavailable: BC retries", **error}}
    return {
        "get": {"operationId": "bcNotificationHandshake", "security": [], "parameters": [token], "responses": responses},
        "post": {"operationId": "bcNotification", "security": [], "parameters": [token],
                 "requestBody": {"required": False, "content": {"application/json": {"schema": notification}}},
                 "responses": post_responses},
    }


def _success(data: dict[str, Any], *, paged: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"success": {"const": True}, "data": data}
    required = ["success", "data"]
    if paged:
        properties["continuationToken"] = NULLABLE_STRING
        required.append("continuationToken")
    return {"type": "object", "required": required, "properties": properties}


def _responses(ok: int, data: dict[str, Any], errors: list[int], *, paged: bool = False, description: str = "Success") -> dict[str, Any]:
    responses: dict[str, Any] = {str(ok): {"description": description, "content": {"application/json": {"schema": _success(data, paged=paged)}}}}
    for status in sorted(set(errors) | {401, 500}):
        response: dict[str, Any] = {"description": ERROR_CODES[status], "content": {"application/json": {"schema": _ref("Error")}}}
        if status == 429:
            response["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
        responses[str(status)] = response
    return responses


def _body(model: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(model)}}}


def _param(name: str, where: str = "query", schema: dict[str, Any] | None = None, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema or {"type": "string"}}


ID = _param("id", "path", {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[A-Za-z0-9-]+$"})
TOP = _param("top", schema={"type": "integer", "minimum": 1, "maximum": 1000})
TOKEN = _param("continuationToken")

INTEGRATION = {
    "type": "object",
    "required": ["id", "name", "tenantId", "companyId", "clientId", "environment", "entities", "syncIntervalMinutes",
                 "status", "hasClientSecret", "hasWebhookSecret"],
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "tenantId": {"type": "string"}, "companyId": {"type": "string"},
        "clientId": {"type": "string"}, "environment": {"type": "string"}, "entities": {"type": "array", "items": {"type": "string"}},
        "syncIntervalMinutes": {"type": "integer"}, "baseUrl": NULLABLE_STRING, "webhookUrl": NULLABLE_STRING,
        "fieldMappings": {"type": "object"},
        "status": {"enum": ["never_synced", "connected", "auth_expired", "error", "disconnected", "authorization_required"]},
        "lastSyncedAt": NULLABLE_STRING, "lastError": {"type": ["object", "null"]}, "lastRun": {"type": ["object", "null"]},
        "nextSyncAt": NULLABLE_STRING, "createdAt": NULLABLE_STRING, "updatedAt": NULLABLE_STRING,
        "configVersion": {"type": "integer", "description": "bumped when the integration points elsewhere; runs of an older version stop"},
        "lastReconcileAt": NULLABLE_STRING,
        "hasClientSecret": {"type": "boolean"}, "hasWebhookSecret": {"type": "boolean"},
        "webhookSecret": {"type": "string", "description": "answered once, by the create or a PATCH that sets webhookUrl"},
        "statistics": {"type": "object"}, "syncInProgress": {"type": "boolean"},
        "realtime": {"type": "object", "required": ["enabled", "subscriptions"], "properties": {
            "enabled": {"type": "boolean"},
            "subscriptions": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "status": {"enum": ["active", "failed"]}, "expiresAt": NULLABLE_STRING, "error": {"type": ["object", "null"]}}}}}},
    },
    "not": {"anyOf": [{"required": ["clientSecret"]}, {"required": ["clientSecretEnc"]}, {"required": ["webhookSecretEnc"]}]},
}
COMPANY = {"type": "object", "required": ["id"], "properties": {"id": {"type": ["string", "null"]}, "name": {"type": ["string", "null"]},
                                                                "displayName": {"type": ["string", "null"]}}}
LOG_ENTRY = {
    "type": "object",
    "required": ["id", "integrationId", "entityType", "status", "recordsAffected", "createdAt"],
    "properties": {"id": {"type": "string"}, "integrationId": {"type": "string"}, "entityType": {"enum": list(LOG_TYPES)},
                   "action": {"type": "string"}, "status": {"enum": ["SUCCESS", "PARTIAL", "FAILED"]},
                   "recordsAffected": {"type": "integer"}, "metadata": {"type": "object"}, "createdAt": {"type": "string"}},
}
DELIVERY = {
    "type": "object",
    "required": ["id", "event", "url", "status", "attempts", "createdAt"],
    "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "url": {"type": "string"},
                   "status": {"enum": ["pending", "delivered", "failed"]}, "attempts": {"type": "array"},
                   "nextAttemptAt": NULLABLE_STRING, "createdAt": {"type": "string"}, "payload": {"type": "object"}},
}
RUN = {
    "type": "object",
    "required": ["runId", "integrationId", "status", "trigger", "mode", "entities"],
    "properties": {"runId": {"type": "string"}, "integrationId": {"type": "string"},
                   "status": {"enum": ["queued", "running", "succeeded", "failed"]}, "trigger": {"type": "string"},
                   "mode": {"type": "string"}, "modifiedSince": NULLABLE_STRING, "entities": {"type": "array", "items": {"type": "string"}},
                   "createdAt": NULLABLE_STRING, "startedAt": NULLABLE_STRING, "finishedAt": NULLABLE_STRING,
                   "progress": {"type": "object"}, "counts": {"type": "object"}, "error": {"type": ["object", "null"]},
                   "slices": {"type": ["integer", "null"]}, "bcRequests": {"type": ["integer", "null"]}},
}
# -- read API and change feed (design.md §13) --
PLATFORM_RECORD = {
    "type": "object",
    "description": "The stored platform record: mapped fields and mapped custom fields (fieldMappings targets); sales orders "
                   "carry `lines`. Storage internals (keys, contentHash, changeKey, ETags) are left out.",
    "required": ["externalId", "externalSystem", "userId", "integrationId", "syncStatus", "lastSyncedAt"],
    "properties": {
        "externalId": {"type": "string"}, "externalSystem": {"const": "dynamics_bc"}, "userId": {"type": "string"},
        "integrationId": {"type": "string"}, "syncStatus": {"enum": ["pending", "synced", "error", "conflict"]},
        "syncError": {"type": "string", "description": "why syncStatus is error"},
        "lastSyncedAt": {"type": "string"}, "sourceModifiedAt": {"type": "string"},
        "deletedInBC": {"type": "boolean"}, "deletedAt": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "object", "required": ["externalId", "orderExternalId"],
                                             "properties": {"externalId": {"type": "string"}, "orderExternalId": {"type": "string"}}}},
    },
    "not": {"anyOf": [{"required": ["PartitionKey"]}, {"required": ["RowKey"]}, {"required": ["contentHash"]}, {"required": ["changeKey"]}]},
}
CHANGE = {
    "type": "object",
    "required": ["externalId", "changedAt", "record"],
    "properties": {"externalId": {"type": "string"},
                   "changedAt": {"type": "string", "description": "when the change was written (the writing instance's clock)"},
                   "record": _ref("PlatformRecord")},
}
DATA_TYPE = _param("dataType", "path", {"enum": list(ENTITY_TYPES)})
CHANGES_PAGE = {
    "type": "object",
    "required": ["success", "data", "cursor", "hasMore"],
    "properties": {
        "success": {"const": True}, "data": {"type": "array", "items": _ref("Change")},
        "cursor": {"type": "string", "description": "on every page, just past what the page read; asked again it returns the same changes or later ones, never fewer"},
        "hasMore": {"type": "boolean", "description": "more changes can be read now with this cursor; false: caught up, poll later with it"},
    },
}
ERROR = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {"success": {"const": False},
                   "error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": {"type": "string", "pattern": "^[a-z_]+$"}, "message": {"type": "string"},
                                            "step": {"type": "string"}}}},
}


def build() -> dict[str, Any]:
    """The whole document (deterministic, so the checked-in openapi.yaml can be compared)."""
    _, generated = models_json_schema(
        [(m, "validation") for m in (IntegrationCreate, IntegrationUpdate, CompanyDiscovery, SyncBody, AuthorizeBody)], ref_template=REF
    )
    schemas: dict[str, Any] = dict(generated.get("$defs", {}))
    schemas.update({"Integration": INTEGRATION, "Company": COMPANY, "SyncLogEntry": LOG_ENTRY, "WebhookDelivery": DELIVERY,
                    "SyncRun": RUN, "Error": ERROR, "PlatformRecord": PLATFORM_RECORD, "Change": CHANGE})
    integration, paged_integrations = _ref("Integration"), {"type": "array", "items": _ref("Integration")}
    counts = {"type": "object", "additionalProperties": {"type": "object", "properties": {
        "created": {"type": "integer"}, "updated": {"type": "integer"}, "errors": {"type": "integer"}}}}
    test_result = {"type": "object", "required": ["connected"], "properties": {"connected": {"const": True}, "company": NULLABLE_STRING}}
    companies = {"type": "array", "items": _ref("Company")}
    paths: dict[str, Any] = {
        "/integrations": {
            "post": {"operationId": "createIntegration", "requestBody": _body("IntegrationCreate"),
                     "responses": _responses(201, integration, [400, 403, 409, 413])},
            "get": {"operationId": "listIntegrations", "parameters": [TOP, TOKEN],
                    "responses": _responses(200, paged_integrations, [400], paged=True)},
        },
        "/integrations/{id}": {
            "parameters": [ID],
            "get": {"operationId": "getIntegration", "responses": _responses(200, integration, [404])},
            "patch": {"operationId": "updateIntegration", "requestBody": _body("IntegrationUpdate"),
                      "responses": _responses(200, integration, [400, 404, 409, 413])},
            "delete": {"operationId": "disconnectIntegration", "responses": _responses(200, integration, [404])},
        },
        "/integrations/{id}/dynamics/sync": {
            "parameters": [ID],
            "post": {"operationId": "syncIntegration", "requestBody": _body("SyncBody", required=False),
                     "parameters": [_param("Prefer", "header", {"enum": ["respond-async"]})],
                     "responses": {**_responses(200, counts, [400, 404, 409, 413, 429, 502]), "202": {
                         "description": "Prefer: respond-async: the run is queued; follow Location",
                         "headers": {"Location": {"schema": {"type": "string"}}, "Retry-After": {"schema": {"type": "string"}}},
                         "content": {"application/json": {"schema": _success({"type": "object", "required": ["runId", "status"],
                                                                                "properties": {"runId": {"type": "string"},
                                                                                               "status": {"type": "string"}}})}}}}},
        },
        "/integrations/{id}/dynamics/test": {
            "parameters": [ID],
            "post": {"operationId": "testConnection", "responses": _responses(200, test_result, [404, 409, 502])},
        },
        "/integrations/{id}/dynamics/companies": {
            "parameters": [ID],
            "get": {"operationId": "listCompanies", "parameters": [TOP, TOKEN],
                    "responses": _responses(200, companies, [400, 404, 409, 502], paged=True)},
        },
        "/dynamics/companies": {
            "post": {"operationId": "discoverCompanies", "requestBody": _body("CompanyDiscovery"),
                     "responses": _responses(200, companies, [400, 413, 429, 502])},
        },
        "/integrations/{id}/sync-runs": {
            "parameters": [ID],
            "get": {"operationId": "listSyncRuns", "parameters": [TOP, TOKEN],
                    "responses": _responses(200, {"type": "array", "items": _ref("SyncRun")}, [400, 404], paged=True)},
        },
        "/integrations/{id}/sync-runs/{runId}": {
            "parameters": [ID, _param("runId", "path", {"type": "string", "minLength": 1, "maxLength": 100})],
            "get": {"operationId": "getSyncRun", "responses": _responses(200, _ref("SyncRun"), [404])},
        },
        "/integrations/{id}/sync-logs": {
            "parameters": [ID],
            "get": {"operationId": "listSyncLogs",
                    "parameters": [_param("entityType", schema={"enum": list(LOG_TYPES)}),
                                   _param("status", schema={"enum": ["SUCCESS", "PARTIAL", "FAILED"]}),
                                   _param("since", schema={"type": "string", "format": "date-time"}), TOP, TOKEN],
                    "responses": _responses(200, {"type": "array", "items": _ref("SyncLogEntry")}, [400, 404], paged=True)},
        },
        "/integrations/{id}/dynamics/authorize": {
            "parameters": [ID],
            "post": {"operationId": "authorizeIntegration", "requestBody": _body("AuthorizeBody", required=False),
                     "responses": _responses(200, {"type": "object", "required": ["authorizationUrl", "expiresAt"],
                                                   "properties": {"authorizationUrl": {"type": "string"}, "expiresAt": {"type": "string"}}},
                                             [400, 404, 413])},
        },
        "/oauth/callback": {
            "get": {"operationId": "oauthCallback", "security": [],
                    "description": "Where Entra ID sends the browser back (anonymous: the single-use state is the credential).",
                    "parameters": [_param("code"), _param("state"), _param("error"), _param("error_description")],
                    "responses": {
                        "200": {"description": "the outcome as a small page (or JSON with Accept: application/json)", "content": PAGE_OR_JSON},
                        "302": {"description": "to OAUTH_RETURN_URL?integrationId=..&result=connected|denied|error",
                                "headers": {"Location": {"schema": {"type": "string"}}}},
                        "400": {"description": "unknown, expired or used state: nothing changed", "content": PAGE_OR_JSON},
                        "500": {"description": "configuration_error", "content": PAGE_OR_JSON}}},
        },
        "/portal/{path}": {
            "parameters": [_param("path", "path", {"type": "string", "pattern": "^[A-Za-z0-9._-]*$"})],
            "get": {"operationId": "portalAsset", "security": [], "description": "The monitoring page's static files.",
                    "responses": {"200": {"description": "the file", "content": {t: {"schema": {"type": "string"}} for t in
                                                                                ("text/html", "text/javascript", "text/css", "image/svg+xml")}},
                                  "404": {"description": "no such file", "content": {"text/plain": {"schema": {"type": "string"}}}}}},
        },
        "/portal": {
            "get": {"operationId": "portalPage", "security": [],
                    "responses": {"200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}}}},
        },
        "/integrations/{id}/records/{dataType}": {
            "parameters": [ID, DATA_TYPE],
            "get": {"operationId": "listRecords", "parameters": [TOP, TOKEN],
                    "responses": _responses(200, {"type": "array", "items": _ref("PlatformRecord")}, [400, 404], paged=True)},
        },
        "/integrations/{id}/records/{dataType}/{externalId}": {
            "parameters": [ID, DATA_TYPE, _param("externalId", "path", {"type": "string", "minLength": 1, "maxLength": 100,
                                                                         "pattern": "^[A-Za-z0-9-]+$"})],
            "get": {"operationId": "getRecord", "responses": _responses(200, _ref("PlatformRecord"), [400, 404])},
        },
        "/integrations/{id}/changes/{dataType}": {
            "parameters": [ID, DATA_TYPE],
            "get": {"operationId": "readChanges", "parameters": [TOP, _param("cursor")],
                    "description": "Records created, updated or flagged deleted since the cursor, oldest change first, each "
                                   "record at its latest change; no change twice unless a page is retried. An empty page means "
                                   "caught up. No cursor = from the beginning of what is kept.",
                    "responses": {**_responses(200, {}, [400, 404, 410]), "200": {"description": "A page of changes", "content": {
                        "application/json": {"schema": CHANGES_PAGE}}}}},
        },
        "/bc/notifications": _bc_notifications(),
        "/integrations/{id}/webhook-deliveries": {
            "parameters": [ID],
            "get": {"operationId": "listWebhookDeliveries", "parameters": [TOP, TOKEN],
                    "responses": _responses(200, {"type": "array", "items": _ref("WebhookDelivery")}, [400, 404], paged=True)},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "BC Sync Functions", "version": "1.0.0",
                 "description": "Business Central to Azure Table Storage sync. Every route needs the function key "
                                "(?code= or x-functions-key) and the caller identity set by App Service Authentication."},
        "servers": [{"url": "/api"}],
        "security": [{"principal": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"principal": {"type": "apiKey", "in": "header", "name": "X-MS-CLIENT-PRINCIPAL-ID"}},
        },
    }
