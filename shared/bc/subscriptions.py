"""The few writes the service makes to BC: webhook subscriptions (design.md §10).

`{root}/subscriptions` sits beside `/companies` under the same service root, reached with the
same token, request budget, retry table and error decoding as the reads in shared/bc/client.py.
Only URLs under that root are ever called, so the bearer token never leaves BC's origin."""
from __future__ import annotations

import logging
import random
from typing import Any

import httpx

from shared.bc.client import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, RETRY_STATUSES, BCClient, retry_after_seconds
from shared.bc.errors import decode_error
from shared.destinations import origin_of
from shared.errors import BCError, BCUnavailable
from shared.outbound import total_deadline

log = logging.getLogger(__name__)

#: A POST that may have been applied is not repeated (a second subscription would count against
#: BC's 200): only answers that say "not processed" are retried for it.
CREATE_RETRY_STATUSES = frozenset({429, 503})


class SubscriptionNotFound(BCError):
    code = "bc_subscription_not_found"


class SubscriptionClient:
    """Create, renew and delete subscriptions with an integration's BCClient (its token,
    budget, clock, retry settings, origin and HTTP pool; its private parts are used on purpose,
    so both follow one set of rules)."""

    def __init__(self, client: BCClient) -> None:
        self._bc = client
        self.root = client.root

    def _url(self, subscription_id: str | None = None) -> str:
        if subscription_id is None:
            return f"{self.root}/subscriptions"
        return f"{self.root}/subscriptions('{subscription_id.replace(chr(39), chr(39) * 2)}')"

    def create(self, *, notification_url: str, resource: str, client_state: str) -> dict[str, Any]:
        body = {"notificationUrl": notification_url, "resource": resource, "clientState": client_state}
        return self._send("POST", self._url(), body=body, retry=CREATE_RETRY_STATUSES).json()

    def renew(self, subscription_id: str, etag: str, *, notification_url: str | None, resource: str) -> dict[str, Any]:
        """PATCH with If-Match; BC repeats the handshake and answers the new expiry and etag.
        The clientState is not resent (it is only stored hashed; BC keeps it)."""
        body = {"resource": resource}
        if notification_url:
            body["notificationUrl"] = notification_url
        return self._send("PATCH", self._url(subscription_id), body=body, etag=etag).json()

    def delete(self, subscription_id: str, etag: str | None) -> None:
        """Delete; one BC no longer knows counts as deleted."""
        try:
            self._send("DELETE", self._url(subscription_id), etag=etag or "*")
        except SubscriptionNotFound:
            pass

    def _send(
        self, method: str, url: str, *, body: dict[str, Any] | None = None, etag: str | None = None, retry: frozenset[int] = RETRY_STATUSES
    ) -> httpx.Response:
        bc = self._bc
        if bc.origin is None or origin_of(url) != bc.origin:
            raise BCError("Refusing to send the Business Central token to a URL outside the integration's BC origin", step="subscriptions")
        attempt, waited, renewed = 0, 0.0, False
        while True:
            headers = {"Authorization": f"Bearer {bc._tokens.token()}", "Accept": "application/json"}
            if etag:
                headers["If-Match"] = etag
            delay: float | None = None
            try:
                bc.requests_made += 1
                if bc._budget is None:
                    with total_deadline(bc._timeout):
                        response = bc._http.request(method, url, json=body, headers=headers)
                else:
                    with bc._budget.request(), total_deadline(bc._timeout):
                        response = bc._http.request(method, url, json=body, headers=headers)
            except httpx.TransportError as error:
                failure: BCError = BCUnavailable(f"Business Central is unreachable ({type(error).__name__})", step="subscriptions")
                if method == "POST" and not isinstance(error, httpx.ConnectError):
                    raise failure from None  # it may have been created: the next renewal round retries
            else:
                if 300 <= response.status_code < 400:  # never followed: the token would travel with it
                    raise BCError(f"Business Central answered a redirect (HTTP {response.status_code}); redirects are not followed",
                                  http_status=response.status_code, step="subscriptions")
                if response.status_code < 400:
                    return response
                if response.status_code == 401 and not renewed:
                    renewed = True
                    bc._tokens.invalidate()
                    continue
                failure = decode_error(response, step="subscriptions")
                if response.status_code == 404 and method != "POST":
                    raise SubscriptionNotFound(failure.message, bc_code=failure.bc_code, correlation_id=failure.correlation_id, http_status=404, step="subscriptions")
                if response.status_code not in retry:
                    raise failure
                delay = retry_after_seconds(response)
            if delay is None:
                delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt) * (0.5 + random.random() / 2)
            if attempt >= bc._max_retries or waited + delay > bc._max_retry_seconds:
                log.warning("BC subscription %s failed after %d attempts: %s", method, attempt + 1, failure.message)
                raise failure
            bc._clock.sleep(delay)
            waited += delay
            attempt += 1
