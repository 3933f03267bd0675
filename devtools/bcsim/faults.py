"""Programmable failures (throttling, gateway errors, slow answers, dropped sockets) for retry tests."""
from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

_BC_ERRORS = {
    400: ("BadRequest", "Bad Request - Error in query syntax."),
    401: ("Authentication_InvalidCredentials", "The server has rejected the client credentials."),
    403: ("Authorization_InsufficientPermissions", "Sorry, the current permissions prevented the action."),
    404: ("BadRequest_NotFound", "The requested resource was not found."),
    408: ("Application_OperationTimeout", "The operation has timed out."),
    409: ("Internal_ServerError", "The activity was deadlocked with another user. Please retry the activity."),
    429: ("Application_TooManyRequests", "Too many requests reached. Actual (101). Maximum (100)."),
    500: ("Internal_ServerError", "An unexpected error occurred on the server."),
    503: ("Application_ServiceUnavailable", "The service is temporarily unavailable. Please try again later."),
}
_HTML = {502: "502 Bad Gateway", 504: "504 Gateway Time-out"}


def bc_message(message: str) -> str:
    """BC appends the correlation id with two spaces on each side of the label."""
    return f"{message}  CorrelationId:  {uuid.uuid4()}."


def bc_error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": bc_message(message)}}).encode()


@dataclass
class Fault:
    status: int
    times: int | None = 1  # None: until cleared
    path_contains: str | None = None
    retry_after: int | float | str | None = None
    body: Any = None
    content_type: str | None = None
    delay: float = 0.0
    drop: bool = False
    above_page_size: int | None = None  # only requests asking for a larger page (BC's slow $expand pages)
    hold: threading.Event | None = None  # the request waits until the test sets it (or `delay` passes)

    def matches(self, target: str, is_api: bool, page_size: int | None = None) -> bool:
        """`path_contains` is matched against the decoded path + query, so it can target any route."""
        if self.above_page_size is not None and (page_size is None or page_size <= self.above_page_size):
            return False
        return (self.path_contains in target) if self.path_contains else is_api

    def response(self) -> tuple[bytes, str, dict[str, str]]:
        """(body, content type, extra headers) with per-status defaults shaped like BC/Azure."""
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        if self.body is not None:
            if isinstance(self.body, (dict, list)):
                return json.dumps(self.body).encode(), self.content_type or "application/json", headers
            raw = self.body.encode() if isinstance(self.body, str) else bytes(self.body)
            return raw, self.content_type or "text/plain; charset=utf-8", headers
        if self.status in _HTML:
            html = (f"<html><head><title>{_HTML[self.status]}</title></head><body><h1>{_HTML[self.status]}</h1>"
                    "<p>The gateway did not receive a timely or valid response from the upstream server.</p>"
                    "</body></html>")
            return html.encode(), self.content_type or "text/html", headers
        code, msg = _BC_ERRORS.get(self.status, (f"HttpStatus{self.status}", f"HTTP status {self.status}."))
        return bc_error_body(code, msg), self.content_type or "application/json; charset=utf-8", headers


class FaultPlan:
    """Queue of faults; the first one matching a request fires and counts down its `times`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, status: int, *, times: int | None = 1, path_contains: str | None = None,
            retry_after: int | float | str | None = None, body: Any = None, content_type: str | None = None,
            delay: float = 0.0, above_page_size: int | None = None) -> Fault:
        """The next `times` matching BC API requests answer `status` (200 + delay = just slow);
        `above_page_size`: only requests whose `Prefer: odata.maxpagesize` is larger."""
        fault = Fault(status, times, path_contains, retry_after, body, content_type, delay, above_page_size=above_page_size)
        with self._lock:
            self._faults.append(fault)
        return fault

    def hold(self, path_contains: str | None = None, *, times: int | None = 1, timeout: float = 30.0) -> threading.Event:
        """The next `times` matching requests wait until the returned event is set (at most
        `timeout` s), then are answered normally: an explicit hold instead of a timed delay."""
        release = threading.Event()
        fault = Fault(200, times, path_contains, delay=timeout, hold=release)
        with self._lock:
            self._faults.append(fault)
        return release

    def drop_connection(self, times: int | None = 1, path_contains: str | None = None) -> Fault:
        """Close the socket without answering (a transport error on the client side)."""
        fault = Fault(0, times, path_contains, drop=True)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, target: str, is_api: bool, page_size: int | None = None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(target, is_api, page_size):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None
