"""Read API and change feed (design.md §13): records paged over partitions, sales orders with
their lines, custom fields, internals left out; the feed's cursor, its faults, interleaved
writers with different clocks, and a record changed twice. More of the feed (rounds, racing
writers, retention) in tests/test_change_feed.py."""
from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest

from devtools.bcsim import DEMO_COMPANY_ID, BCSimulator
from shared.app import App
from shared.runs.dispatch import RunRequest, start_run
from shared.runs.slices import run_slice
from shared.storage.changes import Position, is_change_row
from tests.support import Api, FakeClock

INTERNALS = {"PartitionKey", "RowKey", "contentHash", "changeKey", "odata.etag", "Timestamp"}
SETTLED = 1  # the feed has no settle window any more; kept for the tests that import it


def synced(api: Api, sim: BCSimulator, **overrides: Any) -> dict[str, Any]:
    integration = api.create_integration(sim, **overrides)
    reply = api.sync(integration["id"])
    assert reply.status == 200, reply.body
    return integration


def all_records(api: Api, integration_id: str, data_type: str, top: int = 50) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"top": top}
        if token:
            params["continuationToken"] = token
        reply = api.get(f"integrations/{integration_id}/records/{data_type}", params=params)
        assert reply.status == 200, reply.body
        assert len(reply.data) <= top
        found.extend(reply.data)
        token = reply.body["continuationToken"]
        if token is None:
            return found


def read_feed(api: Api, integration_id: str, data_type: str, cursor: str | None = None, top: int = 50) -> tuple[list[dict[str, Any]], str]:
    """Follow the cursor until an empty page (which must say hasMore false); returns every
    change read and the last cursor."""
    changes: list[dict[str, Any]] = []
    for _ in range(200):
        params: dict[str, Any] = {"top": top}
        if cursor:
            params["cursor"] = cursor
        reply = api.get(f"integrations/{integration_id}/changes/{data_type}", params=params)
        assert reply.status == 200, reply.body
        assert reply.body["cursor"]  # on every page
        assert len(reply.data) <= top
        cursor = reply.body["cursor"]
        if not reply.data:
            assert reply.body["hasMore"] is False  # an empty page means caught up
            return changes, cursor
        changes.extend(reply.data)
    raise AssertionError("the feed never ended")


# -- records -------------------------------------------------------------------------------------
def test_records_are_paged_over_every_partition_without_storage_internals(api: Api, sim: BCSimulator, app: App) -> None:
    sim.add_extension_field(DEMO_COMPANY_ID, "vendors", "eudrRiskLevel", "High")
    integration = synced(api, sim, fieldMappings={"suppliers": [{"source": "eudrRiskLevel", "target": "riskLevel", "type": "text"}]})
    vendors = {v["id"]: v for v in sim.company().records("vendors")}

    listed = all_records(api, integration["id"], "suppliers", top=7)
    assert sorted(r["externalId"] for r in listed) == sorted(vendors)  # each once, none missing
    for record in listed:
        assert not INTERNALS & set(record), record
        assert record["externalSystem"] == "dynamics_bc" and record["userId"] == "user-1"
        assert record["integrationId"] == integration["id"] and record["syncStatus"] == "synced"
        assert record["lastSyncedAt"] and record["riskLevel"] == "High"
        assert record["name"] == vendors[record["externalId"]]["displayName"]
    # Change rows live beside the records but never show: 45 records in a table with more rows.
    stored = list(app.store.table("Suppliers").list_entities())
    assert any(is_change_row(str(e["RowKey"])) for e in stored) and len(stored) > 45

    one = next(iter(vendors))
    reply = api.get(f"integrations/{integration['id']}/records/suppliers/{one}")
    assert reply.status == 200 and reply.data["externalId"] == one and reply.data["name"] == vendors[one]["displayName"]
    assert not INTERNALS & set(reply.data)
    missing = api.get(f"integrations/{integration['id']}/records/suppliers/00000000-0000-0000-0000-00000000dead")
    assert missing.status == 404 and missing.error["code"] == "not_found"
    assert api.get(f"integrations/{integration['id']}/records/suppliers", params={"top": 1001}).status == 400


