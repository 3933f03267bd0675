"""Posted documents and the chart of accounts end to end (issue 17): sales invoices, sales credit
memos, purchase invoices (each with its lines) and accounts through full, delta, reconcile,
field mappings, the records API, the change feed, realtime subscriptions and test connection;
and a sales order that leaves BC flagged `posted` (an invoice names it) or `deleted`."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from devtools.bcsim import ZERO_GUID, BCSimulator
from shared.app import App
from shared.storage.deletions import flag_deleted
from tests.support import Api, integration_body
from tests.test_read_api import all_records, read_feed
from tests.test_realtime import host as host  # noqa: F401 - the fixture
from tests.test_realtime import rt_api as rt_api  # noqa: F401 - the fixture
from tests.test_realtime import rt_app as rt_app  # noqa: F401 - the fixture

DOCUMENTS = {  # data type -> (BC header set, BC line set, platform table, lines table)
    "salesInvoices": ("salesInvoices", "salesInvoiceLines", "SalesInvoices", "SalesInvoiceLines"),
    "salesCreditMemos": ("salesCreditMemos", "salesCreditMemoLines", "SalesCreditMemos", "SalesCreditMemoLines"),
    "purchaseInvoices": ("purchaseInvoices", "purchaseInvoiceLines", "PurchaseInvoices", "PurchaseInvoiceLines"),
}
NEW_TYPES = [*DOCUMENTS, "accounts"]
LOG_TYPES = {"salesInvoices": "SALES_INVOICE", "salesCreditMemos": "SALES_CREDIT_MEMO",
             "purchaseInvoices": "PURCHASE_INVOICE", "accounts": "ACCOUNT"}


def rows(app: App, table: str, integration_id: str) -> dict[str, dict[str, Any]]:
    found = app.store.table(table).query_entities("integrationId eq @i", parameters={"i": integration_id})
    return {e["externalId"]: e for e in found}


def counts(reply: Any, key: str) -> tuple[int, int, int, int]:
    d = reply.data[key]
    return d["created"], d["updated"], d["unchanged"], d["errors"]


def money(value: Any) -> str:
    """BC's JSON number as the exact text the platform stores."""
    return format(Decimal(str(value)), "f")


def sync(api: Api, integration_id: str, **body: Any) -> Any:
    reply = api.sync(integration_id, body or None)
    assert reply.status == 200, reply.body
    return reply


def test_a_full_sync_stores_every_document_with_its_lines_and_exact_money(api: Api, app: App, sim: BCSimulator) -> None:
    store = sim.company()
    integration = api.create_integration(sim, entities=NEW_TYPES)
    reply = sync(api, integration["id"])
    for key, (header_set, line_set, table, lines_table) in DOCUMENTS.items():
        headers = store.records(header_set)
        assert counts(reply, key) == (len(headers), 0, 0, 0), key
        stored = rows(app, table, integration["id"])
        lines = rows(app, lines_table, integration["id"])
        assert set(stored) == {h["id"] for h in headers}
        expected_lines = {ln["id"]: (h["id"], ln) for h in headers for ln in store.lines(h["id"], line_set)}
        assert set(lines) == set(expected_lines) and expected_lines, key
        assert reply.data[key]["linesWritten"] == len(expected_lines)
        for line_id, (document_id, bc_line) in expected_lines.items():
            assert lines[line_id]["documentExternalId"] == document_id
            assert lines[line_id]["amountIncludingTax"] == money(bc_line["amountIncludingTax"])
            assert "orderExternalId" not in lines[line_id]
        for header in headers:
            assert stored[header["id"]]["totalAmountIncludingTax"] == money(header["totalAmountIncludingTax"])
            assert stored[header["id"]]["number"] == header["number"]
    accounts = store.records("accounts")
    assert counts(reply, "accounts") == (len(accounts), 0, 0, 0)
    stored_accounts = rows(app, "Accounts", integration["id"])
    for account in accounts:
        assert stored_accounts[account["id"]]["name"] == account["displayName"]
        assert stored_accounts[account["id"]]["netChange"] == money(account["netChange"])
    purchases = rows(app, "PurchaseInvoices", integration["id"])
    assert all(p["vendorNumber"] == b["vendorNumber"] for b in store.records("purchaseInvoices") for p in [purchases[b["id"]]])
    assert any("unitCost" in ln for ln in rows(app, "PurchaseInvoiceLines", integration["id"]).values())
    logged = {e["entityType"] for e in api.get(f"integrations/{integration['id']}/sync-logs").data}
    assert set(LOG_TYPES.values()) <= logged


