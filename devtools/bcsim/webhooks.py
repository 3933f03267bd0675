"""Webhook subscriptions as BC runs them (dev only): the validation handshake on create and on
renewal, etags, a 3-day expiry, a per-environment limit, notifications batched a while after
the first change of an entity set in a company, `collection` past a threshold, `deleted` items
naming the record, retries on 408/429/5xx and the subscription dropped on any other answer."""
from __future__ import annotations

import functools
import json
import os
import logging
import re
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

import httpx

from .odata import ODataError
from .seed import etag_for, fmt_dt, parse_dt
from .store import NO_WEBHOOKS

if TYPE_CHECKING:
    from .simulator import BCSimulator

log = logging.getLogger(__name__)
RESOURCE_RE = re.compile(r"^/?api/v2\.0/companies\((?P<cid>[^)]+)\)/(?P<set>\w+)$", re.IGNORECASE)
SYSTEM_USER = "f2a5738a-44e3-ea11-bb43-000d3a2feca1"  # the app's user in BC (systemCreatedBy/ModifiedBy)
RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


def _trust() -> ssl.SSLContext:
    return _context(os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE"))


@functools.lru_cache(maxsize=8)
def _context(cafile: str | None) -> ssl.SSLContext:
    """One context per CA file: loading the trust store costs ~25 ms, and a reset builds a hub."""
    return ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()


@dataclass
class Subscription:
    subscriptionId: str
    tenant: str
    environment: str
    notificationUrl: str
    resource: str
    clientState: str
    expirationDateTime: datetime
    etag: str
    company_id: str
    entity_set: str
    lastModifiedDateTime: datetime
    foreign: bool = False  # another app's or a Power Automate flow's: counts to the limit, never listed to us
    createdAt: datetime | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "@odata.etag": self.etag,
            "subscriptionId": self.subscriptionId,
            "notificationUrl": self.notificationUrl,
            "resource": self.resource,
            "userId": "00000000-0000-0000-0000-000000000001",
            "lastModifiedDateTime": fmt_dt(self.lastModifiedDateTime),
            "clientState": self.clientState,
            "expirationDateTime": fmt_dt(self.expirationDateTime),
            "systemCreatedAt": fmt_dt(self.createdAt or self.lastModifiedDateTime),
            "systemCreatedBy": SYSTEM_USER,
            "systemModifiedAt": fmt_dt(self.lastModifiedDateTime),
            "systemModifiedBy": SYSTEM_USER,
        }


@dataclass
class Delivery:
    """One notification POST as sent (tests read these)."""

    subscription_id: str
    items: list[dict[str, Any]]
    status: int  # 0 = no answer
    sent: float = 0.0  # time.time() when the POST started
    at: float = field(default_factory=time.time)  # when it was answered


