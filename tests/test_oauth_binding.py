"""The delegated sign-in is bound to the browser or person that started it (design §9, RFC 9700 §4.7):
a sign-in link sent to someone else never puts that person's tokens on the sender's integration.

The API-level tests drive the function folders; the browser test drives the real page, the real
authorize and callback functions and the simulator's Entra ID in headless Chromium."""
from __future__ import annotations

import shutil
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.bcsim import DEMO_OAUTH_CLIENT_ID, DEMO_OAUTH_CLIENT_SECRET, BCSimulator
from devtools.funchost import FunctionHost
from shared.app import App, use_app
from shared.settings import load_settings
from tests.oauth_support import delegated_app  # noqa: F401 - the `app` fixture
from tests.oauth_support import (REDIRECT_URI, RETURN_URL, binding_cookie, create_delegated, open_in_browser,
                                 to_callback)
from tests.support import ROOT, Api, FakeClock



def raw_integration(app: App, user: str, integration_id: str) -> dict[str, Any]:
    from shared.keys import encode_key

    entity = app.store.table("Integrations").get_entity(encode_key(user), encode_key(integration_id))
    return dict(entity)


def start(api: Api, sim: BCSimulator, integration_id: str) -> tuple[str, str]:
    """authorize in the owner's browser: (binding cookie, the Location Entra sends the browser back to)."""
    reply = api.post(f"integrations/{integration_id}/dynamics/authorize")
    assert reply.status == 200, reply.body
    answer = open_in_browser(sim, reply.data["authorizationUrl"])
    assert answer.status_code == 302, answer.text
    return binding_cookie(reply.headers), str(answer.headers["Location"])


def test_authorize_sets_a_binding_cookie_for_the_callback_only(api: Api, app: App, sim: BCSimulator) -> None:
    created = create_delegated(api)
    reply = api.post(f"integrations/{created['id']}/dynamics/authorize")
    set_cookie = next(v for k, v in reply.headers.items() if k.lower() == "set-cookie")
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in set_cookie.split(";")[1:]}
    assert attributes["path"] == "Path=/api/oauth/callback" and attributes["max-age"] == "Max-Age=600"
    assert {"httponly", "secure", "samesite"} <= set(attributes) and attributes["samesite"] == "SameSite=Lax"
    value = set_cookie.split(";")[0].split("=", 1)[1]
    assert len(value) >= 40
    stored = [dict(e) for e in app.store.table("OAuthFlows").list_entities()]
    assert len(stored) == 1 and value not in str(stored)  # only its hash is kept


def test_a_link_sent_to_someone_else_connects_nothing_and_the_owner_still_can(
    api: Api, app: App, sim: BCSimulator
) -> None:
    """The attack: A starts a sign-in and sends the URL to a victim; the victim's browser comes back
    with the victim's code but without A's cookie (and with no or another identity)."""
    created = create_delegated(api)
    cookie, location = start(api, sim, created["id"])
    before = raw_integration(app, "user-1", created["id"])
    victim_browser = to_callback(api, location, as_owner=False, accept="application/json")
    assert victim_browser.status == 400 and '"sign_in_not_bound"' in victim_browser.text
    signed_in_elsewhere = to_callback(api.as_user("victim@other.example"), location)
    assert signed_in_elsewhere.status == 400 and "another browser" in signed_in_elsewhere.text
    wrong_cookie = to_callback(api, location, as_owner=False, cookie=cookie.split("=")[0] + "=forged")
    assert wrong_cookie.status == 400
    assert raw_integration(app, "user-1", created["id"]) == before  # nothing changed
    assert app.token_caches.get("user-1", created["id"]) is None
    # The owner's browser completes the very same state afterwards.
    owner = to_callback(api, location, as_owner=False, cookie=cookie)
    assert owner.status == 200 and "result=connected" in owner.text
    assert api.get(f"integrations/{created['id']}").data["status"] == "never_synced"
    assert app.token_caches.get("user-1", created["id"]) is not None


def test_the_owners_identity_binds_where_app_service_authentication_covers_the_callback(
    api: Api, app: App, sim: BCSimulator
) -> None:
    created = create_delegated(api)
    _, location = start(api, sim, created["id"])
    assert to_callback(api, location, as_owner=True).status == 200  # no cookie: the identity header
    assert api.get(f"integrations/{created['id']}").data["status"] == "never_synced"


