"""Every BC record exactly once, under every failure (issue 8): the watermark, stock, long orders,
races with configuration changes, conflicts, error lists, paused modifiedSince runs, and delete
detection by reconcile. Each test here failed on the code before its fix."""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any, Callable, Iterator

import pytest

from devtools.azurite import AzuriteServer
from devtools.bcsim import BCSimulator, Hold
from devtools.storagefaults import StorageFaultProxy
from shared.app import App
from shared.clock import parse_iso
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
@pytest.mark.bc_page_size(100)
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
    assert not progress.done and progress.updated == 100 and progress.stock_refreshed >= 99  # one may fall in the look-back
    stock = app.states.get(created["id"], "products.stock")
    assert stock.watermark == mark, "the stock mark moves only when the feed pass completes"
    assert stock.checkpoint is not None and "$skiptoken" in stock.checkpoint.next_link

    sim.clear_requests()
    assert [o.state for o in drain(app)] == ["finished"]
    feed = _calls(sim, "itemLedgerEntries")
    assert feed and "$skiptoken" in feed[0].query, "the next slice continues the feed at its checkpoint"
    run = app.runs.get(created["id"], started.run.runId)
    assert run is not None and run.status == "succeeded"
    assert run.progress["products"].updated == 150 and run.progress["products"].stock_refreshed >= 149
    after = app.states.get(created["id"], "products.stock")
    assert after.checkpoint is None and after.watermark is not None and after.watermark > mark
    stored = _rows(app, "Products", created["id"])
    assert all(stored[i["id"]]["inventory"] == float(sim.company().get("items", i["id"])["inventory"]) for i in items)


# -- defect 5: changing where an integration points, or disconnecting it, wins over a run -----------
def _hold_second_page(api: Api, app: App, sim: BCSimulator, integration_id: str) -> tuple[threading.Thread, dict[str, Any], Hold]:
    """A sync in a thread whose request for the second BC page is held until the test releases
    it; returns once that request waits and the first page is stored (its checkpoint saved)."""
    hold = sim.faults.hold(path_contains="skiptoken")
    reply: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: reply.update(reply=api.sync(integration_id)))
    worker.start()
    hold.wait()
    _wait_for(lambda: app.states.get(integration_id, "products").checkpoint is not None)
    return worker, reply, hold


@pytest.mark.bc_page_size(100)
def test_a_patch_of_the_company_mid_run_stops_the_run_and_nothing_of_the_old_company_is_saved(api: Api, app: App, sim: BCSimulator) -> None:
    """The run stops at its next page: no later page of the old company is written, and neither
    its checkpoint nor its watermark lands in the reset state; the next sync reads the new company."""
    from devtools.bcsim import DEMO_US_COMPANY_ID

    created = api.create_integration(sim, entities=["products"])
    worker, reply, hold = _hold_second_page(api, app, sim, created["id"])
    patched = api.patch(f"integrations/{created['id']}", {"companyId": DEMO_US_COMPANY_ID})
    hold.release()
    worker.join(60)
    assert not worker.is_alive()
    assert patched.status == 200, patched.body
    assert patched.data["syncInProgress"] is False

    answer = reply["reply"]
    assert answer.status == 409 and answer.error["code"] == "run_cancelled", answer.body
    assert len(_rows(app, "Products", created["id"])) == 100, "no page of the old company after the change"
    state = app.states.get(created["id"], "products")
    assert state.watermark is None and state.checkpoint is None
    assert app.states.get(created["id"], "products.stock").watermark is None
    shown = api.get(f"integrations/{created['id']}").data
    assert shown["status"] == "never_synced" and shown["lastError"] is None  # the cancel is no failure of the new target

    again = api.sync(created["id"])
    assert again.status == 200, again.body
    us_items = {i["id"] for i in sim.company(DEMO_US_COMPANY_ID).records("items")}
    assert again.data["products"]["created"] == len(us_items)
    assert us_items <= set(_rows(app, "Products", created["id"]))
    assert app.states.get(created["id"], "products").watermark is not None