def test_invoices_name_the_order_they_were_posted_from_and_direct_invoices_none(api: Api, app: App, sim: BCSimulator) -> None:
    store = sim.company()
    integration = api.create_integration(sim, entities=["salesInvoices"])
    sync(api, integration["id"])
    stored = rows(app, "SalesInvoices", integration["id"])
    from_orders = [i for i in store.records("salesInvoices") if i["orderId"] != ZERO_GUID]
    direct = [i for i in store.records("salesInvoices") if i["orderId"] == ZERO_GUID]
    assert from_orders and direct
    for invoice in from_orders:
        assert stored[invoice["id"]]["orderExternalId"] == invoice["orderId"]
        assert stored[invoice["id"]]["orderNumber"] == invoice["orderNumber"]
    for invoice in direct:
        assert "orderExternalId" not in stored[invoice["id"]]  # the zero GUID means "none"


def test_a_delta_reads_new_and_changed_documents_and_rewrites_their_lines(api: Api, app: App, sim: BCSimulator) -> None:
    store = sim.company()
    integration = api.create_integration(sim, entities=NEW_TYPES)
    sync(api, integration["id"])
    sim.advance(60)
    customer = store.records("customers")[0]
    items = [i for i in store.records("items") if i.get("type") == "Inventory"][:2] or store.records("items")[:2]
    direct = store.create_sales_invoice(customer["id"], [(items[0]["id"], 2), (items[1]["id"], 1)])
    vendor = store.records("vendors")[0]
    purchase = store.post_purchase_invoice(vendor["id"], [(items[0]["id"], 5)])
    memo = store.post_sales_credit_memo(customer["id"], [(items[0]["id"], 1)], invoice_id=direct["id"])
    account = store.records("accounts")[0]
    store.update("accounts", account["id"], displayName="Renamed account")
    reply = sync(api, integration["id"], mode="delta")
    assert reply.data["salesInvoices"]["created"] == 1 and reply.data["salesInvoices"]["errors"] == 0
    assert reply.data["purchaseInvoices"]["created"] == 1
    assert reply.data["salesCreditMemos"]["created"] == 1
    assert reply.data["accounts"]["updated"] >= 1 and reply.data["accounts"]["errors"] == 0
    lines = rows(app, "SalesInvoiceLines", integration["id"])
    assert len([ln for ln in lines.values() if ln["documentExternalId"] == direct["id"]]) == 2
    memo_row = rows(app, "SalesCreditMemos", integration["id"])[memo["id"]]
    assert memo_row["invoiceExternalId"] == direct["id"] and memo_row["invoiceNumber"] == direct["number"]
    assert rows(app, "PurchaseInvoices", integration["id"])[purchase["id"]]["vendorId"] == vendor["id"]
    assert rows(app, "Accounts", integration["id"])[account["id"]]["name"] == "Renamed account"
    again = sync(api, integration["id"], mode="delta")
    assert all(again.data[k]["created"] == 0 and again.data[k]["updated"] == 0 for k in NEW_TYPES), again.data


def test_the_records_api_embeds_lines_and_the_change_feed_carries_documents(api: Api, app: App, sim: BCSimulator) -> None:
    store = sim.company()
    integration = api.create_integration(sim, entities=["purchaseInvoices"])
    sync(api, integration["id"])
    invoice = store.records("purchaseInvoices")[0]
    one = api.get(f"integrations/{integration['id']}/records/purchaseInvoices/{invoice['id']}")
    assert one.status == 200
    bc_lines = sorted(store.lines(invoice["id"], "purchaseInvoiceLines"), key=lambda ln: ln["sequence"])
    assert [ln["externalId"] for ln in one.data["lines"]] == [ln["id"] for ln in bc_lines]
    assert {ln["documentExternalId"] for ln in one.data["lines"]} == {invoice["id"]}
    listed = all_records(api, integration["id"], "purchaseInvoices")
    assert len(listed) == len(store.records("purchaseInvoices")) and all(r["lines"] for r in listed)
    changes, _ = read_feed(api, integration["id"], "purchaseInvoices")
    assert {c["externalId"] for c in changes} == {i["id"] for i in store.records("purchaseInvoices")}
    assert all(c["record"]["lines"] for c in changes)


