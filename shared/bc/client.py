"""BCClient: GETs against one company with retries, backoff and server-driven paging.

Slow pages (design.md §14 "Slow operations"): BC allows an operation 8 minutes (then 408; a
request over 10 minutes ends in 504), and a heavy `$expand` page can take minutes. So a read
attempt may take BC_TIMEOUT_SECONDS (default 490 s, just over BC's 8 minutes), and a page that
times out (our read timeout, 408 or 504) is asked again with half the page size
(`Prefer: odata.maxpagesize`) down to BC_MIN_PAGE_SIZE, instead of resending the same request.
A nextLink carries a skiptoken (the last key read), so it stays valid with a smaller page: no
row is skipped or read twice. After GROW_AFTER_PAGES good pages the size doubles again, up to
BC_PAGE_SIZE. The size learnt is kept per entity set in this process, so the next slice starts
from it. One call (every attempt, halving and wait) ends within BC_TIMEOUT_SECONDS +
BC_MAX_RETRY_SECONDS."""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
import threading
from typing import Any, Iterator
from urllib.parse import quote, urlsplit

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
TIMEOUT_STATUSES = frozenset({408, 504})  # BC's operation timeout and the gateway's
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
GROW_AFTER_PAGES = 5  # good pages at a reduced size before it doubles again
_SIZES_KEPT = 512  # entity sets whose reduced page size this process remembers


class BCTimeout(BCUnavailable):
    """A read that BC (408, 504) or our read timeout cut short: ask again with a smaller page.
    Unlike an outage it is about one query (a heavy page), so the run's other types go on."""

    code = "bc_timeout"
    fatal_for_run = False


