"""Posted documents and the chart of accounts, shaped on the BC API v2.0 reference
(salesInvoices, salesInvoiceLines, salesCreditMemos, salesCreditMemoLines, purchaseInvoices,
purchaseInvoiceLines, accounts): property names and order as BC returns them.

Headers and accounts carry `lastModifiedDateTime`; lines have none (as in BC). Money is a JSON
number with at most two decimals.
"""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from .seed import BLANK_DATE, SEED_BASE, ZERO_GUID, Factory, dec

#: header set -> its line set (BC's `$expand` navigation and `documentId` of the lines)
LINE_SETS = {"salesOrders": "salesOrderLines", "salesInvoices": "salesInvoiceLines",
             "salesCreditMemos": "salesCreditMemoLines", "purchaseInvoices": "purchaseInvoiceLines"}

# number, name, category, subCategory, accountType (Posting accounts are the ones entries use)
CHART: list[tuple[str, str, str, str, str]] = [
    ("10000", "BALANCE SHEET", "Assets", "", "Heading"),
    ("10100", "Checking account", "Assets", "Cash", "Posting"),
    ("10200", "Saving account", "Assets", "Cash", "Posting"),
    ("10700", "Inventory", "Assets", "Inventory", "Posting"),
    ("13100", "Accounts Receivable", "Assets", "Accounts Receivable", "Posting"),
    ("19999", "Total Assets", "Assets", "", "Total"),
    ("20000", "LIABILITIES", "Liabilities", "", "Heading"),
    ("20100", "Accounts Payable", "Liabilities", "Current Liabilities", "Posting"),
    ("22100", "Sales Tax Payable", "Liabilities", "Current Liabilities", "Posting"),
    ("29999", "Total Liabilities", "Liabilities", "", "Total"),
    ("30100", "Capital Stock", "Equity", "Common Stock", "Posting"),
    ("40000", "INCOME STATEMENT", "Income", "", "Heading"),
    ("40100", "Sales, Retail", "Income", "Income, Product Sales", "Posting"),
    ("40200", "Sales, Services", "Income", "Income, Services", "Posting"),
    ("49999", "Total Income", "Income", "", "Total"),
    ("50100", "Cost of Goods Sold", "CostOfGoodsSold", "Cost of Goods", "Posting"),
    ("54100", "Purchases, Retail", "CostOfGoodsSold", "Cost of Goods", "Posting"),
    ("60100", "Rent", "Expense", "Rent Expense", "Posting"),
    ("61200", "Electricity", "Expense", "Utilities Expense", "Posting"),
    ("63100", "Travel", "Expense", "Travel Expense", "Posting"),
    ("69999", "Total Expenses", "Expense", "", "Total"),
]


def account(f: Factory, number: str, name: str, category: str, sub: str, typ: str, acc_id: str) -> dict[str, Any]:
    return {"id": acc_id, "number": number, "displayName": name, "category": category, "subCategory": sub,
            "blocked": False, "accountType": typ, "directPosting": typ == "Posting", "netChange": 0,
            "lastModifiedDateTime": f.seed_stamp()}


def _addr(prefix: str, party: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{k}": party.get(src, "") for k, src in (
        ("AddressLine1", "addressLine1"), ("AddressLine2", "addressLine2"), ("City", "city"),
        ("Country", "country"), ("State", "state"), ("PostCode", "postalCode"))}


def sales_invoice(f: Factory, customer: dict[str, Any], *, number: str, day: str, order_id: str = ZERO_GUID,
                  order_number: str = "", status: str = "Open", stamp: str | None = None) -> dict[str, Any]:
    """A sales invoice header (totals 0 until its lines are priced: see `total_document`)."""
    due = (date.fromisoformat(day) + timedelta(days=14)).isoformat()
    return {"id": f.new_id(), "number": number, "externalDocumentNumber": "", "invoiceDate": day,
            "postingDate": day, "dueDate": due, "customerPurchaseOrderReference": "",
            "customerId": customer["id"], "customerNumber": customer["number"],
            "customerName": customer["displayName"], "billToName": customer["displayName"],
            "billToCustomerId": customer["id"], "billToCustomerNumber": customer["number"],
            "shipToName": customer["displayName"], "shipToContact": "",
            **_addr("sellTo", customer), **_addr("billTo", customer), **_addr("shipTo", customer),
            "currencyId": ZERO_GUID, "shortcutDimension1Code": "", "shortcutDimension2Code": "",
            "currencyCode": "USD", "orderId": order_id, "orderNumber": order_number,
            "paymentTermsId": f.ref["pt14"], "shipmentMethodId": ZERO_GUID,
            "salesperson": customer.get("salespersonCode", ""), "disputeStatusId": ZERO_GUID, "disputeStatus": "",
            "pricesIncludeTax": False, "remainingAmount": 0, "discountAmount": 0, "discountAppliedBeforeTax": True,
            "totalAmountExcludingTax": 0, "totalTaxAmount": 0, "totalAmountIncludingTax": 0, "status": status,
            "lastModifiedDateTime": stamp or f.seed_stamp(), "phoneNumber": customer.get("phoneNumber", ""),
            "email": customer.get("email", "")}


