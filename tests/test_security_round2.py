"""Security round 2 (issue 18, design §12): content types, the dev key by its bytes, the quota under
concurrency, metered notifications, key rotation of refresh-token caches."""
from __future__ import annotations

import json

import pytest

from shared.app import App
from tests.support import Api, integration_body


# -- Content-Type: application/json (a cross-site form or text/plain post changes nothing) ---------------
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "", "application/jsonp",
                                          "text/json"])
def test_a_body_that_is_not_labelled_json_answers_415_and_creates_nothing(api: Api, content_type: str) -> None:
    raw = json.dumps(integration_body()).encode()
    headers = {"Content-Type": content_type} if content_type else {"Content-Type": ""}
    reply = api.call("POST", "integrations", raw=raw, headers=headers)
    assert reply.status == 415 and reply.error["code"] == "unsupported_media_type", reply.body
    assert api.get("integrations").data == []


def test_json_with_parameters_is_accepted_and_an_empty_body_needs_no_type(api: Api, sim) -> None:  # type: ignore[no-untyped-def]
    raw = json.dumps(integration_body()).encode()
    created = api.call("POST", "integrations", raw=raw, headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert created.status == 201, created.body
    iid = created.data["id"]
    assert api.call("POST", f"integrations/{iid}/dynamics/sync", headers={"Content-Type": ""}).status == 200
    # an empty body labelled as a form (a cross-site form with no fields) is refused too
    assert api.call("POST", f"integrations/{iid}/dynamics/sync", headers={"Content-Type": "text/plain"}).status == 415


# -- the sample dev key, however it is spelled, also as a previous key ------------------------------------
def test_the_sample_dev_key_is_refused_in_azure_by_its_bytes(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    from shared.errors import ConfigurationError
    from shared.settings import SAMPLE_DEV_KEY, load_settings

    variant = SAMPLE_DEV_KEY[:-2] + "F="  # unused trailing bits: another spelling of the same 32 bytes
    assert variant != SAMPLE_DEV_KEY and base64.b64decode(variant) == base64.b64decode(SAMPLE_DEV_KEY)
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc123")
    for spelling in (variant, f"  {SAMPLE_DEV_KEY}\n"):
        monkeypatch.setenv("CREDENTIALS_KEY", spelling)
        with pytest.raises(ConfigurationError, match="sample dev key"):
            load_settings()
    monkeypatch.setenv("CREDENTIALS_KEY", base64.b64encode(b"k" * 32).decode())
    monkeypatch.setenv("CREDENTIALS_KEYS_PREVIOUS", f"{base64.b64encode(b'p' * 32).decode()},{variant}")
    with pytest.raises(ConfigurationError, match="CREDENTIALS_KEYS_PREVIOUS contains the published sample dev key"):
        load_settings()
    monkeypatch.delenv("WEBSITE_INSTANCE_ID")
    assert load_settings()  # locally it is fine


# -- the integrations quota holds under concurrency ----------------------------------------------------
def test_parallel_creates_never_exceed_the_quota(env: dict, clock, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import threading
    import uuid

    from tests.security_support import rebuild

    app = rebuild(monkeypatch, clock, MAX_INTEGRATIONS_PER_USER="3")
    api = Api()
    assert api.post("integrations", integration_body(companyId=str(uuid.uuid4()))).status == 201
    start = threading.Barrier(8)
    statuses: list[int] = []

    def create() -> None:
        body = integration_body(companyId=str(uuid.uuid4()))
        start.wait()
        statuses.append(api.post("integrations", body).status)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201, 201] + [403] * 6, statuses
    assert len(api.get("integrations").data) == 3
    assert app.settings.max_integrations_per_user == 3


# -- notifications metered per integration and type ------------------------------------------------------
def test_a_tenant_knowing_its_client_state_cannot_flood_runs_and_bc_still_sees_202(
    env: dict, clock, sim, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    from devtools.funchost import FunctionHost
    from shared.realtime.notifications import handle
    from tests.security_support import rebuild
    from tests.support import ROOT

    with FunctionHost(ROOT) as host:  # answers BC's handshake when subscribing
        app = rebuild(monkeypatch, clock, PUBLIC_BASE_URL=host.base_url, NOTIFICATIONS_PER_HOUR="3")
        api = Api()
        created = api.create_integration(sim, realtime=True, entities=["suppliers"])
        [sub] = list(sim.webhooks.subscriptions.values())
        item = {"subscriptionId": sub.subscriptionId, "clientState": sub.clientState, "resource": sub.resource,
                "changeType": "updated", "expirationDateTime": "2026-12-04T10:00:00Z",
                "lastModifiedDateTime": "2026-12-01T10:00:00Z"}
        body = json.dumps({"value": [item]}).encode()
        outcomes = []
        for _ in range(5):
            reply = handle(app, "POST", {}, body)
            assert reply.status == 202  # never a 4xx: BC would delete the subscription
            outcomes.append(json.loads(reply.body)["data"]["outcome"]["suppliers"])
        assert outcomes[:3] != ["metered"] * 3 and outcomes[3:] == ["metered", "metered"]
        runs = app.runs.list(created["id"], top=100, continuation_token=None)[0]
        assert len(runs) <= 1  # the admitted ones coalesced into one delta; the metered started nothing
        clock.advance(3601)
        assert json.loads(handle(app, "POST", {}, body).body)["data"]["outcome"]["suppliers"] != "metered"


# -- infrastructure: private endpoints, purge protection, who may call -------------------------------------
def test_the_templates_offer_private_endpoints_purge_protection_and_restricted_callers() -> None:
    import re

    from devtools.bicepcheck import check, module_params, params
    from tests.support import ROOT

    infra = ROOT / "infra"
    main, api = (infra / "main.bicep").read_text(), (infra / "app" / "api.bicep").read_text()
    vault, storage = (infra / "app" / "keyvault.bicep").read_text(), (infra / "app" / "storage.bicep").read_text()
    network = (infra / "app" / "network.bicep").read_text()
    assert check(infra / "main.bicep") == []
    declared = params(infra / "main.bicep")
    for name in ("privateNetworking", "authAllowedApplications", "authAllowedPrincipals", "oauthCallbackBehindAuth"):
        assert declared[name] is True, name  # optional: a default keeps today's deployment
    assert "enablePurgeProtection: true" in vault
    for text in (vault, storage):
        assert "publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'" in text
        assert "defaultAction: privateNetworking ? 'Deny' : 'Allow'" in text
    assert "module network './app/network.bicep' = if (privateNetworking)" in main
    assert module_params(infra / "main.bicep")["network"][1] >= {"storageAccountName", "keyVaultName"}
    for group in ("'blob'", "'queue'", "'table'", "'vault'"):
        assert group in network, group
    assert "Microsoft.Network/privateEndpoints" in network and "privatelink.vaultcore.azure.net" in network
    assert "virtualNetworkSubnetId: empty(appSubnetId) ? null : appSubnetId" in api
    assert re.search(r"defaultAuthorizationPolicy: \{\s*allowedApplications: allowedApplications\s*allowedPrincipals: \{\s*"
                     r"identities: authAllowedPrincipals", api)
    assert "allowedClientApplications: allowedApplications" in api
    # the callback is anonymous unless the deployment puts it behind App Service Authentication
    assert "oauthCallbackBehindAuth ? authExcludedPaths : concat(authExcludedPaths" in main
    assert "authExcludedPaths: excludedPaths" in main
