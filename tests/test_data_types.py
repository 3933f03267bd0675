"""Every data type end to end: customers, sales orders and their lines, ledger entries, stock,
type selection, field mappings, Table Storage limits and several companies per user."""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from devtools.bcsim import (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_COMPANY_ID, DEMO_ENVIRONMENT, DEMO_TENANT_ID,
                            DEMO_US_COMPANY_ID, BCSimulator, RecordedRequest, parse_dt)
from shared.app import App
from shared.clock import parse_iso
from shared.errors import RecordError
from shared.mapping import MAX_PROPERTIES, check_table_limits
from tests.support import Api

ALL = ["suppliers", "products", "customers", "salesOrders", "ledgerEntries"]


# -- helpers ------------------------------------------------------------------------------------
def rows(app: App, table: str, user: str = "user-1") -> dict[str, dict[str, Any]]:
    """A user's stored records of one table, by externalId."""
    client = app.store.table(table)
    return {e["externalId"]: e for e in client.query_entities("userId eq @user", parameters={"user": user})}


def etags(app: App, table: str, user: str = "user-1") -> dict[str, str]:
    return {k: e.metadata["etag"] for k, e in rows(app, table, user).items()}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {k for k, v in after.items() if before.get(k) != v}


def bc_calls(sim: BCSimulator, entity_set: str | None = None) -> list[RecordedRequest]:
    calls = [r for r in sim.requests if r.path.startswith("/v2.0/")]
    return [r for r in calls if entity_set is None or r.path.endswith(f"/{entity_set}")]


def log_types(api: Api, integration_id: str) -> list[str]:
    entries = api.get(f"integrations/{integration_id}/sync-logs", params={"top": 1000}).data
    return [e["entityType"] for e in entries]


def log_entry(api: Api, integration_id: str, entity_type: str) -> dict[str, Any]:
    """The newest log entry of one type."""
    entries = api.get(f"integrations/{integration_id}/sync-logs", params={"entityType": entity_type, "top": 1}).data
    return entries[0]


def synced(api: Api, sim: BCSimulator, **overrides: Any) -> dict[str, Any]:
    integration = api.create_integration(sim, **overrides)
    reply = api.sync(integration["id"])
    assert reply.status == 200, reply.body
    return integration


def sizes(sim: BCSimulator, company_id: str = DEMO_COMPANY_ID) -> dict[str, int]:
    company = sim.company(company_id)
    sets = {"suppliers": "vendors", "products": "items", "customers": "customers", "salesOrders": "salesOrders",
            "ledgerEntries": "generalLedgerEntries"}
    return {key: len(company.records(entity_set)) for key, entity_set in sets.items()}


def stable_item(sim: BCSimulator) -> dict[str, Any]:
    """An inventory item last modified long before the newest item, so a delta's look-back never re-reads it."""
    items = sim.company().records("items")
    newest = max(parse_dt(i["lastModifiedDateTime"]) for i in items)
    return next(i for i in items if i["type"] == "Inventory" and (newest - parse_dt(i["lastModifiedDateTime"])).days > 1)


# -- B1: full sync of every type ------------------------------------------------------------------
def test_full_sync_of_all_types_counts_every_record(api: Api, sim: BCSimulator, app: App) -> None:
    """customers 60, salesOrders 40, ledgerEntries 500 (as in BC), plus suppliers and products, no errors."""
    expected = sizes(sim)
    assert expected == {"suppliers": 45, "products": 230, "customers": 60, "salesOrders": 40, "ledgerEntries": 500}
    integration = api.create_integration(sim, entities=ALL)
    reply = api.sync(integration["id"])
    assert reply.status == 200
    for key in ALL:
        data = reply.data[key]
        assert (data["created"], data["updated"], data["errors"]) == (expected[key], 0, 0), key
    assert sorted(log_types(api, integration["id"])) == sorted(["SUPPLIER", "PRODUCT", "CUSTOMER", "SALES_ORDER", "LEDGER_ENTRY"])
    for table, key in (("Customers", "customers"), ("SalesOrders", "salesOrders"), ("LedgerEntries", "ledgerEntries")):
        stored = rows(app, table)
        assert len(stored) == expected[key]
        assert all(r["syncStatus"] == "synced" and r["integrationId"] == integration["id"] for r in stored.values())


