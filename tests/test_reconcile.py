"""Issue 16, items 2 and 3: RowKeys that sort as BC sorts ids (range lookups whatever the page
order), legacy keys moved without duplicates or losses, and a reconcile that is right in any id
order, restores what a delta missed and proves completeness."""
from __future__ import annotations

import hashlib
import random
import uuid
from datetime import timedelta
from typing import Any, Callable

import pytest

from devtools.bcsim import BCSimulator
from devtools.bcsim.seed import fmt_dt
from shared.app import App
from shared.entities import ENTITY_TYPES
from shared.keys import (
    KEY_LAYOUT, RECORD_PARTITIONS, child_row_key, encode_key, guid_from_sort_key, guid_sort_key, legacy_row_key, record_partition, record_row_key,
)
from shared.runs.dispatch import RunRequest, start_run
from shared.runs.slices import run_slice
from shared.storage.changes import RECORDS_END
from shared.storage.records import LOOKUP_STATS
from shared.storage.integrations import Integration
from shared.storage.state import TypeState
from tests.support import Api, FakeClock, drain
from tests.test_read_api import SETTLED, read_feed


def sql_order(guid: str) -> bytes:
    """SQL Server's uniqueidentifier comparison, written from .NET SqlGuid.CompareTo: the
    .NET byte array (bytes_le) compared in the order 10-15, 8-9, 6-7, 4-5, 0-3."""
    raw = uuid.UUID(guid).bytes_le
    return bytes(raw[i] for i in (10, 11, 12, 13, 14, 15, 8, 9, 6, 7, 4, 5, 0, 1, 2, 3))


ORDERS: dict[str, Callable[[str], Any]] = {
    "sql": lambda g: guid_sort_key(g) or g,  # what BC does
    "text": lambda g: g.lower(),  # the other reading
    "shuffled": lambda g: hashlib.sha256(g.encode()).hexdigest(),  # any order at all
}


def play_order(sim: BCSimulator, order: str) -> None:
    """The simulator sorts and pages GUIDs in `order` from now on."""
    for store in sim._stores.values():  # noqa: SLF001 - the simulator is ours; its sets take an order
        for entity_set in store.sets.values():
            entity_set.set_guid_order(ORDERS[order])


def rows(app: App, table: str, integration_id: str) -> list[dict[str, Any]]:
    found = app.store.query(table, "integrationId eq @id", parameters={"id": integration_id})
    return [dict(e) for e in found]


def by_id(app: App, table: str, integration_id: str) -> dict[str, dict[str, Any]]:
    found = rows(app, table, integration_id)
    result = {e["externalId"]: e for e in found}
    assert len(result) == len(found), "a record is stored twice"
    return result


def flagged(app: App, table: str, integration_id: str) -> set[str]:
    return {k for k, r in by_id(app, table, integration_id).items() if r.get("deletedInBC")}


def stored(app: App, integration_id: str) -> Integration:
    integration = app.integrations.get("user-1", integration_id)
    assert integration is not None
    return integration


# -- keys ----------------------------------------------------------------------------------------
def test_row_keys_sort_as_sql_server_sorts_guids_and_other_ids_stay_apart() -> None:
    rng = random.Random(7)
    guids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(3000)]
    guids += ["0a91419f-7b01-f111-a1b2-000d3a2f8c17", "0b91419f-7b01-f111-a1b2-000d3a2f8c17", "ff91419f-7b01-f111-a1b2-000d3a2f8c17"]
    assert sorted(guids, key=sql_order) == sorted(guids, key=record_row_key)
    assert all(guid_from_sort_key(guid_sort_key(g) or "") == g for g in guids)
    # BC's sequential ids (first byte fastest) are neighbours in key order, scattered in text order
    seq = [f"{n:02x}91419f-7b01-f111-a1b2-000d3a2f8c17" for n in range(10, 20)]
    assert sorted(seq, key=record_row_key) == seq
    # ids that are not GUIDs: unique, never a GUID's key, before the change feed's rows
    others = ["V-1", "weird/id#1?x\\y", "0123456789abcdef0123456789abcdef", "ABCDEF12-3456-7890-ABCD-EF1234567890X"]
    keys = [record_row_key(o) for o in others]
    assert len(set(keys)) == len(keys) and all(k.startswith("!") and k < RECORDS_END for k in keys)
    assert record_row_key("0123456789abcdef0123456789abcdef") != guid_sort_key("efcdab89-6745-2301-0123-456789abcdef")
    assert all(record_row_key(g) < RECORDS_END for g in guids)
    # upper case is the same GUID; a line sorts under its order; partitions survive the move
    assert record_row_key(guids[0].upper()) == record_row_key(guids[0])
    parent, line = record_row_key(guids[1]), record_row_key(guids[2])
    assert parent < child_row_key(parent, line) < parent + "}"
    assert all(record_partition("i", record_row_key(g)) == record_partition("i", legacy_row_key(g)) for g in guids)
    assert record_partition("i", record_row_key("V-1")) == record_partition("i", encode_key("V-1"))


