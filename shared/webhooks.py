"""Outbound notifications: `sync.completed` / `sync.failed`, signed twice.

`X-Signature-256: sha256=<hex HMAC-SHA256 of the body>` keyed by the secret as text (as before),
and the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature:
v1,<base64 HMAC-SHA256 of "id.timestamp.body">`) keyed by the decoded bytes of a `whsec_` secret,
so the `standardwebhooks` libraries verify with the secret as given and a receiver can refuse
replays by timestamp and id.

A delivery is attempted at once; a failed attempt is retried by the timer with growing delays
(1 min, 5 min, 30 min, 2 h, 6 h), every attempt recorded on the delivery, each retry to the URL
and under the secret of the first attempt. The timer's retries are bounded (per tick, per
integration, in time) and run on a small pool, so one tenant's slow endpoint holds nobody else."""
from __future__ import annotations

import base64
import binascii
import concurrent.futures
import hashlib
import hmac
import json
import logging
import os
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx

from shared.clock import Clock, parse_iso, to_iso
from shared.crypto import SecretBox
from shared.destinations import UnsafeDestination, resolve, webhook_addresses
from shared.keyrotation import rewrap
from shared.outbound import bounded_client, deadline_remaining, ssl_context, total_deadline, within
from shared.storage.integrations import Integration, IntegrationRepository
from shared.storage.webhooks import WebhookDeliveryRepository, due_key

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature-256"
SECRET_PREFIX = "whsec_"
RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=6))
TIMEOUT_SECONDS = 10.0  # per connect / read
TOTAL_SECONDS = 30.0  # reading the answer stops here, however slowly it trickles
MAX_RESPONSE_BYTES = 64 * 1024
#: The timer's share: retries per tick, per integration per tick, run this many at a time.
RETRIES_PER_TICK = 40
RETRIES_PER_INTEGRATION = 3
POOL_SIZE = 4
#: Due index rows read per tick (one query page) to pick the retries from.
SCAN_ROWS = 1000
#: An integration with this many deliveries already waiting gets no retries for a new one that
#: fails (its endpoint is down; the first attempt is still made and recorded).
MAX_PENDING_PER_INTEGRATION = 25


