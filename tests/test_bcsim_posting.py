"""Posted documents and accounts in the simulator, and posting as BC does it (design.md §14
"Posting"): real API v2.0 property names, lines without timestamps, webhooks on headers."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devtools.bcsim import DEMO_COMPANY_ID, DEMO_ENVIRONMENT, DEMO_TENANT_ID, ZERO_GUID, BCSimulator
from tests.test_bcsim import bc_url, client, read_all
from tests.test_bcsim_changes import Receiver, subscribe
from tests.test_bcsim_changes import receiver as receiver  # noqa: F401 - the fixture
from tests.test_bcsim_changes import sim as sim  # noqa: F401 - the fixture

HEADERS = {"salesInvoices": "salesInvoiceLines", "salesCreditMemos": "salesCreditMemoLines",
           "purchaseInvoices": "purchaseInvoiceLines"}


def _get(sim: BCSimulator, rest: str, **params: str) -> Any:
    with client(sim) as c:
        r = c.get(bc_url(sim, rest), params=params or None)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def demo() -> Iterator[BCSimulator]:
    with BCSimulator(seed=42) as s:
        yield s


def test_seeded_documents_and_chart_of_accounts(demo: BCSimulator) -> None:
    with client(demo) as c:
        for header, line_set in HEADERS.items():
            rows, _ = read_all(c, bc_url(demo, f"/{header}"), 20, **{"$expand": line_set})
            assert len(rows) >= 5, header
            for doc in rows:
                assert doc["lastModifiedDateTime"].endswith("Z") and doc[line_set]
                assert all("lastModifiedDateTime" not in ln and ln["documentId"] == doc["id"] for ln in doc[line_set])
                total = round(sum(ln["amountIncludingTax"] for ln in doc[line_set]), 2)
                assert doc["totalAmountIncludingTax"] == total and isinstance(total, (int, float))
            top = c.get(bc_url(demo, f"/{line_set}"), params={"$top": "3"}).json()["value"]
            assert len(top) == 3 and all("lastModifiedDateTime" not in ln for ln in top)
        invoices = c.get(bc_url(demo, "/salesInvoices")).json()["value"]
        assert {ZERO_GUID} < {i["orderId"] for i in invoices}, "some from orders, some made directly"
        assert all((i["orderId"] == ZERO_GUID) == (i["orderNumber"] == "") for i in invoices)
        purchases = c.get(bc_url(demo, "/purchaseInvoices")).json()["value"]
        vendors = {v["id"]: v["number"] for v in c.get(bc_url(demo, "/vendors")).json()["value"]}
        assert all(vendors[p["vendorId"]] == p["vendorNumber"] for p in purchases)
        accounts = c.get(bc_url(demo, "/accounts")).json()["value"]
        assert {"number", "displayName", "category", "subCategory", "blocked", "accountType", "directPosting",
                "netChange", "lastModifiedDateTime"} <= set(accounts[0])
        by_number = {a["number"]: a for a in accounts}
        entries = c.get(bc_url(demo, "/generalLedgerEntries")).json()["value"]
        assert {e["accountNumber"] for e in entries} <= set(by_number)
        assert all(by_number[e["accountNumber"]]["id"] == e["accountId"] for e in entries)
        assert sum(a["netChange"] for a in accounts) == pytest.approx(0, abs=0.01), "debits balance credits"
        bad = c.get(bc_url(demo, "/salesInvoices"), params={"$expand": "salesOrderLines"})
        assert bad.status_code == 400


def test_webhooks_on_headers_and_accounts_not_on_lines(sim: BCSimulator, receiver: Receiver) -> None:
    for entity_set in ("salesInvoices", "salesCreditMemos", "purchaseInvoices", "accounts"):
        subscribe(sim, receiver.url, entity_set)
    with client(sim) as c:
        for line_set in HEADERS.values():
            r = c.post(f"{sim.base_url}/v2.0/{DEMO_TENANT_ID}/{DEMO_ENVIRONMENT}/api/v2.0/subscriptions", json={
                "notificationUrl": receiver.url, "clientState": "x",
                "resource": f"/api/v2.0/companies({DEMO_COMPANY_ID})/{line_set}"})
            assert r.status_code == 400, line_set


def test_posting_an_order_in_full_moves_it_to_sales_invoices(sim: BCSimulator, receiver: Receiver) -> None:
    store = sim.company()
    order = next(o for o in store.records("salesOrders") if len(store.lines(o["id"])) >= 2)
    lines = store.lines(order["id"])
    subscribe(sim, receiver.url, "salesOrders")
    subscribe(sim, receiver.url, "salesInvoices")
    gl_before = len(store.records("generalLedgerEntries"))
    with client(sim) as c:
        r = c.post(f"{sim.base_url}/_sim/companies/{DEMO_COMPANY_ID}/post/{order['id']}", json={})
        assert r.status_code == 200, r.text
        invoice = r.json()
        assert c.get(bc_url(sim, f"/salesOrders({order['id']})")).status_code == 404
        left = c.get(bc_url(sim, "/salesOrderLines"), params={"$filter": f"documentId eq {order['id']}"}).json()
        assert left["value"] == []
        got = c.get(bc_url(sim, f"/salesInvoices({invoice['id']})")).json()
        posted = c.get(bc_url(sim, f"/salesInvoices({invoice['id']})/salesInvoiceLines")).json()["value"]
        entries = c.get(bc_url(sim, "/generalLedgerEntries"), params={
            "$filter": f"documentNumber eq '{invoice['number']}'"}).json()["value"]
    assert (got["orderId"], got["orderNumber"], got["customerId"]) == (order["id"], order["number"], order["customerId"])
    assert got["totalAmountIncludingTax"] == order["totalAmountIncludingTax"]
    assert got["remainingAmount"] == got["totalAmountIncludingTax"] and got["status"] == "Open"
    assert [(ln["sequence"], ln["itemId"], ln["quantity"]) for ln in posted] == [
        (ln["sequence"], ln["itemId"], ln["quantity"]) for ln in lines]
    assert len(store.records("generalLedgerEntries")) == gl_before + len(entries) and len(entries) >= 2
    assert round(sum(e["debitAmount"] - e["creditAmount"] for e in entries), 2) == 0
    assert sim.webhooks.wait_idle(10)
    seen = {(i["changeType"], i["resource"].rsplit("/", 1)[1]) for i in receiver.items()}
    assert ("deleted", f"salesOrders({order['id']})") in seen
    assert ("created", f"salesInvoices({invoice['id']})") in seen


def test_partial_posting_leaves_the_rest_on_the_order(sim: BCSimulator) -> None:
    store = sim.company()
    order = store.records("salesOrders")[0]
    item = next(i for i in store.records("items") if i["type"] == "Inventory")
    store.add_order_line(order["id"], item["id"], 10, 5)
    line = store.lines(order["id"])[-1]
    before = store.get("salesOrders", order["id"])
    sim.advance(5)
    invoice = store.post_sales_order(order["id"], {ln["id"]: 0 for ln in store.lines(order["id"])} | {line["id"]: 4})
    after = store.get("salesOrders", order["id"])
    kept = next(ln for ln in store.lines(order["id"]) if ln["id"] == line["id"])
    assert after is not None and after["lastModifiedDateTime"] > before["lastModifiedDateTime"]  # type: ignore[index]
    assert (kept["invoicedQuantity"], kept["shippedQuantity"], kept["invoiceQuantity"]) == (4, 4, 6)
    [posted] = store.lines(invoice["id"], "salesInvoiceLines")
    assert (posted["quantity"], posted["amountExcludingTax"], invoice["orderId"]) == (4, 20, order["id"])
    rest = store.post_sales_order(order["id"])
    assert store.get("salesOrders", order["id"]) is None and rest["orderNumber"] == order["number"]
    assert any(ln["quantity"] == 6 for ln in store.lines(rest["id"], "salesInvoiceLines"))


def test_direct_invoices_credit_memos_and_purchase_invoices(sim: BCSimulator) -> None:
    store = sim.company()
    customer, vendor = store.records("customers")[0], store.records("vendors")[1]
    item = next(i for i in store.records("items") if i["type"] == "Inventory")
    stock = item["inventory"]
    with client(sim) as c:
        base = f"{sim.base_url}/_sim/companies/{DEMO_COMPANY_ID}"
        direct = c.post(f"{base}/salesInvoices", json={
            "customerId": customer["id"], "lines": [{"itemId": item["id"], "quantity": 2}]}).json()
        memo = c.post(f"{base}/salesCreditMemos", json={
            "customerId": customer["id"], "invoiceId": direct["id"], "lines": [{"itemId": item["id"], "quantity": 1}]}).json()
        bought = c.post(f"{base}/purchaseInvoices", json={
            "vendorId": vendor["id"], "lines": [{"itemId": item["id"], "quantity": 7}]}).json()
        assert c.get(bc_url(sim, f"/salesCreditMemos({memo['id']})")).json()["invoiceNumber"] == direct["number"]
        pi = c.get(bc_url(sim, f"/purchaseInvoices({bought['id']})"), params={"$expand": "purchaseInvoiceLines"}).json()
    assert (direct["orderId"], direct["orderNumber"]) == (ZERO_GUID, "")
    assert direct["totalAmountExcludingTax"] == round(2 * item["unitPrice"], 2)
    assert (pi["vendorId"], pi["vendorNumber"]) == (vendor["id"], vendor["number"])
    assert pi["orderId"] != ZERO_GUID and pi["orderNumber"]
    assert pi["purchaseInvoiceLines"][0]["unitCost"] == item["unitCost"] and "unitPrice" not in pi["purchaseInvoiceLines"][0]
    assert store.get("items", item["id"])["inventory"] == stock - 2 + 1 + 7  # type: ignore[index]
    assert store.get("items", item["id"])["lastModifiedDateTime"] == item["lastModifiedDateTime"]  # type: ignore[index]