class WebhookHub:
    """Subscriptions of every environment; the server routes /subscriptions here and each
    CompanyStore reports its changes through `changed`."""

    def __init__(self, sim: "BCSimulator") -> None:
        self._sim = sim
        self._lock = threading.RLock()
        self.subscriptions: dict[str, Subscription] = {}
        self.delay_seconds = 30.0  # BC waits ~30 s after the first change
        self.collection_threshold = 1000  # more changes than this in one batch -> one `collection`
        self.limit = 200  # per environment, shared with every other app and flow
        #: how item resources are written: "subscribed" (the subscription's resource + (id), as BC's
        #: codeunit builds it), "no_slash" (Microsoft's documented sample), "slash" or "absolute"
        self.resource_form = "subscribed"
        self.expiry = timedelta(days=3)
        self.retry_seconds = 1.0  # first retry delay, doubled each time (BC: ~36 h in all)
        self.max_attempts = 5
        self.handshake_timeout = 5.0
        self.deliveries: list[Delivery] = []
        self.handshakes: list[tuple[str, int]] = []  # (notificationUrl, status)
        self.dropped: list[str] = []
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._timers: set[threading.Timer] = set()
        # No proxies from the environment: notification URLs are usually on loopback in tests.
        self._http = httpx.Client(timeout=10.0, trust_env=False, verify=_trust())

    def close(self) -> None:
        with self._lock:
            timers, self._timers = set(self._timers), set()
        for timer in timers:
            timer.cancel()

    # ---- the API ---------------------------------------------------------------------------
    def create(self, tenant: str, environment: str, body: dict[str, Any]) -> Subscription:
        url, resource, state = (str(body.get(k) or "") for k in ("notificationUrl", "resource", "clientState"))
        if not url or not resource:
            raise ODataError(400, "BadRequest", "notificationUrl and resource are required.")
        match = RESOURCE_RE.match(resource)
        if not match:
            raise ODataError(400, "BadRequest_ResourceNotFound", f"The resource '{resource}' cannot be subscribed to.")
        company_id, entity_set = match["cid"].strip("'").lower(), match["set"]
        store = self._sim._store_for(tenant, company_id)
        if entity_set not in store.sets or entity_set in NO_WEBHOOKS:
            raise ODataError(400, "BadRequest_ResourceNotFound", f"The resource '{resource}' cannot be subscribed to.")
        with self._lock:
            used = sum(1 for s in self.subscriptions.values() if (s.tenant, s.environment) == (tenant, environment))
            if used >= self.limit:
                raise ODataError(400, "BadRequest", f"The maximum number of subscriptions ({self.limit}) has been "
                                 "reached for this environment. Delete subscriptions that are no longer used.")
        self._handshake(url)
        now = self._sim.now
        sub = Subscription(
            subscriptionId=secrets.token_hex(16), tenant=tenant, environment=environment, notificationUrl=url,
            resource=resource, clientState=state, expirationDateTime=now + self.expiry, etag="",
            company_id=company_id, entity_set=entity_set, lastModifiedDateTime=now, createdAt=now)
        sub.etag = etag_for(sub.subscriptionId, fmt_dt(now))
        with self._lock:
            self.subscriptions[sub.subscriptionId] = sub
        return sub

    def get(self, tenant: str, environment: str, sid: str) -> Subscription:
        with self._lock:
            sub = self.subscriptions.get(sid.strip("'"))
        if sub is None or (sub.tenant, sub.environment) != (tenant, environment):
            raise ODataError(404, "BadRequest_NotFound", f"The subscription '{sid}' does not exist.")
        return sub

    def list(self, tenant: str, environment: str) -> list[Subscription]:
        with self._lock:
            return [s for s in self.subscriptions.values()
                    if (s.tenant, s.environment) == (tenant, environment) and not s.foreign]

    def add_foreign(self, tenant: str, environment: str, count: int) -> list[str]:
        """Fill the environment with `count` subscriptions of other apps and flows: they use up
        the shared limit but are not ours to see or delete, and are never delivered."""
        now, ids = self._sim.now, []
        with self._lock:
            for _ in range(count):
                sid = secrets.token_hex(16)
                self.subscriptions[sid] = Subscription(
                    sid, tenant.lower(), environment.lower(), "https://prod-00.westeurope.logic.azure.com/workflows/x",
                    "/api/v2.0/companies(00000000-0000-0000-0000-000000000000)/customers", "", now + self.expiry,
                    etag_for(sid), "", "", now, foreign=True)
                ids.append(sid)
        return ids

    def copy_environment(self, tenant: str, environment: str) -> int:
        """An environment copy (or restore) over this one: every subscription is gone, ours
        and other apps' alike; pending notifications go with them. Returns how many."""
        with self._lock:
            gone = [sid for sid, s in self.subscriptions.items() if (s.tenant, s.environment) == (tenant.lower(), environment.lower())]
            for sid in gone:
                self.subscriptions.pop(sid, None)
                self._pending.pop(sid, None)
        return len(gone)

    def renew(self, tenant: str, environment: str, sid: str, if_match: str | None, body: dict[str, Any]) -> Subscription:
        sub = self.get(tenant, environment, sid)
        if not if_match:
            raise ODataError(428, "BadRequest", "An If-Match header is required to change a subscription.")
        if if_match != "*" and if_match != sub.etag:
            raise ODataError(412, "Request_EntityChanged", "The subscription was changed by someone else.")
        url = str(body.get("notificationUrl") or sub.notificationUrl)
        self._handshake(url)  # BC repeats the handshake on every renewal
        now = self._sim.now
        with self._lock:
            sub.notificationUrl = url
            if body.get("clientState"):
                sub.clientState = str(body["clientState"])
            sub.expirationDateTime = now + self.expiry
            sub.lastModifiedDateTime = now
            sub.etag = etag_for(sub.subscriptionId, fmt_dt(now), secrets.token_hex(4))
        return sub

    def delete(self, tenant: str, environment: str, sid: str, if_match: str | None) -> None:
        sub = self.get(tenant, environment, sid)
        if if_match and if_match != "*" and if_match != sub.etag:
            raise ODataError(412, "Request_EntityChanged", "The subscription was changed by someone else.")
        with self._lock:
            self.subscriptions.pop(sub.subscriptionId, None)

    def _handshake(self, url: str) -> None:
        token = secrets.token_urlsafe(24)
        sep = "&" if "?" in url else "?"
        try:
            reply = self._http.post(f"{url}{sep}validationToken={token}", timeout=self.handshake_timeout)
            status, text = reply.status_code, reply.text
        except httpx.HTTPError:
            status, text = 0, ""
        self.handshakes.append((url, status))
        if status != 200 or text != token:
            raise ODataError(400, "BadRequest", "The subscription could not be validated: the notification URL did not "
                             "answer the validation token (HTTP %s)." % (status or "no answer"))

    # ---- changes and deliveries ----------------------------------------------------------------
    def changed(self, company_id: str, entity_set: str, record_id: str, change_type: str) -> None:
        """A record changed in a company: queue an item for every matching subscription; the
        first one of a batch starts its timer."""
        now = self._sim.now
        with self._lock:
            for sub in list(self.subscriptions.values()):
                if sub.company_id != company_id or sub.entity_set != entity_set or sub.expirationDateTime <= now:
                    continue
                resource = self.item_resource(sub, f"{entity_set}({record_id})")
                item = {"subscriptionId": sub.subscriptionId, "clientState": sub.clientState,
                        "expirationDateTime": fmt_dt(sub.expirationDateTime), "resource": resource,
                        "changeType": change_type, "lastModifiedDateTime": fmt_dt(now)}
                batch = self._pending.setdefault(sub.subscriptionId, [])
                batch.append(item)
                if len(batch) == 1:
                    self._later(self.delay_seconds, lambda sid=sub.subscriptionId: self._flush(sid))

    def item_resource(self, sub: Subscription, tail: str) -> str:
        """The `resource` of an item naming one record (`tail` = `set(id)`), in the chosen form."""
        if self.resource_form == "subscribed":  # BC: the subscribed resource + (key)
            return f"{sub.resource}({tail.split('(', 1)[1]}"
        path = f"api/v2.0/companies({sub.company_id})/{tail}"
        return {"no_slash": path, "slash": "/" + path,
                "absolute": f"{self._sim.base_url}/v2.0/{sub.tenant}/{sub.environment}/{path}"}[self.resource_form]

    def collection_resource(self, sub: Subscription, first_change: str) -> str:
        """BC: the subscribed resource filtered on 50 ms before the batch's first change (the
        documented sample writes it with a leading slash even where items have none)."""
        since = fmt_dt(parse_dt(first_change) - timedelta(milliseconds=50))  # type: ignore[operator]
        query = f"?$filter=lastModifiedDateTime%20gt%20{since}"
        path = f"api/v2.0/companies({sub.company_id})/{sub.entity_set}"
        if self.resource_form == "subscribed":
            return sub.resource + query
        if self.resource_form == "absolute":
            return f"{self._sim.base_url}/v2.0/{sub.tenant}/{sub.environment}/{path}{query}"
        return f"/{path}{query}"

    def _later(self, seconds: float, fn: Callable[[], None]) -> None:
        timer = threading.Timer(seconds, lambda: self._fire(timer, fn))
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def _fire(self, timer: threading.Timer, fn: Callable[[], None]) -> None:
        try:
            fn()
        finally:  # discarded after the delivery, so wait_idle also waits for it
            with self._lock:
                self._timers.discard(timer)

    def _flush(self, sid: str) -> None:
        with self._lock:
            items = self._pending.pop(sid, [])
            sub = self.subscriptions.get(sid)
        if not items or sub is None:
            return
        if len(items) > self.collection_threshold:  # creates, updates and deletes alike
            items = [{**items[-1], "changeType": "collection",
                      "resource": self.collection_resource(sub, items[0]["lastModifiedDateTime"])}]
        self._deliver(sub, items, attempt=1)

    def _deliver(self, sub: Subscription, items: list[dict[str, Any]], attempt: int) -> None:
        body = json.dumps({"value": items}).encode()
        sent = time.time()
        try:
            reply = self._http.post(sub.notificationUrl, content=body, headers={"Content-Type": "application/json"})
            status = reply.status_code
        except httpx.HTTPError:
            status = 0
        self.deliveries.append(Delivery(sub.subscriptionId, items, status, sent))
        if 200 <= status < 300:
            return
        if status == 0 or status in RETRY_STATUSES:
            if attempt < self.max_attempts:
                delay = self.retry_seconds * 2 ** (attempt - 1)
                self._later(delay, lambda: self._deliver(sub, items, attempt + 1))
            return
        with self._lock:  # any other answer: BC deletes the subscription
            self.subscriptions.pop(sub.subscriptionId, None)
            self.dropped.append(sub.subscriptionId)

    def flush_all(self) -> None:
        """Send every pending batch now (tests that do not want to wait for the delay)."""
        with self._lock:
            sids = list(self._pending)
        for sid in sids:
            self._flush(sid)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once no batch is pending and no timer (delay or retry) is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending and not self._timers:
                    return True
            time.sleep(0.02)
        return False