def test_customers_and_ledger_entries_are_stored_exactly(api: Api, sim: BCSimulator, app: App) -> None:
    """Customer balances and ledger amounts are exact text; entry numbers stay integers; enums are decoded."""
    synced(api, sim, entities=["customers", "ledgerEntries"])
    customers = rows(app, "Customers")
    for bc in sim.company().records("customers"):
        row = customers[bc["id"]]
        assert row["name"] == bc["displayName"]
        assert Decimal(row["balanceDue"]) == Decimal(str(bc["balanceDue"]))
        assert row["blocked"] == ("" if bc["blocked"] == "_x0020_" else bc["blocked"])
        assert parse_iso(row["sourceModifiedAt"]) == parse_dt(bc["lastModifiedDateTime"])
    ledger = rows(app, "LedgerEntries")
    for bc in sim.company().records("generalLedgerEntries"):
        row = ledger[bc["id"]]
        assert row["entryNumber"] == bc["entryNumber"] and isinstance(row["entryNumber"], int)
        assert Decimal(row["debitAmount"]) == Decimal(str(bc["debitAmount"]))
        assert Decimal(row["creditAmount"]) == Decimal(str(bc["creditAmount"]))
        assert row["documentType"] == bc["documentType"].replace("_x0020_", " ").strip()
    assert any(r["documentType"] == "Credit Memo" for r in ledger.values())


def test_sales_order_lines_are_stored_with_their_order(api: Api, sim: BCSimulator, app: App) -> None:
    """One SalesOrderLines row per BC line, each with orderExternalId and the order's sourceModifiedAt."""
    synced(api, sim, entities=["salesOrders"])
    bc_lines = sim.company().records("salesOrderLines")
    orders = rows(app, "SalesOrders")
    lines = rows(app, "SalesOrderLines")
    assert len(lines) == len(bc_lines) > len(orders) == 40
    for bc in bc_lines:
        row = lines[bc["id"]]
        assert row["orderExternalId"] == bc["documentId"]
        assert row["sourceModifiedAt"] == orders[bc["documentId"]]["sourceModifiedAt"]
        assert Decimal(row["amountIncludingTax"]) == Decimal(str(bc["amountIncludingTax"]))
        for prop in ("externalSystem", "userId", "integrationId", "syncStatus", "lastSyncedAt"):
            assert row[prop], prop
    for order_id, order in orders.items():
        mine = sorted(r["externalId"] for r in lines.values() if r["orderExternalId"] == order_id)
        assert mine == sorted(b["id"] for b in bc_lines if b["documentId"] == order_id)
        assert all(r["PartitionKey"] == order["PartitionKey"] for r in lines.values() if r["orderExternalId"] == order_id)


# -- B2: lines follow their order ----------------------------------------------------------------
def test_delta_adds_and_removes_order_lines(api: Api, sim: BCSimulator, app: App) -> None:
    """A line added to one order and removed from another: updated 2, the removed row is gone, the new one exists."""
    integration = synced(api, sim, entities=["salesOrders"])
    company = sim.company()
    orders = company.records("salesOrders")
    grown = orders[3]["id"]
    shrunk = next(o["id"] for o in orders[4:] if len(company.lines(o["id"])) >= 2)
    item = stable_item(sim)
    new_line = company.add_order_line(grown, item["id"], 3)
    removed = company.lines(shrunk)[0]["id"]
    company.remove_order_line(shrunk, removed)
    before_orders, before_lines = etags(app, "SalesOrders"), etags(app, "SalesOrderLines")

    reply = api.sync(integration["id"], {"mode": "delta"})
    data = reply.data["salesOrders"]
    assert (data["created"], data["updated"], data["errors"]) == (0, 2, 0)
    assert data["linesDeleted"] == 1
    lines = rows(app, "SalesOrderLines")
    assert removed not in lines
    assert lines[new_line["id"]]["orderExternalId"] == grown
    assert Decimal(lines[new_line["id"]]["quantity"]) == 3
    assert changed(before_orders, etags(app, "SalesOrders")) == {grown, shrunk}
    touched_lines = changed(before_lines, etags(app, "SalesOrderLines"))
    assert {lines[k]["orderExternalId"] for k in touched_lines} <= {grown, shrunk}
    assert new_line["id"] in touched_lines
    stored = rows(app, "SalesOrders")
    assert Decimal(stored[grown]["totalAmountIncludingTax"]) == Decimal(str(company.get("salesOrders", grown)["totalAmountIncludingTax"]))
    assert lines[new_line["id"]]["sourceModifiedAt"] == stored[grown]["sourceModifiedAt"]