def test_sales_orders_carry_their_lines(api: Api, sim: BCSimulator, app: App) -> None:
    integration = synced(api, sim, entities=["salesOrders"])
    company = sim.company()
    orders = all_records(api, integration["id"], "salesOrders", top=15)
    assert len(orders) == len(company.records("salesOrders"))
    for order in orders:
        expected = sorted(line["id"] for line in company.lines(order["externalId"]))
        assert sorted(line["externalId"] for line in order["lines"]) == expected
        assert all(line["orderExternalId"] == order["externalId"] and not INTERNALS & set(line) for line in order["lines"])
        sequences = [line.get("sequence", 0) for line in order["lines"]]
        assert sequences == sorted(sequences)
    with_lines = next(o for o in orders if o["lines"])
    one = api.get(f"integrations/{integration['id']}/records/salesOrders/{with_lines['externalId']}").data
    assert one["lines"] == with_lines["lines"]


def test_bad_input_to_the_records_api(api: Api, sim: BCSimulator, app: App) -> None:
    integration = synced(api, sim)
    base = f"integrations/{integration['id']}/records"
    unknown = api.get(f"{base}/widgets")
    assert unknown.status == 400 and unknown.error["code"] == "validation_error" and "dataType" in unknown.error["message"]
    assert api.get(f"{base}/salesOrderLines").status == 400  # lines come with their order
    other = api.as_user("user-2").get(f"{base}/suppliers")
    assert other.status == 404 and other.error["code"] == "not_found"
    assert api.as_user(None).get(f"{base}/suppliers").status == 401

    token = api.get(f"{base}/suppliers", params={"top": 5}).body["continuationToken"]
    body, mac = token.split(".")
    for bad in ("garbage", token[:-3], body + "." + base64.urlsafe_b64encode(b"0" * 16).decode().rstrip("="), "x" * 9000):
        reply = api.get(f"{base}/suppliers", params={"continuationToken": bad})
        assert reply.status == 400 and reply.error["code"] == "validation_error", bad
        assert "continuationToken" in reply.error["message"]
    # A token of the suppliers listing does not page the products listing.
    assert api.get(f"{base}/products", params={"continuationToken": token}).status == 400


# -- change feed --------------------------------------------------------------------------------
def test_the_feed_from_the_beginning_then_only_what_changed(api: Api, sim: BCSimulator, app: App, clock: FakeClock) -> None:
    integration = synced(api, sim, entities=["suppliers"])
    iid = integration["id"]
    vendors = sim.company().records("vendors")
    first, cursor = read_feed(api, iid, "suppliers", top=10)
    assert sorted(c["externalId"] for c in first) == sorted(v["id"] for v in vendors)  # each exactly once
    assert all(c["record"]["externalId"] == c["externalId"] and not INTERNALS & set(c["record"]) for c in first)
    stamps = [c["changedAt"] for c in first]
    assert stamps == sorted(stamps)  # oldest change first
    again, cursor = read_feed(api, iid, "suppliers", cursor)
    assert again == []  # caught up at once: no settle window, nothing read twice

    sim.advance(5)
    sim.company().update("vendors", vendors[0]["id"], displayName="Renamed Vendor")
    sim.company().update("vendors", vendors[1]["id"], blocked="All")
    assert api.sync(iid, {"mode": "delta"}).data["suppliers"]["updated"] == 2
    delta, after = read_feed(api, iid, "suppliers", cursor)
    assert {c["externalId"]: c["record"].get("name") for c in delta} == {vendors[0]["id"]: "Renamed Vendor", vendors[1]["id"]: vendors[1]["displayName"]}
    assert len(delta) == 2
    # The same cursor asked again returns the same changes (a retried page).
    assert [c["externalId"] for c in read_feed(api, iid, "suppliers", cursor)[0]] == [c["externalId"] for c in delta]
    assert read_feed(api, iid, "suppliers", after)[0] == []