@pytest.mark.bc_page_size(100)
def test_a_disconnect_mid_run_stops_the_run_at_its_next_page(api: Api, app: App, sim: BCSimulator) -> None:
    """DELETE while a run reads: it stops before writing the next page; no watermark is saved."""
    created = api.create_integration(sim, entities=["products"])
    worker, reply, hold = _hold_second_page(api, app, sim, created["id"])
    deleted = api.delete(f"integrations/{created['id']}")
    hold.release()
    worker.join(60)
    assert not worker.is_alive()
    assert deleted.status == 200 and deleted.data["status"] == "disconnected", deleted.body

    answer = reply["reply"]
    assert answer.status == 409 and answer.error["code"] == "integration_disconnected", answer.body
    assert len(_rows(app, "Products", created["id"])) == 100
    assert app.states.get(created["id"], "products").watermark is None
    shown = api.get(f"integrations/{created['id']}").data
    assert shown["status"] == "disconnected" and shown["syncInProgress"] is False


def test_a_patch_of_the_company_cancels_a_queued_run(api: Api, app: App, sim: BCSimulator) -> None:
    """A run queued for the old company never runs: it ends failed with run_cancelled."""
    from devtools.bcsim import DEMO_US_COMPANY_ID

    created = api.create_integration(sim, entities=["products"])
    queued = api.post(f"integrations/{created['id']}/dynamics/sync", {"mode": "full"}, headers={"Prefer": "respond-async"})
    assert queued.status == 202
    assert api.patch(f"integrations/{created['id']}", {"companyId": DEMO_US_COMPANY_ID}).data["syncInProgress"] is False
    drain(app)
    run = api.get(f"integrations/{created['id']}/sync-runs/{queued.data['runId']}").data
    assert run["status"] == "failed" and run["error"]["code"] == "run_cancelled"
    assert _rows(app, "Products", created["id"]) == {}


# -- delete detection: reconcile ------------------------------------------------------------------
def _flagged(rows: dict[str, dict[str, Any]]) -> set[str]:
    return {k for k, r in rows.items() if r.get("deletedInBC")}