def test_field_mappings_apply_to_the_new_types(api: Api, app: App, sim: BCSimulator) -> None:
    store = sim.company()
    store.add_extension_field("salesInvoices", "eudrReference", "EUDR-7")
    store.add_extension_field("accounts", "reportingCode", "R1")
    mappings = {"salesInvoices": [{"source": "eudrReference", "target": "eudrReference", "type": "text"}],
                "accounts": [{"source": "reportingCode", "target": "reportingCode", "type": "text"}]}
    integration = api.create_integration(sim, entities=["salesInvoices", "accounts"], fieldMappings=mappings)
    sync(api, integration["id"])
    assert {r["eudrReference"] for r in rows(app, "SalesInvoices", integration["id"]).values()} == {"EUDR-7"}
    assert {r["reportingCode"] for r in rows(app, "Accounts", integration["id"]).values()} == {"R1"}
    bad = api.post("integrations", {**integration_body(), "fieldMappings": {"salesInvoices": [{"source": "x", "target": "documentExternalId", "type": "text"}]}})
    assert bad.status == 400 and "documentExternalId" in bad.error["message"]
    unknown = api.post("integrations", {**integration_body(), "entities": ["salesInvoices", "postedInvoices"]})
    assert unknown.status == 400 and "entities" in unknown.error["message"]


def test_test_connection_counts_the_new_types(api: Api, sim: BCSimulator) -> None:
    store = sim.company()
    integration = api.create_integration(sim, entities=NEW_TYPES)
    reply = api.post(f"integrations/{integration['id']}/dynamics/test")
    assert reply.status == 200, reply.body
    found = reply.data["counts"]
    assert found["salesInvoices"] == len(store.records("salesInvoices"))
    assert found["accounts"] == len(store.records("accounts"))
    assert found["purchaseInvoices"] == len(store.records("purchaseInvoices"))


def test_realtime_subscribes_each_new_type_on_its_bc_entity_set(rt_api: Api, rt_app: App, sim: BCSimulator) -> None:
    created = rt_api.create_integration(sim, realtime=True, entities=NEW_TYPES)
    assert {k: v["status"] for k, v in created["realtime"]["subscriptions"].items()} == {k: "active" for k in NEW_TYPES}
    assert sorted(s.entity_set for s in sim.webhooks.subscriptions.values()) == sorted(
        ["salesInvoices", "salesCreditMemos", "purchaseInvoices", "accounts"])


