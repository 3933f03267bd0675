"""BCClient: GETs against one company with retries, backoff and server-driven paging."""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Iterator
from urllib.parse import quote

import httpx

from shared.bc.auth import Tokens
from shared.bc.bounded import DEFAULT_MAX_RESPONSE_BYTES, bc_http_client
from shared.bc.budget import RequestBudget
from shared.bc.errors import decode_error
from shared.clock import Clock
from shared.destinations import origin_of
from shared.errors import BCError, BCUnavailable
from shared.outbound import total_deadline

log = logging.getLogger(__name__)

#: What to do with each failed status: retry (with backoff), or fail at once. 401 is special:
#: the token is renewed once, then it fails as bc_auth_failed.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]
    next_link: str | None


def service_root(*, api_base_url: str, tenant_id: str, environment: str, base_url: str | None) -> str:
    """The URL before `/companies`: SaaS `{host}/v2.0/{tenant}/{environment}/api/v2.0`, or an
    on-premises / sovereign-cloud `baseUrl` (the service root that precedes `/api/v2.0`)."""
    if base_url:
        return f"{base_url.rstrip('/')}/api/v2.0"
    return f"{api_base_url.rstrip('/')}/v2.0/{quote(tenant_id, safe='')}/{quote(environment, safe='')}/api/v2.0"


def odata_query(params: dict[str, str | None]) -> str:
    """Encode OData options the way BC expects them ($ kept, spaces as %20)."""
    parts = [f"{key}={quote(value, safe=chr(39) + ',()=:$')}" for key, value in params.items() if value is not None]
    return "&".join(parts)


def retry_after_seconds(response: httpx.Response, now_epoch: float | None = None) -> float | None:
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now_epoch if now_epoch is not None else time.time()))


