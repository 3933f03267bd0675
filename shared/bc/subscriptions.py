"""The few writes the service makes to BC: webhook subscriptions (design.md §10).

`{root}/subscriptions` sits beside `/companies` under the same service root, reached with the
same token, request budget, retry table and error decoding as the reads in shared/bc/client.py.
Only URLs under that root are ever called, so the bearer token never leaves BC's origin."""
from __future__ import annotations

from typing import Any

import httpx

from shared.bc.client import RETRY_STATUSES, BCClient
from shared.errors import BCError

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
        """Through the BC client's one request path (token, budget, origin, no redirects, retries);
        a POST that may have reached BC is not resent after a dropped connection (the next
        renewal round retries it), and a 404 on an existing subscription is its own error."""
        headers = {"Accept": "application/json", **({"If-Match": etag} if etag else {})}
        try:
            return self._bc.request(method, url, step="subscriptions", headers=headers, json=body,
                                    retry_statuses=retry, retry_transport=method != "POST")
        except BCError as error:
            if error.http_status == 404 and method != "POST" and not isinstance(error, SubscriptionNotFound):
                raise SubscriptionNotFound(error.message, http_status=404, step="subscriptions") from None
            raise