def test_a_record_changed_twice_between_reads_appears_once_with_its_latest_content(api: Api, sim: BCSimulator, app: App, clock: FakeClock) -> None:
    integration = synced(api, sim, entities=["suppliers"])
    iid = integration["id"]
    _, cursor = read_feed(api, iid, "suppliers")
    vendor = sim.company().records("vendors")[3]
    for name in ("First Rename", "Second Rename"):
        sim.advance(5)
        clock.advance(5)
        sim.company().update("vendors", vendor["id"], displayName=name)
        assert api.sync(iid, {"mode": "delta"}).data["suppliers"]["updated"] == 1
    changes, _ = read_feed(api, iid, "suppliers", cursor, top=1)  # the first row's change is superseded
    assert [(c["externalId"], c["record"]["name"]) for c in changes] == [(vendor["id"], "Second Rename")]


def test_bad_cursors_answer_400(api: Api, sim: BCSimulator, app: App) -> None:
    first = synced(api, sim, entities=["suppliers", "products"])
    base = f"integrations/{first['id']}/changes"
    cursor = api.get(f"{base}/suppliers", params={"top": 5}).body["cursor"]
    body, mac = cursor.split(".")
    forged_body = base64.urlsafe_b64encode(json.dumps({"k": "changes", "i": first["id"], "t": "suppliers", "p": {"v": 2, "p": [["s000000000001", 0]] * 16}}).encode()).decode().rstrip("=")
    deep = "[" * 5000 + "]" * 5000
    for bad in ("%%%", "abc", cursor + "x", cursor[:-4], body + "." + mac[::-1], forged_body + "." + mac, "a" * 10000, deep, "é.é", "." * 3):
        reply = api.get(f"{base}/suppliers", params={"cursor": bad})
        assert reply.status == 400 and reply.error["code"] == "validation_error" and "cursor" in reply.error["message"], bad
    other_type = api.get(f"{base}/products", params={"cursor": cursor})
    assert other_type.status == 400 and "another" in other_type.error["message"]
    records_token = api.get(f"integrations/{first['id']}/records/suppliers", params={"top": 5}).body["continuationToken"]
    assert api.get(f"{base}/suppliers", params={"cursor": records_token}).status == 400  # not a cursor
    assert api.get(f"{base}/widgets").status == 400
    assert api.as_user("user-2").get(f"{base}/suppliers").status == 404


def test_a_cursor_of_another_integration_answers_400(api: Api, sim: BCSimulator, app: App) -> None:
    from devtools.bcsim import DEMO_US_COMPANY_ID

    first = synced(api, sim, entities=["suppliers"])
    second = synced(api, sim, entities=["suppliers"], companyId=DEMO_US_COMPANY_ID)
    cursor = api.get(f"integrations/{first['id']}/changes/suppliers").body["cursor"]
    reply = api.get(f"integrations/{second['id']}/changes/suppliers", params={"cursor": cursor})
    assert reply.status == 400 and "another integration" in reply.error["message"]


def _slices_with_readers(api: Api, app: App, clock: FakeClock, sim: BCSimulator, writer_offsets: list[int]) -> tuple[list[str], int]:
    """A first sync of products in one-page slices, each written by an instance whose clock is
    off by the given seconds, with the feed read to its empty page between slices. Returns the
    externalIds the feed delivered, in order, and the slices run."""
    integration = api.create_integration(sim, entities=["products"])
    iid = integration["id"]
    stored = app.integrations.get("user-1", iid)
    assert stored is not None
    run = start_run(app, stored, RunRequest(mode="full"), enqueue=False).run
    delivered: list[str] = []
    cursor: str | None = None
    slices = 0
    for offset in writer_offsets * 10:
        writer = App(app.settings, clock=FakeClock(clock.now() + timedelta(seconds=offset)))
        integration_now = app.integrations.get("user-1", iid)
        current = app.runs.get(iid, run.runId)
        assert integration_now is not None and current is not None
        outcome = run_slice(writer, integration_now, current, budget_seconds=0)
        slices += 1
        changes, cursor = read_feed(api, iid, "products", cursor)
        delivered += [c["externalId"] for c in changes]
        clock.advance(2)
        if outcome.state == "finished":
            break
    changes, cursor = read_feed(api, iid, "products", cursor)
    delivered += [c["externalId"] for c in changes]
    return delivered, slices


