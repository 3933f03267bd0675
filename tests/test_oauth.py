"""Delegated sign-in (design §9) end to end: the simulator's Entra ID over HTTPS, real msal, real
Azurite, the function folders as the Functions host routes them."""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.bcsim import (DEMO_COMPANY_ID, DEMO_COMPANY_NAME, DEMO_DECLINING_USER, DEMO_OAUTH_CLIENT_ID,
                            DEMO_US_COMPANY_ID, DEMO_USER, BCSimulator)
from shared.app import App, use_app
from shared.settings import load_settings
from tests.oauth_support import delegated_app  # noqa: F401 - the `app` fixture
from tests.oauth_support import (REDIRECT_URI, RETURN_URL, create_delegated, open_in_browser, sign_in, to_callback)
from tests.support import Api, FakeClock, tick



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


# -- helpers ------------------------------------------------------------------------------------
def signed_in(api: Api, sim: BCSimulator, **overrides: Any) -> dict[str, Any]:
    """A delegated integration with the demo company, signed in."""
    created = create_delegated(api, companyId=DEMO_COMPANY_ID, **overrides)
    done = sign_in(api, sim, created["id"])
    assert done.status == 200, done.text
    return api.get(f"integrations/{created['id']}").data


def raw(app: App, table: str, user: str, row: str) -> dict[str, Any] | None:
    from azure.core.exceptions import ResourceNotFoundError

    from shared.keys import encode_key

    try:
        return dict(app.store.table(table).get_entity(encode_key(user), encode_key(row)))
    except ResourceNotFoundError:
        return None


def stored_refresh_token(app: App, user: str, integration_id: str) -> str:
    stored = app.token_caches.get(user, integration_id)
    assert stored is not None
    tokens = list(json.loads(stored.cache)["RefreshToken"].values())
    assert len(tokens) == 1
    return str(tokens[0]["secret"])


def begin(api: Api, sim: BCSimulator, integration_id: str, body: Any = None, **extra: str) -> str:
    """authorize and the simulator's answer: the Location Entra redirects the browser to."""
    reply = api.post(f"integrations/{integration_id}/dynamics/authorize", body)
    assert reply.status == 200, reply.body
    answer = open_in_browser(sim, reply.data["authorizationUrl"], **extra)
    assert answer.status_code == 302, answer.text
    return str(answer.headers["Location"])


# -- create and validation ------------------------------------------------------------------------
def test_delegated_create_rules(api: Api) -> None:
    """tenantId required (GUID or domain), no clientId/clientSecret, companyId optional; app stays the default."""
    for extra, field in (({"clientId": "3f9a2c71-8b4e-4d05-a6c2-9e1b7d3f5a24"}, "clientId"), ({"clientSecret": "x"}, "clientSecret"),
                         ({"tenantId": None}, "tenantId"), ({"companyId": "nope"}, "companyId"), ({"authMode": "user"}, "authMode")):
        from tests.oauth_support import delegated_body

        reply = api.post("integrations", delegated_body(**extra))
        assert reply.status == 400 and reply.error["code"] == "validation_error", reply.body
        assert field in reply.error["message"], reply.body
    by_domain = create_delegated(api, tenantId="cronus.example")
    assert by_domain["tenantId"] == "cronus.example" and by_domain["companyId"] == "" and by_domain["hasClientSecret"] is False
    app_mode = api.post("integrations", {"name": "x", "tenantId": "cronus.example"})
    assert app_mode.status == 400 and "clientSecret" in app_mode.error["message"]


def test_authorize_is_only_for_delegated_integrations(api: Api, sim: BCSimulator) -> None:
    app_integration = api.create_integration(sim)
    reply = api.post(f"integrations/{app_integration['id']}/dynamics/authorize")
    assert reply.status == 400 and reply.error["code"] == "validation_error" and "authMode" in reply.error["message"]
    other = create_delegated(api)
    assert api.as_user("user-2").post(f"integrations/{other['id']}/dynamics/authorize").status == 404
    assert api.as_user(None).post(f"integrations/{other['id']}/dynamics/authorize").status == 401


def test_before_sign_in_sync_test_and_companies_answer_409(api: Api, sim: BCSimulator) -> None:
    created = create_delegated(api, companyId=DEMO_COMPANY_ID)
    for reply in (api.sync(created["id"]), api.post(f"integrations/{created['id']}/dynamics/test"),
                  api.get(f"integrations/{created['id']}/dynamics/companies")):
        assert reply.status == 409 and reply.error["code"] == "authorization_required", reply.body
        assert "authorize" in reply.error["message"]
    assert not [r for r in sim.requests if r.path.startswith("/v2.0/")]


