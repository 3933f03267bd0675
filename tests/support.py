"""Test helpers: a controllable clock and an API client that goes through function.json routes."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from devtools.funchost import FunctionHost

ROOT = Path(__file__).resolve().parent.parent


def integration_body(**overrides: Any) -> dict[str, Any]:
    """A valid create body for the simulator's demo company, with overrides (None removes a key)."""
    from devtools.bcsim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_COMPANY_ID, DEMO_ENVIRONMENT, DEMO_TENANT_ID

    data: dict[str, Any] = {
        "name": "CRONUS",
        "tenantId": DEMO_TENANT_ID,
        "environment": DEMO_ENVIRONMENT,
        "companyId": DEMO_COMPANY_ID,
        "clientId": DEMO_CLIENT_ID,
        "clientSecret": DEMO_CLIENT_SECRET,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


class FakeClock:
    """Wall time starts at the real now (BC's timestamps stay comparable); sleeps advance it
    instantly, so retries and lease expiry are tested without waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(timezone.utc)
        self._mono = 1000.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def data(self) -> Any:
        assert self.body.get("success") is True, self.body
        return self.body["data"]

    @property
    def error(self) -> dict[str, Any]:
        assert self.body.get("success") is False, self.body
        return self.body["error"]


class Api:
    """Calls the function folders the way the Functions host would route them (no sockets)."""

    def __init__(self, user: str | None = "user-1") -> None:
        self.host = FunctionHost(ROOT)
        self.user = user

    def as_user(self, user: str | None) -> "Api":
        other = Api.__new__(Api)
        other.host, other.user = self.host, user
        return other

    def call(self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None, raw: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
        url = f"http://localhost/api/{path}" + (f"?{urlencode(params)}" if params else "")
        sent = dict(headers or {})
        if self.user is not None:
            sent["X-MS-CLIENT-PRINCIPAL-ID"] = self.user
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        if payload:
            sent.setdefault("Content-Type", "application/json")
        status, reply_headers, content = self.host.handle(method, url, sent, payload)
        return Reply(status, json.loads(content) if content else {}, dict(reply_headers))

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.call("DELETE", path, **kw)

    # -- conveniences -----------------------------------------------------------------------
    def create_integration(self, sim: Any, **overrides: Any) -> dict[str, Any]:
        reply = self.post("integrations", integration_body(**overrides))
        assert reply.status == 201, reply.body
        return reply.data

    def sync(self, integration_id: str, body: Any = None) -> Reply:
        return self.post(f"integrations/{integration_id}/dynamics/sync", body)


def drain(app: Any, *, limit: int = 500, failures: bool = False) -> list[Any]:
    """Work the runs queue in this process until it is empty, as the Functions host would, and
    return the slice outcomes in order.

    A message whose processing raises fails the test at once with that error, unless the test
    expects failures (`failures=True`): then, as the host does, the message is made visible
    again (its dequeue count grows) and moves to the poison queue at the limit; the outcomes
    say "retried" or "poisoned" and `drain.errors` keeps the errors, in order."""
    from shared.runs.worker import poisoned, process

    outcomes: list[Any] = []
    drain.errors = []  # type: ignore[attr-defined]
    client = app.queue.client
    app.queue._ensure()
    for _ in range(limit):
        messages = list(client.receive_messages(max_messages=1, visibility_timeout=60))
        if not messages:
            return outcomes
        message = messages[0]
        try:
            outcome = process(message.content, dequeue_count=message.dequeue_count)
        except Exception as error:  # noqa: BLE001 - the host retries, then poisons
            if not failures:
                raise AssertionError(f"a runs-queue message raised {error!r} (drain(failures=True) if the test expects it)") from error
            drain.errors.append(error)  # type: ignore[attr-defined]
            if message.dequeue_count >= app.settings.max_dequeue_count:
                client.delete_message(message)
                poisoned(message.content)
                outcomes.append("poisoned")
            else:
                client.update_message(message, visibility_timeout=0)
                outcomes.append("retried")
            continue
        client.delete_message(message)
        outcomes.append(outcome)
    raise AssertionError(f"the runs queue did not drain within {limit} messages")


def tick(app: Any) -> dict[str, Any]:
    """One timer tick and the queue it filled worked off: the dispatch summary plus `synced`
    and `failed` (integration ids whose runs ended so), in the order they ended."""
    from shared.api.timer import run_scheduled

    summary = run_scheduled(app)
    outcomes = drain(app)
    finished = [o.run for o in outcomes if getattr(o, "state", None) == "finished" and o.run is not None]
    summary["synced"] = [r.integrationId for r in finished if r.status == "succeeded"]
    summary["failed"] = [r.integrationId for r in finished if r.status == "failed"]
    return summary
