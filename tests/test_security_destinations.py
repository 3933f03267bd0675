"""Issue 9, destinations: a bearer token only ever goes to the integration's own BC origin."""
from __future__ import annotations

from typing import Iterator

import pytest

from devtools.bcsim import DEMO_CLIENT_SECRET, BCSimulator
from shared.app import App
from shared.destinations import check_base_url, parse_allowed_hosts
from shared.errors import BCError, ConfigurationError, ValidationError
from shared.settings import load_settings
from tests.security_support import Trap, rebuild
from tests.support import Api, FakeClock, integration_body


@pytest.fixture
def trap(sim: BCSimulator) -> Iterator[Trap]:
    server = Trap(sim.server_tls_context)
    yield server
    server.close()


def _allow_both(monkeypatch: pytest.MonkeyPatch, clock: FakeClock, sim: BCSimulator, trap: Trap) -> App:
    sim_port = sim.base_url.rsplit(":", 1)[1]
    return rebuild(monkeypatch, clock, BC_ALLOWED_HOSTS=f"127.0.0.1:{sim_port},127.0.0.1:{trap.port}")


def test_patching_base_url_to_a_foreign_host_never_sends_the_token_there(
    api: Api, app: App, sim: BCSimulator, trap: Trap, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exfiltration path of the review: PATCH baseUrl to one's own host, then test connection."""
    created = api.create_integration(sim)
    path = f"integrations/{created['id']}"

    # 1. A host outside BC_ALLOWED_HOSTS (default: the host:port of BC_API_BASE_URL) is refused.
    reply = api.patch(path, {"baseUrl": f"{trap.url}/bc"})
    assert reply.status == 400 and reply.error["code"] == "validation_error"
    assert "baseUrl" in reply.error["message"] and "BC_ALLOWED_HOSTS" in reply.error["message"]
    assert api.post(f"{path}/dynamics/test").status == 200
    assert trap.hits == []

    # 2. Even an allowed host needs the secret in the same body: the stored one never moves.
    _allow_both(monkeypatch, clock, sim, trap)
    reply = api.patch(path, {"baseUrl": f"{trap.url}/bc"})
    assert reply.status == 400 and reply.error["code"] == "validation_error" and "clientSecret" in reply.error["message"]
    assert api.get(path).data["baseUrl"] is None
    assert api.post(f"{path}/dynamics/test").status == 200
    assert trap.hits == []

    # Control: whoever knows the secret may move it, and then the trap does see requests.
    reply = api.patch(path, {"baseUrl": f"{trap.url}/bc", "clientSecret": DEMO_CLIENT_SECRET})
    assert reply.status == 200, reply.body
    api.post(f"{path}/dynamics/test")
    assert trap.tokens_seen(), "the trap must be able to see a token, or the checks above prove nothing"


@pytest.mark.parametrize("field,value", [("tenantId", "contoso.onmicrosoft.com"), ("environment", "sandbox"),
                                         ("clientId", "0a0b0c0d-1111-4222-8333-944445555666")])
def test_moving_credentials_needs_the_client_secret(api: Api, sim: BCSimulator, field: str, value: str) -> None:
    created = api.create_integration(sim)
    reply = api.patch(f"integrations/{created['id']}", {field: value})
    assert reply.status == 400 and reply.error["code"] == "validation_error"
    assert "clientSecret" in reply.error["message"] and field in reply.error["message"]
    assert api.patch(f"integrations/{created['id']}", {field: value, "clientSecret": "new"}).status == 200
    # Unchanged values (even in another case) are not a move.
    same = api.patch(f"integrations/{created['id']}", {field: value.upper() if field != "environment" else value})
    assert same.status == 200, same.body


def test_a_next_link_to_another_origin_is_never_followed(api: Api, app: App, sim: BCSimulator, trap: Trap) -> None:
    created = api.create_integration(sim, entities=["suppliers"])
    sim.faults.add(200, path_contains="/vendors", body={"value": [], "@odata.nextLink": f"{trap.url}/api/v2.0/companies/vendors?page=2"})
    reply = api.sync(created["id"])
    assert reply.status == 502 and "nextLink" in reply.error["message"]
    assert trap.hits == []


def test_a_saved_checkpoint_pointing_elsewhere_is_refused(api: Api, app: App, sim: BCSimulator, trap: Trap) -> None:
    created = api.create_integration(sim)
    integration = app.integrations.get("user-1", created["id"])
    with app.bc_client(integration) as client:
        for start in (f"{trap.url}/api/v2.0/companies", sim.base_url.replace("https://", "http://") + "/x",
                      sim.base_url.replace("127.0.0.1", "localhost") + "/x"):
            with pytest.raises(BCError, match="outside the integration's BC origin"):
                list(client.pages("vendors", start_url=start))
        assert len(list(client.pages("vendors"))) >= 1  # its own origin works
    assert trap.hits == []


def test_a_redirect_is_an_error_and_never_followed(api: Api, sim: BCSimulator, trap: Trap) -> None:
    created = api.create_integration(sim)
    sim.faults.add(302, path_contains="/companies(", body={"moved": f"{trap.url}/steal"})
    reply = api.post(f"integrations/{created['id']}/dynamics/test")
    assert reply.status == 502 and reply.error["code"] == "bc_error" and "redirect" in reply.error["message"]
    assert trap.hits == []


def test_a_stored_base_url_outside_a_narrowed_allowlist_is_not_used(
    api: Api, app: App, sim: BCSimulator, trap: Trap, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _allow_both(monkeypatch, clock, sim, trap)
    created = api.create_integration(sim, baseUrl=f"{trap.url}/bc")
    rebuild(monkeypatch, clock, BC_ALLOWED_HOSTS=sim.base_url.removeprefix("https://"))
    reply = api.post(f"integrations/{created['id']}/dynamics/test")
    assert reply.status == 502 and "BC_ALLOWED_HOSTS" in reply.error["message"]
    assert trap.hits == []


def test_discovery_checks_base_url_too(api: Api, sim: BCSimulator, trap: Trap) -> None:
    body = {k: v for k, v in integration_body(baseUrl=f"{trap.url}/bc").items() if k not in ("name", "companyId")}
    reply = api.post("dynamics/companies", body)
    assert reply.status == 400 and "baseUrl" in reply.error["message"]
    assert trap.hits == []


def test_allowed_hosts_rules() -> None:
    allowed = parse_allowed_hosts("api.businesscentral.dynamics.com, *.bc.contoso.com, onprem.example.com:7048")
    assert allowed == ("api.businesscentral.dynamics.com:443", "*.bc.contoso.com:443", "onprem.example.com:7048")
    check_base_url("https://api.businesscentral.dynamics.com/v2.0/t/production", allowed)
    check_base_url("https://API.BusinessCentral.dynamics.com:443/x", allowed)
    check_base_url("https://eu.bc.contoso.com/BC/ODataV4", allowed)
    check_base_url("https://onprem.example.com:7048/BC", allowed)
    for bad in ("http://api.businesscentral.dynamics.com", "https://bc.contoso.com/x", "https://evil.com/.bc.contoso.com",
                "https://api.businesscentral.dynamics.com:8443/x", "https://onprem.example.com/BC",
                "https://api.businesscentral.dynamics.com.evil.com/x", "https://x.bc.contoso.com.evil.com/",
                "https://api.businesscentral.dynamics.com/x?y=1", "ftp://api.businesscentral.dynamics.com"):
        with pytest.raises(ValidationError, match="baseUrl"):
            check_base_url(bad, allowed)
    for bad_setting in ("*", "host:notaport", "a/b", ",", "*.*.x.com"):
        with pytest.raises(ConfigurationError, match="BC_ALLOWED_HOSTS"):
            parse_allowed_hosts(bad_setting)


def test_allowed_hosts_default_to_the_bc_api_host(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().bc_allowed_hosts == (env["BC_API_BASE_URL"].removeprefix("https://"),)
    monkeypatch.delenv("BC_API_BASE_URL")
    assert load_settings().bc_allowed_hosts == ("api.businesscentral.dynamics.com:443",)


def test_a_sync_with_a_saved_checkpoint_to_another_host_restarts_without_sending_the_token(
    api: Api, app: App, sim: BCSimulator, trap: Trap
) -> None:
    """A checkpoint (a stored nextLink) pointing elsewhere, as a tampered or stale record would:
    the sync refuses it, restarts the pass at its own BC and completes."""
    from shared.storage.state import Checkpoint, TypeState

    created = api.create_integration(sim, entities=["suppliers"])
    foreign = f"{trap.url}/v2.0/x/production/api/v2.0/companies(1)/vendors?$skiptoken=1"
    app.states.save(created["id"], "suppliers", TypeState(checkpoint=Checkpoint("run-old", None, foreign, "2024-01-01T00:00:00Z", None)))
    reply = api.sync(created["id"])
    assert reply.status == 200, reply.body
    assert reply.data["suppliers"]["created"] == 45
    assert trap.hits == []
