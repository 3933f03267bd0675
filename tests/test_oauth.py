"""Delegated sign-in (design §9) end to end: the simulator's Entra ID over HTTPS, real msal, real
Azurite, the function folders as the Functions host routes them."""
from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.bcsim import (DEMO_COMPANY_ID, DEMO_COMPANY_NAME, DEMO_DECLINING_USER, DEMO_OAUTH_CLIENT_ID,
                            DEMO_OAUTH_CLIENT_SECRET, DEMO_US_COMPANY_ID, DEMO_USER, BCSimulator)
from shared.app import App, use_app
from shared.settings import load_settings
from tests.oauth_support import (REDIRECT_URI, RETURN_URL, create_delegated, open_in_browser, sign_in, to_callback)
from tests.support import Api, FakeClock


@pytest.fixture
def app(env: dict[str, str], clock: FakeClock, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The test App with the platform's app registration configured (and known to the simulator)."""
    monkeypatch.setenv("OAUTH_CLIENT_ID", DEMO_OAUTH_CLIENT_ID)
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", DEMO_OAUTH_CLIENT_SECRET)
    monkeypatch.setenv("OAUTH_REDIRECT_URI", REDIRECT_URI)
    sim.register_oauth_app([REDIRECT_URI])
    instance = App(load_settings(), clock=clock)
    use_app(instance)
    yield instance
    use_app(None)


def test_sign_in_then_pick_a_company_then_sync(api: Api, app: App, sim: BCSimulator) -> None:
    created = create_delegated(api)
    assert created["status"] == "authorization_required" and created["authMode"] == "delegated"
    reply = api.post(f"integrations/{created['id']}/dynamics/authorize")
    assert reply.status == 200, reply.body
    url = reply.data["authorizationUrl"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert urlsplit(url).path.endswith("/oauth2/v2.0/authorize")
    assert query["client_id"] == DEMO_OAUTH_CLIENT_ID and query["redirect_uri"] == REDIRECT_URI
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert "offline_access" in query["scope"].split() and "https://api.businesscentral.dynamics.com/.default" in query["scope"]
    answer = open_in_browser(sim, url)
    assert answer.status_code == 302
    done = to_callback(api, answer.headers["Location"])
    assert done.status == 200 and "Signed in" in done.text, done.text
    shown = api.get(f"integrations/{created['id']}").data
    assert shown["status"] == "never_synced" and shown["lastError"] is None and shown["authorizedUser"] == DEMO_USER

    assert api.sync(created["id"]).error["code"] == "company_not_selected"
    companies = api.get(f"integrations/{created['id']}/dynamics/companies")
    assert {c["id"] for c in companies.data} >= {DEMO_COMPANY_ID, DEMO_US_COMPANY_ID}
    assert api.patch(f"integrations/{created['id']}", {"companyId": DEMO_COMPANY_ID}).status == 200
    tested = api.post(f"integrations/{created['id']}/dynamics/test")
    assert tested.data["company"] == DEMO_COMPANY_NAME
    synced = api.sync(created["id"])
    assert synced.status == 200, synced.body
    assert synced.data["suppliers"]["created"] > 0
    assert api.get(f"integrations/{created['id']}").data["status"] == "connected"
