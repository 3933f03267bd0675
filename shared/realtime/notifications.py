"""The notification endpoint's logic (design.md §10). It only validates and enqueues, so it
answers well inside BC's 5 seconds; every payload is untrusted.

- `validationToken` in the query (GET or POST, on create and on every renewal): 200 text/plain
  echoing it. It needs no storage and proves only that the URL is ours.
- A notification: each item must name a subscription we hold, carry its clientState (SHA-256
  compared in constant time) and a resource of that subscription's entity set. Invalid items
  are ignored; no valid item -> 401, nothing changed (BC then drops a subscription it still had).
- created / updated / collection -> one delta per integration and type (trigger `notification`),
  coalesced into a run already queued or running (shared/realtime/trigger.py).
- deleted -> the stored record is flagged `deletedInBC` + `deletedAt` (never deleted).
- The queue or storage unavailable -> 503, so BC retries the delivery and nothing is lost."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from shared.app import App
from shared.errors import ConflictError, ServiceError
from shared.realtime.metering import metered
from shared.realtime.subscriptions import repository
from shared.realtime.trigger import queue_delta
from shared.storage.deletions import flag_deleted
from shared.storage.subscriptions import ACTIVE, Subscription, client_state_matches

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_TOKEN_CHARS = 1024
MAX_DEPTH = 32  # design.md §12
MAX_SUBSCRIPTIONS_PER_REQUEST = 50  # BC sends one subscription per request; bounds the lookups
DELTA_CHANGES = frozenset({"created", "updated", "collection"})
_RECORD_ID = re.compile(r"^\((?P<id>'[^']*'|[^()]*)\)$")


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, code: str | None = None, message: str | None = None, data: Any = None) -> Reply:
    if code is None:
        payload: dict[str, Any] = {"success": True, "data": data}
    else:
        payload = {"success": False, "error": {"code": code, "message": message}}
    return Reply(status, json.dumps(payload).encode())


def handshake(token: str) -> Reply:
    if not 0 < len(token) <= MAX_TOKEN_CHARS or any(ord(c) < 32 for c in token):
        return _json(400, "validation_error", "validationToken: must be 1 to 1024 printable characters")
    return Reply(200, token.encode("utf-8"), "text/plain", {"X-Content-Type-Options": "nosniff"})


@dataclass
class _Work:
    sub: Subscription
    delta: bool = False
    deleted: list[str] = field(default_factory=list)


def handle(app: App, method: str, params: dict[str, str], body: bytes) -> Reply:
    if "validationToken" in params:
        return handshake(params["validationToken"])
    if method != "POST":
        return _json(405, "method_not_allowed", "Notifications are POSTed; a GET must carry validationToken")
    if len(body) > MAX_BODY_BYTES:
        return _json(413, "payload_too_large", "The notification body is over 1 MiB")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _json(400, "invalid_json", "The notification body is not valid JSON")
    if _depth(payload) > MAX_DEPTH:
        return _json(400, "invalid_json", f"The notification body is nested deeper than {MAX_DEPTH} levels")
    items = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return _json(400, "invalid_json", "The notification body must be an object with a 'value' list")

    work, valid = _validate(app, items)
    if not work:
        return _json(401, "unauthenticated", "No item names a known subscription with its clientState")
    now = app.clock.now()
    outcome: dict[str, Any] = {}
    try:
        for (integration_id, data_type), job in work.items():
            integration = app.integrations.get(job.sub.userId, integration_id)
            if integration is None or not integration.realtime or metered(app, integration_id, data_type, outcome):
                continue
            if job.delta:
                try:
                    outcome[data_type] = queue_delta(app, integration, [data_type])
                except ConflictError as error:  # disconnected: nothing to sync
                    outcome[data_type] = error.code
            if job.deleted:
                outcome[f"{data_type}.deleted"] = flag_deleted(app, integration_id, data_type, job.deleted, now)
    except ServiceError as error:
        if error.status >= 500:
            log.warning("realtime: notification not taken (%s); BC will retry it", error.code)
            reply = _json(503, error.code if error.code != "internal_error" else "unavailable", "Not taken; retry later")
            reply.headers["Retry-After"] = "30"
            return reply
        raise
    except Exception:  # noqa: BLE001 - storage down: BC retries on 5xx, so nothing is lost
        log.exception("realtime: notification not taken; BC will retry it")
        reply = _json(503, "unavailable", "Not taken; retry later")
        reply.headers["Retry-After"] = "30"
        return reply
    return _json(202, data={"accepted": valid, "outcome": outcome})


def _depth(value: Any) -> int:
    """How deeply lists and objects nest (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _validate(app: App, items: list[Any]) -> tuple[dict[tuple[str, str], _Work], int]:
    """The valid items, grouped per integration and type (duplicates fold into one delta),
    and how many there were."""
    repo = repository(app)
    valid = 0
    subs: dict[str, Subscription | None] = {}
    work: dict[tuple[str, str], _Work] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        sid = item.get("subscriptionId")
        if not isinstance(sid, str):
            continue
        if sid not in subs:
            if len(subs) >= MAX_SUBSCRIPTIONS_PER_REQUEST:
                continue
            subs[sid] = repo.by_subscription_id(sid)
        sub = subs[sid]
        if sub is None or sub.status != ACTIVE or not client_state_matches(item.get("clientState"), sub.clientStateHash):
            continue
        change = item.get("changeType")
        resource = item.get("resource")
        if not isinstance(resource, str) or not sub.resource:
            continue
        rest = _after(resource, sub.resource)
        if rest is None:
            continue
        job = work.setdefault((sub.integrationId, sub.dataType), _Work(sub))
        valid += 1
        if change in DELTA_CHANGES:
            job.delta = True
        elif change == "deleted":
            match = _RECORD_ID.match(rest)
            if match:
                job.deleted.append(match["id"].strip("'"))
            else:  # a delete we cannot place: a delta re-reads the set (polling stays the net)
                job.delta = True
    return work, valid


def _after(resource: str, subscribed: str) -> str | None:
    """What follows the subscribed entity set in an item's resource ('' , '(id)' or '?$filter...');
    None when the item names another company or set. BC may send it absolute or relative."""
    text = unquote(resource)
    at = text.lower().find(subscribed.lower())
    if at < 0 or (at > 0 and not text.lower().startswith(("https://", "http://"))):
        return None
    rest = text[at + len(subscribed):]
    if rest and rest[0] not in "(?":
        return None  # e.g. .../vendorsX or a navigation below the set
    return rest