def sales_credit_memo(f: Factory, customer: dict[str, Any], *, number: str, day: str, invoice_id: str = ZERO_GUID,
                      invoice_number: str = "", stamp: str | None = None) -> dict[str, Any]:
    return {"id": f.new_id(), "number": number, "externalDocumentNumber": "", "creditMemoDate": day,
            "postingDate": day, "dueDate": day, "customerId": customer["id"], "customerNumber": customer["number"],
            "customerName": customer["displayName"], "billToName": customer["displayName"],
            "billToCustomerId": customer["id"], "billToCustomerNumber": customer["number"],
            **_addr("sellTo", customer), **_addr("billTo", customer),
            "shortcutDimension1Code": "", "shortcutDimension2Code": "", "currencyId": ZERO_GUID, "currencyCode": "USD",
            "paymentTermsId": f.ref["pt14"], "shipmentMethodId": ZERO_GUID,
            "salesperson": customer.get("salespersonCode", ""), "pricesIncludeTax": False, "discountAmount": 0,
            "discountAppliedBeforeTax": True, "totalAmountExcludingTax": 0, "totalTaxAmount": 0,
            "totalAmountIncludingTax": 0, "status": "Open", "lastModifiedDateTime": stamp or f.seed_stamp(),
            "invoiceId": invoice_id, "invoiceNumber": invoice_number, "phoneNumber": customer.get("phoneNumber", ""),
            "email": customer.get("email", ""), "customerReturnReasonId": ZERO_GUID}


def purchase_invoice(f: Factory, vendor: dict[str, Any], *, number: str, day: str, order_id: str = ZERO_GUID,
                     order_number: str = "", status: str = "Open", stamp: str | None = None) -> dict[str, Any]:
    return {"id": f.new_id(), "number": number, "invoiceDate": day, "postingDate": day,
            "dueDate": (date.fromisoformat(day) + timedelta(days=30)).isoformat(),
            "vendorInvoiceNumber": f"V-{number}", "vendorId": vendor["id"], "vendorNumber": vendor["number"],
            "vendorName": vendor["displayName"], "payToName": vendor["displayName"], "payToContact": "",
            "payToVendorId": vendor["id"], "payToVendorNumber": vendor["number"], "shipToName": "",
            "shipToContact": "", **_addr("buyFrom", vendor), **_addr("shipTo", {}), **_addr("payTo", vendor),
            "shortcutDimension1Code": "", "shortcutDimension2Code": "", "currencyId": vendor.get("currencyId", ZERO_GUID),
            "currencyCode": vendor.get("currencyCode", "USD"), "orderId": order_id, "orderNumber": order_number,
            "pricesIncludeTax": False, "discountAmount": 0, "discountAppliedBeforeTax": True,
            "totalAmountExcludingTax": 0, "totalTaxAmount": 0, "totalAmountIncludingTax": 0, "status": status,
            "lastModifiedDateTime": stamp or f.seed_stamp()}


def document_line(f: Factory, doc_id: str, seq: int, item: dict[str, Any], qty: float, price: float, *,
                  purchase: bool = False, day: str = BLANK_DATE) -> dict[str, Any]:
    """A posted line (sales invoice/credit memo, or purchase invoice with unitCost and
    expectedReceiptDate). Amounts are priced here; no lastModifiedDateTime, as in BC."""
    tax_pct = 6 if item.get("taxGroupCode") == "FURNITURE" else 0
    net = dec(float(qty) * float(price))
    tax = dec(net * tax_pct / 100)
    line: dict[str, Any] = {
        "id": f.new_id(), "documentId": doc_id, "sequence": seq, "itemId": item["id"], "accountId": ZERO_GUID,
        "lineType": "Item", "lineObjectNumber": item["number"], "description": item["displayName"],
        **({} if purchase else {"description2": ""}),
        "unitOfMeasureId": item["baseUnitOfMeasureId"], "unitOfMeasureCode": item["baseUnitOfMeasureCode"],
        **({"unitCost": dec(price)} if purchase else {}), "quantity": dec(qty),
        **({} if purchase else {"unitPrice": dec(price)}), "discountAmount": 0, "discountPercent": 0,
        "discountAppliedBeforeTax": False, "amountExcludingTax": net, "taxCode": item["taxGroupCode"],
        "taxPercent": tax_pct, "totalTaxAmount": tax, "amountIncludingTax": dec(net + tax),
        "invoiceDiscountAllocation": 0, "netAmount": net, "netTaxAmount": tax, "netAmountIncludingTax": dec(net + tax),
        **({"expectedReceiptDate": day} if purchase else {"shipmentDate": day}),
        "itemVariantId": ZERO_GUID, "locationId": ZERO_GUID}
    return line


def total_document(doc: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Header totals from its lines (and what is still to be paid, for a sales invoice)."""
    doc["totalAmountExcludingTax"] = dec(sum(float(ln["amountExcludingTax"]) for ln in lines))
    doc["totalTaxAmount"] = dec(sum(float(ln["totalTaxAmount"]) for ln in lines))
    doc["totalAmountIncludingTax"] = dec(sum(float(ln["amountIncludingTax"]) for ln in lines))
    if "remainingAmount" in doc:
        doc["remainingAmount"] = 0 if doc["status"] in ("Paid", "Canceled") else doc["totalAmountIncludingTax"]
    return doc


def seed_day(f: Factory) -> str:
    return (SEED_BASE.date() - timedelta(days=f.rng.randint(0, 120))).isoformat()
