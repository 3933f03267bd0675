"""Table Storage's point operations and queries sent directly over one urllib3 pool, not through
the SDK's pipeline.

Why: measured against Azurite, a point read through the SDK's TableClient costs about 1.7 ms of
CPU in this process (eleven pipeline policies, requests, the generated deserializer) and about
0.5 ms here. The service makes tens of thousands of them: leases, request slots, run and sync
states, lookups. The wire protocol is the one the SDK speaks (API version 2019-02-02, JSON with
minimal metadata). Authentication is the SDK's too: Shared Key from a connection string, or a
bearer token from a TokenCredential. Retries follow the SDK's rules (`TableHttp.send`), and results use
the SDK's own types (entities from its converter, azure.core's errors), so callers cannot tell
the difference.

    tables = TableHttp(endpoint, SharedKey(account, key))   # or BearerToken(credential)
    client = TableRest(tables, "Suppliers")
    client.get_entity(pk, rk); client.query_entities("PartitionKey eq @pk", parameters=...)

Entity-group transactions have their own encoder (shared/storage/batch.py), shared with the aio
writer in shared/storage/tables.py."""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import ssl
import threading
import time
import urllib.request
from email.utils import formatdate
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import quote, urlencode, urlparse

import urllib3
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError, ServiceRequestError, ServiceResponseError
from azure.data.tables import TableEntity
from azure.data.tables._deserialize import _convert_to_entity  # the SDK's own entity converter
from azure.data.tables._serialize import _parameter_filter_substitution

from shared.outbound import ssl_context
from shared.storage.batch import decode_batch, encode_batch, encode_entity, storage_error

API_VERSION = "2019-02-02"
STORAGE_SCOPE = "https://storage.azure.com/.default"
TOKEN_REFRESH_SECONDS = 300  # a bearer token is renewed this long before it expires
TIMEOUT = urllib3.Timeout(connect=20.0, read=60.0)
POOL_SIZE = 16  # connections kept per storage endpoint (the read pool has 8 threads)
# azure-core's RetryPolicy, as the SDK's clients use it: 3 retries of a connection that failed,
# 3 of a lost answer (methods that may be repeated), 3 of a retryable status, sleeping 0, 1.6
# and 3.2 s (or what Retry-After asks).
RETRIES = 3
BACKOFF = 0.8
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REPEATABLE = frozenset({"GET", "PUT", "DELETE"})  # POST and PATCH only on 500, 503 and 504
_JSON = "application/json"
_MINIMAL = "application/json;odata=minimalmetadata"
# Failures before the request left: a retry cannot repeat anything the service did.
_NOT_SENT = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.SSLError,
             urllib3.exceptions.ProxyError)
_dumps = json.JSONEncoder(ensure_ascii=True, check_circular=False, allow_nan=False).encode
Entity = Mapping[str, Any]


class SharedKey:
    """Shared Key authorization for the Table service (the string the SDK's policy signs)."""

    def __init__(self, account: str, key: str) -> None:
        self._account = account
        self._key = base64.b64decode(key)

    def authorize(self, method: str, path: str, headers: dict[str, str]) -> None:
        signed = f"{method}\n\n{headers.get('Content-Type', '')}\n{headers['x-ms-date']}\n/{self._account}{path}"
        digest = hmac.new(self._key, signed.encode("utf-8"), hashlib.sha256).digest()
        headers["Authorization"] = f"SharedKey {self._account}:{base64.b64encode(digest).decode()}"


