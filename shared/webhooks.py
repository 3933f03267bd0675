"""Outbound notifications: `sync.completed` / `sync.failed`, signed with HMAC-SHA256.

A delivery is attempted at once; a failed attempt is retried by the timer with growing delays
(1 min, 5 min, 30 min, 2 h, 6 h), every attempt recorded on the delivery."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from typing import Any

import httpx

from shared.bc.client import ssl_context
from shared.clock import Clock, parse_iso, to_iso
from shared.crypto import SecretBox
from shared.storage.integrations import Integration, IntegrationRepository
from shared.storage.webhooks import WebhookDeliveryRepository

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature-256"
RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=6))
TIMEOUT_SECONDS = 10.0


def sign(secret: str, body: bytes) -> str:
    """The header value a receiver recomputes: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    def __init__(self, deliveries: WebhookDeliveryRepository, integrations: IntegrationRepository, box: SecretBox, clock: Clock) -> None:
        self._deliveries = deliveries
        self._integrations = integrations
        self._box = box
        self._clock = clock

    def notify(self, integration: Integration, payload: dict[str, Any]) -> None:
        """Record and attempt one delivery; never raises (a webhook never fails a sync)."""
        if not integration.webhookUrl or not integration.webhookSecretEnc:
            return
        try:
            body = json.dumps(payload, separators=(",", ":"), default=str)
            delivery = self._deliveries.create(
                integration_id=integration.id, user_id=integration.userId, url=integration.webhookUrl, event=payload["event"], body=body, at=self._clock.now()
            )
            self._attempt(delivery, integration)
        except Exception:  # noqa: BLE001 - logged; the sync's outcome stands
            log.exception("webhook delivery for integration %s could not be recorded", integration.id)

    def retry_due(self) -> int:
        """Re-attempt pending deliveries whose time has come (called by the timer)."""
        count = 0
        for delivery in list(self._deliveries.due(self._clock.now())):
            integration = self._integrations.get(delivery.get("userId", ""), delivery["PartitionKey"])
            if integration is None or not integration.webhookSecretEnc:
                delivery["status"] = "failed"
                self._deliveries.save(delivery)
                continue
            self._attempt(delivery, integration)
            count += 1
        return count

    def _attempt(self, delivery: dict[str, Any], integration: Integration) -> None:
        secret = self._box.decrypt(integration.webhookSecretEnc or "", context=integration.secret_context + ":webhook")
        body = delivery["body"].encode("utf-8")
        attempts = json.loads(delivery.get("attempts") or "[]")
        record: dict[str, Any] = {"at": to_iso(self._clock.now())}
        started = time.monotonic()
        try:
            with httpx.Client(verify=ssl_context(), timeout=TIMEOUT_SECONDS, follow_redirects=False) as http:
                response = http.post(
                    delivery["url"],
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: sign(secret, body),
                        "X-Delivery-Id": delivery["id"],
                        "User-Agent": "bc-sync-functions",
                    },
                )
            record["statusCode"] = response.status_code
            ok = 200 <= response.status_code < 300
        except httpx.HTTPError as error:
            record["error"] = type(error).__name__
            ok = False
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
        self._deliveries.save(delivery)
