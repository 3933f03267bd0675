"""Outbound HTTP bounded in total time, not only per read.

httpx's timeouts apply to each connect, read and write; a host that trickles one byte just under
the read timeout could hold a worker for hours. Here every socket operation also gets at most
the time left before the request's deadline, so a whole request (connect, TLS, headers, body)
ends by then with an httpx timeout error, which callers already handle."""
from __future__ import annotations

import contextlib
import functools
import os
import ssl
import threading
import time
from typing import Any, Callable, Iterator

import certifi
import httpcore
import httpx

_local = threading.local()


@contextlib.contextmanager
def total_deadline(seconds: float) -> Iterator[None]:
    """Every request made by a `bounded_client` in this block (this thread) ends within `seconds`."""
    previous = getattr(_local, "deadline", None)
    mine = time.monotonic() + seconds
    _local.deadline = mine if previous is None else min(previous, mine)
    try:
        yield
    finally:
        _local.deadline = previous


def _bound(timeout: float | None) -> float | None:
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise httpcore.ReadTimeout("the request's total time limit was reached")
    return remaining if timeout is None else min(timeout, remaining)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bound(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bound(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _bound(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, _bound(timeout), local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, _bound(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _Transport(httpx.HTTPTransport):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pool = self._pool
        # httpx 0.28 / httpcore 1.0: the pool's network backend is the one seam for this;
        # tests/test_security_bounds.py proves the bound, so an upgrade that moves it fails loudly.
        pool._network_backend = _Backend(getattr(pool, "_network_backend", None) or httpcore.SyncBackend())


def bounded_client(*, verify: ssl.SSLContext, timeout: httpx.Timeout | float,
                   wrap: Callable[[httpx.BaseTransport], httpx.BaseTransport] | None = None, **kwargs: Any) -> httpx.Client:
    """An httpx.Client whose requests honour `total_deadline`; redirects are never followed.
    `wrap` puts a transport around the bounded one (the BC client's bounded answers)."""
    transport: httpx.BaseTransport = _Transport(verify=verify)
    if wrap is not None:
        transport = wrap(transport)
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False, **kwargs)


def ssl_context() -> ssl.SSLContext:
    """Trust from the standard variables, so a local authority with its own CA works as is."""
    cafile = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE") or certifi.where()
    try:
        version = os.stat(cafile).st_mtime_ns
    except OSError:
        version = 0  # create_default_context reports the missing file
    return _context(cafile, version)


@functools.lru_cache(maxsize=8)
def _context(cafile: str, version: int) -> ssl.SSLContext:
    """Loading a CA bundle costs ~25 ms of CPU, and every BC client, Entra ID client and webhook
    delivery needs one: a context serves any number of connections, so one is kept per bundle
    (a bundle replaced on disk gets a new one)."""
    return ssl.create_default_context(cafile=cafile)


class MsalHttpClient:
    """The http_client msal takes (its documented interface, which httpx already matches), with
    every call to Entra ID bounded in total time."""

    def __init__(self, total_seconds: float) -> None:
        self._total = total_seconds
        self._http = bounded_client(verify=ssl_context(), timeout=httpx.Timeout(total_seconds, connect=min(10.0, total_seconds)))

    def post(self, url: str, params: Any = None, data: Any = None, headers: Any = None, **_: Any) -> httpx.Response:
        with total_deadline(self._total):
            return self._http.post(url, params=params, data=data, headers=headers)

    def get(self, url: str, params: Any = None, headers: Any = None, **_: Any) -> httpx.Response:
        with total_deadline(self._total):
            return self._http.get(url, params=params, headers=headers)

    def close(self) -> None:
        self._http.close()


def deadline_remaining(default: float) -> float:
    """Seconds left before this thread's `total_deadline` (or `default` outside one)."""
    deadline = getattr(_local, "deadline", None)
    return default if deadline is None else max(0.0, deadline - time.monotonic())


def within(seconds: float, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) on a helper thread, given up after `seconds` (socket.getaddrinfo has no timeout
    of its own: a slow resolver must not hold the caller past its deadline). A call given up on
    finishes in the background and its result is dropped."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            box["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="bounded-call").start()
    if not done.wait(max(0.0, seconds)):
        raise TimeoutError(f"gave up after {seconds:.1f}s")
    if "error" in box:
        raise box["error"]
    return box["value"]
