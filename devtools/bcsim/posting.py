"""Posting as BC does it, on one company's store (callers hold the simulator's lock).

- A sales order shipped and invoiced in full leaves `salesOrders` (a `deleted` notification; its
  lines go with it) and a posted `salesInvoices` document appears with its lines, `orderId` and
  `orderNumber` naming the order. A partial posting invoices what was asked and leaves the order
  with the rest (its quantities and `lastModifiedDateTime` move).
- Invoices made directly have `orderId` = zero GUID and an empty `orderNumber`; returns are
  `salesCreditMemos`; purchases post into `purchaseInvoices` with the purchase order's id/number.
- Every posting writes balanced G/L entries on the chart's accounts (and item ledger entries for
  the stock it moves; the item's own timestamp stays, as in BC).
"""
from __future__ import annotations

from typing import Any

from . import documents as docs
from .seed import ZERO_GUID, dec, fmt_dt, price_line

#: devtools.bcsim.store.CompanyStore, not imported: the store calls into this module
CompanyStore = Any

ItemLines = list[tuple[str, float]]  # (item id, quantity)


def _party(store: CompanyStore, entity_set: str, party_id: str) -> dict[str, Any]:
    rec = store.sets[entity_set].rows.get(party_id)
    if rec is None:
        raise KeyError(f"{entity_set} {party_id} does not exist")
    return rec


def _today(store: CompanyStore) -> tuple[str, str]:
    stamp = fmt_dt(store._clock())
    return stamp, stamp[:10]