# -- lookups -------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["sql", "shuffled"])
@pytest.mark.bc_page_size(100)
def test_a_bc_page_is_read_with_range_queries_whatever_the_order_within_it(order: str, api: Api, app: App, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-sync in BC's order reads each page's stored side with at most one query per
    partition; the records inside a page may come in any order."""
    play_order(sim, "sql")
    if order == "shuffled":
        from shared.sync import engine

        real = engine.TypeSync.process

        def shuffled(self: Any, records: Any, lookup: Any = None) -> Any:
            records = list(records)
            random.Random(3).shuffle(records)
            return real(self, records, lookup)

        monkeypatch.setattr(engine.TypeSync, "process", shuffled)
    created = api.create_integration(sim, entities=["products"])
    assert api.sync(created["id"]).status == 200
    LOOKUP_STATS.reset()
    again = api.sync(created["id"], {"mode": "full"})
    assert again.data["products"]["unchanged"] == 230, again.body
    # One query per partition and page at most (a partition holding one key of the page reads
    # it by a point read): never one per record (230).
    assert LOOKUP_STATS.pages == 3 and LOOKUP_STATS.queries <= 3 * RECORD_PARTITIONS
    assert LOOKUP_STATS.range_queries >= 2 * RECORD_PARTITIONS - 4


# -- reconcile -----------------------------------------------------------------------------------
@pytest.mark.bc_page_size(100)
@pytest.mark.parametrize("order", ["sql", "text", "shuffled"])
def test_reconcile_flags_exactly_what_bc_lacks_in_any_id_order(order: str, api: Api, app: App, sim: BCSimulator) -> None:
    created = api.create_integration(sim, entities=["suppliers", "products"])
    assert api.sync(created["id"]).status == 200
    play_order(sim, order)
    company = sim.company()
    items = sorted((i["id"] for i in company.records("items")), key=ORDERS["sql"])
    gone = {items[0], items[1], items[99], items[100], items[170], items[-1]}  # page edges in BC's order
    for item in gone:
        company.delete("items", item)

    reply = api.sync(created["id"], {"mode": "reconcile"})
    assert reply.status == 200, reply.body
    assert reply.data["products"]["deleted"] == len(gone) and reply.data["suppliers"].get("deleted", 0) == 0
    assert reply.data["products"].get("restored", 0) == 0
    assert flagged(app, "Products", created["id"]) == gone and not flagged(app, "Suppliers", created["id"])
    completeness = api.get(f"integrations/{created['id']}").data["completeness"]
    assert completeness["products"]["bcCount"] == completeness["products"]["storedCount"] == 230 - len(gone)
    assert completeness["products"]["deletedInBC"] == len(gone) and completeness["products"]["verifiedAt"]
    assert completeness["suppliers"]["bcCount"] == completeness["suppliers"]["storedCount"] == 45
    assert api.sync(created["id"], {"mode": "reconcile"}).data["products"].get("deleted", 0) == 0


def test_reconcile_restores_what_a_delta_missed_and_proves_completeness(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """A vendor committed later than the look-back (stamped an hour ago, after a delta ran) and
    a record whose stored row was lost are read by id and stored: `restored`; completeness then
    equals BC's count. The change feed reports the restored records."""
    play_order(sim, "sql")
    created = api.create_integration(sim, entities=["suppliers", "salesOrders"])
    assert api.sync(created["id"]).status == 200
    clock.advance(SETTLED)
    _, cursor = read_feed(api, created["id"], "suppliers")
    edited = sim.company().update("vendors", sim.company().records("vendors")[0]["id"], displayName="Now")["id"]
    assert api.sync(created["id"], {"mode": "delta"}).data["suppliers"]["updated"] == 1  # the watermark is now
    late = sim.company().add("vendors", {"displayName": "Late commit", "lastModifiedDateTime": fmt_dt(sim.now - timedelta(hours=1))})
    assert api.sync(created["id"], {"mode": "delta"}).data["suppliers"]["created"] == 0  # the delta misses it
    lost = sim.company().records("vendors")[7]["id"]
    key = record_row_key(lost)
    app.store.table("Suppliers").delete_entity(record_partition(created["id"], key), key)
    order = sim.company().records("salesOrders")[2]
    order_key = record_row_key(order["id"])
    app.store.table("SalesOrders").delete_entity(record_partition(created["id"], order_key), order_key)
    sim.clear_requests()

    reply = api.sync(created["id"], {"mode": "reconcile"})
    assert reply.status == 200, reply.body
    assert reply.data["suppliers"]["restored"] == 2 and reply.data["suppliers"].get("deleted", 0) == 0
    assert reply.data["salesOrders"]["restored"] == 1
    suppliers = by_id(app, "Suppliers", created["id"])
    assert suppliers[late["id"]]["name"] == "Late commit" and lost in suppliers
    single_reads = sorted(r.path.rsplit("/", 1)[1] for r in sim.requests if r.path.endswith(")") and "/vendors(" in r.path)
    assert single_reads == sorted([f"vendors({late['id']})", f"vendors({lost})"])
    lines = [r for r in rows(app, "SalesOrderLines", created["id"]) if r["orderExternalId"] == order["id"]]
    assert lines and len(lines) == len(sim.company().lines(order["id"]))
    integration = api.get(f"integrations/{created['id']}").data
    assert integration["completeness"]["suppliers"]["bcCount"] == integration["completeness"]["suppliers"]["storedCount"] == 46
    assert integration["companyName"] == "CRONUS International Ltd."
    run = api.get(f"integrations/{created['id']}/sync-runs/{reply.headers['X-Sync-Run-Id']}").data
    assert run["counts"]["suppliers"]["restored"] == 2
    clock.advance(SETTLED)
    changes, _ = read_feed(api, created["id"], "suppliers", cursor)
    assert sorted(c["externalId"] for c in changes) == sorted([edited, late["id"], lost])


def test_a_paused_reconcile_resumes_and_restores_and_flags_exactly_once(api: Api, app: App, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices out of time after every page (ids spilled in runs of ~150): the chain ends with
    every deleted item flagged once, the missing one restored once, completeness exact."""
    from shared.sync import reconcile

    monkeypatch.setattr(reconcile, "CHECKPOINT_IDS", 150)
    monkeypatch.setattr(reconcile, "SWEEP_PAGE", 5)
    play_order(sim, "sql")
    created = api.create_integration(sim, entities=["products"])
    assert api.sync(created["id"]).status == 200
    items = sorted((i["id"] for i in sim.company().records("items")), key=ORDERS["sql"])
    gone = {items[3], items[150], items[229]}
    for item in gone:
        sim.company().delete("items", item)
    missing = items[120]
    key = record_row_key(missing)
    app.store.table("Products").delete_entity(record_partition(created["id"], key), key)

    started = start_run(app, stored(app, created["id"]), RunRequest(mode="reconcile"), enqueue=False)
    outcome = run_slice(app, started.integration, started.run, budget_seconds=0)
    assert outcome.state == "continued" and not flagged(app, "Products", created["id"])
    slices = 1
    while outcome.state == "continued":  # every slice out of time at once: a page, then pause
        current = app.runs.get(created["id"], started.run.runId)
        assert current is not None and slices < 200
        outcome = run_slice(app, stored(app, created["id"]), current, budget_seconds=0)
        slices += 1
    assert outcome.state == "finished" and slices > 10
    drain(app)  # the continuations queued on the way are stale now
    run = app.runs.get(created["id"], started.run.runId)
    assert run is not None and run.status == "succeeded"
    assert run.progress["products"].deleted == 3 and run.progress["products"].restored == 1
    assert flagged(app, "Products", created["id"]) == gone and missing in by_id(app, "Products", created["id"])
    completeness = stored(app, created["id"]).completeness or {}
    assert completeness["products"]["bcCount"] == completeness["products"]["storedCount"] == 227
    assert list(app.store.query(reconcile.SCRATCH_TABLE, "PartitionKey ne @x", parameters={"x": ""})) == []


def test_a_record_reconcile_flags_says_why_it_left(api: Api, app: App, sim: BCSimulator) -> None:
    """Every flag carries `deletedReason` (shared/sync/flags.py): "deleted" for a vendor that
    no synced document names (a posted sales order would say "posted": tests/test_documents.py)."""
    created = api.create_integration(sim, entities=["suppliers"])
    assert api.sync(created["id"]).status == 200
    gone = sim.company().records("vendors")[4]["id"]
    sim.company().delete("vendors", gone)
    assert api.sync(created["id"], {"mode": "reconcile"}).data["suppliers"]["deleted"] == 1
    stored = by_id(app, "Suppliers", created["id"])[gone]
    assert stored["deletedInBC"] is True and stored["deletedReason"] == "deleted"


# -- legacy keys -----------------------------------------------------------------------------------
def write_legacy_layout(api: Api, app: App, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch, entities: list[str]) -> dict[str, Any]:
    """The code before issue 16 wrote RowKey = the percent-encoded id: sync with that key, then
    forget the migration's state and the integration's key layout (the old code had neither)."""
    from shared import mapping

    with monkeypatch.context() as patch:
        patch.setattr(mapping, "record_row_key", lambda external_id: encode_key(external_id))
        created = api.create_integration(sim, entities=entities)
        assert api.sync(created["id"]).status == 200
    for entity in entities:
        app.store.table("SyncState").delete_entity(created["id"], f"{entity}.keys")
    app.integrations.update(api.user or "", created["id"], lambda integration: setattr(integration, "keyLayout", None))
    legacy = rows(app, "Suppliers", created["id"])
    assert legacy and all(r["RowKey"] == encode_key(r["externalId"]) for r in legacy)
    return created


def test_legacy_rows_move_to_their_current_key_once_with_lines_and_feed_intact(api: Api, app: App, sim: BCSimulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    created = write_legacy_layout(api, app, sim, monkeypatch, ["suppliers", "salesOrders"])
    iid = created["id"]
    clock.advance(SETTLED)
    everything_before, _ = read_feed(api, iid, "suppliers")
    _, caught_up = read_feed(api, iid, "suppliers")
    vendor = sim.company().records("vendors")[3]
    legacy_one = api.get(f"integrations/{iid}/records/suppliers/{vendor['id']}")
    assert legacy_one.status == 200 and legacy_one.data["externalId"] == vendor["id"]  # read API before the move

    reply = api.sync(iid, {"mode": "delta"})
    assert reply.status == 200 and reply.data["suppliers"]["created"] == 0, reply.body
    suppliers = by_id(app, "Suppliers", iid)  # each once
    assert len(suppliers) == 45 and all(r["RowKey"] == record_row_key(k) for k, r in suppliers.items())
    orders = by_id(app, "SalesOrders", iid)
    assert all(r["RowKey"] == record_row_key(k) for k, r in orders.items())
    lines = rows(app, "SalesOrderLines", iid)
    assert lines and all(r["RowKey"] == child_row_key(record_row_key(r["orderExternalId"]), record_row_key(r["externalId"])) for r in lines)
    one = api.get(f"integrations/{iid}/records/salesOrders/{next(iter(orders))}").data
    assert len(one["lines"]) == len(sim.company().lines(one["externalId"]))
    assert api.get(f"integrations/{iid}/records/suppliers/{vendor['id']}").data == legacy_one.data
    listed = api.get(f"integrations/{iid}/records/suppliers", params={"top": 100}).data
    assert sorted(r["externalId"] for r in listed) == sorted(suppliers)
    # The feed: nothing new for a consumer that had read everything; all of it, once, for a new one.
    clock.advance(SETTLED)
    assert read_feed(api, iid, "suppliers", caught_up)[0] == []
    fresh, _ = read_feed(api, iid, "suppliers")
    assert sorted(c["externalId"] for c in fresh) == sorted(c["externalId"] for c in everything_before) == sorted(suppliers)
    # A full re-sync finds every record where it is: nothing created or updated.
    again = api.sync(iid, {"mode": "full"})
    assert again.data["suppliers"]["unchanged"] == 45 and again.data["salesOrders"]["unchanged"] == len(orders)


def test_a_paused_key_migration_resumes_without_duplicates(api: Api, app: App, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.sync import rekey

    monkeypatch.setattr(rekey, "PAGE", 2)
    created = write_legacy_layout(api, app, sim, monkeypatch, ["suppliers"])
    iid = created["id"]
    started = start_run(app, stored(app, iid), RunRequest(mode="delta"), enqueue=False)
    assert run_slice(app, started.integration, started.run, budget_seconds=0).state == "continued"
    halfway = by_id(app, "Suppliers", iid)  # asserts each record once
    moved = [k for k, r in halfway.items() if r["RowKey"] == record_row_key(k)]
    assert len(halfway) == 45 and 0 < len(moved) < 45
    listed = api.get(f"integrations/{iid}/records/suppliers", params={"top": 100}).data
    assert sorted(r["externalId"] for r in listed) == sorted(halfway)
    assert drain(app)[-1].state == "finished"
    done = by_id(app, "Suppliers", iid)
    assert len(done) == 45 and all(r["RowKey"] == record_row_key(k) for k, r in done.items())
    assert rekey.KeyMigration(entity=ENTITY_TYPES["suppliers"], store=app.store, states=app.states, clock=app.clock, integration_id=iid).done()
    run = app.runs.get(iid, started.run.runId)
    assert run is not None and run.status == "succeeded" and run.progress["suppliers"].created == 0


def test_an_integration_created_under_the_current_layout_never_scans_for_legacy_rows(api: Api, app: App, sim: BCSimulator) -> None:
    """Nothing of it was written under a legacy key, so its runs skip the migration: no scan and
    no migration state (a run of an older integration saves one, above)."""
    created = api.create_integration(sim, entities=["suppliers"])
    assert api.sync(created["id"]).status == 200 and api.sync(created["id"], {"mode": "delta"}).status == 200
    integration = app.integrations.get(api.user or "", created["id"])
    assert integration is not None and integration.keyLayout == KEY_LAYOUT
    assert "keyLayout" not in api.get(f"integrations/{created['id']}").data
    assert app.states.get(created["id"], "suppliers.keys") == TypeState()
    assert app.states.get(created["id"], "suppliers").watermark  # the pass itself did save its state
    assert all(r["RowKey"] == record_row_key(r["externalId"]) for r in rows(app, "Suppliers", created["id"]))


# -- the monitoring page ---------------------------------------------------------------------------
from tests.test_portal import browser, card, open_page, owner, portal  # noqa: E402,F401 - fixtures shared with the page tests


def test_the_page_shows_the_company_name_and_what_the_reconcile_verified(browser: Any, portal: str, owner: Api, sim: BCSimulator) -> None:
    integration = owner.create_integration(sim, entities=["suppliers"])
    iid = integration["id"]
    assert owner.sync(iid).status == 200
    open_page(browser, portal)
    header = card(browser, iid).find_element("css selector", ".meta.company").text
    assert "CRONUS International Ltd." not in header and integration["companyId"] in header  # not known yet
    assert not card(browser, iid).find_elements("css selector", ".completeness")
    gone = sim.company().records("vendors")[2]["id"]
    sim.company().delete("vendors", gone)
    assert owner.sync(iid, {"mode": "reconcile"}).data["suppliers"]["deleted"] == 1
    open_page(browser, portal)
    shown = card(browser, iid)
    assert "CRONUS International Ltd." in shown.find_element("css selector", ".meta.company").text
    line = shown.find_element("css selector", '.completeness .verified[data-type="suppliers"]')
    assert line.get_attribute("data-complete") == "true"
    assert line.text.startswith("suppliers: verified complete: 44 of 44 at ") and "(1 deleted in BC)" in line.text
