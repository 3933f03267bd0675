"""Keeping BC's subscriptions in line with the integrations (design.md §10): subscribe each
selected type when `realtime` is on, remove them when it is turned off, a type is deselected or
the integration is disconnected, renew those expiring within 24 hours, re-create one BC no
longer knows, and retry failed ones. A failure is shown per type and never blocks the API call
or the other types: polling at syncIntervalMinutes carries on regardless."""
from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from shared.app import App
from shared.bc.subscriptions import SubscriptionClient, SubscriptionNotFound
from shared.clock import parse_iso, to_iso
from shared.entities import ENTITY_TYPES
from shared.errors import ServiceError
from shared.realtime.pending import PendingReads
from shared.storage.integrations import Integration
from shared.storage.subscriptions import ACTIVE, FAILED, Subscription, SubscriptionRepository, hash_client_state

log = logging.getLogger(__name__)

NOTIFICATION_ROUTE = "/api/bc/notifications"  # bc_notifications/function.json
RENEW_BEFORE = timedelta(hours=24)
#: A refused subscription (BC's 200 per environment are shared with other apps and flows, or any
#: other refusal) is tried again by the timer's renewal step after these pauses, then hourly.
RETRY_PAUSES = (timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1))
RENEW_BATCH = 50
WHERE = ("tenantId", "environment", "companyId", "baseUrl")  # a change moves the subscriptions
NO_BASE_URL = {
    "code": "public_base_url_missing",
    "message": "PUBLIC_BASE_URL is not set, so Business Central cannot reach the function app; "
    "this type is synced by polling only until it is set",
}


def repository(app: App) -> SubscriptionRepository:
    return SubscriptionRepository(app.store)


def notification_url(app: App) -> str | None:
    base = app.settings.public_base_url
    return f"{base}{NOTIFICATION_ROUTE}" if base else None


def resource_for(integration: Integration, data_type: str) -> str:
    return f"/api/v2.0/companies({integration.companyId})/{ENTITY_TYPES[data_type].entity_set}"


def view(app: App, integration: Integration) -> dict[str, Any]:
    """`realtime` as the integration shows it."""
    subs: dict[str, Any] = {}
    if integration.realtime:
        try:
            subs = {s.dataType: s.to_api() for s in repository(app).list_for(integration.id)}
        except Exception:  # noqa: BLE001 - the integration is still shown
            log.exception("realtime: could not read the subscriptions of %s", integration.id)
    return {"enabled": integration.realtime, "subscriptions": subs}


# -- applying the integration's settings ---------------------------------------------------------
def apply(app: App, integration: Integration, *, previous: Integration | None = None) -> None:
    """After a create, PATCH or DELETE: subscribe what should be, remove what should not.
    `previous` (a PATCH) is used to remove subscriptions made with the old company or
    credentials. Never raises."""
    try:
        _apply(app, integration, previous)
    except Exception:  # noqa: BLE001 - never blocks the API call
        log.exception("realtime: could not apply the subscriptions of integration %s", integration.id)


def _apply(app: App, integration: Integration, previous: Integration | None) -> None:
    repo = repository(app)
    existing = {s.dataType: s for s in repo.list_for(integration.id)}
    on = integration.realtime and integration.status != "disconnected" and bool(integration.companyId)
    wanted = set(integration.entities) if on else set()  # a delegated one without a company waits for it
    for key, sub in existing.items():
        stale = previous is not None and any(getattr(previous, f) != getattr(integration, f) for f in WHERE)
        if key not in wanted or stale:
            remove(app, previous if stale and previous is not None else integration, sub)
    existing = {s.dataType: s for s in repo.list_for(integration.id)}
    for key in integration.entities:
        if key in wanted and (key not in existing or existing[key].status == FAILED):
            subscribe(app, integration, key, existing.get(key))


def remove_all(app: App, integration: Integration) -> None:
    """DELETE of the integration (before its credentials are erased). Never raises."""
    try:
        for sub in repository(app).list_for(integration.id):
            remove(app, integration, sub)
        PendingReads(app.store).clear(integration.id)  # ids waiting to be read go with it
    except Exception:  # noqa: BLE001
        log.exception("realtime: could not remove the subscriptions of integration %s", integration.id)


def remove(app: App, integration: Integration, sub: Subscription) -> None:
    """Delete it in BC (If-Match its etag) and here. A BC failure is logged: the row goes anyway,
    and a notification for a subscription we no longer know answers 401, which makes BC drop it."""
    if sub.status == ACTIVE and sub.subscriptionId:
        try:
            with app.bc_client(integration) as client:
                SubscriptionClient(client).delete(sub.subscriptionId, sub.etag)
        except Exception as error:  # noqa: BLE001
            log.warning("realtime: BC did not delete subscription %s of %s: %s", sub.subscriptionId, integration.id, getattr(error, "message", type(error).__name__))
    repository(app).delete(sub)


