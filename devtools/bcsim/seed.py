"""Deterministic record factories shaped field-for-field on real BC API v2.0 responses.

Nothing here reads the captured samples: the shapes were copied by hand so users without
them still get realistic data (sequential-looking GUIDs, `_x0020_` blank enums, zero GUID
lookups, `0001-01-01` blank dates, SQL-datetime-precision timestamps).
"""
from __future__ import annotations

import base64
import hashlib
import random
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from .guids import SequentialIds

ZERO_GUID = "00000000-0000-0000-0000-000000000000"
BLANK_DATE = "0001-01-01"
BLANK_ENUM = "_x0020_"
SEED_BASE = datetime(2025, 3, 5, 19, 19, 22, tzinfo=timezone.utc)

CITIES = [("Atlanta", "GA", "31772"), ("Chicago", "IL", "61236"), ("Miami", "FL", "37125"),
          ("New York", "NY", "10001"), ("Seattle", "WA", "98101"), ("Dallas", "TX", "75201")]
STREETS = ["Market Square", "Thomas Drive", "North Lake Avenue", "Radcroft Road", "Station Road",
           "South Ashford Street", "Elm Street", "Harbor Way"]
VENDOR_NAMES = ["Fabrikam, Inc.", "First Up Consultants", "Graphic Design Institute",
                "Wide World Importers", "Margie's Travel", "Nod Publishers", "Litware, Inc.",
                "Möbelhaus Müller GmbH", "Contoso, Ltd.", "Alpine Ski House", "Coho Winery",
                "Northwind Traders", "Østergaard Træ A/S", "Tailspin Toys", "東京家具株式会社"]
CUSTOMER_NAMES = ["Adatum Corporation", "Trey Research", "School of Fine Art", "Alpine Ski House",
                  "Relecloud", "O'Brien & Søn Ltd.", "Fourth Coffee", "Société Générale des Meubles"]
NAME_A = ["Northwind", "Contoso", "Proseware", "Lamna", "Woodgrove", "Wingtip", "Southridge",
          "Blue Yonder", "Lucerne", "Humongous", "VanArsdel", "Bellows", "Adventure", "Consolidated"]
NAME_B = ["Supplies", "Trading", "Furniture", "Logistics", "Office Solutions", "Wholesale", "Imports"]
NAME_C = ["Inc.", "Ltd.", "LLC", "GmbH", "Corp.", "& Co."]
ITEM_CITIES = ["ATHENS", "PARIS", "LONDON", "ANTWERP", "AMSTERDAM", "BERLIN", "ROME", "TOKYO",
               "MUNICH", "SYDNEY", "MEXICO", "SEOUL", "ATLANTA", "GUILDFORD", "ZÜRICH", "KØBENHAVN"]
ITEM_KINDS = [("Desk", "TABLE"), ("Guest Chair, black", "CHAIR"), ("Swivel Chair, blue", "CHAIR"),
              ("Conference Table", "TABLE"), ("Lamp", "MISC"), ("Whiteboard", "MISC"),
              ("Mobile Pedestal", "MISC"), ("Storage Unit/Drawers", "MISC"), ("Bookshelf", "MISC")]
ACCOUNTS = [("10100", "Checking account"), ("10700", "Inventory"), ("13100", "Accounts Receivable"),
            ("20100", "Accounts Payable"), ("40100", "Sales, Retail"), ("50100", "Cost of Goods Sold"),
            ("60100", "Rent"), ("61200", "Electricity"), ("63100", "Travel")]
PEOPLE = ["robert.townes", "helen.ray", "krystal.york", "toby.rhode", "jim.glynn", "ana.lópez"]
GL_DOC_TYPES = [BLANK_ENUM, "Invoice", "Payment", "Credit_x0020_Memo"]


