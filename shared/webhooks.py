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

from shared.outbound import bounded_client, ssl_context, total_deadline
from shared.clock import Clock, parse_iso, to_iso
from shared.crypto import SecretBox
from shared.destinations import UnsafeDestination, webhook_addresses
from shared.keyrotation import rewrap
from shared.storage.integrations import Integration, IntegrationRepository
from shared.storage.webhooks import WebhookDeliveryRepository

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature-256"
RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=6))
TIMEOUT_SECONDS = 10.0  # per connect / read
TOTAL_SECONDS = 30.0  # reading the answer stops here, however slowly it trickles
MAX_RESPONSE_BYTES = 64 * 1024


def sign(secret: str, body: bytes) -> str:
    """The header value a receiver recomputes: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


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
            delivery = self._deliveries.create(
                integration_id=integration.id, user_id=integration.userId, url=integration.webhookUrl, event=payload["event"], body=body, at=self._clock.now()
            )
            self._attempt(delivery, integration)
        except Exception:  # noqa: BLE001 - logged; the sync's outcome stands
            log.exception("webhook delivery for integration %s could not be recorded", integration.id)

    def retry_due(self) -> int:
        """Re-attempt pending deliveries whose time has come (called by the timer). Never raises:
        one bad delivery is marked and skipped, the rest are still attempted."""
        count = 0
        try:
            due = list(self._deliveries.due(self._clock.now()))
        except Exception:  # noqa: BLE001 - storage hiccup: next tick tries again
            log.exception("could not list due webhook deliveries")
            return 0
        for delivery in due:
            try:
                integration = self._integrations.get(delivery.get("userId", ""), delivery["PartitionKey"])
                if integration is None or not integration.webhookSecretEnc:
                    delivery["status"] = "failed"
                    self._deliveries.save(delivery)
                    continue
                self._attempt(delivery, integration)
                count += 1
            except Exception:  # noqa: BLE001 - contained to this delivery
                log.exception("webhook delivery %s could not be retried", delivery.get("id"))
        return count

    def _attempt(self, delivery: dict[str, Any], integration: Integration) -> None:
        attempts = json.loads(delivery.get("attempts") or "[]")
        record: dict[str, Any] = {"at": to_iso(self._clock.now())}
        started = time.monotonic()
        try:
            record.update(self._send(delivery, integration))
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
        self._deliveries.save(delivery)

    def _send(self, delivery: dict[str, Any], integration: Integration) -> dict[str, Any]:
        """One POST; {"statusCode"} or {"error"}. The host is resolved and checked now (DNS can
        change since the URL was saved) and the connection goes to the address that was checked."""
        url = str(delivery["url"])
        try:
            origin, addresses = webhook_addresses(url, allow_private=self._allow_private)
        except UnsafeDestination as error:
            return {"error": f"refused: {error}"}
        try:
            secret = self._box.decrypt(integration.webhookSecretEnc or "", context=integration.secret_context + ":webhook")
        except Exception:  # noqa: BLE001 - a secret that cannot be opened fails this delivery only
            return {"error": "webhook secret cannot be decrypted"}
        rewrap(self._integrations, self._box, integration, "webhookSecretEnc", secret)  # under an old key: rewrite now
        body = delivery["body"].encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body),
            "X-Delivery-Id": delivery["id"],
            "User-Agent": "bc-sync-functions",
        }
        target = httpx.URL(url)
        extensions: dict[str, Any] = {}
        if addresses:  # pin the checked address; TLS still verifies the certificate for the name
            headers["Host"] = target.netloc.decode("ascii")
            extensions["sni_hostname"] = origin[1]
            target = target.copy_with(host=addresses[0])
        try:
            with bounded_client(verify=ssl_context(), timeout=httpx.Timeout(TIMEOUT_SECONDS, connect=min(5.0, TIMEOUT_SECONDS))) as http, \
                    total_deadline(TOTAL_SECONDS):  # connect, send and answer, all within TOTAL_SECONDS
                with http.stream("POST", target, content=body, headers=headers, extensions=extensions) as response:
                    read = 0
                    for chunk in response.iter_bytes():  # bounded: the body is never needed whole
                        read += len(chunk)
                        if read >= MAX_RESPONSE_BYTES:
                            break
                    return {"statusCode": response.status_code}
        except httpx.HTTPError as error:
            return {"error": type(error).__name__}
