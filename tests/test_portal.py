"""The monitoring page in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`)
driven by Selenium against the local Functions host, Azurite and the BC simulator.

These tests never skip: without the browser they fail saying what to install (scripts/test.sh
installs it when it can)."""
from __future__ import annotations

import json
import logging
import shutil
from typing import Any, Callable, Iterator

import pytest

from devtools.bcsim import DEMO_CLIENT_ID, DEMO_COMPANY_ID, DEMO_TENANT_ID, BCSimulator
from devtools.funchost import FunctionHost
from tests.support import ROOT, Api

USER = "portal-user@contoso.com"
WAIT = 60
# One worker runs every page test (scripts/test.sh: --dist loadgroup), so one Chromium starts.
pytestmark = pytest.mark.xdist_group("browser")


def chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("The browser tests need Chromium and its driver: apt-get install -y chromium chromium-driver "
                    "(scripts/test.sh does it when run as root)", pytrace=False)
    return browser, driver


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # --ignore-certificate-errors: "Sign in" sends the browser to the BC simulator's Entra ID, served
    # over HTTPS under the simulator's own test CA.
    for argument in ("--ignore-certificate-errors", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def _forget_tokens() -> Iterator[None]:
    """Tokens are cached per process by authority URL; a later test's simulator may get this one's
    port, and would then be offered a token it never issued (a 401 its own test does not expect)."""
    yield
    from shared.bc.auth import TokenProvider

    with TokenProvider._apps_lock:
        TokenProvider._apps.clear()


@pytest.fixture
def portal(env: dict[str, str]) -> Iterator[str]:
    """The local host over real HTTP, acting as USER for requests without an identity (dev flag)."""
    with FunctionHost(ROOT, queues=True, demo_principal=USER) as host:  # sync_worker runs the queued runs
        yield f"{host.base_url}/api/portal"


@pytest.fixture
def owner(env: dict[str, str]) -> Api:
    return Api(user=USER)


def wait_for(browser: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # A card is drawn again when its run ends: an element found just before that goes stale.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        return WebDriverWait(browser, WAIT, poll_frequency=0.1, ignored_exceptions=ignored).until(condition)
    except TimeoutException:
        notice = browser.execute_script("return document.getElementById('notice')?.textContent")
        raise AssertionError(f"timed out waiting for {what}; page notice: {notice!r}") from None


def open_page(browser: Any, url: str) -> None:
    browser.get(url)
    wait_for(browser, lambda b: b.execute_script("return document.body.dataset.loaded"), "the page to load")
    assert browser.execute_script("return document.body.dataset.loaded") == "true", browser.find_element("id", "notice").text


def card(browser: Any, integration_id: str) -> Any:
    return browser.find_element("css selector", f'article.integration[data-id="{integration_id}"]')


def light(browser: Any, integration_id: str) -> str:
    return card(browser, integration_id).find_element("css selector", ".light").get_attribute("data-status")


def wait_light(browser: Any, integration_id: str, status: str) -> None:
    wait_for(browser, lambda b: light(b, integration_id) == status, f"the status light to show {status}")


def click(browser: Any, integration_id: str, selector: str) -> None:
    card(browser, integration_id).find_element("css selector", selector).click()


def run_result(browser: Any, integration_id: str) -> str:
    return wait_for(
        browser,
        lambda b: card(b, integration_id).find_element("css selector", ".progress").get_attribute("data-result"),
        "the sync to end",
    )


def bars(browser: Any, integration_id: str) -> dict[str, str]:
    rows = card(browser, integration_id).find_elements("css selector", ".progress .type")
    return {r.get_attribute("data-type"): r.find_element("css selector", ".fill").get_attribute("data-percent") for r in rows}


def test_the_page_shows_integrations_and_the_light_follows_sync_and_refused_credentials(
    browser: Any, portal: str, owner: Api, sim: BCSimulator
) -> None:
    integration = owner.create_integration(sim)
    iid = integration["id"]
    open_page(browser, portal)
    assert light(browser, iid) == "never_synced"
    assert card(browser, iid).find_element("css selector", ".last-sync").text == "never"
    assert not card(browser, iid).find_elements("css selector", "button.signin")  # app credentials: no sign-in

    click(browser, iid, "button.sync")
    assert run_result(browser, iid) == "succeeded"
    assert bars(browser, iid) == {"suppliers": "100", "products": "100"}
    wait_light(browser, iid, "connected")
    # The run reads as finished a moment before its hourly statistics are written (shared/runs/finish.py):
    # once the API counts it, the page drawn again shows it.
    wait_for(browser, lambda b: owner.get(f"integrations/{iid}").data["statistics"]["last24h"]["runs"] == 1,
             "the run's statistics")
    open_page(browser, portal)
    shown = card(browser, iid)
    assert shown.find_element("css selector", ".last-sync").text != "never"
    assert shown.find_element("css selector", ".next-sync").text != "not scheduled"
    # the 24 h chart now has a bar for this hour's records
    day = shown.find_element("css selector", '.chart[data-window="24h"]')
    assert day.find_elements("css selector", "rect.bar[height]")
    assert "1 runs, 0 failed, 275 records written" in day.text

    sim.set_client_secret(DEMO_TENANT_ID, DEMO_CLIENT_ID, "rotated-by-the-bc-admin")
    sim.revoke_tokens()  # Entra ID drops the tokens issued under the old secret
    click(browser, iid, "button.sync")
    assert run_result(browser, iid) == "failed"
    wait_light(browser, iid, "auth_expired")
    assert "bc_auth_failed" in card(browser, iid).find_element("css selector", ".last-error").text
    wait_for(browser, lambda b: owner.get(f"integrations/{iid}").data["statistics"]["last24h"]["runs"] == 2,
             "the failed run's statistics")
    open_page(browser, portal)
    day = card(browser, iid).find_element("css selector", '.chart[data-window="24h"]')
    assert "2 runs, 1 failed" in day.text and day.find_elements("css selector", "rect.fail")


def test_the_error_log_shows_a_failed_record_with_its_error_and_data(
    browser: Any, portal: str, owner: Api, sim: BCSimulator
) -> None:
    company = sim.company()
    bad = company.records("vendors")[3]["id"]
    company.update("vendors", bad, displayName=None)
    integration = owner.create_integration(sim)
    assert owner.sync(integration["id"]).status == 200
    open_page(browser, portal)
    click(browser, integration["id"], "button.show-errors")
    rows = wait_for(
        browser, lambda b: card(b, integration["id"]).find_elements("css selector", ".errors tr.error-row"), "error rows"
    )
    (row,) = rows
    assert row.find_element("css selector", ".record").text == bad
    assert row.find_element("css selector", ".message").text == "Missing required field: name"
    assert row.find_element("css selector", ".data").text == '{"displayName":null}'
    assert row.get_attribute("data-status") == "PARTIAL"


def test_a_failed_run_appears_in_the_error_log_with_its_error(
    browser: Any, portal: str, owner: Api, sim: BCSimulator
) -> None:
    integration = owner.create_integration(sim)
    sim.set_client_secret(DEMO_TENANT_ID, DEMO_CLIENT_ID, "rotated-again")
    assert owner.sync(integration["id"]).status == 502
    open_page(browser, portal)
    click(browser, integration["id"], "button.show-errors")
    rows = wait_for(
        browser, lambda b: card(b, integration["id"]).find_elements("css selector", ".errors tr.error-row"), "error rows"
    )
    assert {r.get_attribute("data-status") for r in rows} == {"FAILED"}
    assert all(r.find_element("css selector", ".message").text.startswith("bc_auth_failed: ") for r in rows)


def test_disconnect_asks_for_confirmation(browser: Any, portal: str, owner: Api, sim: BCSimulator) -> None:
    integration = owner.create_integration(sim)
    iid = integration["id"]
    open_page(browser, portal)
    dialog = browser.find_element("id", "confirm-disconnect")

    click(browser, iid, "button.disconnect")
    assert dialog.get_attribute("open") is not None and dialog.is_displayed()
    assert integration["name"] in dialog.text
    browser.find_element("id", "cancel-disconnect").click()
    assert dialog.get_attribute("open") is None
    assert owner.get(f"integrations/{iid}").data["status"] == "never_synced"

    click(browser, iid, "button.disconnect")
    browser.find_element("id", "confirm-disconnect-button").click()
    wait_light(browser, iid, "disconnected")
    assert owner.get(f"integrations/{iid}").data["status"] == "disconnected"
    assert not card(browser, iid).find_element("css selector", "button.sync").is_enabled()


def test_the_page_only_shows_the_callers_integrations(browser: Any, portal: str, owner: Api, sim: BCSimulator) -> None:
    mine = owner.create_integration(sim)
    other = owner.as_user("someone-else").create_integration(sim)
    open_page(browser, portal)
    ids = [e.get_attribute("data-id") for e in browser.find_elements("css selector", "article.integration")]
    assert ids == [mine["id"]] and other["id"] not in ids


def test_without_an_identity_the_page_says_so(browser: Any, env: dict[str, str]) -> None:
    with FunctionHost(ROOT) as host:  # no demo principal: like Azure without App Service Authentication
        browser.get(f"{host.base_url}/api/portal")
        wait_for(browser, lambda b: b.execute_script("return document.body.dataset.loaded"), "the page to load")
        assert browser.execute_script("return document.body.dataset.loaded") == "error"
        assert "unauthenticated" in browser.find_element("id", "notice").text


def test_the_function_key_from_the_url_is_sent_and_removed_from_the_address(browser: Any, env: dict[str, str], sim: BCSimulator) -> None:
    with FunctionHost(ROOT, function_key="k3y-for-test", demo_principal=USER) as host:
        Api(user=USER).create_integration(sim)
        browser.get(f"{host.base_url}/api/portal?code=k3y-for-test")
        wait_for(browser, lambda b: b.execute_script("return document.body.dataset.loaded"), "the page to load")
        assert browser.execute_script("return document.body.dataset.loaded") == "true"
        assert "code=" not in browser.current_url
        assert len(browser.find_elements("css selector", "article.integration")) == 1


def test_the_page_serves_only_its_own_files_with_a_strict_policy(env: dict[str, str]) -> None:
    """No browser needed: traversal and unknown names are 404, files carry CSP and nosniff."""
    api = Api(user=None)  # the page itself is anonymous; its data calls are not
    for path in ("portal", "portal/", "portal/index.html", "portal/app.js", "portal/style.css"):
        status, headers, body = api.host.handle("GET", f"http://localhost/api/{path}", {}, b"")
        assert status == 200, path
        assert "frame-ancestors 'none'" in dict(headers)["Content-Security-Policy"]
        assert dict(headers)["X-Content-Type-Options"] == "nosniff"
    status, headers, body = api.host.handle("GET", "http://localhost/api/portal", {}, b"")
    assert dict(headers)["Content-Type"].startswith("text/html") and b"/api/portal/app.js" in body
    for path in ("portal/../host.json", "portal/%2e%2e/host.json", "portal/.hidden.js", "portal/nope.js",
                 "portal/sub/app.js", "portal/..%5Chost.json"):
        assert api.host.handle("GET", f"http://localhost/api/{path}", {}, b"")[0] == 404, path


@pytest.mark.bc_page_size(100)
def test_sync_now_polls_a_queued_run_until_every_bar_is_full(
    browser: Any, portal: str, owner: Api, sim: BCSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The asynchronous path of design.md §7 (202, then GET sync-runs/{runId}) on the real functions:
    BC's second page of items is held, so the page shows the run part-way (products read in part)
    until the test lets BC answer."""
    integration = owner.create_integration(sim)
    iid = integration["id"]
    hold = sim.faults.hold(path_contains="$skiptoken")  # items page 2 (45 vendors fit one page)
    caplog.set_level(logging.INFO, logger="devtools.funchost")
    open_page(browser, portal)
    click(browser, iid, "button.sync")
    try:
        hold.wait()

        def partway(b: Any) -> bool:
            now = bars(b, iid)
            return set(now) == {"suppliers", "products"} and now.get("products") not in (None, "0", "100")

        wait_for(browser, partway, "products shown part-way while BC holds their second page")
    finally:
        hold.release()
    assert run_result(browser, iid) == "succeeded"
    assert bars(browser, iid) == {"suppliers": "100", "products": "100"}
    [run] = owner.get(f"integrations/{iid}/sync-runs").data
    assert run["status"] == "succeeded" and run["trigger"] == "manual", run
    box = card(browser, iid).find_element("css selector", ".progress")
    assert box.get_attribute("data-run-id") == run["runId"]
    assert "230 created" in box.text
    polls = [r for r in caplog.records if f"GET /api/integrations/{iid}/sync-runs/{run['runId']}" in r.getMessage()]
    assert len(polls) >= 2, "the page polled the queued run until it ended"


def test_the_dev_identity_only_fills_in_a_missing_header(env: dict[str, str], owner: Api, sim: BCSimulator) -> None:
    owner.create_integration(sim)
    host = FunctionHost(ROOT, demo_principal=USER)
    status, _, body = host.handle("GET", "http://localhost/api/integrations", {}, b"")
    assert status == 200 and len(json.loads(body)["data"]) == 1
    status, _, body = host.handle("GET", "http://localhost/api/integrations", {"x-ms-client-principal-id": "other"}, b"")
    assert status == 200 and json.loads(body)["data"] == []
    assert FunctionHost(ROOT).handle("GET", "http://localhost/api/integrations", {}, b"")[0] == 401


def test_sign_in_again_goes_through_entra_id_and_comes_back_connected(
    browser: Any, portal: str, owner: Api, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delegated sign-in on the real functions: "Sign in" calls authorize, the browser goes to the
    simulator's Entra ID, which sends it to the real OAuth callback, which sends it back to the page
    with result=connected. Then the sign-in is revoked: the light shows auth_expired, and "Sign in
    again" connects the integration again."""
    from devtools.bcsim import DEMO_OAUTH_CLIENT_ID, DEMO_OAUTH_CLIENT_SECRET, DEMO_USER

    base = portal.removesuffix("/api/portal")
    callback = f"{base}/api/oauth/callback"
    for key, value in {"OAUTH_CLIENT_ID": DEMO_OAUTH_CLIENT_ID, "OAUTH_CLIENT_SECRET": DEMO_OAUTH_CLIENT_SECRET,
                       "OAUTH_REDIRECT_URI": callback, "OAUTH_RETURN_URL": portal}.items():
        monkeypatch.setenv(key, value)
    sim.register_oauth_app([callback])
    created = owner.post("integrations", {"name": "CRONUS (signed in)", "authMode": "delegated", "tenantId": DEMO_TENANT_ID,
                                          "environment": "production", "companyId": DEMO_COMPANY_ID})
    assert created.status == 201, created.body
    iid = created.data["id"]

    def sign_in_from_the_page() -> None:
        click(browser, iid, "button.signin")
        wait_for(browser, lambda b: "result=" not in b.current_url and b.current_url.startswith(portal)
                 and b.find_element("id", "notice").text, "the return to the page")
        assert browser.find_element("id", "notice").text == "Signed in: the integration is connected again."

    open_page(browser, portal)
    assert light(browser, iid) == "authorization_required"
    sign_in_from_the_page()
    shown = owner.get(f"integrations/{iid}").data
    assert shown["status"] == "never_synced" and shown["authorizedUser"] == DEMO_USER

    sim.revoke_refresh_tokens(DEMO_USER)
    refused = owner.post(f"integrations/{iid}/dynamics/test")
    assert refused.status == 502 and refused.error["code"] == "bc_auth_failed", refused.body
    open_page(browser, portal)
    assert light(browser, iid) == "auth_expired"
    assert "sign in again" in card(browser, iid).find_element("css selector", ".last-error").text
    sign_in_from_the_page()
    wait_light(browser, iid, "never_synced")
    assert owner.post(f"integrations/{iid}/dynamics/test").status == 200
