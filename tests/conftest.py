"""Shared fixtures: one real Azurite and one BC simulator per session (per xdist worker); each test
gets the simulator reset to its seeded state, fresh tables (its own TABLE_PREFIX) and its own queue.
docs/testing.md describes the set-up."""
from __future__ import annotations

import base64
import logging
import os
import uuid
from typing import Iterator

import pytest

from devtools.azurite import AzuriteServer
from devtools.bcsim import BCSimulator
from shared.app import App, use_app
from shared.settings import load_settings
from tests.support import Api, FakeClock


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `long` first (the order is otherwise kept): under pytest-xdist the other worker
    works off the short ones meanwhile, instead of one worker starting the long one at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    with AzuriteServer() as server:
        yield server


@pytest.fixture(scope="session")
def _session_sim() -> Iterator[BCSimulator]:
    """Started once: its port and CA stay for the whole session."""
    with BCSimulator(seed=42) as simulator:
        yield simulator


@pytest.fixture
def sim(_session_sim: BCSimulator) -> Iterator[BCSimulator]:
    """The session's simulator in its seeded state: no faults, subscriptions, tokens or requests
    of an earlier test. Held requests are let go when the test ends, so nothing waits on them."""
    _session_sim.reset()
    yield _session_sim
    _session_sim.faults.clear()


@pytest.fixture
def env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, azurite: AzuriteServer, sim: BCSimulator) -> dict[str, str]:
    """Settings for one test: its own table prefix, the simulator as BC and as Entra ID. BC's page
    size is the service's default (1000) unless the test is about paging and names its own
    (`@pytest.mark.bc_page_size(n)`): fewer pages where paging is not the point."""
    tag = uuid.uuid4().hex[:16]
    values = {
        "AzureWebJobsStorage": azurite.connection_string,
        "TABLES_CONNECTION_STRING": azurite.connection_string,
        "TABLE_PREFIX": "t" + tag,
        "SYNC_QUEUE_NAME": "runs-" + tag,
        "BC_API_BASE_URL": sim.base_url,
        "AZURE_AUTHORITY_HOST": sim.base_url,
        "CREDENTIALS_KEY": base64.b64encode(os.urandom(32)).decode(),
        "SSL_CERT_FILE": sim.ca_path,
        "REQUESTS_CA_BUNDLE": sim.ca_path,
        "BC_MAX_RETRIES": "4",
        "ALLOW_PRIVATE_WEBHOOKS": "true",
    }
    if (paged := request.node.get_closest_marker("bc_page_size")) is not None:
        values["BC_PAGE_SIZE"] = str(paged.args[0])
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(env: dict[str, str], clock: FakeClock) -> Iterator[App]:
    """The App every function uses during the test, with the test's clock."""
    instance = App(load_settings(), clock=clock)
    use_app(instance)
    yield instance
    use_app(None)


@pytest.fixture
def api(app: App) -> Api:
    return Api()


@pytest.fixture(autouse=True)
def _fresh_token_clients() -> Iterator[None]:
    """The simulator forgets the tokens it issued when it is reset (and a test may start its own
    simulator on a port an earlier one used): the process-wide msal clients and their cached
    tokens of earlier tests must not be offered to it."""
    from shared.bc.auth import TokenProvider

    TokenProvider._apps.clear()
    yield
    TokenProvider._apps.clear()


@pytest.fixture(autouse=True)
def _fresh_page_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page sizes BC's timeouts taught the client are process-wide (shared/bc/client.py
    PAGE_SIZES): an earlier test's halved size must not shape this test's requests."""
    from shared.bc import client as bc_client

    monkeypatch.setattr(bc_client, "PAGE_SIZES", bc_client.PageSizes())


@pytest.fixture(autouse=True)
def _quiet_libraries() -> None:
    for name in ("azure", "msal", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
