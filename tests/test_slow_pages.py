"""Slow pages (design.md §14 "Slow operations"): a page that times out is asked again with half
the page size instead of the same request again; the pass reads every row exactly once; the size
grows back; the client's timeout allows BC's 8 minutes. The simulator answers 408 (or is slow)
only for pages above a size, as a heavy `$expand` page in BC does."""
from __future__ import annotations

import dataclasses
import re

import pytest

from devtools.bcsim import BCSimulator
from shared.app import App
from shared.bc import client as bc_client
from shared.settings import load_settings
from tests.support import Api


def _asked_sizes(sim: BCSimulator, entity_set: str) -> list[tuple[int, int]]:
    """(page size asked, status) of each request for an entity set, in order."""
    found = []
    for request in sim.requests:
        if request.path.endswith(f"/{entity_set}"):
            match = re.search(r"maxpagesize=(\d+)", request.headers.get("prefer", ""))
            found.append((int(match[1]) if match else 0, request.status))
    return found


def test_a_page_that_times_out_is_asked_again_at_half_size_and_every_row_arrives_once(api: Api, app: App, sim: BCSimulator) -> None:
    app.settings = dataclasses.replace(app.settings, bc_page_size=40, bc_min_page_size=5)
    integration = api.create_integration(sim, entities=["suppliers"])
    sim.faults.add(408, times=None, path_contains="/vendors", above_page_size=10)  # BC: operation timed out
    sim.clear_requests()
    reply = api.sync(integration["id"])
    assert reply.status == 200, reply.body
    assert reply.data["suppliers"]["created"] == 45 and reply.data["suppliers"]["errors"] == 0
    asked = _asked_sizes(sim, "vendors")
    assert asked[:3] == [(40, 408), (20, 408), (10, 200)]  # halved, never the same request again
    assert all(size <= 10 for size, status in asked if status == 200)
    assert sum(1 for _, status in asked if status == 408) == 2  # learnt: later pages start at 10
    # every row exactly once: 45 stored, none twice, none missing
    rows = [r for r in app.store.query("Suppliers", "PartitionKey ne @x", parameters={"x": ""}, select=["RowKey"]) if not r["RowKey"].startswith("~")]
    assert len(rows) == 45 and len({r["RowKey"] for r in rows}) == 45
    [run] = app.runs.list(integration["id"], top=10, continuation_token=None)[0]
    assert run.progress["suppliers"].read == 45  # none read twice


def test_at_the_floor_a_timeout_is_the_types_error_and_other_types_go_on(api: Api, app: App, sim: BCSimulator) -> None:
    app.settings = dataclasses.replace(app.settings, bc_page_size=40, bc_min_page_size=10, bc_max_retries=1)
    integration = api.create_integration(sim, entities=["suppliers", "customers"])
    sim.faults.add(504, times=None, path_contains="/vendors", above_page_size=5)
    reply = api.sync(integration["id"])
    assert reply.data["suppliers"]["status"] == "FAILED"
    assert reply.data["customers"]["created"] > 0 and reply.data["customers"]["status"] == "SUCCESS"
    sizes = [size for size, _ in _asked_sizes(sim, "vendors")]
    assert sizes[:3] == [40, 20, 10] and set(sizes[3:]) == {10}  # floor reached, then retried as any failure


def test_the_page_size_grows_back_after_good_pages(app: App) -> None:
    sizes = bc_client.PageSizes()
    assert sizes.timed_out("k", 1000, 50) == 500
    assert sizes.timed_out("k", 500, 50) == 250
    for _ in range(bc_client.GROW_AFTER_PAGES):
        assert sizes.current("k", 1000) == 250
        sizes.good("k", 250, 1000)
    assert sizes.current("k", 1000) == 500
    for _ in range(bc_client.GROW_AFTER_PAGES):
        sizes.good("k", 500, 1000)
    assert sizes.current("k", 1000) == 1000
    assert sizes.timed_out("k", 50, 50) is None  # the floor


def test_a_slow_page_is_cut_by_our_read_timeout_and_halved(api: Api, app: App, sim: BCSimulator) -> None:
    """Our own read timeout (not a BC status) also halves the page; 1 s stands for 490 s."""
    app.settings = dataclasses.replace(app.settings, bc_page_size=40, bc_min_page_size=5, bc_timeout_seconds=1.0)
    integration = api.create_integration(sim, entities=["suppliers"])
    sim.faults.add(200, times=1, path_contains="/vendors", above_page_size=20, delay=3.0)  # slower than the timeout
    sim.clear_requests()
    reply = api.sync(integration["id"])
    assert reply.status == 200, reply.body
    assert reply.data["suppliers"]["created"] == 45
    first_success = next(size for size, status in _asked_sizes(sim, "vendors") if status == 200)
    assert first_success == 20


def test_the_default_timeout_allows_bcs_eight_minutes(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.delenv("BC_TIMEOUT_SECONDS", raising=False)
    settings = load_settings()
    assert settings.bc_timeout_seconds > 8 * 60
    assert settings.lease_seconds > settings.bc_timeout_seconds + settings.bc_max_retry_seconds  # renewed per page
