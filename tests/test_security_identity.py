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