@pytest.mark.bc_page_size(100)
def test_writes_landing_between_reads_from_instances_with_different_clocks_are_never_lost_nor_repeated(api: Api, sim: BCSimulator, app: App, clock: FakeClock) -> None:
    """The case the settle window guarded: instances writing behind the reader's clock (10 to
    60 s). Ordered by sequence, each change comes exactly once, at once."""
    items = {i["id"] for i in sim.company().records("items")}
    delivered, slices = _slices_with_readers(api, app, clock, sim, [-10, -60, -25])
    assert slices == 3  # 230 items, pages of 100: the feed was read while the sync was half done
    assert sorted(delivered) == sorted(items)  # all of them, none twice


@pytest.mark.parametrize("data_type", ["salesOrders"])
def test_changed_order_lines_put_their_order_in_the_feed(api: Api, sim: BCSimulator, app: App, clock: FakeClock, data_type: str) -> None:
    integration = synced(api, sim, entities=[data_type])
    iid = integration["id"]
    clock.advance(SETTLED)
    _, cursor = read_feed(api, iid, data_type)
    company = sim.company()
    order = next(o for o in company.records("salesOrders") if company.lines(o["id"]))
    line = company.lines(order["id"])[0]
    sim.advance(5)
    company.update_order_line(order["id"], line["id"], quantity=7)
    assert api.sync(iid, {"mode": "delta"}).status == 200
    changes, _ = read_feed(api, iid, data_type, cursor)
    assert [c["externalId"] for c in changes] == [order["id"]]
    changed_line = next(x for x in changes[0]["record"]["lines"] if x["externalId"] == line["id"])
    assert changed_line["quantity"] == 7


# -- the change rows themselves -----------------------------------------------------------------
def test_a_change_row_commits_with_its_records_and_never_names_a_refused_one(app: App, clock: FakeClock) -> None:
    from shared.keys import record_partition
    from shared.storage.changes import ChangeLog, row_keys_of

    partition = record_partition("int-x", "a")
    ops = [("upsert", {"PartitionKey": partition, "RowKey": f"rec{i:03d}", "name": f"n{i}"}) for i in range(150)]
    ops[40][1]["name"] = "x" * 40000  # 80 KB as UTF-16: Table Storage refuses this one entity
    failures = app.store.write("Atomic", ops, attach=ChangeLog(clock))
    assert [f.entity["RowKey"] for f in failures] == ["rec040"]
    rows = list(app.store.table("Atomic").query_entities("PartitionKey eq @pk", parameters={"pk": partition}))
    records = {str(r["RowKey"]): r for r in rows if not is_change_row(str(r["RowKey"]))}
    change_rows = [r for r in rows if is_change_row(str(r["RowKey"]))]
    named = [key for row in change_rows for key in row_keys_of(row)]
    assert sorted(named) == sorted(records) and "rec040" not in named and len(records) == 149
    # Every stored record points at the change row that names it.
    by_row = {str(row["RowKey"]): set(row_keys_of(row)) for row in change_rows}
    assert all(key in by_row[record["changeKey"]] for key, record in records.items())
    assert all(len(row_keys_of(row)) <= 98 for row in change_rows)  # two slots left in each transaction


def test_records_flagged_deleted_through_a_tracked_writer_appear_in_the_feed(api: Api, sim: BCSimulator, app: App, clock: FakeClock) -> None:
    """How a reconcile stages its flags: merges through RecordWriter(tracked(store, clock), table)."""
    from shared.clock import to_iso
    from shared.keys import record_partition, record_row_key
    from shared.storage.changes import tracked
    from shared.storage.records import RecordWriter

    integration = synced(api, sim, entities=["suppliers"])
    iid = integration["id"]
    clock.advance(SETTLED)
    _, cursor = read_feed(api, iid, "suppliers")
    gone = sim.company().records("vendors")[5]["id"]
    key = record_row_key(gone)
    writer = RecordWriter(tracked(app.store, clock), "Suppliers")
    writer.merge({"PartitionKey": record_partition(iid, key), "RowKey": key, "deletedInBC": True, "deletedAt": to_iso(clock.now())})
    assert writer.flush() == []
    changes, _ = read_feed(api, iid, "suppliers", cursor)
    assert [(c["externalId"], c["record"]["deletedInBC"]) for c in changes] == [(gone, True)]
    assert api.get(f"integrations/{iid}/records/suppliers/{gone}").data["deletedAt"]