class BCClient:
    """Read-only access to one company. Every request sends `Data-Access-Intent: ReadOnly` (BC
    serves it from a replica) and asks for pages of `page_size` via `Prefer: odata.maxpagesize`."""

    def __init__(
        self,
        *,
        root: str,
        company_id: str,
        tokens: Tokens,
        clock: Clock,
        page_size: int = 1000,
        max_retries: int = 5,
        max_retry_seconds: float = 120.0,
        timeout_seconds: float = 60.0,
        budget: "RequestBudget | None" = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.root = root.rstrip("/")
        #: The only origin (scheme, host, port) this client ever sends its bearer token to.
        self.origin = origin_of(self.root)
        self._budget = budget
        self.company_id = company_id
        self._tokens = tokens
        self._clock = clock
        self._page_size = page_size
        self._max_retries = max_retries
        self._max_retry_seconds = max_retry_seconds
        self._timeout = timeout_seconds  # per connect/read, and for each request in total
        # Answers come back decoded within max_response_bytes and 64 levels of JSON (bc_error otherwise).
        self._http = bc_http_client(timeout=timeout_seconds, max_bytes=max_response_bytes)
        self.requests_made = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "BCClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def company_url(self) -> str:
        return f"{self.root}/companies({self.company_id})"

    def authenticate(self) -> None:
        """Obtain a token now, so a credential problem is reported as its own step."""
        self._tokens.token()

    # -- reads -------------------------------------------------------------------------
    def list_companies(self) -> list[dict[str, Any]]:
        companies: list[dict[str, Any]] = []
        for page in self._pages(f"{self.root}/companies", step="companies"):
            companies.extend(page.records)
        return companies

    def get_company(self) -> dict[str, Any]:
        return self._json(self._get(self.company_url, step="company"))

    def count(self, entity_set: str, *, filter: str | None = None) -> int:
        url = f"{self.company_url}/{entity_set}/$count"
        if filter:
            url += "?" + odata_query({"$filter": filter})
        response = self._get(url, step="count", accept="text/plain")
        try:
            return int(response.text.strip().lstrip("\ufeff"))
        except ValueError:
            raise BCError(f"Business Central answered a count of {entity_set} that is not a number", step="count") from None

    def first(self, entity_set: str, **options: str | None) -> dict[str, Any] | None:
        """The first record for the given options ($top=1, so no paging)."""
        query = odata_query({"$top": "1", **{f"${k}": v for k, v in options.items()}})
        body = self._json(self._get(f"{self.company_url}/{entity_set}?{query}", step="read"))
        values = body.get("value") or []
        return values[0] if values else None

    def pages(
        self,
        entity_set: str,
        *,
        select: list[str] | None = None,
        filter: str | None = None,
        expand: str | None = None,
        orderby: str | None = None,
        start_url: str | None = None,
    ) -> Iterator[Page]:
        """Pages of an entity set; `start_url` resumes at a nextLink saved by an earlier run."""
        url = start_url
        if url is None:
            query = odata_query({"$select": ",".join(select) if select else None, "$filter": filter, "$expand": expand, "$orderby": orderby})
            url = f"{self.company_url}/{entity_set}" + (f"?{query}" if query else "")
        return self._pages(url, step="read")

    def _pages(self, url: str, *, step: str) -> Iterator[Page]:
        seen: set[str] = set()
        while url:
            body = self._json(self._get(url, step=step))
            next_link = body.get("@odata.nextLink")
            if next_link is not None:
                if not isinstance(next_link, str) or origin_of(next_link) != self.origin:
                    # Following it would send our bearer token to another host.
                    raise BCError("Business Central returned a nextLink to another host; refusing to follow it", step=step)
                if next_link in seen:
                    raise BCError("Business Central returned the same nextLink twice; stopping to avoid a loop", step=step)
                seen.add(next_link)
            yield Page(records=list(body.get("value") or []), next_link=next_link)
            url = next_link

    # -- transport -----------------------------------------------------------------------
    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            # Money stays exact: JSON numbers with fractions become Decimal, never float.
            return json.loads(response.content, parse_float=Decimal)
        except ValueError:
            raise BCError(f"Business Central answered HTTP {response.status_code} with a body that is not JSON") from None

    def _get(self, url: str, *, step: str, accept: str = "application/json") -> httpx.Response:
        return self.request(
            "GET", url, step=step,
            headers={"Accept": accept, "Data-Access-Intent": "ReadOnly", "Prefer": f"odata.maxpagesize={self._page_size}"},
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        step: str,
        headers: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
        retry_transport: bool = True,
    ) -> httpx.Response:
        """One BC request with the token, the request budget, the total deadline, backoff
        retries and a token renewal on 401. Every call goes through here, reads and the
        subscription writes alike, so the rules (own origin only, no redirects) hold for all.
        `retry_transport=False`: a write that may have reached BC is not sent again after a
        dropped connection (only a connection that never opened is)."""
        if self.origin is None or origin_of(url) != self.origin:
            # A saved checkpoint or a link from elsewhere: the token goes to the integration's own BC only.
            raise BCError("Refusing to send the Business Central token to a URL outside the integration's BC origin", step=step)
        attempt, waited, renewed = 0, 0.0, False
        while True:
            sent = {"Authorization": f"Bearer {self._tokens.token()}", **(headers or {})}
            delay: float | None = None
            try:
                self.requests_made += 1
                if self._budget is None:
                    with total_deadline(self._timeout):  # a trickling host cannot hold the worker
                        response = self._http.request(method, url, json=json, headers=sent)
                else:
                    with self._budget.request(), total_deadline(self._timeout):  # BC's limits across every instance
                        response = self._http.request(method, url, json=json, headers=sent)
            except httpx.TransportError as error:
                failure: BCError = BCUnavailable(f"Business Central is unreachable ({type(error).__name__})", step=step)
                if not retry_transport and not isinstance(error, httpx.ConnectError):
                    raise failure from None
            else:
                if 300 <= response.status_code < 400:
                    # Redirects are never followed: the token would travel with them.
                    raise BCError(
                        f"Business Central answered a redirect (HTTP {response.status_code}); redirects are not followed",
                        http_status=response.status_code, step=step,
                    )
                if response.status_code < 400:
                    return response
                if response.status_code == 401 and not renewed:
                    renewed = True
                    self._tokens.invalidate()
                    continue
                failure = decode_error(response, step=step)
                if response.status_code not in retry_statuses:
                    raise failure
                delay = retry_after_seconds(response)
            if delay is None:
                delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt) * (0.5 + random.random() / 2)
            if attempt >= self._max_retries or waited + delay > self._max_retry_seconds:
                log.warning("BC %s failed after %d attempts: %s", method, attempt + 1, failure.message)
                raise failure
            log.info("BC %s; retrying in %.1fs (attempt %d)", failure.code, delay, attempt + 1)
            self._clock.sleep(delay)
            waited += delay
            attempt += 1