def test_refused_with_a_return_url_is_a_redirect_with_result_error(
    api: Api, app: App, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setenv("OAUTH_RETURN_URL", RETURN_URL)
    use_app(App(load_settings(), clock=clock))
    created = create_delegated(api)
    cookie, location = start(api, sim, created["id"])
    refused = to_callback(api, location, as_owner=False)
    assert refused.status == 302 and refused.result == {"integrationId": created["id"], "result": "error"}
    assert api.get(f"integrations/{created['id']}").data["lastError"] is None
    # An error answer (?error=...) from another browser changes nothing either.
    state = parse_qs(urlsplit(location).query)["state"][0]
    declined = to_callback(api, f"{REDIRECT_URI}?error=access_denied&state={state}", as_owner=False)
    assert declined.result["result"] == "error"
    assert api.get(f"integrations/{created['id']}").data["lastError"] is None
    assert to_callback(api, location, as_owner=False, cookie=cookie).result["result"] == "connected"


# -- in a real browser ------------------------------------------------------------------------------
@pytest.fixture
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.fail("The browser tests need Chromium and its driver: apt-get install -y chromium chromium-driver",
                    pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # The simulator's Entra ID has a test CA the browser does not know.
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-extensions", "--ignore-certificate-errors"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_pages_sign_in_works_in_a_browser_and_a_forwarded_link_does_not(
    chromium: Any, env: dict[str, str], sim: BCSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page (behind App Service Authentication's stand-in) starts the sign-in; the callback is
    served anonymously (another host on the same machine: cookies are per host, not per port), so only
    the binding cookie can tie the browser's return to the sign-in it started."""
    from selenium.webdriver.support.ui import WebDriverWait

    user = "browser-user@contoso.com"
    with FunctionHost(ROOT, demo_principal=user) as portal_host, FunctionHost(ROOT) as callback_host:
        redirect = f"{callback_host.base_url}/api/oauth/callback"
        portal = f"{portal_host.base_url}/api/portal"
        for key, value in {"OAUTH_CLIENT_ID": DEMO_OAUTH_CLIENT_ID, "OAUTH_CLIENT_SECRET": DEMO_OAUTH_CLIENT_SECRET,
                           "OAUTH_REDIRECT_URI": redirect, "OAUTH_RETURN_URL": portal}.items():
            monkeypatch.setenv(key, value)
        sim.register_oauth_app([redirect])
        use_app(App(load_settings()))
        try:
            owner = Api(user=user)
            created = create_delegated(owner)
            wait = WebDriverWait(chromium, 60, poll_frequency=0.1)

            def notice() -> str:
                return str(chromium.execute_script("return document.getElementById('notice')?.textContent || ''"))

            # A link someone else started (no cookie in this browser) comes back refused.
            forwarded = owner.post(f"integrations/{created['id']}/dynamics/authorize").data["authorizationUrl"]
            chromium.get(forwarded)
            wait.until(lambda b: b.current_url.startswith(portal) and "Sign-in error" in notice())
            assert owner.get(f"integrations/{created['id']}").data["status"] == "authorization_required"

            # The page's own sign-in: authorize sets the cookie, Entra ID sends the browser back.
            chromium.get(portal)
            wait.until(lambda b: b.execute_script("return document.body.dataset.loaded") == "true")
            button = f'article.integration[data-id="{created["id"]}"] button.signin'
            chromium.find_element("css selector", button).click()
            wait.until(lambda b: "Signed in" in notice())
            assert owner.get(f"integrations/{created['id']}").data["status"] == "never_synced"
        finally:
            use_app(None)


def test_the_binding_cookie_is_dropped_once_the_sign_in_completes(api: Api, app: App, sim: BCSimulator) -> None:
    created = create_delegated(api)
    cookie, location = start(api, sim, created["id"])
    done = to_callback(api, location, as_owner=False, cookie=cookie)
    assert done.status == 200
    cleared = next(v for k, v in done.headers.items() if k.lower() == "set-cookie")
    assert cleared.startswith(cookie.split("=")[0] + "=") and "Max-Age=0" in cleared and "Path=/api/oauth/callback" in cleared
