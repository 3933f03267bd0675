"""Helpers for the delegated sign-in tests: a 'browser' that follows the authorization URL against the
simulator's Entra ID (httpx, no redirects followed) and brings the answer to the callback function."""
from __future__ import annotations

import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from devtools.bcsim import DEMO_ENVIRONMENT, DEMO_OAUTH_CLIENT_ID, DEMO_OAUTH_CLIENT_SECRET, DEMO_TENANT_ID, BCSimulator
from shared.app import App, use_app
from shared.settings import load_settings
from tests.support import Api, FakeClock

REDIRECT_URI = "https://platform.example.test/api/oauth/callback"
RETURN_URL = "https://app.example.test/integrations/connected"


@pytest.fixture(name="app")
def delegated_app(env: dict[str, str], clock: FakeClock, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The test App with the platform's app registration configured (and known to the simulator):
    a test module that signs in imports this as its `app` fixture."""
    monkeypatch.setenv("OAUTH_CLIENT_ID", DEMO_OAUTH_CLIENT_ID)
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", DEMO_OAUTH_CLIENT_SECRET)
    monkeypatch.setenv("OAUTH_REDIRECT_URI", REDIRECT_URI)
    sim.register_oauth_app([REDIRECT_URI])
    instance = App(load_settings(), clock=clock)
    use_app(instance)
    yield instance
    use_app(None)


@dataclass
class CallbackReply:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def location(self) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == "location"), "")

    @property
    def result(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).query).items()}


def delegated_body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "CRONUS (signed in)", "authMode": "delegated", "tenantId": DEMO_TENANT_ID,
                            "environment": DEMO_ENVIRONMENT}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def create_delegated(api: Api, **overrides: Any) -> dict[str, Any]:
    reply = api.post("integrations", delegated_body(**overrides))
    assert reply.status == 201, reply.body
    return reply.data


def open_in_browser(sim: BCSimulator, url: str, **extra: str) -> httpx.Response:
    """GET the authorization URL the way a browser would (extra query parameters appended). The
    browser is not the service: its own httpx logging is muted, so log-leak tests see only ours."""
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=sim.ca_path), timeout=10) as client:
            return client.get(url, params=extra or None, follow_redirects=False)
    finally:
        for lg, was in zip(loggers, before):
            lg.setLevel(was)


def binding_cookie(reply_headers: dict[str, str]) -> str:
    """The `name=value` part of the binding cookie an authorize answer set."""
    set_cookie = next(v for k, v in reply_headers.items() if k.lower() == "set-cookie")
    return set_cookie.split(";")[0]


def to_callback(api: Api, location: str, *, accept: str | None = None, cookie: str | None = None,
                as_owner: bool = True) -> CallbackReply:
    """Deliver Entra's redirect to the callback function. By default from the browser of `api`'s
    user with App Service Authentication covering the callback (its identity header); `cookie`
    brings the binding cookie instead; `as_owner=False` sends no identity (another browser)."""
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT_URI, location
    headers = {"Accept": accept} if accept else {}
    if cookie:
        headers["Cookie"] = cookie
    if as_owner and api.user:
        headers["X-MS-CLIENT-PRINCIPAL-ID"] = api.user
    status, reply_headers, content = api.host.handle("GET", f"http://localhost/api/oauth/callback?{parts.query}", headers, b"")
    return CallbackReply(status, dict(reply_headers), content.decode("utf-8") if content else "")


def sign_in(api: Api, sim: BCSimulator, integration_id: str, **extra: str) -> CallbackReply:
    """authorize -> the simulator's sign-in and consent -> the callback."""
    reply = api.post(f"integrations/{integration_id}/dynamics/authorize")
    assert reply.status == 200, reply.body
    answer = open_in_browser(sim, reply.data["authorizationUrl"], **extra)
    assert answer.status_code == 302, answer.text
    # The starting browser comes back with its binding cookie (no identity header).
    return to_callback(api, answer.headers["Location"], cookie=binding_cookie(reply.headers), as_owner=False)


def json_of(reply: CallbackReply) -> dict[str, Any]:
    return json.loads(reply.text)