# -- B3: ledger deltas ----------------------------------------------------------------------------
def test_ledger_delta_reads_only_new_entries(api: Api, sim: BCSimulator, app: App) -> None:
    """Two GL entries posted after a full sync: the delta creates 2 and filters its BC request."""
    integration = synced(api, sim, entities=["ledgerEntries"])
    company = sim.company()
    posted = [
        company.add("generalLedgerEntries", {"documentNumber": "SIM001", "accountNumber": "10100", "description": "Sim debit", "debitAmount": 125.5}),
        company.add("generalLedgerEntries", {"documentNumber": "SIM001", "accountNumber": "40100", "description": "Sim credit", "creditAmount": 125.5}),
    ]
    sim.clear_requests()
    reply = api.sync(integration["id"], {"mode": "delta"})
    data = reply.data["ledgerEntries"]
    assert (data["created"], data["updated"], data["errors"]) == (2, 0, 0)
    assert data["unchanged"] < 50  # only the look-back window is re-read, not 500 entries
    reads = bc_calls(sim, "generalLedgerEntries")
    assert reads and all(r.query.get("$filter", "").startswith("lastModifiedDateTime gt ") for r in reads)
    stored = rows(app, "LedgerEntries")
    assert len(stored) == 502
    assert stored[posted[0]["id"]]["debitAmount"] == "125.5"
    assert stored[posted[1]["id"]]["entryNumber"] == posted[1]["entryNumber"]


# -- B4: stock ------------------------------------------------------------------------------------
def test_stock_posting_refreshes_only_that_item(api: Api, sim: BCSimulator, app: App) -> None:
    """Stock posted in BC (item timestamp unchanged) reaches the product on the next delta via a `number eq` read."""
    integration = synced(api, sim)
    item = stable_item(sim)
    before_inventory = rows(app, "Products")[item["id"]]["inventory"]
    before = etags(app, "Products")
    sim.company().post_stock(item["id"], 7)
    assert sim.company().get("items", item["id"])["lastModifiedDateTime"] == item["lastModifiedDateTime"]
    sim.clear_requests()

    reply = api.sync(integration["id"], {"mode": "delta"})
    data = reply.data["products"]
    assert (data["created"], data["updated"], data["errors"]) == (0, 1, 0)
    assert data["stockRefreshed"] == 1
    row = rows(app, "Products")[item["id"]]
    assert row["inventory"] == before_inventory + 7
    assert changed(before, etags(app, "Products")) == {item["id"]}
    item_reads = bc_calls(sim, "items")
    assert all("$filter" in r.query for r in item_reads), "a delta must not re-read every item"
    assert any(f"number eq '{item['number']}'" in r.query["$filter"] for r in item_reads)
    assert bc_calls(sim, "itemLedgerEntries")


# -- B5: selection --------------------------------------------------------------------------------
def test_customers_only_integration_syncs_and_logs_only_customers(api: Api, sim: BCSimulator, app: App) -> None:
    """entities ["customers"]: the answer, the logs and BC's traffic are about customers only."""
    integration = api.create_integration(sim, entities=["customers"])
    reply = api.sync(integration["id"])
    assert set(reply.data) == {"customers"}
    assert reply.data["customers"]["created"] == 60
    assert log_types(api, integration["id"]) == ["CUSTOMER"]
    assert {r.path.rsplit("/", 1)[-1] for r in bc_calls(sim)} == {"customers"}
    assert rows(app, "Suppliers") == {} and rows(app, "Products") == {}


@pytest.mark.parametrize(
    ("entities", "expected"),
    [
        (["customers"], {"vendorCount": 45, "itemCount": 230, "customerCount": 60}),
        (ALL, {"vendorCount": 45, "itemCount": 230, "customerCount": 60, "salesOrderCount": 40, "ledgerEntryCount": 500}),
    ],
)
def test_connection_counts_each_selected_type(api: Api, sim: BCSimulator, app: App, entities: list[str], expected: dict[str, int]) -> None:
    """Test connection counts vendors and items always, and every other selected type."""
    integration = api.create_integration(sim, entities=entities)
    reply = api.post(f"integrations/{integration['id']}/dynamics/test")
    assert reply.status == 200
    data = reply.data
    assert data["connected"] is True and data["company"] == "CRONUS International Ltd."
    counted = {k: v for k, v in data.items() if k.endswith("Count")}
    assert counted == expected
    assert data["warnings"] == []


