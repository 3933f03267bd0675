"""The notification endpoint's logic (design.md §10). It only validates and enqueues, so it
answers well inside BC's 5 seconds; every payload is untrusted.

- `validationToken` in the query (GET or POST, on create and on every renewal): 200 text/plain
  echoing it. It needs no storage and proves only that the URL is ours.
- A notification: each item must name a subscription we hold, carry its clientState (SHA-256
  compared in constant time) and a resource of that subscription's company and entity set, in
  any form BC sends (with or without a leading slash, or absolute: shared/realtime/resources.py).
  Invalid items are ignored; no valid item -> 401, nothing changed (BC then drops a subscription
  it still had).
- created / updated / collection -> one delta per integration and type (trigger `notification`),
  coalesced into a run already queued or running (shared/realtime/trigger.py).
- created / updated naming one record -> that record is also read again by its id before the
  type's next pass (shared/realtime/pending.py, byid.py): a line-only edit need not move the
  header's lastModifiedDateTime, so the delta alone can miss it.
- collection (over 1,000 changes; deletes may hide in it) -> also a reconcile of that type,
  queued after the delta (coalescing: one note per type on the integration).
- deleted -> the stored record is flagged `deletedInBC` + `deletedAt` (never deleted); a
  deleted item that names no record -> a delta and a reconcile.
- The queue or storage unavailable -> 503, so BC retries the delivery and nothing is lost."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from shared.app import App
from shared.errors import ConflictError, ServiceError
from shared.realtime.pending import PendingReads
from shared.realtime.resources import parse
from shared.realtime.metering import metered
from shared.realtime.subscriptions import repository
from shared.realtime.trigger import note_reconcile, queue_delta
from shared.storage.deletions import flag_deleted
from shared.storage.subscriptions import ACTIVE, Subscription, client_state_matches

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_TOKEN_CHARS = 1024
MAX_DEPTH = 32  # design.md §12
MAX_SUBSCRIPTIONS_PER_REQUEST = 50  # BC sends one subscription per request; bounds the lookups
DELTA_CHANGES = frozenset({"created", "updated", "collection"})


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
    reconcile: bool = False
    deleted: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)  # ids to read again (created / updated)


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
            if job.records and data_type in integration.entities:  # noted before the delta is queued: the run that follows reads them
                outcome[f"{data_type}.byId"] = PendingReads(app.store).add(integration_id, data_type, job.records, now)
            if job.reconcile:
                outcome[f"{data_type}.reconcile"] = note_reconcile(app, integration, [data_type])
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
        named = parse(item.get("resource"))
        subscribed = parse(sub.resource)
        if named is None or subscribed is None or not named.same_set(subscribed):
            continue  # another company or set, or not a resource at all
        job = work.setdefault((sub.integrationId, sub.dataType), _Work(sub))
        valid += 1
        if change == "deleted":
            if named.key:
                job.deleted.append(named.key)
            else:  # a delete we cannot place: re-read the set and reconcile its ids
                job.delta = job.reconcile = True
            continue
        job.delta = True  # created, updated, collection (and anything new BC may send)
        if change == "collection":
            job.reconcile = True
        elif named.record_id and change in DELTA_CHANGES:
            job.records.append(named.record_id)
    return work, valid