def _publish(store: CompanyStore, entity_set: str, head: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    docs.total_document(head, lines)
    head = store._store(entity_set, head)
    for ln in lines:
        store._store(docs.LINE_SETS[entity_set], ln)
    store._changed(entity_set, head["id"], "created")
    return head


def _gl(store: CompanyStore, number: str, doc_type: str, day: str, stamp: str,
        postings: list[tuple[str, float, float]]) -> list[str]:
    """Balanced G/L entries (account number, debit, credit) of one posted document."""
    f, ids = store.factory, []
    for account_no, debit, credit in postings:
        if not debit and not credit:
            continue
        entry = {"id": f.new_id(), "entryNumber": f.next_number("generalLedgerEntries"), "postingDate": day,
                 "documentNumber": number, "documentType": doc_type, "accountId": store.account_ids.get(account_no, ZERO_GUID),
                 "accountNumber": account_no, "description": f"{doc_type.replace('_x0020_', ' ')} {number}",
                 "debitAmount": dec(debit), "creditAmount": dec(credit), "additionalCurrencyDebitAmount": 0,
                 "additionalCurrencyCreditAmount": 0, "lastModifiedDateTime": stamp}
        ids.append(store._store("generalLedgerEntries", entry)["id"])
        store._changed("generalLedgerEntries", entry["id"], "created")
    return ids


def _stock(store: CompanyStore, item_id: str, qty: float, number: str, entry_type: str, doc_type: str,
           source: tuple[str, str], stamp: str) -> None:
    item = store.sets["items"].rows.get(item_id)
    if item is None or item.get("type") != "Inventory" or not qty:
        return
    entry = store.factory.item_ledger_entry(item, qty, stamp, number)
    entry.update(entryType=entry_type, documentType=doc_type, sourceType=source[0], sourceNumber=source[1])
    store._store("itemLedgerEntries", entry)
    item["inventory"] = dec(float(item["inventory"] or 0) + qty)
    store.sets["items"].changed({"inventory"})


def _totals(lines: list[dict[str, Any]]) -> tuple[float, float, float]:
    net = sum(float(ln["amountExcludingTax"]) for ln in lines)
    tax = sum(float(ln["totalTaxAmount"]) for ln in lines)
    return net, tax, net + tax


def post_sales_order(store: CompanyStore, order_id: str, quantities: dict[str, float] | None = None) -> dict[str, Any]:
    """Ship and invoice an order: everything left (default) or `quantities` per line id."""
    order = store.sets["salesOrders"].rows[order_id]
    customer = store.sets["customers"].rows.get(order["customerId"]) or {
        "id": order["customerId"], "number": order["customerNumber"], "displayName": order["customerName"]}
    stamp, day = _today(store)
    f = store.factory
    head = docs.sales_invoice(f, customer, number=f.next_number("salesInvoices"), day=day, order_id=order_id,
                              order_number=order["number"], stamp=stamp)
    head.update({k: order[k] for k in ("externalDocumentNumber", "shipToName", "shipToContact", "salesperson",
                                       "paymentTermsId", "shipmentMethodId", "currencyId", "currencyCode",
                                       "pricesIncludeTax") if k in order})
    posted, order_lines = [], store.lines(order_id)
    template = [k for k in store.sets["salesInvoiceLines"].types]
    for ln in order_lines:
        left = float(ln["quantity"]) - float(ln["invoicedQuantity"] or 0)
        qty = min(left, float((quantities or {}).get(ln["id"], left)))
        if qty <= 0:
            continue
        line = {k: ln.get(k) for k in template if k in ln}
        line.update(id=f.new_id(), documentId=head["id"], quantity=dec(qty))
        posted.append((ln, qty, price_line(line)))
    if not posted:
        raise ValueError(f"nothing left to post on order {order['number']}")
    head = _publish(store, "salesInvoices", head, [p[2] for p in posted])
    net, tax, gross = _totals([p[2] for p in posted])
    _gl(store, head["number"], "Invoice", day, stamp, [("13100", gross, 0), ("40100", 0, net), ("22100", 0, tax)])
    for ln, qty, _ in posted:
        _stock(store, ln["itemId"], -qty, head["number"], "Sale", "Sales_x0020_Shipment",
               ("Customer", customer["number"]), stamp)
        ln["invoicedQuantity"] = dec(float(ln["invoicedQuantity"] or 0) + qty)
        ln["shippedQuantity"] = max(ln["shippedQuantity"], ln["invoicedQuantity"])
        ln["invoiceQuantity"] = dec(float(ln["quantity"]) - float(ln["invoicedQuantity"]))
        ln["shipQuantity"] = dec(float(ln["quantity"]) - float(ln["shippedQuantity"]))
    if all(float(ln["invoicedQuantity"]) >= float(ln["quantity"]) for ln in order_lines):
        store.delete("salesOrders", order_id)  # the order and its lines leave salesOrders
    else:
        store.sets["salesOrderLines"].changed({"invoicedQuantity", "shippedQuantity", "invoiceQuantity", "shipQuantity"})
        order["fullyShipped"] = all(float(ln["shippedQuantity"]) >= float(ln["quantity"]) for ln in order_lines)
        store._touch("salesOrders", order, None, ("fullyShipped",))
    return dict(head)


def _lines_for(store: CompanyStore, doc_id: str, lines: ItemLines, *, purchase: bool, day: str,
               prices: dict[str, float] | None = None) -> list[dict[str, Any]]:
    out = []
    for n, (item_id, qty) in enumerate(lines):
        item = _party(store, "items", item_id)
        price = (prices or {}).get(item_id, item["unitCost"] if purchase else item["unitPrice"])
        out.append(docs.document_line(store.factory, doc_id, 10000 * (n + 1), item, qty, price, purchase=purchase, day=day))
    return out


def create_sales_invoice(store: CompanyStore, customer_id: str, lines: ItemLines) -> dict[str, Any]:
    """An invoice made and posted without an order: orderId is the zero GUID, orderNumber empty."""
    customer = _party(store, "customers", customer_id)
    stamp, day = _today(store)
    f = store.factory
    head = docs.sales_invoice(f, customer, number=f.next_number("salesInvoices"), day=day, stamp=stamp)
    posted = _lines_for(store, head["id"], lines, purchase=False, day=day)
    head = _publish(store, "salesInvoices", head, posted)
    net, tax, gross = _totals(posted)
    _gl(store, head["number"], "Invoice", day, stamp, [("13100", gross, 0), ("40100", 0, net), ("22100", 0, tax)])
    for (item_id, qty) in lines:
        _stock(store, item_id, -qty, head["number"], "Sale", "Sales_x0020_Shipment", ("Customer", customer["number"]), stamp)
    return dict(head)


def post_sales_credit_memo(store: CompanyStore, customer_id: str, lines: ItemLines,
                           invoice_id: str | None = None) -> dict[str, Any]:
    """A return: a posted credit memo (naming the invoice it corrects, if any), stock back in."""
    customer = _party(store, "customers", customer_id)
    invoice = store.sets["salesInvoices"].rows[invoice_id] if invoice_id else None
    stamp, day = _today(store)
    f = store.factory
    head = docs.sales_credit_memo(f, customer, number=f.next_number("salesCreditMemos"), day=day, stamp=stamp,
                                  invoice_id=invoice["id"] if invoice else ZERO_GUID,
                                  invoice_number=invoice["number"] if invoice else "")
    posted = _lines_for(store, head["id"], lines, purchase=False, day=day)
    head = _publish(store, "salesCreditMemos", head, posted)
    net, tax, gross = _totals(posted)
    _gl(store, head["number"], "Credit_x0020_Memo", day, stamp, [("40100", net, 0), ("22100", tax, 0), ("13100", 0, gross)])
    for (item_id, qty) in lines:
        _stock(store, item_id, qty, head["number"], "Sale", "Sales_x0020_Return_x0020_Receipt",
               ("Customer", customer["number"]), stamp)
    return dict(head)


def post_purchase_invoice(store: CompanyStore, vendor_id: str, lines: ItemLines, *, from_order: bool = True,
                          unit_costs: dict[str, float] | None = None) -> dict[str, Any]:
    """A purchase posted into `purchaseInvoices` (from a purchase order unless `from_order` is
    False): vendorId/vendorNumber, orderId/orderNumber, stock in, payables booked."""
    vendor = _party(store, "vendors", vendor_id)
    stamp, day = _today(store)
    f = store.factory
    head = docs.purchase_invoice(f, vendor, number=f.next_number("purchaseInvoices"), day=day, stamp=stamp,
                                 order_id=f.new_id() if from_order else ZERO_GUID,
                                 order_number=f.next_number("purchaseOrders") if from_order else "")
    posted = _lines_for(store, head["id"], lines, purchase=True, day=day, prices=unit_costs)
    head = _publish(store, "purchaseInvoices", head, posted)
    net, tax, gross = _totals(posted)
    _gl(store, head["number"], "Invoice", day, stamp, [("10700", net, 0), ("22100", tax, 0), ("20100", 0, gross)])
    for (item_id, qty) in lines:
        _stock(store, item_id, qty, head["number"], "Purchase", "Purchase_x0020_Receipt", ("Vendor", vendor["number"]), stamp)
    return dict(head)