# -- B6: field mappings ---------------------------------------------------------------------------
def test_mapped_extension_fields_are_stored_with_their_types(api: Api, sim: BCSimulator, app: App) -> None:
    """Extension fields mapped as text/number/decimal/date/boolean are stored converted under their target names."""
    sim.add_extension_field(DEMO_COMPANY_ID, "vendors", "eudrRiskLevel", "High")
    sim.add_extension_field(DEMO_COMPANY_ID, "items", "shelfLife", 12)
    sim.add_extension_field(DEMO_COMPANY_ID, "items", "landedCost", 1234567.891)
    sim.add_extension_field(DEMO_COMPANY_ID, "items", "certifiedOn", "2024-05-01")
    sim.add_extension_field(DEMO_COMPANY_ID, "items", "organic", True)
    mappings = {
        "suppliers": [{"source": "eudrRiskLevel", "target": "riskLevel", "type": "text"}],
        "products": [
            {"source": "shelfLife", "target": "shelfLifeDays", "type": "number"},
            {"source": "landedCost", "target": "landedCost", "type": "decimal"},
            {"source": "certifiedOn", "target": "certifiedOn", "type": "date"},
            {"source": "organic", "target": "isOrganic", "type": "boolean"},
        ],
    }
    integration = synced(api, sim, fieldMappings=mappings)
    suppliers = rows(app, "Suppliers")
    assert len(suppliers) == 45 and {r["riskLevel"] for r in suppliers.values()} == {"High"}
    products = rows(app, "Products")
    assert len(products) == 230
    for row in products.values():
        assert row["shelfLifeDays"] == 12.0 and isinstance(row["shelfLifeDays"], float)
        assert row["landedCost"] == "1234567.891"
        assert row["certifiedOn"] == "2024-05-01"
        assert row["isOrganic"] is True
    assert "eudrRiskLevel" in bc_calls(sim, "vendors")[0].query["$select"].split(",")
    test = api.post(f"integrations/{integration['id']}/dynamics/test")
    assert test.data["warnings"] == []


def test_unconvertible_mapped_value_is_a_record_error(api: Api, sim: BCSimulator, app: App) -> None:
    """A mapped number field holding text fails that one record, naming the field and type."""
    bad = sim.company().records("items")[10]["id"]
    sim.add_extension_field(DEMO_COMPANY_ID, "items", "shelfLife", lambda rec: "not a number" if rec["id"] == bad else 5)
    integration = synced(api, sim, fieldMappings={"products": [{"source": "shelfLife", "target": "shelfLifeDays", "type": "number"}]})
    entry = log_entry(api, integration["id"], "PRODUCT")
    assert entry["status"] == "PARTIAL" and entry["metadata"]["created"] == 229
    (error,) = entry["metadata"]["errors"]
    assert error["externalId"] == bad
    assert "shelfLife" in error["error"] and "number" in error["error"]
    assert error["data"] == {"shelfLife": "not a number"}


def test_mapped_field_bc_does_not_return(api: Api, sim: BCSimulator, app: App) -> None:
    """A mapping naming a field BC lacks: test connection warns; the sync fails that type as bc_error (BC refuses the
    $select), the other types still sync, and a run of only that type answers 502 bc_error."""
    mappings = {"suppliers": [{"source": "eudrRiskLevel", "target": "riskLevel", "type": "text"}]}
    integration = api.create_integration(sim, fieldMappings=mappings)
    test = api.post(f"integrations/{integration['id']}/dynamics/test")
    assert test.status == 200
    (warning,) = test.data["warnings"]
    assert "eudrRiskLevel" in warning and "fieldMappings.suppliers" in warning

    reply = api.sync(integration["id"])
    assert reply.status == 200
    assert reply.data["suppliers"]["status"] == "FAILED"
    assert reply.data["suppliers"]["error"]["code"] == "bc_error"
    assert "eudrRiskLevel" in reply.data["suppliers"]["error"]["message"]
    assert reply.data["products"]["created"] == 230
    assert log_entry(api, integration["id"], "SUPPLIER")["status"] == "FAILED"
    assert api.get(f"integrations/{integration['id']}").data["status"] == "error"

    only = api.sync(integration["id"], {"entities": ["suppliers"]})
    assert only.status == 502 and only.error["code"] == "bc_error"
    assert rows(app, "Suppliers") == {}

    # Once BC has the field (the extension is published), the same mapping works.
    sim.add_extension_field(DEMO_COMPANY_ID, "vendors", "eudrRiskLevel", "Low")
    reply = api.sync(integration["id"])
    assert reply.data["suppliers"]["created"] == 45
    assert api.get(f"integrations/{integration['id']}").data["status"] == "connected"