class BearerToken:
    """A TokenCredential's token for Azure Storage, kept until shortly before it expires."""

    def __init__(self, credential: Any) -> None:
        self.credential = credential
        self._token: Any = None
        self._lock = threading.Lock()

    def authorize(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            if self._token is None or self._token.expires_on - time.time() < TOKEN_REFRESH_SECONDS:
                self._token = self.credential.get_token(STORAGE_SCOPE)  # its failures propagate, as in the SDK
            headers["Authorization"] = f"Bearer {self._token.token}"


class TableHttp:
    """One storage account's table endpoint: signs, sends and retries requests, and maps the
    service's refusals to azure.core's errors."""

    def __init__(self, endpoint: str, authorization: SharedKey | BearerToken) -> None:
        parsed = urlparse(endpoint.rstrip("/"))
        if isinstance(authorization, BearerToken) and parsed.scheme != "https":
            raise ValueError("a bearer token is only ever sent over https")
        self._origin = f"{parsed.scheme}://{parsed.netloc}"
        self._root = parsed.path  # Azurite: /devstoreaccount1
        self.base_url = self._origin + self._root
        self._authorization = authorization
        self._pool = _pool(parsed.scheme, parsed.hostname or "")

    def send(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: bytes | None = None,
             headers: Mapping[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        """The answer to one request (`path` under the account, already quoted), after the
        SDK's retries; an answer of 400 or more is raised as azure.core's error for it."""
        url = self._origin + self._root + path + ("?" + urlencode(params, quote_via=quote) if params else "")
        attempt = 0
        while True:
            sent = {"x-ms-version": API_VERSION, "DataServiceVersion": "3.0", "Accept": _MINIMAL, **(headers or {})}
            if body is not None:
                sent.setdefault("Content-Type", _JSON)
            sent["x-ms-date"] = formatdate(usegmt=True)
            self._authorization.authorize(method, self._root + path, sent)
            response = None
            try:
                response = self._pool.request(method, url, body=body, headers=sent, retries=False, redirect=False, timeout=TIMEOUT)
            except _NOT_SENT as error:
                if attempt == RETRIES:
                    raise ServiceRequestError(message=f"storage unreachable: {error}", error=error) from error
            except urllib3.exceptions.HTTPError as error:  # sent, but the answer was lost
                if attempt == RETRIES or method not in REPEATABLE:
                    raise ServiceResponseError(message=f"storage answer lost: {error}", error=error) from error
            else:
                if response.status < 400:
                    return response
                if attempt == RETRIES or not _retryable(method, response):
                    raise storage_error(response.status, response.headers, response.data.decode("utf-8", "replace"))
            attempt += 1
            asked = _retry_after(response)
            time.sleep(_backoff(attempt) if asked is None else asked)

    def create_table(self, name: str) -> None:
        """Creates the table; one that exists already is fine."""
        try:
            self.send("POST", "/Tables", body=_dumps({"TableName": name}).encode(), headers={"Prefer": "return-no-content"})
        except ResourceExistsError:
            pass


def _retryable(method: str, response: urllib3.BaseHTTPResponse) -> bool:
    if response.headers.get("Retry-After") and method in REPEATABLE:
        return True
    if method in REPEATABLE:
        return response.status in RETRY_STATUSES
    return response.status in (500, 503, 504)


def _backoff(attempt: int) -> float:
    """azure-core's exponential backoff: none before the first retry, then 1.6 s, 3.2 s."""
    return 0.0 if attempt <= 1 else BACKOFF * 2 ** (attempt - 1)


def _retry_after(response: urllib3.BaseHTTPResponse | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    try:
        return min(float(value), 120.0) if value else None
    except ValueError:
        return None


def _pool(scheme: str, host: str) -> urllib3.PoolManager:
    """One connection pool per process for each way out: a proxy, if the standard variables
    name one for this host, and the trust of shared/outbound.py (its CA bundle)."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) if proxies and not urllib.request.proxy_bypass(host) else None
    return _pool_for(proxy, ssl_context() if scheme == "https" else None)


@functools.lru_cache(maxsize=8)
def _pool_for(proxy: str | None, context: ssl.SSLContext | None) -> urllib3.PoolManager:
    if proxy:
        return urllib3.ProxyManager(proxy, maxsize=POOL_SIZE, ssl_context=context)
    return urllib3.PoolManager(maxsize=POOL_SIZE, ssl_context=context)


class TableRest:
    """One table: the TableClient methods the service uses, with the SDK's signatures and
    results (TableEntity with its etag; metadata dicts with "etag"; missing-entity deletes
    ignored)."""

    def __init__(self, http: TableHttp, table_name: str) -> None:
        self._http = http
        self.table_name = table_name

    def _address(self, partition_key: str, row_key: str) -> str:
        return f"/{self.table_name}(PartitionKey='{_key(partition_key)}',RowKey='{_key(row_key)}')"

    def get_entity(self, partition_key: str, row_key: str, *, select: list[str] | str | None = None) -> TableEntity:
        params = {"$select": select if isinstance(select, str) else ",".join(select)} if select else None
        response = self._http.send("GET", self._address(partition_key, row_key), params=params)
        return _convert_to_entity(json.loads(response.data))

    def create_entity(self, entity: Entity) -> dict[str, Any]:
        return _metadata(self._http.send("POST", f"/{self.table_name}", body=_body(entity), headers={"Prefer": "return-no-content"}))

    def upsert_entity(self, entity: Entity, mode: str = "merge") -> dict[str, Any]:
        method = _method(mode)
        return _metadata(self._http.send(method, self._address(entity["PartitionKey"], entity["RowKey"]), body=_body(entity)))

    def update_entity(self, entity: Entity, mode: str = "merge", *, etag: str | None = None,
                      match_condition: MatchConditions | None = None) -> dict[str, Any]:
        """Changes an existing entity only: If-Match its `etag` under IfNotModified, else any."""
        headers = {"If-Match": _condition(entity, etag, match_condition)}
        address = self._address(entity["PartitionKey"], entity["RowKey"])
        return _metadata(self._http.send(_method(mode), address, body=_body(entity), headers=headers))

    def delete_entity(self, *args: Any, etag: str | None = None, match_condition: MatchConditions | None = None) -> None:
        """(partition_key, row_key) or (entity); an entity already gone is not an error."""
        entity = args[0] if len(args) == 1 else None
        partition_key, row_key = (entity["PartitionKey"], entity["RowKey"]) if entity is not None else args
        headers = {"If-Match": _condition(entity or {}, etag, match_condition)}
        try:
            self._http.send("DELETE", self._address(partition_key, row_key), headers=headers)
        except ResourceNotFoundError:
            pass

    def query_entities(self, query_filter: str, *, parameters: Mapping[str, Any] | None = None,
                       select: list[str] | str | None = None, results_per_page: int | None = None) -> EntityPages:
        params: dict[str, Any] = {"$filter": _parameter_filter_substitution(dict(parameters or {}), query_filter)}
        return self._pages(params, select, results_per_page)

    def list_entities(self, *, select: list[str] | str | None = None, results_per_page: int | None = None) -> EntityPages:
        return self._pages({}, select, results_per_page)

    def _pages(self, params: dict[str, Any], select: list[str] | str | None, top: int | None) -> EntityPages:
        if select:
            params["$select"] = select if isinstance(select, str) else ",".join(select)
        if top:
            params["$top"] = top

        def fetch(token: Mapping[str, str | None] | None) -> tuple[list[TableEntity], dict[str, str | None] | None]:
            sent = dict(params)
            if token:
                sent.update({f"Next{name}": value for name, value in token.items() if value})
            response = self._http.send("GET", f"/{self.table_name}()", params=sent)
            rows = [_convert_to_entity(row) for row in json.loads(response.data)["value"]]
            following = {name: response.headers.get(f"x-ms-continuation-Next{name}") for name in ("PartitionKey", "RowKey")}
            return rows, following if any(following.values()) else None

        return EntityPages(fetch)

    def submit_transaction(self, operations: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """One entity-group transaction (shared/storage/batch.py's operations); all or nothing."""
        body, boundary = encode_batch(self._http.base_url, self.table_name, operations, API_VERSION)
        headers = {"Content-Type": f"multipart/mixed; boundary={boundary}", "Accept": _JSON, "MaxDataServiceVersion": "3.0;NetFx"}
        response = self._http.send("POST", "/$batch", body=body, headers=headers)
        return decode_batch(response.status, response.headers, response.data.decode("utf-8"))


class EntityPages:
    """A query's results the SDK's way: iterate for the entities (fetched page by page), or
    `by_page(continuation_token)` for the pages, whose `continuation_token` (the SDK's dict of
    next keys, None after the last page) can start another query later."""

    def __init__(self, fetch: Callable[[Mapping[str, str | None] | None], tuple[list[TableEntity], dict[str, str | None] | None]]) -> None:
        self._fetch = fetch

    def __iter__(self) -> Iterator[TableEntity]:
        return (entity for page in self.by_page() for entity in page)

    def by_page(self, continuation_token: Mapping[str, str | None] | None = None) -> PageIterator:
        return PageIterator(self._fetch, continuation_token)


class PageIterator:
    def __init__(self, fetch: Callable[..., tuple[list[TableEntity], dict[str, str | None] | None]],
                 continuation_token: Mapping[str, str | None] | None) -> None:
        self._fetch = fetch
        self.continuation_token = continuation_token
        self._started = False

    def __iter__(self) -> PageIterator:
        return self

    def __next__(self) -> list[TableEntity]:
        if self._started and not self.continuation_token:
            raise StopIteration
        self._started = True
        page, self.continuation_token = self._fetch(self.continuation_token)
        return page


def _key(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("PartitionKey or RowKey must be of type string.")
    return quote(value.replace("'", "''"), safe="")


def _body(entity: Entity) -> bytes:
    return _dumps(encode_entity(entity)).encode("ascii")


def _method(mode: Any) -> str:
    """UpdateMode (or its value): replace is PUT, merge is PATCH."""
    value = getattr(mode, "value", mode)
    if value == "replace":
        return "PUT"
    if value == "merge":
        return "PATCH"
    raise ValueError(f"Update mode {mode} is not supported.")


def _condition(entity: Any, etag: str | None, match_condition: MatchConditions | None) -> str:
    if match_condition == MatchConditions.IfNotModified:
        etag = etag or (entity.metadata.get("etag") if isinstance(entity, TableEntity) else None)
        if not etag:
            raise ValueError("IfNotModified must be specified with etag.")
        return etag
    return "*"


def _metadata(response: urllib3.BaseHTTPResponse) -> dict[str, Any]:
    return {"etag": response.headers.get("ETag"), "date": response.headers.get("Date"), "version": response.headers.get("x-ms-version")}
