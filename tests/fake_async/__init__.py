"""Stand-ins for endpoints the page relies on that are built in parallel: the queued-run contract
of design.md §7 (202 + sync-runs/{runId}; each GET of the run advances it one step) and the
delegated sign-in of §9 (an integration with authMode delegated, POST .../dynamics/authorize and
an Entra ID authorize page)."""
from __future__ import annotations

import json
import threading
from typing import Any

import azure.functions as func

lock = threading.Lock()
state: dict[str, Any] = {"prefer": [], "polls": 0}

STEPS: list[tuple[str, dict[str, dict[str, Any]]]] = [
    ("queued", {}),
    ("running", {"suppliers": {"read": 20, "created": 20, "done": False}}),
    ("running", {"suppliers": {"read": 45, "created": 45, "done": True}, "products": {"read": 100, "created": 100, "done": False}}),
    ("running", {"suppliers": {"read": 45, "created": 45, "done": True}, "products": {"read": 200, "created": 200, "done": False}}),
    ("succeeded", {"suppliers": {"read": 45, "created": 45, "done": True}, "products": {"read": 230, "created": 230, "done": True}}),
]


def reply(status: int, data: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"success": True, "data": data}), status_code=status,
                             mimetype="application/json", headers=headers or {})


def post(req: func.HttpRequest) -> func.HttpResponse:
    with lock:
        state["prefer"].append(req.headers.get("Prefer"))
        state["polls"] = 0
    run = f"run-{req.route_params['id']}"
    return reply(202, {"runId": run, "status": "queued"},
                 {"Location": f"/api/integrations/{req.route_params['id']}/sync-runs/{run}", "Retry-After": "1"})


def get(req: func.HttpRequest) -> func.HttpResponse:
    with lock:
        step = STEPS[min(state["polls"], len(STEPS) - 1)]
        state["polls"] += 1
    status, progress = step
    full = {t: {"unchanged": 0, "updated": 0, "errors": 0, **p} for t, p in progress.items()}
    return reply(200, {"runId": req.route_params["runId"], "integrationId": req.route_params["id"], "status": status,
                       "progress": full, "counts": full if status == "succeeded" else {}, "error": None})


DELEGATED = {
    "id": "delegated-1", "name": "Signed-in CRONUS", "authMode": "delegated", "status": "auth_expired",
    "tenantId": "contoso.onmicrosoft.com", "environment": "production", "companyId": "", "entities": ["suppliers"],
    "syncIntervalMinutes": 60, "lastSyncedAt": "2026-01-01T00:00:00Z", "nextSyncAt": None,
    "lastError": {"code": "bc_auth_failed", "message": "The sign-in expired: sign in again (authorize)", "at": "2026-01-01T00:00:00Z"},
    "statistics": {"last24h": {"runs": 0, "failures": 0, "records": {}}, "last7d": {"runs": 0, "failures": 0, "records": {}}, "hourly": []},
}


def list_delegated(req: func.HttpRequest) -> func.HttpResponse:
    if req.route_params.get("id"):
        return reply(200, DELEGATED)
    return func.HttpResponse(json.dumps({"success": True, "data": [DELEGATED], "continuationToken": None}),
                             mimetype="application/json")


def authorize(req: func.HttpRequest) -> func.HttpResponse:
    with lock:
        state.setdefault("authorized", []).append(req.route_params["id"])
    base = req.url.split("/api/")[0]
    url = f"{base}/api/fake-entra/contoso.onmicrosoft.com/oauth2/v2.0/authorize?client_id=platform&state=s1"
    return reply(200, {"authorizationUrl": url, "expiresAt": "2026-01-01T00:10:00Z"})


def entra_login(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("<html><title>Sign in to your account</title><body>Pick an account</body></html>",
                             mimetype="text/html")
