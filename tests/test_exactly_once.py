"""Every BC record exactly once, under every failure (issue 8): the watermark, stock, long orders,
races with configuration changes, conflicts, error lists, paused modifiedSince runs, and delete
detection by reconcile. Each test here failed on the code before its fix."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from devtools.bcsim import BCSimulator
from shared.app import App
from shared.keys import record_partition
from shared.runs.dispatch import RunRequest, start_run
from shared.runs.slices import run_slice
from shared.storage.integrations import Integration
from tests.support import Api, FakeClock, drain


# -- helpers ------------------------------------------------------------------------------------
def _stored(app: App, integration_id: str, user: str = "user-1") -> Integration:
    integration = app.integrations.get(user, integration_id)
    assert integration is not None
    return integration


def _rows(app: App, table: str, integration_id: str) -> dict[str, dict[str, Any]]:
    """An integration's stored records of one table, by externalId."""
    found = app.store.query(table, "integrationId eq @id", parameters={"id": integration_id})
    return {e["externalId"]: e for e in found}


def _calls(sim: BCSimulator, entity_set: str) -> list[Any]:
    return [r for r in sim.requests if r.path.endswith(f"/{entity_set}")]


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- defect 3: the stock feed is a bounded, resumable pass ------------------------------------------
def test_the_stock_feed_pauses_at_a_page_and_the_next_slice_continues_it(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """150 stock postings (two ledger pages of 100): a delta slice out of time stops after the first
    ledger page with a checkpoint under `products.stock` and the stock mark unmoved; the next
    slice continues at the saved nextLink and refreshes the other 50 items."""
    created = api.create_integration(sim, entities=["products"])
    assert api.sync(created["id"]).status == 200
    mark = app.states.get(created["id"], "products.stock").watermark
    assert mark is not None
    items = sim.company().records("items")[:150]
    for item in items:
        sim.company().post_stock(item["id"], 3)
    clock.advance(1)

    started = start_run(app, _stored(app, created["id"]), RunRequest(mode="delta"), enqueue=False)
    outcome = run_slice(app, started.integration, started.run, budget_seconds=0)
    assert outcome.state == "continued"
    progress = outcome.run.progress["products"]
    assert not progress.done and progress.updated == 100 and progress.stockRefreshed >= 99  # one may fall in the look-back
    stock = app.states.get(created["id"], "products.stock")
    assert stock.watermark == mark, "the stock mark moves only when the feed pass completes"
    assert stock.checkpoint is not None and "$skiptoken" in stock.checkpoint.next_link

    sim.clear_requests()
    assert [o.state for o in drain(app)] == ["finished"]
    feed = _calls(sim, "itemLedgerEntries")
    assert feed and "$skiptoken" in feed[0].query, "the next slice continues the feed at its checkpoint"
    run = app.runs.get(created["id"], started.run.runId)
    assert run is not None and run.status == "succeeded"
    assert run.progress["products"].updated == 150 and run.progress["products"].stockRefreshed >= 149
    after = app.states.get(created["id"], "products.stock")
    assert after.checkpoint is None and after.watermark is not None and after.watermark > mark
    stored = _rows(app, "Products", created["id"])
    assert all(stored[i["id"]]["inventory"] == float(sim.company().get("items", i["id"])["inventory"]) for i in items)