def test_without_a_company_test_answers_company_not_selected(api: Api, sim: BCSimulator) -> None:
    created = create_delegated(api)
    assert sign_in(api, sim, created["id"]).status == 200
    for reply in (api.sync(created["id"]), api.post(f"integrations/{created['id']}/dynamics/test")):
        assert reply.status == 409 and reply.error["code"] == "company_not_selected", reply.body


def test_authorize_without_the_app_registration_is_a_configuration_error(api: Api, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    created = create_delegated(api)
    monkeypatch.delenv("OAUTH_CLIENT_SECRET")
    use_app(App(load_settings(), clock=app.clock))
    reply = api.post(f"integrations/{created['id']}/dynamics/authorize")
    assert reply.status == 500 and reply.error["code"] == "configuration_error" and "OAUTH_CLIENT_SECRET" in reply.error["message"]


# -- the callback ---------------------------------------------------------------------------------
def test_callback_redirects_to_the_return_url(api: Api, app: App, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTH_RETURN_URL", RETURN_URL)
    use_app(App(load_settings(), clock=app.clock))
    created = create_delegated(api)
    done = to_callback(api, begin(api, sim, created["id"]))
    assert done.status == 302 and done.location.startswith(RETURN_URL + "?")
    assert done.result == {"integrationId": created["id"], "result": "connected"}


def test_declined_consent_keeps_the_status_and_says_so(api: Api, app: App, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    created = create_delegated(api)
    location = begin(api, sim, created["id"], {"loginHint": DEMO_DECLINING_USER})
    assert "error=access_denied" in location and "code=" not in location
    done = to_callback(api, location)
    assert done.status == 200 and "declined" in done.text.lower() and "result=denied" in done.text
    shown = api.get(f"integrations/{created['id']}").data
    assert shown["status"] == "authorization_required" and shown["lastError"]["code"] == "authorization_denied"
    assert app.token_caches.get("user-1", created["id"]) is None
    # Declined with a return URL, by the simulator's switch this time; then a second try succeeds.
    monkeypatch.setenv("OAUTH_RETURN_URL", RETURN_URL)
    use_app(App(load_settings(), clock=app.clock))
    sim.decline_consent()
    assert to_callback(api, begin(api, sim, created["id"])).result["result"] == "denied"
    sim.decline_consent(False)
    assert to_callback(api, begin(api, sim, created["id"])).result["result"] == "connected"
    shown = api.get(f"integrations/{created['id']}").data
    assert shown["status"] == "never_synced" and shown["lastError"] is None


def test_other_entra_errors_are_reported(api: Api, sim: BCSimulator) -> None:
    created = create_delegated(api)
    location = begin(api, sim, created["id"])
    state = parse_qs(urlsplit(location).query)["state"][0]
    done = to_callback(api, f"{REDIRECT_URI}?error=server_error&error_description=AADSTS50000%3A+%3Cb%3Eoops%3C%2Fb%3E&state={state}")
    assert done.status == 200 and "<b>" not in done.text and "result=error" in done.text
    shown = api.get(f"integrations/{created['id']}").data
    assert shown["status"] == "authorization_required"
    assert shown["lastError"]["code"] == "authorization_failed" and "server_error" in shown["lastError"]["message"]


def test_used_expired_forged_and_replaced_states_answer_400_and_change_nothing(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    created = create_delegated(api)
    first = begin(api, sim, created["id"])
    second = begin(api, sim, created["id"])  # a newer sign-in replaces the first
    before = raw(app, "Integrations", "user-1", created["id"])
    assert to_callback(api, first).status == 400
    forged = to_callback(api, f"{REDIRECT_URI}?code=0.Aforged&state=forged-state", accept="application/json")
    assert forged.status == 400 and '"invalid_state"' in forged.text
    assert raw(app, "Integrations", "user-1", created["id"]) == before
    assert to_callback(api, second).status == 200
    after = raw(app, "Integrations", "user-1", created["id"])
    replay = to_callback(api, second)  # an attacker replaying the callback URL
    assert replay.status == 400 and "no longer valid" in replay.text
    assert raw(app, "Integrations", "user-1", created["id"]) == after
    late = begin(api, sim, created["id"])
    clock.advance(10 * 60 + 1)
    assert to_callback(api, late).status == 400
    assert api.get(f"integrations/{created['id']}").data["status"] == "never_synced"
    assert list(app.store.table("OAuthFlows").list_entities()) == []  # every flow was spent or expired


def test_a_state_only_completes_its_own_integration(api: Api, app: App, sim: BCSimulator) -> None:
    """Another caller's state signs in only their integration; mixing one flow's code with another's
    state fails PKCE, and no tokens are stored for either."""
    mine = create_delegated(api)
    theirs = create_delegated(api.as_user("user-2"))
    my_location = begin(api, sim, mine["id"])
    their_location = begin(api.as_user("user-2"), sim, theirs["id"])
    my_code = parse_qs(urlsplit(my_location).query)["code"][0]
    their_state = parse_qs(urlsplit(their_location).query)["state"][0]
    # (from user-2's own browser: anyone else's is refused before the code is even tried)
    mixed = to_callback(api.as_user("user-2"), f"{REDIRECT_URI}?code={my_code}&state={their_state}")
    assert mixed.status == 200 and "result=error" in mixed.text
    assert app.token_caches.get("user-2", theirs["id"]) is None and app.token_caches.get("user-1", mine["id"]) is None
    assert api.get(f"integrations/{mine['id']}").data["status"] == "authorization_required"
    assert api.as_user("user-2").get(f"integrations/{theirs['id']}").data["lastError"]["code"] == "authorization_failed"
    burned = to_callback(api, my_location)  # my state still leads to mine, but the code was spent
    assert burned.status == 200 and "result=error" in burned.text and app.token_caches.get("user-1", mine["id"]) is None
    assert sign_in(api, sim, mine["id"]).status == 200
    assert app.token_caches.get("user-1", mine["id"]) is not None
    assert api.as_user("user-2").get(f"integrations/{theirs['id']}").data["status"] == "authorization_required"


# -- refresh, rotation, expiry -------------------------------------------------------------------
def test_every_run_refreshes_and_the_rotated_token_is_written_back(api: Api, app: App, sim: BCSimulator) -> None:
    shown = signed_in(api, sim)
    first = stored_refresh_token(app, "user-1", shown["id"])
    assert api.sync(shown["id"]).status == 200
    second = stored_refresh_token(app, "user-1", shown["id"])
    assert second != first and first not in sim.directory.grants.live_refresh_tokens()
    assert api.sync(shown["id"], {"mode": "delta"}).status == 200  # works only with the stored rotated token
    assert stored_refresh_token(app, "user-1", shown["id"]) in sim.directory.grants.live_refresh_tokens()
    assert sim.directory.grants.refreshes == 2
    stored = raw(app, "OAuthTokens", "user-1", shown["id"])
    assert stored is not None and set(stored) == {"PartitionKey", "RowKey", "cacheEnc", "refreshedNs"}
    assert stored["cacheEnc"].startswith("v2:")  # encrypted; inside, access tokens are never kept:
    cache = json.loads(app.token_caches.get("user-1", shown["id"]).cache)
    assert cache["AccessToken"] == {} and len(cache["RefreshToken"]) == 1 and cache["Account"]


@pytest.mark.parametrize("grace", [0.0, 60.0], ids=["strict-rotation", "lenient-rotation"])
def test_two_instances_refreshing_at_once_keep_a_live_token(
    api: Api, app: App, sim: BCSimulator, grace: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from shared.bc.delegated import DelegatedTokenProvider

    monkeypatch.setattr(DelegatedTokenProvider, "settle_seconds", 5.0)  # generous on a loaded machine

    sim.directory.grants.rotation_grace_seconds = grace
    shown = signed_in(api, sim)
    providers = [DelegatedTokenProvider(settings=app.settings, caches=app.token_caches, user_id="user-1",
                                        integration_id=shown["id"], tenant_id=shown["tenantId"]) for _ in range(2)]
    for provider in providers:
        provider.load()  # both read the same refresh token before either refreshes
    barrier, tokens, errors = threading.Barrier(2), [], []

    def run(provider: DelegatedTokenProvider) -> None:
        barrier.wait()
        try:
            tokens.append(provider.token())
        except Exception as error:  # noqa: BLE001 - the assertion below shows it
            errors.append(error)

    threads = [threading.Thread(target=run, args=(p,)) for p in providers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(tokens) == 2
    assert stored_refresh_token(app, "user-1", shown["id"]) in sim.directory.grants.live_refresh_tokens()
    sim.directory.grants.rotation_grace_seconds = 0.0
    assert api.sync(shown["id"]).status == 200  # a third instance continues from what was stored


def test_a_revoked_sign_in_answers_bc_auth_failed_and_asks_to_sign_in_again(
    api: Api, app: App, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.bc.delegated import DelegatedTokenProvider

    monkeypatch.setattr(DelegatedTokenProvider, "settle_seconds", 0.2)  # nobody else is refreshing here

    shown = signed_in(api, sim)
    sim.revoke_refresh_tokens(DEMO_USER)
    for reply in (api.post(f"integrations/{shown['id']}/dynamics/test"), api.sync(shown["id"])):
        assert reply.status == 502 and reply.error["code"] == "bc_auth_failed", reply.body
        assert "sign in again" in reply.error["message"] and "50173" in reply.error["message"]
        current = api.get(f"integrations/{shown['id']}").data
        assert current["status"] == "auth_expired" and "authorize" in current["lastError"]["message"]
    app.clock.advance(2 * 3600)  # type: ignore[attr-defined]
    summary = tick(app)
    assert shown["id"] not in summary["synced"] + summary["failed"] + summary["queued"] + summary["coalesced"]
    assert sign_in(api, sim, shown["id"]).status == 200  # re-authenticate
    assert api.get(f"integrations/{shown['id']}").data["status"] in ("never_synced", "connected")
    assert api.sync(shown["id"]).status == 200


def test_a_refresh_token_expiring_mid_run(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """Suppliers sync, then BC drops the access token while the refresh token has expired: the run
    fails as bc_auth_failed with auth_expired, and what was synced stays."""
    shown = signed_in(api, sim)
    original = clock.sleep

    def sleep_and_expire(seconds: float) -> None:
        sim.expire_refresh_tokens()
        sim.revoke_tokens()  # access tokens too, so the next BC call answers 401
        original(seconds)

    clock.sleep = sleep_and_expire  # type: ignore[method-assign]
    sim.faults.add(status=503, times=1, path_contains="/items", retry_after=1)
    reply = api.sync(shown["id"])
    assert reply.status == 502 and reply.error["code"] == "bc_auth_failed" and "70008" in reply.error["message"]
    current = api.get(f"integrations/{shown['id']}").data
    assert current["status"] == "auth_expired" and "authorize" in current["lastError"]["message"]
    logs = api.get(f"integrations/{shown['id']}/sync-logs").data
    assert {(e["entityType"], e["status"]) for e in logs} == {("SUPPLIER", "SUCCESS"), ("PRODUCT", "FAILED")}


# -- disconnect, move ----------------------------------------------------------------------------
def test_delete_erases_the_sign_in_and_authorize_reconnects(api: Api, app: App, sim: BCSimulator) -> None:
    shown = signed_in(api, sim)
    assert api.sync(shown["id"]).status == 200
    pending = begin(api, sim, shown["id"])  # a sign-in started before the disconnect
    assert api.delete(f"integrations/{shown['id']}").data["status"] == "disconnected"
    assert app.token_caches.get("user-1", shown["id"]) is None and raw(app, "OAuthTokens", "user-1", shown["id"]) is None
    assert to_callback(api, pending).status == 400
    assert api.sync(shown["id"]).error["code"] == "integration_disconnected"
    assert sign_in(api, sim, shown["id"]).status == 200
    assert api.get(f"integrations/{shown['id']}").data["status"] == "connected"  # it had synced before
    assert api.sync(shown["id"]).status == 200


def test_moving_a_delegated_integration_erases_its_sign_in(api: Api, app: App, sim: BCSimulator) -> None:
    shown = signed_in(api, sim)
    bad = api.patch(f"integrations/{shown['id']}", {"clientSecret": "x"})
    assert bad.status == 400 and "clientSecret" in bad.error["message"]
    assert api.patch(f"integrations/{shown['id']}", {"name": "renamed", "companyId": DEMO_US_COMPANY_ID}).data["status"] == "never_synced"
    assert app.token_caches.get("user-1", shown["id"]) is not None
    moved = api.patch(f"integrations/{shown['id']}", {"environment": "sandbox"}).data
    assert moved["status"] == "authorization_required" and moved["authorizedUser"] is None
    assert app.token_caches.get("user-1", shown["id"]) is None
    assert api.sync(shown["id"]).error["code"] == "authorization_required"


# -- secrets ---------------------------------------------------------------------------------------
def test_no_code_token_verifier_or_state_in_responses_logs_or_storage(
    api: Api, app: App, sim: BCSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    for name in ("", "msal", "azure", "urllib3", "httpx", "shared", "devtools"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    created = create_delegated(api, companyId=DEMO_COMPANY_ID)
    started = api.post(f"integrations/{created['id']}/dynamics/authorize")
    url = started.data["authorizationUrl"]
    state = parse_qs(urlsplit(url).query)["state"][0]
    location = open_in_browser(sim, url).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    replies = [to_callback(api, location).text]
    for reply in (api.get(f"integrations/{created['id']}"), api.get("integrations"), api.sync(created["id"]),
                  api.post(f"integrations/{created['id']}/dynamics/test"), api.get(f"integrations/{created['id']}/dynamics/companies"),
                  api.get(f"integrations/{created['id']}/sync-logs")):
        assert reply.status == 200, reply.body
        replies.append(json.dumps(reply.body))
    sim.revoke_refresh_tokens()
    replies.append(json.dumps(api.sync(created["id"]).body))
    replies.append(to_callback(api, location).text)  # a replay
    grants = sim.directory.grants
    secrets = {"code": [code], "state": [state], "verifier": grants.verifiers, "access token": list(sim.directory.tokens),
               "refresh token": list(grants.refresh_tokens)}
    assert all(secrets.values()), secrets.keys()
    service = app.store._service  # every table of this test, raw
    stored = [json.dumps(dict(e), default=str) for t in service.list_tables() if t.name.startswith(app.settings.table_prefix)
              for e in service.get_table_client(t.name).list_entities()]
    assert stored
    logs = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "oauth2/v2.0/token" in logs or "sign-in" in logs  # the capture did see the flow
    for kind, values in secrets.items():
        for value in values:
            assert value not in logs, f"{kind} in the logs"
            assert not any(value in row for row in stored), f"{kind} stored unencrypted"
            assert not any(value in text for text in replies), f"{kind} in a response"
            if kind != "state":  # the authorization URL carries its own state, nothing else
                assert value not in json.dumps(started.body), f"{kind} in the authorize response"


def test_the_timer_waits_for_the_sign_in_and_the_company(api: Api, app: App, sim: BCSimulator) -> None:
    waiting = create_delegated(api, companyId=DEMO_COMPANY_ID)
    no_company = create_delegated(api)
    assert sign_in(api, sim, no_company["id"]).status == 200
    summary = tick(app)
    assert {waiting["id"], no_company["id"]}.isdisjoint(summary["synced"] + summary["failed"] + summary["queued"])
    assert api.get(f"integrations/{waiting['id']}").data["status"] == "authorization_required"
    assert api.patch(f"integrations/{no_company['id']}", {"companyId": DEMO_COMPANY_ID}).error["code"] == "integration_exists"
    assert api.patch(f"integrations/{no_company['id']}", {"companyId": DEMO_US_COMPANY_ID}).status == 200
    assert no_company["id"] in tick(app)["synced"]


def test_a_tenant_given_by_its_domain_signs_in_and_syncs(api: Api, sim: BCSimulator) -> None:
    from devtools.bcsim import DEMO_TENANT_DOMAIN, DEMO_TENANT_ID

    shown = signed_in(api, sim, tenantId=DEMO_TENANT_DOMAIN.upper())
    assert shown["tenantId"] == DEMO_TENANT_DOMAIN and shown["status"] == "never_synced"
    assert api.sync(shown["id"]).status == 200
    assert [r for r in sim.requests if r.path.startswith(f"/{DEMO_TENANT_DOMAIN}/oauth2/v2.0/token")]
    assert not [r for r in sim.requests if DEMO_TENANT_ID in r.path and "/oauth2/" in r.path]


def test_a_write_back_conflict_keeps_the_later_refresh(api: Api, app: App, sim: BCSimulator) -> None:
    """Sequential and exact: both instances read R1 (lenient issuer, R1 still redeemable); the
    first stores R2; the second refreshes later (R3), meets the first's write under its stale ETag,
    and writes over it because its refresh is the newer one."""
    from shared.bc.delegated import DelegatedTokenProvider

    sim.directory.grants.rotation_grace_seconds = 600
    shown = signed_in(api, sim)
    first, second = (DelegatedTokenProvider(settings=app.settings, caches=app.token_caches, user_id="user-1",
                                            integration_id=shown["id"], tenant_id=shown["tenantId"]) for _ in range(2))
    first.load()
    second.load()
    first.token()
    r2 = stored_refresh_token(app, "user-1", shown["id"])
    etag_after_first = app.token_caches.get("user-1", shown["id"]).etag
    second.token()
    r3 = stored_refresh_token(app, "user-1", shown["id"])
    assert r3 != r2 and app.token_caches.get("user-1", shown["id"]).etag != etag_after_first
    assert r3 == list(sim.directory.grants.refresh_tokens)[-1]  # the last one Entra ID issued
