"""Issue 9, managed identity: TABLES_ACCOUNT_URL / QUEUES_ACCOUNT_URL with DefaultAzureCredential."""
from __future__ import annotations

import pytest
from azure.identity import DefaultAzureCredential

from shared.app import App
from shared.errors import ConfigurationError
from shared.settings import load_settings
from shared.storage import credentials
from shared.storage.tables import TableStore

ACCOUNT = "https://bcsyncprod.table.core.windows.net"


def test_account_urls_are_parsed_and_win_over_connection_strings(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABLES_ACCOUNT_URL", ACCOUNT + "/")
    monkeypatch.setenv("QUEUES_ACCOUNT_URL", "https://bcsyncprod.queue.core.windows.net")
    settings = load_settings()
    assert settings.tables_account_url == ACCOUNT
    assert settings.queues_account_url == "https://bcsyncprod.queue.core.windows.net"
    assert settings.tables_connection_string == ""
    monkeypatch.delenv("TABLES_CONNECTION_STRING")
    monkeypatch.setenv("AzureWebJobsStorage", "")
    assert load_settings().tables_account_url == ACCOUNT  # no connection string needed at all
    for bad in ("http://bcsyncprod.table.core.windows.net", f"{ACCOUNT}?sv=2024&sig=secret", "bcsyncprod"):
        monkeypatch.setenv("TABLES_ACCOUNT_URL", bad)
        with pytest.raises(ConfigurationError, match="TABLES_ACCOUNT_URL"):
            load_settings()
    monkeypatch.delenv("TABLES_ACCOUNT_URL")
    with pytest.raises(ConfigurationError, match="TABLES_ACCOUNT_URL"):
        load_settings()


def test_the_app_builds_its_store_with_a_managed_identity_credential(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Azure here: the store is built (lazily, nothing is called) with DefaultAzureCredential."""
    monkeypatch.setenv("TABLES_ACCOUNT_URL", ACCOUNT)
    app = App(load_settings())
    assert isinstance(app.store.credential, DefaultAzureCredential)
    assert app.store.credential is credentials.storage_credential()  # one per process
    assert app.store._service.url.startswith(ACCOUNT)
    assert app.store._service.credential is app.store.credential
    aio = credentials.async_storage_credential()
    from azure.identity.aio import DefaultAzureCredential as AsyncDefault

    assert isinstance(aio, AsyncDefault) and aio is credentials.async_storage_credential()


def test_a_connection_string_still_works(app: App) -> None:
    """Azurite through the connection string: sync client and the aio batched writer."""
    assert app.store.credential is None
    failures = app.store.write("Probe", [("upsert", {"PartitionKey": "p", "RowKey": str(i), "n": i}) for i in range(150)])
    assert failures == []
    assert len(list(app.store.query("Probe", "PartitionKey eq 'p'"))) == 150


def test_an_account_url_needs_a_credential() -> None:
    with pytest.raises(ValueError, match="credential"):
        TableStore(account_url=ACCOUNT)
    with pytest.raises(ValueError):
        TableStore()


# -- caller identity ---------------------------------------------------------------------------
import base64 as _b64
import json as _json
import logging as _logging

import azure.functions as func

from shared.http import handle
from tests.security_support import rebuild
from tests.support import Api, FakeClock


def _principal(data: dict) -> str:
    return _b64.b64encode(_json.dumps(data).encode()).decode()


def test_the_full_principal_can_be_required_and_must_agree(api: Api, app: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    assert api.get("integrations").status == 200  # default: the id header alone (App Service strips forged ones)
    rebuild(monkeypatch, clock, REQUIRE_CLIENT_PRINCIPAL="true")
    reply = api.get("integrations")
    assert reply.status == 401 and "X-MS-CLIENT-PRINCIPAL header is missing" in reply.error["message"]
    app_service = {"auth_typ": "aad", "claims": [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "user-1"},
                                                 {"typ": "name", "val": "Ada"}]}
    assert api.get("integrations", headers={"X-MS-CLIENT-PRINCIPAL": _principal(app_service)}).status == 200
    assert api.get("integrations", headers={"X-MS-CLIENT-PRINCIPAL": _principal({"userId": "user-1"})}).status == 200
    for bad in (_principal({"userId": "someone-else"}), _principal({"claims": [{"typ": "name", "val": "user-1"}]}), "%%%", _principal([1])):
        reply = api.get("integrations", headers={"X-MS-CLIENT-PRINCIPAL": bad})
        assert reply.status == 401 and reply.error["code"] == "unauthenticated", bad


def test_an_unhandled_error_never_logs_the_function_key(app: App, caplog: pytest.LogCaptureFixture) -> None:
    request = func.HttpRequest("GET", "https://bcsync.azurewebsites.net/api/integrations?code=SECRETFUNCTIONKEY123&top=5",
                               headers={"X-MS-CLIENT-PRINCIPAL-ID": "user-1"}, body=b"")

    def boom(_: object) -> func.HttpResponse:
        raise RuntimeError("something unexpected")

    with caplog.at_level(_logging.ERROR, logger="shared.http"):
        response = handle(request, boom)
    assert response.status_code == 500
    body = _json.loads(response.get_body())
    assert body == {"success": False, "error": {"code": "internal_error", "message": "Internal error"}}
    assert caplog.records and "/api/integrations" in caplog.text
    assert "SECRETFUNCTIONKEY123" not in caplog.text and "code=" not in caplog.text


# -- a token credential against a real Azurite (HTTPS, --oauth basic) --------------------------------
import time as _time
from pathlib import Path as _Path
from typing import Iterator as _Iterator

import trustme
from azure.core.credentials import AccessToken

from devtools.azurite import AzuriteServer


def _jwt(audience: str) -> str:
    """What a managed identity hands out for storage; Azurite checks issuer, audience and lifetime."""
    def part(data: dict) -> str:
        return _b64.urlsafe_b64encode(_json.dumps(data).encode()).decode().rstrip("=")

    now = int(_time.time())
    claims = {"aud": audience, "iss": "https://sts.windows.net/7b0f3c1e-4d2a-4f6b-9c8e-2a1d5e6f7a80/", "iat": now - 60,
              "nbf": now - 60, "exp": now + 3600, "oid": "5c1d3f00-0000-4000-8000-00000000beef"}
    return f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


class FakeManagedIdentity:
    """Stands in for Entra ID's managed identity endpoint (the process boundary), sync and aio."""

    def __init__(self, audience: str = "https://storage.azure.com") -> None:
        self.audience = audience
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: object) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(_jwt(self.audience), int(_time.time()) + 3600)


class FakeAsyncManagedIdentity(FakeManagedIdentity):
    async def get_token(self, *scopes: str, **_: object) -> AccessToken:  # type: ignore[override]
        return FakeManagedIdentity.get_token(self, *scopes)

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def oauth_azurite(tmp_path_factory: pytest.TempPathFactory) -> _Iterator[tuple[AzuriteServer, trustme.CA]]:
    ca = trustme.CA(organization_name="azurite test CA")
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("azurite-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    with AzuriteServer(oauth_cert=(str(cert), str(key)), queues=False) as server:
        yield server, ca


def test_the_store_works_with_a_token_credential_sync_and_aio(
    oauth_azurite: tuple[AzuriteServer, trustme.CA], env: dict, tmp_path: _Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = oauth_azurite
    bundle = tmp_path / "ca.pem"  # the simulator's CA and Azurite's
    bundle.write_bytes(_Path(env["SSL_CERT_FILE"]).read_bytes() + ca.cert_pem.bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    identity, aio_identity = FakeManagedIdentity(), FakeAsyncManagedIdentity()
    store = TableStore.from_account_url(server.account_url, credential=identity, async_credential=lambda: aio_identity, prefix="mi")
    entities = [("upsert", {"PartitionKey": "p", "RowKey": f"{i:03}", "n": i}) for i in range(150)]
    assert store.write("Probe", entities) == []  # the aio batched writer, through the token
    assert [e["n"] for e in store.query("Probe", "PartitionKey eq 'p'")][:3] == [0, 1, 2]
    assert identity.scopes and all(s == ("https://storage.azure.com/.default",) for s in identity.scopes)
    assert aio_identity.scopes  # the aio client asked its own credential

    wrong = TableStore.from_account_url(server.account_url, credential=FakeManagedIdentity("https://vault.azure.net"))
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    with pytest.raises((ClientAuthenticationError, HttpResponseError)):
        wrong.table("Probe")  # Azurite really checks the token: a wrong audience is refused