# -- posted or deleted (design.md §11) --------------------------------------------------------------
def _order_with_lines(sim: BCSimulator, skip: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    store = sim.company()
    return next(o for o in store.records("salesOrders") if len(store.lines(o["id"])) >= 2 and o["id"] not in skip)


def _view(api: Api, integration_id: str, data_type: str, external_id: str) -> dict[str, Any]:
    reply = api.get(f"integrations/{integration_id}/records/{data_type}/{external_id}")
    assert reply.status == 200, reply.body
    return reply.data


def _post_one_delete_one(api: Api, sim: BCSimulator) -> tuple[dict[str, Any], ...]:
    """Synced orders and invoices; then BC posts one order (an invoice naming it) and deletes
    another, and a delta brings the invoice."""
    store = sim.company()
    integration = api.create_integration(sim, entities=["salesOrders", "salesInvoices"])
    sync(api, integration["id"])
    posted = _order_with_lines(sim)
    deleted = _order_with_lines(sim, {posted["id"]})
    invoice = store.post_sales_order(posted["id"])
    store.delete("salesOrders", deleted["id"])
    sim.advance(5)
    sync(api, integration["id"], mode="delta")  # the invoice arrives, naming its order
    return integration, posted, deleted, invoice


def test_a_posted_order_is_flagged_posted_and_a_deleted_one_deleted_with_their_lines(api: Api, app: App, sim: BCSimulator) -> None:
    integration, posted, deleted, invoice = _post_one_delete_one(api, sim)
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    assert flag_deleted(app, integration["id"], "salesOrders", [posted["id"], deleted["id"]], now) == 2  # as `deleted` notifications do

    order = _view(api, integration["id"], "salesOrders", posted["id"])
    assert order["deletedInBC"] is True and order["deletedReason"] == "posted"
    assert order["invoiceExternalIds"] == [invoice["id"]]
    assert order["lines"] and all(ln["deletedInBC"] is True and ln["deletedReason"] == "posted" for ln in order["lines"])
    other = _view(api, integration["id"], "salesOrders", deleted["id"])
    assert other["deletedInBC"] is True and other["deletedReason"] == "deleted" and other["invoiceExternalIds"] == []
    assert other["lines"] and all(ln["deletedReason"] == "deleted" for ln in other["lines"])
    follow = _view(api, integration["id"], "salesInvoices", invoice["id"])
    assert follow["orderExternalId"] == posted["id"] and follow["orderNumber"] == posted["number"]
    changes, _ = read_feed(api, integration["id"], "salesOrders")
    assert {c["record"].get("deletedReason") for c in changes if c["externalId"] == posted["id"]} >= {"posted"}


def test_an_order_flagged_before_its_invoice_arrives_becomes_posted_when_it_does(api: Api, app: App, sim: BCSimulator) -> None:
    store = sim.company()
    integration = api.create_integration(sim, entities=["salesOrders", "salesInvoices"])
    sync(api, integration["id"])
    order = _order_with_lines(sim)
    invoice = store.post_sales_order(order["id"])
    sim.advance(5)
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    assert flag_deleted(app, integration["id"], "salesOrders", [order["id"]], now) == 1  # before any invoice sync
    early = _view(api, integration["id"], "salesOrders", order["id"])
    assert early["deletedReason"] == "deleted" and all(ln["deletedReason"] == "deleted" for ln in early["lines"])
    sync(api, integration["id"], mode="delta", entities=["salesInvoices"])
    view = _view(api, integration["id"], "salesOrders", order["id"])
    assert view["deletedInBC"] is True and view["deletedReason"] == "posted" and view["invoiceExternalIds"] == [invoice["id"]]
    assert view["lines"] and all(ln["deletedReason"] == "posted" for ln in view["lines"])


def test_a_partly_posted_order_stays_live_and_lists_its_invoice(api: Api, app: App, sim: BCSimulator) -> None:
    store = sim.company()
    integration = api.create_integration(sim, entities=["salesOrders", "salesInvoices"])
    sync(api, integration["id"])
    order = _order_with_lines(sim)
    first = store.lines(order["id"])[0]
    invoice = store.post_sales_order(order["id"], {first["id"]: 1})
    sim.advance(5)
    sync(api, integration["id"], mode="delta")
    view = _view(api, integration["id"], "salesOrders", order["id"])
    assert "deletedInBC" not in view and view["invoiceExternalIds"] == [invoice["id"]]
    assert all("deletedInBC" not in ln for ln in view["lines"])


def test_a_restored_document_is_rewritten_whole_with_live_lines(api: Api, app: App, sim: BCSimulator) -> None:
    """A flagged document that BC returns again is rewritten by the next sync: its flag, reason
    and its lines' flags go (a line rewrite replaces the line)."""
    store = sim.company()
    integration = api.create_integration(sim, entities=["salesOrders"])
    sync(api, integration["id"])
    order = _order_with_lines(sim)
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    assert flag_deleted(app, integration["id"], "salesOrders", [order["id"]], now) == 1
    assert all(ln["deletedReason"] == "deleted" for ln in _view(api, integration["id"], "salesOrders", order["id"])["lines"])
    sim.advance(5)
    store.update("salesOrders", order["id"], externalDocumentNumber="AGAIN")
    sync(api, integration["id"], mode="delta")
    view = _view(api, integration["id"], "salesOrders", order["id"])
    assert "deletedInBC" not in view and "deletedReason" not in view
    assert view["lines"] and all("deletedInBC" not in ln and "deletedReason" not in ln for ln in view["lines"])


@pytest.mark.parametrize("key", NEW_TYPES)
def test_openapi_lists_each_new_type_and_log_type(key: str) -> None:
    from shared.openapi import build

    document = build()
    text = str(document)
    assert key in text and LOG_TYPES[key] in text
def test_a_reconcile_flags_a_deleted_invoice_with_its_lines(api: Api, app: App, sim: BCSimulator) -> None:
    store = sim.company()
    integration = api.create_integration(sim, entities=["salesCreditMemos"])
    sync(api, integration["id"])
    gone = store.records("salesCreditMemos")[0]
    store.delete("salesCreditMemos", gone["id"])
    reply = sync(api, integration["id"], mode="reconcile")
    assert reply.data["salesCreditMemos"]["deleted"] == 1
    stored = rows(app, "SalesCreditMemos", integration["id"])[gone["id"]]
    assert stored["deletedInBC"] is True
    lines = [ln for ln in rows(app, "SalesCreditMemoLines", integration["id"]).values() if ln["documentExternalId"] == gone["id"]]
    assert lines and all(ln.get("deletedInBC") is True for ln in lines), "never left as live lines"



def test_a_reconcile_flags_a_posted_order_posted_and_a_deleted_one_deleted(api: Api, app: App, sim: BCSimulator) -> None:
    integration, posted, deleted, invoice = _post_one_delete_one(api, sim)
    reply = sync(api, integration["id"], mode="reconcile", entities=["salesOrders"])
    assert reply.data["salesOrders"]["deleted"] == 2
    order = _view(api, integration["id"], "salesOrders", posted["id"])
    assert order["deletedReason"] == "posted" and order["invoiceExternalIds"] == [invoice["id"]]
    assert order["lines"] and all(ln["deletedReason"] == "posted" for ln in order["lines"])
    other = _view(api, integration["id"], "salesOrders", deleted["id"])
    assert other["deletedReason"] == "deleted" and all(ln["deletedInBC"] is True for ln in other["lines"])
