"""Programmable failures (throttling, gateway errors, slow answers, dropped sockets, held answers)
for retry and concurrency tests."""
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


class Hold:
    """Keeps the requests it matches waiting until the test releases them: the window a
    concurrency test needs (a run parked on its second page) is opened and closed explicitly,
    so it is as wide as the test needs on any machine, never a guess in seconds."""

    def __init__(self, limit: float = 120.0) -> None:
        self.limit = limit  # a forgotten hold still ends (the request then goes on as usual)
        self.held = 0
        self._reached = threading.Event()
        self._released = threading.Event()

    def wait(self, timeout: float = 60.0) -> Hold:
        """Block until a request is being held (fails the test after `timeout`)."""
        if not self._reached.wait(timeout):
            raise AssertionError(f"no request reached the hold within {timeout:.0f} s")
        return self

    @property
    def reached(self) -> bool:
        return self._reached.is_set()

    def release(self) -> None:
        self._released.set()

    def block(self) -> None:
        """Called on the simulator's request thread for each matching request."""
        self.held += 1
        self._reached.set()
        self._released.wait(self.limit)


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
    hold: Hold | None = None

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
        self._holds: list[Hold] = []

    def add(self, status: int, *, times: int | None = 1, path_contains: str | None = None,
            retry_after: int | float | str | None = None, body: Any = None, content_type: str | None = None,
            delay: float = 0.0, above_page_size: int | None = None) -> Fault:
        """The next `times` matching BC API requests answer `status` (200 + delay = just slow);
        `above_page_size`: only requests whose `Prefer: odata.maxpagesize` is larger."""
        fault = Fault(status, times, path_contains, retry_after, body, content_type, delay, above_page_size=above_page_size)
        with self._lock:
            self._faults.append(fault)
        return fault

    def drop_connection(self, times: int | None = 1, path_contains: str | None = None) -> Fault:
        """Close the socket without answering (a transport error on the client side)."""
        fault = Fault(0, times, path_contains, drop=True)
        with self._lock:
            self._faults.append(fault)
        return fault

    def hold(self, *, times: int | None = 1, path_contains: str | None = None, status: int = 200) -> Hold:
        """The next `times` matching requests wait until `Hold.release()`, then are answered as
        usual (status 200) or with `status`."""
        hold = Hold()
        fault = Fault(status, times, path_contains, hold=hold)
        with self._lock:
            self._faults.append(fault)
            self._holds.append(hold)
        return hold

    def clear(self) -> None:
        """No more faults; requests still held are let go."""
        with self._lock:
            self._faults.clear()
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.release()

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, target: str, is_api: bool, page_size: int | None = None) -> Fault | None:
        """The fault for this request, if any; a hold blocks here (outside the lock) until released."""
        found = None
        with self._lock:
            for fault in self._faults:
                if fault.matches(target, is_api, page_size):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    found = fault
                    break
        if found is not None and found.hold is not None:
            found.hold.block()
        return found