# -- B7: Table Storage limits ---------------------------------------------------------------------
def test_string_over_64_kib_is_a_record_error(api: Api, sim: BCSimulator, app: App) -> None:
    """A 40,000-character mapped text (80,000 bytes in UTF-16) fails that record naming 64 KiB; the rest sync."""
    big = sim.company().records("vendors")[2]["id"]
    sim.add_extension_field(DEMO_COMPANY_ID, "vendors", "notes", lambda rec: "x" * 40_000 if rec["id"] == big else "short")
    integration = synced(api, sim, fieldMappings={"suppliers": [{"source": "notes", "target": "notes", "type": "text"}]})
    stored = rows(app, "Suppliers")
    assert len(stored) == 44 and big not in stored
    assert {r["notes"] for r in stored.values()} == {"short"}
    entry = log_entry(api, integration["id"], "SUPPLIER")
    (error,) = entry["metadata"]["errors"]
    assert error["externalId"] == big
    assert "64 KiB" in error["error"] and "notes" in error["error"]
    assert len(json.dumps(error["data"])) < 1000  # the offending value is shortened in the log


def test_entity_over_1_mib_is_a_record_error(api: Api, sim: BCSimulator, app: App) -> None:
    """Twenty 30,000-character mapped fields (each under 64 KiB, ~1.2 MB together) fail that record naming 1 MiB."""
    big = sim.company().records("vendors")[9]["id"]
    mappings = []
    for n in range(20):
        sim.add_extension_field(DEMO_COMPANY_ID, "vendors", f"long{n}", lambda rec, n=n: chr(97 + n) * 30_000 if rec["id"] == big else "s")
        mappings.append({"source": f"long{n}", "target": f"long{n}", "type": "text"})
    integration = synced(api, sim, fieldMappings={"suppliers": mappings})
    stored = rows(app, "Suppliers")
    assert len(stored) == 44 and big not in stored
    entry = log_entry(api, integration["id"], "SUPPLIER")
    (error,) = entry["metadata"]["errors"]
    assert error["externalId"] == big and "1 MiB" in error["error"]


def test_more_than_100_mappings_per_type_is_refused(api: Api, sim: BCSimulator, app: App) -> None:
    """At most 100 mappings per type: with ~30 standard properties no record can reach 253 through the API."""
    mappings = [{"source": f"f{n}", "target": f"f{n}", "type": "text"} for n in range(101)]
    reply = api.post("integrations", {**_create_body(), "fieldMappings": {"suppliers": mappings}})
    assert reply.status == 400 and reply.error["code"] == "validation_error"
    assert "100" in reply.error["message"]


def test_property_count_limit_is_checked_directly() -> None:
    """check_table_limits (tested directly: the API cannot produce 253 properties) allows 252 and refuses 253."""
    entity = {"PartitionKey": "p", "RowKey": "r", **{f"p{n}": n for n in range(MAX_PROPERTIES)}}
    check_table_limits(entity)
    entity["one_more"] = 1
    with pytest.raises(RecordError) as refused:
        check_table_limits(entity)
    assert "253 properties" in refused.value.message and "252" in refused.value.message