def subscribe(app: App, integration: Integration, data_type: str, previous: Subscription | None = None) -> Subscription:
    """Create the type's subscription in BC (a fresh clientState each time)."""
    now = app.clock.now()
    sub = Subscription(integrationId=integration.id, userId=integration.userId, dataType=data_type,
                       resource=resource_for(integration, data_type), updatedAt=to_iso(now))
    url = notification_url(app)
    sub.attempts = previous.attempts if previous is not None and previous.status == FAILED else 0
    if url is None:
        _refused(sub, dict(NO_BASE_URL), now)
    else:
        # 64 lower-case hex characters, 256 bits: Microsoft's own example shows BC answering a
        # clientState in lower case, so one that is lower case already survives either way.
        client_state = secrets.token_hex(32)
        try:
            with app.bc_client(integration) as client:
                created = SubscriptionClient(client).create(notification_url=url, resource=sub.resource or "", client_state=client_state)
            sub.subscriptionId = str(created["subscriptionId"])
            _take(sub, created, now)
            sub.clientStateHash = hash_client_state(client_state)
            sub.status, sub.attempts = ACTIVE, 0
        except ServiceError as error:
            _refused(sub, _error(error), now)
            log.warning("realtime: BC refused the %s subscription of %s (attempt %d, next at %s): %s",
                        data_type, integration.id, sub.attempts, sub.dueAt, error.message)
        except (KeyError, TypeError, ValueError):
            _refused(sub, {"code": "bc_error", "message": "Business Central answered the subscription without its id or expiry"}, now)
    repository(app).save(sub, previous)
    return sub


def _take(sub: Subscription, body: dict[str, Any], now: datetime) -> None:
    """Expiry and etag from BC's answer; the next look is 24 hours before expiry."""
    expires = parse_iso(str(body["expirationDateTime"]))
    sub.expiresAt = to_iso(expires)
    sub.etag = str(body.get("@odata.etag") or "") or None
    sub.error = None
    sub.dueAt = to_iso(max(now, expires - RENEW_BEFORE))


def retry_pause(attempts: int) -> timedelta:
    """The pause after the `attempts`-th refusal in a row: 5 min, 15 min, 1 h, then hourly."""
    return RETRY_PAUSES[min(max(attempts, 1), len(RETRY_PAUSES)) - 1]


def _refused(sub: Subscription, error: dict[str, Any], now: datetime) -> None:
    """Count the refusal and schedule the next try; the type shows why and when."""
    sub.attempts += 1
    retry_at = now + retry_pause(sub.attempts)
    sub.dueAt = to_iso(retry_at)
    sub.error = {**error, "attempts": sub.attempts, "retryAt": sub.dueAt}


def _error(error: ServiceError) -> dict[str, Any]:
    """Our code and message plus BC's own code and HTTP status (e.g. the 200-subscription limit)."""
    data = error.to_dict()
    shown: dict[str, Any] = {"code": data.get("code"), "message": data.get("message")}
    if getattr(error, "bc_code", None):
        shown["bcCode"] = error.bc_code  # type: ignore[attr-defined]
    if getattr(error, "http_status", None):
        shown["httpStatus"] = error.http_status  # type: ignore[attr-defined]
    return shown


# -- the timer ------------------------------------------------------------------------------------
def renew_due(app: App, *, limit: int = RENEW_BATCH) -> dict[str, int]:
    """Housekeeping step: renew (or re-create, retry, remove) the subscriptions that are due,
    at most `limit` per tick. One failing item never stops the rest."""
    repo = repository(app)
    counts = {"renewed": 0, "recreated": 0, "retried": 0, "removed": 0, "failed": 0}
    now = app.clock.now()
    try:
        due = list(repo.due(to_iso(now), limit=limit))
    except Exception:  # noqa: BLE001
        log.exception("realtime: could not read the subscriptions due")
        return counts
    for row_key, user_id, integration_id, data_type in due:
        try:
            outcome = _renew_one(app, repo, row_key, user_id, integration_id, data_type, now)
            counts[outcome] = counts.get(outcome, 0) + 1
        except Exception:  # noqa: BLE001
            counts["failed"] += 1
            log.exception("realtime: renewal of %s/%s failed", integration_id, data_type)
    return counts


def _renew_one(app: App, repo: SubscriptionRepository, row_key: str, user_id: str, integration_id: str, data_type: str, now: datetime) -> str:
    sub = repo.get(integration_id, data_type)
    if sub is None or sub.due_key != row_key:
        repo.drop_due(row_key)  # stale index row
        return "removed" if sub is None else "skipped"
    integration = app.integrations.get(user_id, integration_id)
    if integration is None or not integration.realtime or integration.status == "disconnected" or data_type not in integration.entities:
        if integration is not None:
            remove(app, integration, sub)
        else:
            repo.delete(sub)
        return "removed"
    if sub.status == FAILED or not sub.subscriptionId or not sub.etag:
        return "retried" if subscribe(app, integration, data_type, sub).status == ACTIVE else "failed"
    url = notification_url(app)
    previous = Subscription(**{**sub.__dict__})
    try:
        with app.bc_client(integration) as client:
            renewed = SubscriptionClient(client).renew(sub.subscriptionId, sub.etag, notification_url=url, resource=sub.resource or "")
    except SubscriptionNotFound:
        log.info("realtime: BC no longer knows subscription %s of %s; creating it again", sub.subscriptionId, integration_id)
        return "recreated" if subscribe(app, integration, data_type, sub).status == ACTIVE else "failed"
    except ServiceError as error:
        expired = sub.expiresAt is None or parse_iso(sub.expiresAt) <= now
        if expired:  # it is gone by now: create a new one on the next round
            sub.status, sub.subscriptionId = FAILED, None
        _refused(sub, _error(error), now)
        if not expired and sub.expiresAt:  # still live: try again before it lapses
            sub.dueAt = min(sub.dueAt or sub.expiresAt, sub.expiresAt)
            sub.error = {**(sub.error or {}), "retryAt": sub.dueAt}
        repo.save(sub, previous)
        return "failed"
    _take(sub, renewed, now)
    sub.attempts = 0
    sub.updatedAt = to_iso(now)
    repo.save(sub, previous)
    return "renewed"