def test_the_openapi_document_describes_the_read_api() -> None:
    from shared.openapi import build

    paths = build()["paths"]
    assert {"/integrations/{id}/records/{dataType}", "/integrations/{id}/records/{dataType}/{externalId}",
            "/integrations/{id}/changes/{dataType}"} <= set(paths)
    changes = paths["/integrations/{id}/changes/{dataType}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"cursor", "hasMore"} <= set(changes["required"])


def test_the_scanner_pages_through_many_change_rows_of_a_partition_in_order(app: App, clock: FakeClock) -> None:
    from shared.keys import record_partitions
    from shared.storage.changes import ChangeLog, ChangeScanner, sequenced_key

    partitions = record_partitions("int-y")
    log = ChangeLog(clock)
    for i in range(45):  # a hot partition: 45 change rows, pages of 10 rows are read for top=40
        partition = partitions[0] if i % 9 else partitions[5]
        assert app.store.write("Many", [("upsert", {"PartitionKey": partition, "RowKey": f"r{i:02d}"})], attach=log) == []
        clock.advance(0.5)
    scanner = ChangeScanner(app.store, "Many")
    reader = scanner.open(partitions, [None] * 16, 40)
    assert [c.record_key for c in reader.take(40)] == [f"r{i:02d}" for i in range(40)] and reader.more
    assert reader.requests >= 16 + 3  # the first page of every partition, then more of the hot one
    positions = reader.positions()
    assert positions[5] == Position(sequenced_key(6), 0)  # r36 was its 5th row: the 6th comes next
    assert positions[3] == Position(sequenced_key(1), 0)  # an empty partition waits for its first row
    rest = scanner.open(partitions, positions, 100)
    assert [c.record_key for c in rest.take(100)] == [f"r{i:02d}" for i in range(40, 45)] and not rest.more
    assert rest.positions()[0] == Position(sequenced_key(41), 0)
    assert log.sequences.reads == 2 and log.sequences.conflicts == 0  # one read per partition, then cached


def test_a_record_flagged_deleted_in_bc_appears_in_the_change_feed_with_its_flag(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """flag_deleted (BC's `deleted` notifications) writes each flag with its change row."""
    from shared.storage.deletions import flag_deleted

    integration = api.create_integration(sim, entities=["suppliers"])
    assert api.sync(integration["id"]).status == 200
    gone = sim.company().records("vendors")[4]["id"]
    clock.advance(300)
    assert flag_deleted(app, integration["id"], "suppliers", [gone, "never-synced-id"], clock.now()) == 1
    changes: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):
        params = {"top": 1000, **({"cursor": cursor} if cursor else {})}
        page = api.get(f"integrations/{integration['id']}/changes/suppliers", params=params).body
        changes.extend(page["data"])
        cursor = page["cursor"]
        if not page["hasMore"]:
            break
    flagged = [c for c in changes if c["externalId"] == gone]
    assert flagged and flagged[-1]["record"]["deletedInBC"] is True and flagged[-1]["record"]["deletedAt"]
    assert all(c["externalId"] != "never-synced-id" for c in changes)
    assert api.get(f"integrations/{integration['id']}/records/suppliers/never-synced-id").status == 404


# -- every list against design.md §3 --------------------------------------------------------------
def test_every_list_endpoint_follows_the_list_contract_and_only_takes_its_own_tokens(api: Api, sim: BCSimulator, app: App) -> None:
    """Success envelope with `continuationToken` (null on the last page), `top` 1..1000, and a
    token that is forged, truncated, malformed, deeply nested, of another list or of another
    integration (or caller) answers 400 validation_error, never 500."""
    from devtools.bcsim import DEMO_US_COMPANY_ID
    from shared.openapi import build

    first = synced(api, sim, entities=["suppliers", "products"])
    assert api.sync(first["id"]).status == 200  # two runs, four log entries
    second = synced(api, sim, entities=["suppliers", "products"], companyId=DEMO_US_COMPANY_ID)
    assert api.sync(second["id"]).status == 200

    def lists(iid: str) -> dict[str, str]:
        return {"listIntegrations": "integrations", "listCompanies": f"integrations/{iid}/dynamics/companies",
                "listSyncRuns": f"integrations/{iid}/sync-runs", "listSyncLogs": f"integrations/{iid}/sync-logs",
                "listRecords": f"integrations/{iid}/records/suppliers", "listWebhookDeliveries": f"integrations/{iid}/webhook-deliveries"}

    # Every GET that answers an array is one of these lists (the change feed pages by cursor).
    paths = build()["paths"]

    def answers_array(op: dict[str, Any]) -> bool:
        schema = op["responses"]["200"]["content"].get("application/json", {}).get("schema", {})
        return schema.get("properties", {}).get("data", {}).get("type") == "array"

    array_gets = {op["operationId"]: op for item in paths.values() for method, op in item.items() if method == "get" and answers_array(op)}
    assert set(array_gets) - {"readChanges"} == set(lists(first["id"]))
    for name in lists(first["id"]):
        schema = array_gets[name]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "continuationToken" in schema["required"] and {"top", "continuationToken"} <= {p["name"] for p in array_gets[name]["parameters"]}

    tokens: dict[str, dict[str, str]] = {first["id"]: {}, second["id"]: {}}
    for iid in tokens:
        for name, path in lists(iid).items():
            reply = api.get(path, params={"top": 1})
            assert reply.status == 200 and reply.body["success"] is True and "continuationToken" in reply.body, (name, reply.body)
            assert len(reply.data) <= 1
            everything = api.get(path, params={"top": 1000})
            assert everything.status == 200 and everything.body["continuationToken"] is None, name  # the last page says so
            if name == "listWebhookDeliveries":
                assert reply.data == [] and reply.body["continuationToken"] is None  # no webhook: nothing delivered
                continue
            token = reply.body["continuationToken"]
            assert isinstance(token, str), name  # each of these lists has two items or more
            tokens[iid][name] = token
            following = api.get(path, params={"top": 1000, "continuationToken": token})
            assert following.status == 200 and following.data and following.data[0] != reply.data[0], name
            assert len(following.data) == len(everything.data) - 1, name
            for top in ("0", "1001", "-1", "x"):
                bad_top = api.get(path, params={"top": top})
                assert bad_top.status == 400 and bad_top.error["code"] == "validation_error" and "top" in bad_top.error["message"], (name, top)

    own = tokens[first["id"]]
    body, mac = own["listSyncLogs"].split(".")
    malformed = ["garbage", "a.b.c", own["listSyncLogs"][:-5], body[:-8] + "." + mac, body + "." + mac[::-1],
                 "[" * 3000 + "]" * 3000, '{"a":' * 3000, base64.urlsafe_b64encode(b"[" * 5000).decode(), "é" * 10, "x" * 20000]
    for name, path in lists(first["id"]).items():
        for bad in malformed:
            reply = api.get(path, params={"continuationToken": bad})
            assert reply.status == 400 and reply.error["code"] == "validation_error" and "continuationToken" in reply.error["message"], (name, bad[:20])
        for other, token in own.items():  # another list's token
            if other != name:
                reply = api.get(path, params={"continuationToken": token})
                assert reply.status == 400 and reply.error["code"] == "validation_error" and "another" in reply.error["message"], (name, other)
        if name in tokens[second["id"]] and name != "listIntegrations":  # the same list of another integration
            reply = api.get(path, params={"continuationToken": tokens[second["id"]][name]})
            assert reply.status == 400 and "another" in reply.error["message"], name
    # The integrations list is the caller's: another caller cannot page with it.
    stranger = api.as_user("user-2").get("integrations", params={"continuationToken": own["listIntegrations"]})
    assert stranger.status == 400 and stranger.error["code"] == "validation_error"