def fmt_dt(dt: datetime) -> str:
    """UTC at SQL datetime precision (ms ending in 0/3/7), trailing zeros dropped: .273Z/.37Z/Z.

    Rounds UP, so a stamp is never earlier than the instant it records (`gt watermark` holds).
    """
    dt = dt.astimezone(timezone.utc) if dt.tzinfo else dt.replace(tzinfo=timezone.utc)  # naive means UTC
    ms = -(-dt.microsecond // 1000)
    while ms % 10 not in (0, 3, 7):
        ms += 1
    dt = dt.replace(microsecond=0) + timedelta(seconds=ms // 1000)
    frac = f".{ms % 1000:03d}".rstrip("0") if ms % 1000 else ""
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


@lru_cache(maxsize=1 << 18)
def parse_dt(value: str) -> datetime | None:
    """Datetime text -> aware datetime (naive means UTC); None if it is not a datetime."""
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def dec(x: float) -> float | int:
    """BC decimals: JSON numbers, integral values without `.0`."""
    x = round(x, 2)
    return int(x) if x == int(x) else x


def etag_for(*parts: str) -> str:
    """Weak etag with BC's inner shape '<n>;<digits>;00;' base64-encoded."""
    digits = str(int.from_bytes(hashlib.blake2b("|".join(parts).encode(), digest_size=9).digest(), "big"))
    return 'W/"' + base64.b64encode(f"'{len(digits) - 1};{digits};00;'".encode()).decode() + '"'


class Factory:
    """Makes records for one company. Same rng seed -> same ids, numbers, names, timestamps."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        # BC SystemIds: sequential in SQL Server order (first byte fastest), from more than one server tail.
        self.ids = SequentialIds(rng)
        self.clock = SEED_BASE
        self.counters: dict[str, int] = {}
        self.ref = {k: self.new_id() for k in (
            "pt14", "pt30", "pm_bank", "tax_atl", "tax_chi", "uom_pcs", "uom_hour", "TABLE", "CHAIR",
            "MISC", "tg_furn", "tg_labor", "gpp_retail", "gpp_service", "ipg_resale", "sm_exw", "eur")}
        self.accounts = [(no, name, self.new_id()) for no, name in ACCOUNTS]

    def new_id(self) -> str:
        return self.ids.new_id()

    def seed_stamp(self) -> str:
        """Seeded rows: a batch a few hundred ms apart; ~30% touched again within 100 days."""
        self.clock += timedelta(milliseconds=self.rng.randint(20, 400))
        late = timedelta(days=self.rng.uniform(1, 100)) if self.rng.random() < 0.3 else timedelta()
        return fmt_dt(self.clock + late)

    def next_number(self, entity_set: str) -> Any:
        i = self.counters.get(entity_set, 0)
        self.counters[entity_set] = i + 1
        if entity_set in ("vendors", "customers"):
            return str(10000 + 1000 * i) if i < 90 else f"{entity_set[0].upper()}{i:06d}"
        if entity_set == "items":
            return f"{1896 + 4 * i}-{'W' if i % 4 == 3 else 'S'}" if i < 1000 else f"I{i:06d}"
        if entity_set == "salesOrders":
            return str(101001 + i)
        if entity_set == "salesInvoices":
            return f"PS-INV{103001 + i}"
        if entity_set == "salesCreditMemos":
            return f"PS-CM{104001 + i}"
        if entity_set == "purchaseInvoices":
            return str(108001 + i)
        if entity_set == "purchaseOrders":  # not an entity set here: numbers of the orders invoices name
            return str(106001 + i)
        if entity_set == "accounts":
            return f"7{i:04d}"
        return i + 1  # ledger entry numbers

    def _party(self, i: int, names: list[str]) -> dict[str, Any]:
        r = self.rng
        city, state, zip_ = r.choice(CITIES)
        name = names[i] if i < len(names) else f"{r.choice(NAME_A)} {r.choice(NAME_B)} {r.choice(NAME_C)}"
        email = "" if i % 11 == 4 else f"{r.choice(PEOPLE)}@{'contoso' if i % 2 else 'fabrikam'}.com"
        return {"addressLine1": f"{r.randint(1, 999)} {r.choice(STREETS)}", "addressLine2": "",
                "city": city, "state": state, "country": "US", "postalCode": zip_,
                "phoneNumber": "" if i % 3 == 0 else f"425555{r.randint(1000, 9999)}",
                "email": email, "website": "", "displayName": name}

    def vendor(self, i: int) -> dict[str, Any]:
        p = self._party(i, VENDOR_NAMES)
        eur = i % 9 == 5
        return {"id": self.new_id(), "number": self.next_number("vendors"), "displayName": p["displayName"],
                **{k: p[k] for k in ("addressLine1", "addressLine2", "city", "state", "country",
                                     "postalCode", "phoneNumber", "email", "website")},
                "taxRegistrationNumber": "", "currencyId": self.ref["eur"] if eur else ZERO_GUID,
                "currencyCode": "EUR" if eur else "USD", "irs1099Code": "",
                "paymentTermsId": self.ref["pt30"], "paymentMethodId": self.ref["pm_bank"],
                "taxLiable": i % 4 != 1, "blocked": "Payment" if i % 15 == 7 else BLANK_ENUM,
                "balance": dec(self.rng.randint(0, 2_000_000) / 100), "lastModifiedDateTime": self.seed_stamp()}

    def customer(self, i: int) -> dict[str, Any]:
        p = self._party(i, CUSTOMER_NAMES)
        tax = "tax_chi" if p["city"] == "Chicago" else "tax_atl"
        return {"id": self.new_id(), "number": self.next_number("customers"), "displayName": p["displayName"],
                "type": "Person" if i % 7 == 3 else "Company",
                **{k: p[k] for k in ("addressLine1", "addressLine2", "city", "state", "country",
                                     "postalCode", "phoneNumber", "email", "website")},
                "salespersonCode": self.rng.choice(["JO", "PS", ""]),
                "balanceDue": dec(self.rng.randint(0, 900_000) / 100), "creditLimit": self.rng.choice([0, 5000, 25000]),
                "taxLiable": True, "taxAreaId": self.ref[tax],
                "taxAreaDisplayName": "CHICAGO, IL" if tax == "tax_chi" else "ATLANTA, GA",
                "taxRegistrationNumber": "", "currencyId": ZERO_GUID, "currencyCode": "USD",
                "paymentTermsId": self.ref["pt14"], "shipmentMethodId": ZERO_GUID, "paymentMethodId": ZERO_GUID,
                "blocked": "Ship" if i % 13 == 9 else BLANK_ENUM, "lastModifiedDateTime": self.seed_stamp()}

    def item(self, i: int) -> dict[str, Any]:
        r = self.rng
        kind, cat = ITEM_KINDS[(i // len(ITEM_CITIES)) % len(ITEM_KINDS)]
        name = f"{ITEM_CITIES[i % len(ITEM_CITIES)]} {kind}"
        if i >= len(ITEM_CITIES) * len(ITEM_KINDS):
            name += f" {i // (len(ITEM_CITIES) * len(ITEM_KINDS)) + 1}"
        typ = "Service" if i % 17 == 6 else "Non_x002D_Inventory" if i % 19 == 11 else "Inventory"
        service = typ == "Service"
        cost = r.randint(500, 90_000) / 100
        return {"id": self.new_id(), "number": self.next_number("items"), "displayName": name,
                "displayName2": "", "type": typ, "itemCategoryId": self.ref[cat], "itemCategoryCode": cat,
                "blocked": i % 23 == 13, "gtin": "" if i % 2 else f"{r.randint(10**12, 10**13 - 1)}",
                "inventory": r.choice([0, r.randint(1, 500), r.randint(1, 60)]) if typ == "Inventory" else 0,
                "unitPrice": dec(cost * r.choice([1.25, 1.4, 1.6])), "priceIncludesTax": False, "unitCost": dec(cost),
                "taxGroupId": self.ref["tg_labor" if service else "tg_furn"],
                "taxGroupCode": "LABOR" if service else "FURNITURE",
                "baseUnitOfMeasureId": self.ref["uom_hour" if service else "uom_pcs"],
                "baseUnitOfMeasureCode": "HOUR" if service else "PCS",
                "generalProductPostingGroupId": self.ref["gpp_service" if service else "gpp_retail"],
                "generalProductPostingGroupCode": "SERVICES" if service else "RETAIL",
                "inventoryPostingGroupId": ZERO_GUID if service else self.ref["ipg_resale"],
                "inventoryPostingGroupCode": "" if service else "RESALE",
                "lastModifiedDateTime": self.seed_stamp()}

    def item_ledger_entry(self, item: dict[str, Any], qty: float, stamp: str, doc: str = "START") -> dict[str, Any]:
        return {"id": self.new_id(), "entryNumber": self.next_number("itemLedgerEntries"),
                "itemNumber": item["number"], "postingDate": stamp[:10],
                "entryType": "Positive_x0020_Adjmt_x002E_" if qty >= 0 else "Negative_x0020_Adjmt_x002E_",
                "sourceNumber": "", "sourceType": BLANK_ENUM, "documentNumber": doc, "documentType": BLANK_ENUM,
                "description": "", "quantity": dec(qty), "salesAmountActual": 0,
                "costAmountActual": dec(qty * float(item.get("unitCost") or 0)), "lastModifiedDateTime": stamp}

    def sales_order(self, customer: dict[str, Any]) -> dict[str, Any]:
        d = (SEED_BASE.date() - timedelta(days=self.rng.randint(0, 60))).isoformat()
        addr = {f"{pre}{k}": customer.get(src, "") for pre in ("sellTo", "billTo", "shipTo")
                for k, src in (("AddressLine1", "addressLine1"), ("AddressLine2", "addressLine2"),
                               ("City", "city"), ("Country", "country"), ("State", "state"),
                               ("PostCode", "postalCode"))}
        return {"id": self.new_id(), "number": self.next_number("salesOrders"), "externalDocumentNumber": "",
                "orderDate": d, "postingDate": d, "customerId": customer["id"],
                "customerNumber": customer["number"], "customerName": customer["displayName"],
                "billToName": customer["displayName"], "billToCustomerId": customer["id"],
                "billToCustomerNumber": customer["number"], "shipToName": customer["displayName"],
                "shipToContact": "", **addr, "shortcutDimension1Code": "", "shortcutDimension2Code": "",
                "currencyId": ZERO_GUID, "currencyCode": "USD", "pricesIncludeTax": False,
                "paymentTermsId": self.ref["pt14"], "shipmentMethodId": self.ref["sm_exw"],
                "salesperson": customer.get("salespersonCode", ""), "partialShipping": True,
                "requestedDeliveryDate": BLANK_DATE, "discountAmount": 0, "discountAppliedBeforeTax": False,
                "totalAmountExcludingTax": 0, "totalTaxAmount": 0, "totalAmountIncludingTax": 0,
                "fullyShipped": False, "status": self.rng.choice(["Draft", "Open", "Open"]),
                "lastModifiedDateTime": self.seed_stamp(), "phoneNumber": customer.get("phoneNumber", ""),
                "email": customer.get("email", "")}

    def order_line(self, order: dict[str, Any], seq: int, item: dict[str, Any], qty: float,
                   price: float) -> dict[str, Any]:
        z = 0
        line = {"id": self.new_id(), "documentId": order["id"], "sequence": seq, "itemId": item["id"],
                "accountId": ZERO_GUID, "lineType": "Item", "lineObjectNumber": item["number"],
                "description": item["displayName"], "description2": "",
                "unitOfMeasureId": item["baseUnitOfMeasureId"], "unitOfMeasureCode": item["baseUnitOfMeasureCode"],
                "quantity": dec(qty), "unitPrice": dec(price), "discountAmount": z, "discountPercent": z,
                "discountAppliedBeforeTax": False, "amountExcludingTax": z, "taxCode": item["taxGroupCode"],
                "taxPercent": 6 if item["taxGroupCode"] == "FURNITURE" else 0, "totalTaxAmount": z,
                "amountIncludingTax": z, "invoiceDiscountAllocation": z, "netAmount": z, "netTaxAmount": z,
                "netAmountIncludingTax": z, "shipmentDate": order["orderDate"], "shippedQuantity": z,
                "invoicedQuantity": z, "invoiceQuantity": dec(qty), "shipQuantity": dec(qty),
                "itemVariantId": ZERO_GUID, "locationId": ZERO_GUID}
        return price_line(line)

    def gl_pair(self) -> list[dict[str, Any]]:
        """Two balanced entries (debit one account, credit another) of one document."""
        r = self.rng
        (da, dn, did), (ca, cn, cid) = r.sample(self.accounts, 2)
        amount, stamp = dec(r.randint(100, 5_000_000) / 100), self.seed_stamp()
        day = (date(2024, 1, 1) + timedelta(days=r.randint(0, 420))).isoformat()
        doc, typ = f"G{r.randint(1000, 99999):05d}", r.choice(GL_DOC_TYPES)
        out = []
        for acc_no, acc_name, acc_id, debit in ((da, dn, did, amount), (ca, cn, cid, 0)):
            out.append({"id": self.new_id(), "entryNumber": self.next_number("generalLedgerEntries"),
                        "postingDate": day, "documentNumber": doc, "documentType": typ, "accountId": acc_id,
                        "accountNumber": acc_no, "description": f"{acc_name} {doc}",
                        "debitAmount": debit, "creditAmount": 0 if debit else amount,
                        "additionalCurrencyDebitAmount": 0, "additionalCurrencyCreditAmount": 0,
                        "lastModifiedDateTime": stamp})
        return out


def price_line(line: dict[str, Any]) -> dict[str, Any]:
    """Recompute a sales line's amounts from quantity, unit price, discount and tax %."""
    net = dec(float(line["quantity"] or 0) * float(line["unitPrice"] or 0) - float(line["discountAmount"] or 0))
    tax = dec(net * float(line["taxPercent"] or 0) / 100)
    line.update(amountExcludingTax=net, totalTaxAmount=tax, amountIncludingTax=dec(net + tax),
                netAmount=net, netTaxAmount=tax, netAmountIncludingTax=dec(net + tax))
    return line