class PageSizes:
    """The page size to ask for, per entity set (process-wide, bounded): halved on a timeout,
    doubled back after GROW_AFTER_PAGES good pages, never above the configured size."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sizes: dict[str, tuple[int, int]] = {}  # key -> (size, good pages at that size)

    def current(self, key: str, ceiling: int) -> int:
        with self._lock:
            size = self._sizes.get(key, (ceiling, 0))[0]
        return max(1, min(size, ceiling))

    def timed_out(self, key: str, size: int, floor: int) -> int | None:
        """The smaller size to try next, or None when `size` is already at the floor."""
        if size <= floor:
            return None
        smaller = max(floor, size // 2)
        with self._lock:
            if len(self._sizes) >= _SIZES_KEPT and key not in self._sizes:
                self._sizes.pop(next(iter(self._sizes)))
            self._sizes[key] = (smaller, 0)
        return smaller

    def good(self, key: str, size: int, ceiling: int) -> None:
        with self._lock:
            if key not in self._sizes:
                return
            current, good = self._sizes[key]
            if size != current:
                return
            good += 1
            if good >= GROW_AFTER_PAGES:
                bigger = min(ceiling, current * 2)
                if bigger >= ceiling:
                    del self._sizes[key]
                else:
                    self._sizes[key] = (bigger, 0)
            else:
                self._sizes[key] = (current, good)


PAGE_SIZES = PageSizes()


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


def _transient_conflict(status: int, failure: BCError) -> bool:
    """BC answers a deadlock with 409 Internal_ServerError "... deadlocked with another user. Please
    retry the activity." (tap-dynamics-bc retries it): transient, unlike Request_EntityChanged."""
    return status == 409 and "deadlock" in failure.message.lower()


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
        timeout_seconds: float = 490.0,
        budget: "RequestBudget | None" = None,
        min_page_size: int = 50,
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
        self._min_page_size = max(1, min(min_page_size, page_size))
        self._max_retries = max_retries
        self._max_retry_seconds = max_retry_seconds
        self._timeout = timeout_seconds  # per attempt, in total (connect, headers and body)
        # Answers come back decoded within max_response_bytes and 64 levels of JSON (bc_error otherwise).
        self._http = bc_http_client(timeout=httpx.Timeout(timeout_seconds, connect=min(CONNECT_TIMEOUT_SECONDS, timeout_seconds)), max_bytes=max_response_bytes)
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

    def get_record(self, entity_set: str, record_id: str, *, select: list[str] | None = None, expand: str | None = None) -> dict[str, Any] | None:
        """One record by its id (`GET {entitySet}({id})`); None when BC no longer has it."""
        query = odata_query({"$select": ",".join(select) if select else None, "$expand": expand})
        url = f"{self.company_url}/{entity_set}({quote(record_id, safe='-')})" + (f"?{query}" if query else "")
        try:
            return self._json(self._get(url, step="read"))
        except BCError as error:
            if error.http_status == 404 and error.bc_code is not None and "CompanyNotFound" not in error.bc_code:
                return None
            raise

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
            body = self._json(self._get_page(url, step=step))
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

    def _get(self, url: str, *, step: str, accept: str = "application/json", page_size: int | None = None,
             timeouts_retried: bool = True, started: float | None = None, page_read: bool = False) -> httpx.Response:
        return self.request(
            "GET", url, step=step,
            headers={"Accept": accept, "Data-Access-Intent": "ReadOnly", "Prefer": f"odata.maxpagesize={page_size or self._page_size}"},
            timeouts_retried=timeouts_retried, started=started, page_read=page_read,
        )

    def _get_page(self, url: str, *, step: str) -> httpx.Response:
        """One page; on a timeout the same query again with half the page size (see the module
        docstring). At the floor a timeout is retried as any other failure."""
        key = urlsplit(url).path
        size = PAGE_SIZES.current(key, self._page_size)
        started = time.monotonic()
        halvings = 0
        while True:
            at_floor = size <= self._min_page_size
            try:
                response = self._get(url, step=step, page_size=size, timeouts_retried=at_floor, started=started, page_read=True)
            except BCTimeout as error:
                smaller = PAGE_SIZES.timed_out(key, size, self._min_page_size)
                if smaller is None:
                    raise
                delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**halvings) * (0.5 + random.random() / 2)
                log.info("BC page of %d timed out (%s); asking again for %d in %.1fs", size, error.message, smaller, delay)
                self._clock.sleep(delay)  # a short pause, as for any failure: BC may also be busy
                size, halvings = smaller, halvings + 1
                continue
            PAGE_SIZES.good(key, size, self._page_size)
            return response

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
        timeouts_retried: bool = True,
        started: float | None = None,
        page_read: bool = False,
    ) -> httpx.Response:
        """One BC request with the token, the request budget, the total deadline, backoff
        retries and a token renewal on 401. Every call goes through here, reads and the
        subscription writes alike, so the rules (own origin only, no redirects) hold for all.
        `retry_transport=False`: a write that may have reached BC is not sent again after a
        dropped connection (only a connection that never opened is). `timeouts_retried=False`:
        a timeout raises BCTimeout at once (the caller asks again with a smaller page).
        `page_read`: a timeout that outlasts the retries is a BCTimeout (that query's failure,
        not the run's); elsewhere it stays BCUnavailable.
        Each attempt takes at most BC_TIMEOUT_SECONDS, and the whole call (from `started`, real
        time, plus the waits) at most BC_TIMEOUT_SECONDS + BC_MAX_RETRY_SECONDS."""
        if self.origin is None or origin_of(url) != self.origin:
            # A saved checkpoint or a link from elsewhere: the token goes to the integration's own BC only.
            raise BCError("Refusing to send the Business Central token to a URL outside the integration's BC origin", step=step)
        attempt, waited, renewed = 0, 0.0, False
        began = time.monotonic() if started is None else started
        call_seconds = self._timeout + self._max_retry_seconds
        while True:
            sent = {"Authorization": f"Bearer {self._tokens.token()}", **(headers or {})}
            delay: float | None = None
            # this attempt's total: the per-attempt timeout, within what is left of the call
            allowed = max(1.0, min(self._timeout, call_seconds - waited - (time.monotonic() - began)))
            try:
                self.requests_made += 1
                if self._budget is None:
                    with total_deadline(allowed):  # a trickling host cannot hold the worker
                        response = self._http.request(method, url, json=json, headers=sent)
                else:
                    with self._budget.request(), total_deadline(allowed):  # BC's limits across every instance
                        response = self._http.request(method, url, json=json, headers=sent)
            except httpx.TransportError as error:
                failure: BCError = BCUnavailable(f"Business Central is unreachable ({type(error).__name__})", step=step)
                if page_read and isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout):
                    failure = BCTimeout(f"Business Central did not answer within {allowed:.0f} s ({type(error).__name__})", step=step)
                    if not timeouts_retried:
                        raise failure from None
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
                if page_read and response.status_code in TIMEOUT_STATUSES:
                    failure = BCTimeout(failure.message, bc_code=failure.bc_code, correlation_id=failure.correlation_id,
                                        http_status=response.status_code, step=step)
                    if not timeouts_retried:
                        raise failure
                if response.status_code not in retry_statuses and not _transient_conflict(response.status_code, failure):
                    raise failure
                delay = retry_after_seconds(response)
            if delay is None:
                delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt) * (0.5 + random.random() / 2)
            elapsed = waited + (time.monotonic() - began)
            if attempt >= self._max_retries or waited + delay > self._max_retry_seconds or elapsed + delay >= call_seconds:
                log.warning("BC %s failed after %d attempts: %s", method, attempt + 1, failure.message)
                raise failure
            log.info("BC %s; retrying in %.1fs (attempt %d)", failure.code, delay, attempt + 1)
            self._clock.sleep(delay)
            waited += delay
            attempt += 1