def new_secret() -> str:
    """`whsec_` + standard base64 of 32 random bytes; those bytes are the Standard Webhooks key."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode("ascii")


def sign(secret: str, body: bytes) -> str:
    """X-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>, keyed by the secret's text."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def standard_key(secret: str) -> bytes:
    """The Standard Webhooks key: the decoded bytes of a `whsec_<base64>` secret. A secret issued
    before (`whsec_` + URL-safe base64 without padding, which does not decode) keys by its UTF-8
    text; its receivers verify with `whsec_` + base64 of that text (docs/security.md)."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode("utf-8")


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode("utf-8") + body
    return "v1," + base64.b64encode(hmac.new(standard_key(secret), signed, hashlib.sha256).digest()).decode("ascii")


def _delivery_context(delivery: dict[str, Any]) -> str:
    return f"webhook-delivery:{delivery['PartitionKey']}:{delivery['id']}"


class WebhookNotifier:
    """Deliveries are contained: whatever goes wrong with one (a URL that does not parse, a host
    that now resolves to a private address, a secret that cannot be decrypted, a timeout) is
    recorded on that delivery and never reaches the caller, the other deliveries or the timer."""

    def __init__(
        self,
        deliveries: WebhookDeliveryRepository,
        integrations: IntegrationRepository,
        box: SecretBox,
        clock: Clock,
        *,
        allow_private: bool = False,
    ) -> None:
        self._deliveries = deliveries
        self._integrations = integrations
        self._box = box
        self._clock = clock
        self._allow_private = allow_private

    def notify(self, integration: Integration, payload: dict[str, Any]) -> None:
        """Record and attempt one delivery; never raises (a webhook never fails a sync)."""
        if not integration.webhookUrl or not integration.webhookSecretEnc:
            return
        try:
            body = json.dumps(payload, separators=(",", ":"), default=str)
            secret = self._box.decrypt(integration.webhookSecretEnc, context=integration.secret_context + ":webhook")
            rewrap(self._integrations, self._box, integration, "webhookSecretEnc", secret)  # under an old key: rewrite now
            delivery_id = f"whd-{os.urandom(8).hex()}"
            sealed = self._box.encrypt(secret, context=f"webhook-delivery:{integration.id}:{delivery_id}")
            delivery = self._deliveries.create(
                integration_id=integration.id, user_id=integration.userId, url=integration.webhookUrl,
                event=payload["event"], body=body, at=self._clock.now(), secret_enc=sealed, delivery_id=delivery_id,
            )
            self._attempt(delivery, secret, TOTAL_SECONDS, was_due=due_key(delivery))
            if delivery["status"] == "pending" and \
                    self._deliveries.pending_count(integration.id, at_most=MAX_PENDING_PER_INTEGRATION + 1) > MAX_PENDING_PER_INTEGRATION:
                was = due_key(delivery)
                delivery["status"] = "failed"
                log.warning("webhook delivery %s not retried: %d deliveries of integration %s already wait",
                            delivery["id"], MAX_PENDING_PER_INTEGRATION, integration.id)
                self._deliveries.save(delivery, was_due=was)
        except Exception:  # noqa: BLE001 - logged; the sync's outcome stands
            log.exception("webhook delivery for integration %s could not be recorded", integration.id)

    def retry_due(self, *, seconds: float = TOTAL_SECONDS) -> dict[str, int]:
        """Re-attempt due deliveries (called by the timer) within `seconds`: at most
        RETRIES_PER_TICK, RETRIES_PER_INTEGRATION per integration, POOL_SIZE at a time, each one
        (DNS, connect, answer) ending by the deadline. Never raises."""
        deadline = time.monotonic() + seconds
        counts = {"attempted": 0, "deferred": 0, "unfinished": 0}
        try:
            due = self._deliveries.due_keys(self._clock.now(), limit=SCAN_ROWS)
        except Exception:  # noqa: BLE001 - storage hiccup: next tick tries again
            log.exception("could not list due webhook deliveries")
            return counts
        per_integration: Counter[str] = Counter()
        picked: list[tuple[str, str, str]] = []
        for key, integration_id, row_key in due:
            if len(picked) >= RETRIES_PER_TICK or per_integration[integration_id] >= RETRIES_PER_INTEGRATION:
                counts["deferred"] += 1
                continue
            per_integration[integration_id] += 1
            picked.append((key, integration_id, row_key))
        if not picked:
            return counts
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="webhook-retry")
        try:
            futures = [pool.submit(self._retry_one, key, iid, rk, deadline) for key, iid, rk in picked]
            done, not_done = concurrent.futures.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
            counts["attempted"] = sum(1 for f in done if not f.exception() and f.result())
            counts["unfinished"] = len(not_done)
        finally:
            # Whatever still runs ends by its own deadline; the tick does not wait for it.
            pool.shutdown(wait=False, cancel_futures=True)
        return counts

    def _retry_one(self, key: str, integration_id: str, row_key: str, deadline: float) -> bool:
        try:
            left = deadline - time.monotonic()
            if left < 1.0:
                return False  # no time left in this tick: it stays due
            delivery = self._deliveries.get(integration_id, row_key)
            if delivery is None or delivery.get("status") != "pending" or due_key(delivery) != key:
                self._deliveries.drop_due(key)  # the delivery moved on (or was pruned)
                return False
            secret, problem = self._first_secret(delivery)
            if secret is None:  # recorded as a final attempt: retrying cannot help
                attempts = json.loads(delivery.get("attempts") or "[]")
                attempts.append({"at": to_iso(self._clock.now()), "error": problem, "durationMs": 0})
                delivery["attempts"], delivery["status"] = json.dumps(attempts), "failed"
                self._deliveries.save(delivery, was_due=key)
                return True
            self._attempt(delivery, secret, min(TOTAL_SECONDS, left), was_due=key)
            return True
        except Exception:  # noqa: BLE001 - contained to this delivery
            log.exception("webhook delivery %s/%s could not be retried", integration_id, row_key)
            return False

    def _first_secret(self, delivery: dict[str, Any]) -> tuple[str | None, str]:
        """The secret the first attempt signed with, or (None, why not)."""
        sealed = delivery.get("secretEnc") or ""
        if sealed:
            try:
                secret = self._box.decrypt(sealed, context=_delivery_context(delivery))
            except Exception:  # noqa: BLE001 - a secret no configured key opens fails this delivery only
                return None, "webhook secret cannot be decrypted"
            if not self._box.is_current(sealed):  # under a previous key: saved re-encrypted with the attempt
                delivery["secretEnc"] = self._box.encrypt(secret, context=_delivery_context(delivery))
            return secret, ""
        # Recorded before deliveries kept their own secret: only while the integration still
        # sends to the same URL may its current secret sign the retry.
        integration = self._integrations.get(delivery.get("userId", ""), delivery["PartitionKey"])
        if integration is None or not integration.webhookSecretEnc:
            return None, "the integration or its webhook is gone"
        if integration.webhookUrl != delivery.get("url"):
            return None, "webhookUrl changed since the first attempt: not sent to the new URL"
        try:
            return self._box.decrypt(integration.webhookSecretEnc, context=integration.secret_context + ":webhook"), ""
        except Exception:  # noqa: BLE001
            return None, "webhook secret cannot be decrypted"

    def _attempt(self, delivery: dict[str, Any], secret: str, total: float, *, was_due: str | None) -> None:
        attempts = json.loads(delivery.get("attempts") or "[]")
        record: dict[str, Any] = {"at": to_iso(self._clock.now())}
        started = time.monotonic()
        try:
            record.update(self._send(delivery, secret, total))
        except Exception as error:  # noqa: BLE001 - contained: recorded on the delivery
            log.warning("webhook delivery %s failed before an answer: %s", delivery.get("id"), type(error).__name__)
            record["error"] = type(error).__name__
        ok = 200 <= int(record.get("statusCode") or 0) < 300
        record["durationMs"] = int((time.monotonic() - started) * 1000)
        attempts.append(record)
        delivery["attempts"] = json.dumps(attempts)
        if ok:
            delivery["status"] = "delivered"
        elif len(attempts) > len(RETRY_DELAYS):
            delivery["status"] = "failed"
            log.warning("webhook delivery %s failed after %d attempts", delivery["id"], len(attempts))
        else:
            delivery["nextAttemptAt"] = to_iso(parse_iso(record["at"]) + RETRY_DELAYS[len(attempts) - 1])
        self._deliveries.save(delivery, was_due=was_due)

    def _send(self, delivery: dict[str, Any], secret: str, total: float) -> dict[str, Any]:
        """One POST; {"statusCode"} or {"error"}. Everything (the host resolved and checked now, as
        DNS can change since the URL was saved; connect; TLS; the answer) ends within `total`, and
        the connection goes to the address that was checked."""
        url = str(delivery["url"])
        with total_deadline(total):
            try:
                origin, addresses = webhook_addresses(
                    url, allow_private=self._allow_private,
                    resolver=lambda host, port: within(deadline_remaining(total), resolve, host, port),
                )
            except UnsafeDestination as error:
                return {"error": f"refused: {error}"}
            body = delivery["body"].encode("utf-8")
            timestamp = int(time.time())  # wall time: receivers compare it with their own clock
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(secret, body),
                "X-Delivery-Id": delivery["id"],
                "webhook-id": delivery["id"],  # the same on every retry: receivers drop duplicates
                "webhook-timestamp": str(timestamp),
                "webhook-signature": standard_signature(secret, delivery["id"], timestamp, body),
                "User-Agent": "bc-sync-functions",
            }
            target = httpx.URL(url)
            extensions: dict[str, Any] = {}
            if addresses:  # pin the checked address; TLS still verifies the certificate for the name
                headers["Host"] = target.netloc.decode("ascii")
                extensions["sni_hostname"] = origin[1]
                target = target.copy_with(host=addresses[0])
            try:
                timeout = httpx.Timeout(TIMEOUT_SECONDS, connect=min(5.0, TIMEOUT_SECONDS))
                with bounded_client(verify=ssl_context(), timeout=timeout) as http:
                    with http.stream("POST", target, content=body, headers=headers, extensions=extensions) as response:
                        read = 0
                        for chunk in response.iter_bytes():  # bounded: the body is never needed whole
                            read += len(chunk)
                            if read >= MAX_RESPONSE_BYTES:
                                break
                        return {"statusCode": response.status_code}
            except httpx.HTTPError as error:
                return {"error": type(error).__name__}