def _create_body() -> dict[str, Any]:
    return {"name": "CRONUS", "tenantId": DEMO_TENANT_ID, "environment": DEMO_ENVIRONMENT, "companyId": DEMO_COMPANY_ID,
            "clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET}


# -- B8: several companies ------------------------------------------------------------------------
def test_one_user_with_two_companies_keeps_records_apart(api: Api, sim: BCSimulator, app: App) -> None:
    """Two integrations of one user (two companies) each sync their own counts; rows carry their integration."""
    entities = ["suppliers", "products", "customers"]
    intl = api.create_integration(sim, entities=entities)
    usa = api.create_integration(sim, name="CRONUS USA", companyId=DEMO_US_COMPANY_ID, entities=entities)
    expected = {DEMO_COMPANY_ID: sizes(sim), DEMO_US_COMPANY_ID: sizes(sim, DEMO_US_COMPANY_ID)}
    assert expected[DEMO_US_COMPANY_ID]["suppliers"] == 5
    for integration, company in ((intl, DEMO_COMPANY_ID), (usa, DEMO_US_COMPANY_ID)):
        reply = api.sync(integration["id"])
        for key in entities:
            assert reply.data[key]["created"] == expected[company][key], (company, key)
    for table, entity_set in (("Suppliers", "vendors"), ("Products", "items"), ("Customers", "customers")):
        stored = rows(app, table)
        for integration, company in ((intl, DEMO_COMPANY_ID), (usa, DEMO_US_COMPANY_ID)):
            mine = {k for k, r in stored.items() if r["integrationId"] == integration["id"]}
            assert mine == {r["id"] for r in sim.company(company).records(entity_set)}, (table, company)
        assert len(stored) == sum(len(sim.company(c).records(entity_set)) for c in expected)

    # A change in one company touches only that integration's records.
    before = etags(app, "Suppliers")
    us_vendor = sim.company(DEMO_US_COMPANY_ID).records("vendors")[0]["id"]
    sim.company(DEMO_US_COMPANY_ID).update("vendors", us_vendor, displayName="Renamed in USA")
    assert api.sync(intl["id"], {"mode": "delta"}).data["suppliers"]["updated"] == 0
    assert api.sync(usa["id"], {"mode": "delta"}).data["suppliers"]["updated"] == 1
    assert changed(before, etags(app, "Suppliers")) == {us_vendor}


def test_base_url_points_the_integration_at_another_service_root(api: Api, sim: BCSimulator, app: App) -> None:
    """An on-premises / sovereign-cloud `baseUrl` replaces the SaaS root for every BC request."""
    root = f"{sim.base_url}/v2.0/{DEMO_ENVIRONMENT}"  # the tenant-less form on-premises style roots use
    integration = api.create_integration(sim, baseUrl=root)
    assert integration["baseUrl"] == root
    sim.clear_requests()
    test = api.post(f"integrations/{integration['id']}/dynamics/test")
    assert test.status == 200 and test.data["vendorCount"] == 45
    reply = api.sync(integration["id"])
    assert reply.data["suppliers"]["created"] == 45 and reply.data["products"]["created"] == 230
    api_paths = [r.path for r in sim.requests if "/api/v2.0/" in r.path]
    assert api_paths and all(p.startswith(f"/v2.0/{DEMO_ENVIRONMENT}/api/v2.0/") for p in api_paths)


def test_a_field_mapping_added_later_maps_every_record_again(api: Api, sim: BCSimulator, app: App) -> None:
    """A re-read BC record whose source hash matches the stored one is not mapped again (re-syncs);
    the hash covers the field mappings, so a mapping added later reaches every record."""
    sim.add_extension_field(DEMO_COMPANY_ID, "vendors", "eudrRiskLevel", "Low")
    integration = synced(api, sim)
    first = rows(app, "Suppliers")
    assert len(first) == 45 and all(r["sourceHash"] for r in first.values())
    again = api.sync(integration["id"], {"mode": "full"})
    assert again.data["suppliers"]["unchanged"] == 45 and etags(app, "Suppliers") == {k: r.metadata["etag"] for k, r in first.items()}
    mapping = {"suppliers": [{"source": "eudrRiskLevel", "target": "riskLevel", "type": "text"}]}
    assert api.patch(f"integrations/{integration['id']}", {"fieldMappings": mapping}).status == 200
    remapped = api.sync(integration["id"], {"mode": "full"})
    assert remapped.data["suppliers"]["updated"] == 45, remapped.body
    assert {r["riskLevel"] for r in rows(app, "Suppliers").values()} == {"Low"}
    record = api.get(f"integrations/{integration['id']}/records/suppliers/{next(iter(first))}").data
    assert "sourceHash" not in record and "contentHash" not in record, "bookkeeping is never shown"
