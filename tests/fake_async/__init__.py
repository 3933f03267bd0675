"""A stand-in for the queued-run endpoints of design.md §7 (202 + sync-runs/{runId}), so the page's
polling path is tested before the real ones land. Each GET of the run advances it one step."""
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