@pytest.mark.bc_page_size(100)
def test_reconcile_flags_what_bc_no_longer_has_and_deletes_nothing(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """Deleted in BC: the first and last ids (the ranges before the first and after the last BC
    id), ids on several pages, and an order (its lines untouched) are flagged with deletedAt;
    every record stays; the response and the log count them; a second reconcile flags nothing new."""
    created = api.create_integration(sim, entities=["suppliers", "products", "salesOrders"])
    assert api.sync(created["id"]).status == 200
    company = sim.company()
    vendors = sorted(v["id"] for v in company.records("vendors"))
    items = sorted(i["id"] for i in company.records("items"))
    order = company.records("salesOrders")[3]["id"]
    gone_vendors = {vendors[0], vendors[-1], vendors[20]}
    gone_items = {items[0], items[99], items[100], items[150], items[-1]}
    for vendor in gone_vendors:
        company.delete("vendors", vendor)
    for item in gone_items:
        company.delete("items", item)
    lines_before = {k for k, r in _rows(app, "SalesOrderLines", created["id"]).items() if r["orderExternalId"] == order}
    company.delete("salesOrders", order)
    clock.advance(1)  # log entries of this run sort after the first sync's

    reply = api.sync(created["id"], {"mode": "reconcile"})
    assert reply.status == 200, reply.body
    assert reply.data["suppliers"]["deleted"] == 3 and reply.data["products"]["deleted"] == 5
    assert reply.data["salesOrders"]["deleted"] == 1
    assert all(reply.data[k]["created"] == reply.data[k]["updated"] == 0 for k in reply.data)
    suppliers, products = _rows(app, "Suppliers", created["id"]), _rows(app, "Products", created["id"])
    assert len(suppliers) == 45 and len(products) == 230, "nothing is ever deleted"
    assert _flagged(suppliers) == gone_vendors and _flagged(products) == gone_items
    assert all(suppliers[v]["deletedAt"] for v in gone_vendors)
    assert _flagged(_rows(app, "SalesOrders", created["id"])) == {order}
    lines = _rows(app, "SalesOrderLines", created["id"])
    # The lines of a flagged order are flagged with it, never left live (design.md §11), and kept.
    assert lines_before and lines_before <= set(lines) and _flagged(lines) == lines_before
    items_read = [r for r in _calls(sim, "items") if r.query.get("$select") == "id"]
    assert items_read and all(r.query.get("$orderby") == "id" for r in items_read)
    log = api.get(f"integrations/{created['id']}/sync-logs", params={"entityType": "SUPPLIER", "top": 1}).data[0]
    assert log["metadata"]["deleted"] == 3 and log["metadata"]["mode"] == "reconcile"

    again = api.sync(created["id"], {"mode": "reconcile"})
    assert again.data["suppliers"].get("deleted", 0) == 0 and again.data["products"].get("deleted", 0) == 0
    assert _flagged(_rows(app, "Suppliers", created["id"])) == gone_vendors


def test_a_record_that_comes_back_loses_its_flag(api: Api, app: App, sim: BCSimulator) -> None:
    """Back in BC unchanged: the next reconcile clears the flag. Back and changed: the delta
    rewrites it, flag gone."""
    created = api.create_integration(sim, entities=["suppliers"])
    assert api.sync(created["id"]).status == 200
    company = sim.company()
    first, second = company.records("vendors")[5], company.records("vendors")[6]
    for vendor in (first, second):
        company.delete("vendors", vendor["id"])
    assert api.sync(created["id"], {"mode": "reconcile"}).data["suppliers"]["deleted"] == 2
    assert _flagged(_rows(app, "Suppliers", created["id"])) == {first["id"], second["id"]}

    company.sets["vendors"].put(company.sets["vendors"].gone[first["id"]])  # restored as it was
    back = api.sync(created["id"], {"mode": "reconcile"})
    assert back.data["suppliers"]["undeleted"] == 1 and back.data["suppliers"].get("deleted", 0) == 0
    assert back.data["suppliers"].get("restored", 0) == 0  # it was stored all along: only its flag went
    row = _rows(app, "Suppliers", created["id"])[first["id"]]
    assert "deletedInBC" not in row and "deletedAt" not in row and row["name"] == first["displayName"]

    company.sets["vendors"].put(company.sets["vendors"].gone[second["id"]])
    company.update("vendors", second["id"], displayName="Back again")
    delta = api.sync(created["id"], {"mode": "delta"})
    assert delta.data["suppliers"]["updated"] == 1
    row = _rows(app, "Suppliers", created["id"])[second["id"]]
    assert not row.get("deletedInBC") and row["name"] == "Back again"


@pytest.mark.bc_page_size(100)
def test_a_paused_reconcile_continues_from_its_checkpoint(api: Api, app: App, sim: BCSimulator) -> None:
    """A reconcile slice out of time stops after a page (checkpoint under products.reconcile),
    having flagged nothing yet (no flag before every BC id is read); the continuation finishes
    it with every deleted item flagged exactly once."""
    created = api.create_integration(sim, entities=["products"])
    assert api.sync(created["id"]).status == 200
    items = sorted(i["id"] for i in sim.company().records("items"))
    gone = {items[10], items[120], items[229]}
    for item in gone:
        sim.company().delete("items", item)
    started = start_run(app, _stored(app, created["id"]), RunRequest(mode="reconcile"), enqueue=False)
    outcome = run_slice(app, started.integration, started.run, budget_seconds=0)
    assert outcome.state == "continued" and outcome.run.progress["products"].deleted == 0
    assert outcome.run.progress["products"].read == 100 and not _flagged(_rows(app, "Products", created["id"]))
    checkpoint = app.states.get(created["id"], "products.reconcile").checkpoint
    assert checkpoint is not None and "$skiptoken" in checkpoint.next_link
    assert [o.state for o in drain(app)] == ["finished"]
    run = app.runs.get(created["id"], started.run.runId)
    assert run is not None and run.status == "succeeded" and run.slices == 2
    assert run.progress["products"].deleted == 3
    assert _flagged(_rows(app, "Products", created["id"])) == gone
    assert app.states.get(created["id"], "products.reconcile").checkpoint is None


def test_reconcile_is_a_mode_of_the_sync_call_only(api: Api, app: App, sim: BCSimulator) -> None:
    created = api.create_integration(sim, entities=["suppliers"])
    bad = api.sync(created["id"], {"mode": "reconcile", "modifiedSince": "2024-01-01T00:00:00Z"})
    assert bad.status == 400 and bad.error["code"] == "validation_error"
    assert api.sync(created["id"], {"mode": "erase"}).status == 400


def test_the_timer_reconciles_each_integration_once_an_interval(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """Deltas on every tick; once RECONCILE_INTERVAL_HOURS (24) have passed a reconcile run is
    queued instead, flags the deleted record and sets lastReconcileAt; then deltas again."""
    from tests.support import tick

    created = api.create_integration(sim, entities=["suppliers"])
    assert created["id"] in tick(app)["synced"]
    vendor = sim.company().records("vendors")[4]["id"]
    sim.company().delete("vendors", vendor)
    clock.advance(3600 + 1)
    assert created["id"] in tick(app)["synced"]
    assert app.runs.get(created["id"], _stored(app, created["id"]).lastRun["runId"]).mode == "delta"  # type: ignore[index, union-attr]
    assert not _flagged(_rows(app, "Suppliers", created["id"]))

    clock.advance(24 * 3600)
    assert created["id"] in tick(app)["synced"]
    integration = _stored(app, created["id"])
    assert integration.lastRun is not None and integration.lastRun["mode"] == "reconcile"
    assert integration.lastReconcileAt is not None
    assert _flagged(_rows(app, "Suppliers", created["id"])) == {vendor}
    assert integration.lastRun["counts"]["suppliers"]["deleted"] == 1

    clock.advance(3600 + 1)
    assert created["id"] in tick(app)["synced"]
    assert _stored(app, created["id"]).lastRun["mode"] == "delta"  # type: ignore[index]


# -- storage faults at the process boundary ------------------------------------------------------
@pytest.fixture
def storage(env: dict[str, str], azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[StorageFaultProxy]:
    """Table Storage through a proxy that refuses chosen writes (ask for it before `app`)."""
    with StorageFaultProxy(azurite.connection_string) as proxy:
        monkeypatch.setenv("TABLES_CONNECTION_STRING", proxy.connection_string)
        yield proxy


# -- defect 1: the watermark never passes a record that failed to store ----------------------------
def test_a_record_that_failed_to_store_is_read_again_by_the_next_delta(storage: StorageFaultProxy, api: Api, app: App, sim: BCSimulator) -> None:
    """Three vendors changed an hour apart; the middle one's write is refused. The watermark stays
    just below it, so the next delta (the fault gone) stores it, although the newest change
    is hours later than the look-back window reaches."""
    assert app.settings.tables_connection_string == storage.connection_string
    created = api.create_integration(sim, entities=["suppliers"])
    assert api.sync(created["id"]).status == 200
    base = parse_iso(app.states.get(created["id"], "suppliers").watermark or "")
    vendors = sim.company().records("vendors")[:3]
    for hours, vendor in enumerate(vendors, start=1):
        sim.company().update("vendors", vendor["id"], displayName=f"Changed {hours}", modified_at=base + timedelta(hours=hours))
    storage.refuse("Suppliers", vendors[1]["id"])

    first = api.sync(created["id"], {"mode": "delta"})
    assert (first.data["suppliers"]["updated"], first.data["suppliers"]["errors"]) == (2, 1)
    assert storage.refused
    watermark = parse_iso(app.states.get(created["id"], "suppliers").watermark or "")
    assert watermark < base + timedelta(hours=2), "the watermark may not pass the refused record"
    assert _rows(app, "Suppliers", created["id"])[vendors[1]["id"]]["name"] != "Changed 2"

    storage.clear()
    second = api.sync(created["id"], {"mode": "delta"})
    assert second.data["suppliers"]["updated"] == 1 and second.data["suppliers"]["errors"] == 0
    assert _rows(app, "Suppliers", created["id"])[vendors[1]["id"]]["name"] == "Changed 2"
    assert parse_iso(app.states.get(created["id"], "suppliers").watermark or "") >= base + timedelta(hours=3)


# -- defect 8: a failed line write or delete withdraws its order's write ----------------------------
def test_a_failed_line_write_or_delete_leaves_the_order_for_the_next_run(storage: StorageFaultProxy, api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """A changed line whose write is refused, and a removed line whose delete is refused: each
    order counts as an error and keeps its old hash, so the next delta redoes it; no orphan
    line is left behind."""
    created = api.create_integration(sim, entities=["salesOrders"])
    assert api.sync(created["id"]).status == 200
    company = sim.company()
    orders = [o for o in company.records("salesOrders") if len(company.lines(o["id"])) >= 2][:2]
    changed_line = company.lines(orders[0]["id"])[0]
    removed_line = company.lines(orders[1]["id"])[0]
    company.update_order_line(orders[0]["id"], changed_line["id"], quantity=77)
    company.remove_order_line(orders[1]["id"], removed_line["id"])
    from shared.keys import record_row_key

    storage.refuse("SalesOrderLines", record_row_key(changed_line["id"]))  # in the line's RowKey
    storage.refuse("SalesOrderLines", record_row_key(removed_line["id"]))
    clock.advance(1)  # this run's log entries sort after the first sync's

    first = api.sync(created["id"], {"mode": "delta"})
    assert (first.data["salesOrders"]["updated"], first.data["salesOrders"]["errors"]) == (0, 2), first.data
    lines = _rows(app, "SalesOrderLines", created["id"])
    assert removed_line["id"] in lines and lines[changed_line["id"]]["quantity"] != 77
    log = api.get(f"integrations/{created['id']}/sync-logs", params={"entityType": "SALES_ORDER", "top": 1}).data[0]
    assert {e["externalId"] for e in log["metadata"]["errors"]} == {orders[0]["id"], orders[1]["id"]}

    storage.clear()
    second = api.sync(created["id"], {"mode": "delta"})
    assert (second.data["salesOrders"]["updated"], second.data["salesOrders"]["errors"]) == (2, 0)
    lines = _rows(app, "SalesOrderLines", created["id"])
    assert removed_line["id"] not in lines and lines[changed_line["id"]]["quantity"] == 77


# -- defect 2: the stock mark of a resumed full pass is the pass's start ---------------------------
@pytest.mark.bc_page_size(100)
def test_a_resumed_full_pass_keeps_its_start_as_the_stock_mark(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """Stock posted to an item of the first page, after that page was read and before the pass
    resumed an hour later, reaches the platform with the next delta."""
    created = api.create_integration(sim, entities=["products"])
    started = start_run(app, _stored(app, created["id"]), RunRequest(mode="full"), enqueue=False)
    assert run_slice(app, started.integration, started.run, budget_seconds=0).state == "continued"
    checkpoint = app.states.get(created["id"], "products").checkpoint
    assert checkpoint is not None
    first_item = sorted(_rows(app, "Products", created["id"]))[0]  # an item of the first page (BC's order)
    sim.company().post_stock(first_item, 11)
    clock.advance(3600)
    assert [o.state for o in drain(app)] == ["finished"]
    assert app.states.get(created["id"], "products.stock").watermark == checkpoint.started_at

    delta = api.sync(created["id"], {"mode": "delta"})
    assert delta.data["products"]["stockRefreshed"] == 1
    stored = _rows(app, "Products", created["id"])[first_item]
    assert stored["inventory"] == float(sim.company().get("items", first_item)["inventory"])


# -- defect 4: orders with thousands of lines ----------------------------------------------------
def test_an_order_with_2000_lines_syncs_and_removed_lines_go(api: Api, app: App, sim: BCSimulator) -> None:
    """2,000 lines are 2,000 rows `{order}|{line}` in the order's partition (no list of line ids
    on the order: 2,000 ids as JSON are 78 KB, past a property's 64 KiB); 500 lines removed in BC
    are removed by the delta."""
    company = sim.company()
    order = company.records("salesOrders")[0]["id"]
    item = next(i for i in company.records("items") if i["type"] != "Service")["id"]
    company.add_order_lines(order, item, 2000 - len(company.lines(order)))
    assert len(company.lines(order)) == 2000
    created = api.create_integration(sim, entities=["salesOrders"])
    first = api.sync(created["id"])
    assert first.status == 200 and first.data["salesOrders"]["errors"] == 0, first.body
    stored = _rows(app, "SalesOrders", created["id"])[order]
    assert "lineIds" not in stored
    partition = stored["PartitionKey"]
    mine = [r for r in _rows(app, "SalesOrderLines", created["id"]).values() if r["orderExternalId"] == order]
    assert len(mine) == 2000 and all(r["PartitionKey"] == partition and "|" in r["RowKey"] for r in mine)

    removed = [ln["id"] for ln in company.lines(order)[700:1200]]
    company.remove_order_lines(order, removed)
    delta = api.sync(created["id"], {"mode": "delta"})
    assert delta.data["salesOrders"]["updated"] == 1 and delta.data["salesOrders"]["linesDeleted"] == 500
    left = {k for k, r in _rows(app, "SalesOrderLines", created["id"]).items() if r["orderExternalId"] == order}
    assert left == {ln["id"] for ln in company.lines(order)} and len(left) == 1500


# -- defect 6: platformModifiedAt as a date-time or as ISO text ------------------------------------
def test_platform_edits_are_conflicts_whether_stored_as_date_time_or_text(api: Api, app: App, sim: BCSimulator) -> None:
    """A platform that stores platformModifiedAt as a date-time, or as ISO text, after the last
    sync: the next change from BC is written as a conflict; unreadable text is no edit."""
    from datetime import datetime, timezone

    created = api.create_integration(sim, entities=["suppliers"])
    assert api.sync(created["id"]).status == 200
    vendors = sim.company().records("vendors")[:3]
    rows = _rows(app, "Suppliers", created["id"])
    later = datetime.now(timezone.utc) + timedelta(days=1)
    marks: list[Any] = [later, later.isoformat(), "not a date"]
    client = app.store.table("Suppliers")
    for vendor, mark in zip(vendors, marks):
        row = rows[vendor["id"]]
        client.upsert_entity({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], "platformModifiedAt": mark}, mode="merge")
        sim.company().update("vendors", vendor["id"], displayName=f"BC edit {vendor['number']}")
    first = rows[vendors[0]["id"]]
    assert isinstance(client.get_entity(first["PartitionKey"], first["RowKey"])["platformModifiedAt"], datetime)

    reply = api.sync(created["id"], {"mode": "delta"})
    assert reply.status == 200 and reply.data["suppliers"]["errors"] == 0, reply.body
    after = _rows(app, "Suppliers", created["id"])
    assert [after[v["id"]]["syncStatus"] for v in vendors] == ["conflict", "conflict", "synced"]


# -- defect 7: error lists are bounded, counts exact ------------------------------------------------
def test_thousands_of_failing_records_keep_20_with_data_and_count_the_rest(api: Api, app: App, sim: BCSimulator) -> None:
    """45 suppliers that fail mapping: errors 45; the run and the log keep the first 20 with their
    data, and the log says how many it left out."""
    created = api.create_integration(sim, entities=["suppliers"])
    for vendor in sim.company().records("vendors"):
        sim.company().update("vendors", vendor["id"], displayName="")
    reply = api.sync(created["id"])
    assert reply.data["suppliers"]["errors"] == 45 and reply.data["suppliers"]["status"] == "PARTIAL"
    run = app.runs.get(created["id"], reply.headers["X-Sync-Run-Id"])
    assert run is not None and len(run.progress["suppliers"].error_records) == 20
    log = api.get(f"integrations/{created['id']}/sync-logs", params={"entityType": "SUPPLIER"}).data[0]
    assert log["metadata"]["errorCount"] == 45 and len(log["metadata"]["errors"]) == 20
    assert log["metadata"]["errorsOmitted"] == 25
    assert all(e["data"] is not None and e["externalId"] for e in log["metadata"]["errors"])


# -- defect 9: a paused modifiedSince run continues from its own checkpoint -------------------------
@pytest.mark.bc_page_size(100)
def test_a_paused_modified_since_run_continues_from_its_own_checkpoint(api: Api, app: App, sim: BCSimulator) -> None:
    """A modifiedSince run out of time saves its checkpoint under `products.since` (never the
    watermark); its continuation starts at that nextLink and reads the rest exactly once."""
    created = api.create_integration(sim, entities=["products"])
    assert api.sync(created["id"]).status == 200
    watermark = app.states.get(created["id"], "products").watermark
    started = start_run(app, _stored(app, created["id"]), RunRequest(mode="since", modified_since=parse_iso("2000-01-01T00:00:00Z")), enqueue=False)
    assert run_slice(app, started.integration, started.run, budget_seconds=0).state == "continued"
    checkpoint = app.states.get(created["id"], "products.since").checkpoint
    assert checkpoint is not None and checkpoint.run_id == started.run.runId and "$skiptoken" in checkpoint.next_link
    assert app.states.get(created["id"], "products").watermark == watermark
    sim.clear_requests()
    assert [o.state for o in drain(app)] == ["finished"]
    assert "$skiptoken" in _calls(sim, "items")[0].query
    run = app.runs.get(created["id"], started.run.runId)
    assert run is not None and run.progress["products"].read == 230 and run.progress["products"].unchanged == 230
    assert app.states.get(created["id"], "products").watermark == watermark
    assert app.states.get(created["id"], "products.since").checkpoint is None


def test_reconcile_takes_ids_in_any_order_without_a_false_flag(api: Api, app: App, sim: BCSimulator) -> None:
    """BC's order is SQL Server's, but should ids come in another order (here the last first),
    the reconcile neither stops (it did: 502 bc_ids_unordered) nor flags a record BC named."""
    created = api.create_integration(sim, entities=["suppliers"])
    assert api.sync(created["id"]).status == 200
    ids = sorted(v["id"] for v in sim.company().records("vendors"))
    sim.faults.add(200, path_contains="$select=id", body={"value": [{"id": i} for i in reversed(ids[1:])]})
    reply = api.sync(created["id"], {"mode": "reconcile"})
    assert reply.status == 200 and reply.data["suppliers"]["deleted"] == 1, reply.body
    assert _flagged(_rows(app, "Suppliers", created["id"])) == {ids[0]}


@pytest.mark.bc_page_size(100)
def test_reconcile_checkpoints_runs_of_ids_exactly(api: Api, app: App, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids spilled in several sorted runs (here a run per ~150 ids over pages of 100): ids at
    every page and run boundary, deleted in BC, are flagged; no other record is."""
    from shared.sync import reconcile

    monkeypatch.setattr(reconcile, "CHECKPOINT_IDS", 150)
    created = api.create_integration(sim, entities=["products"])
    assert api.sync(created["id"]).status == 200
    items = sorted(i["id"] for i in sim.company().records("items"))
    gone = {items[i] for i in (0, 99, 100, 101, 198, 199, 200, 201, 228, 229)}
    for item in gone:
        sim.company().delete("items", item)
    reply = api.sync(created["id"], {"mode": "reconcile"})
    assert reply.data["products"]["deleted"] == len(gone)
    assert _flagged(_rows(app, "Products", created["id"])) == gone


def test_reconcile_flags_reach_the_change_feed_and_change_rows_are_never_flagged(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """A reconcile's flags are written with their change rows (the feed reports them); the feed's
    own rows in the records table are skipped by the sweep."""
    from shared.storage.changes import is_change_row
    from tests.test_read_api import SETTLED, read_feed

    created = api.create_integration(sim, entities=["suppliers"])
    assert api.sync(created["id"]).status == 200
    clock.advance(SETTLED)
    _, cursor = read_feed(api, created["id"], "suppliers")
    gone = sim.company().records("vendors")[9]["id"]
    sim.company().delete("vendors", gone)
    assert api.sync(created["id"], {"mode": "reconcile"}).data["suppliers"]["deleted"] == 1
    clock.advance(SETTLED)
    changes, _ = read_feed(api, created["id"], "suppliers", cursor)
    assert [(c["externalId"], c["record"]["deletedInBC"]) for c in changes] == [(gone, True)]
    change_rows = [e for e in app.store.query("Suppliers", "PartitionKey ne @none", parameters={"none": ""}) if is_change_row(e["RowKey"])]
    assert change_rows and not any(e.get("deletedInBC") for e in change_rows)
