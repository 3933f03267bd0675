"""Thread-safe in-memory company data: entity sets with cached sort orders, plus BC's write rules.

Big sets (100k rows) page cheaply: an ordering is sorted once per change and a `$skiptoken`
is found with bisect; only the rows of the page being served are copied.
"""
from __future__ import annotations

import pickle
import random
import re
import threading
from bisect import bisect_left, bisect_right
from datetime import datetime
from typing import Any, Callable, Iterator

from . import documents as docs
from . import posting
from .guids import GuidKey, sql_key
from .seed import BLANK_DATE, BLANK_ENUM, ZERO_GUID, Factory, dec, etag_for, fmt_dt, parse_dt, price_line

# entity set -> (OData type name, primary key used for default ordering)
ENTITY_SETS: dict[str, tuple[str, str]] = {
    "vendors": ("vendor", "number"), "items": ("item", "number"), "customers": ("customer", "number"),
    "salesOrders": ("salesOrder", "number"), "salesOrderLines": ("salesOrderLine", "sequence"),
    "generalLedgerEntries": ("generalLedgerEntry", "entryNumber"),
    "itemLedgerEntries": ("itemLedgerEntry", "entryNumber"), "companies": ("company", "name"),
    "salesInvoices": ("salesInvoice", "number"), "salesInvoiceLines": ("salesInvoiceLine", "sequence"),
    "salesCreditMemos": ("salesCreditMemo", "number"), "salesCreditMemoLines": ("salesCreditMemoLine", "sequence"),
    "purchaseInvoices": ("purchaseInvoice", "number"), "purchaseInvoiceLines": ("purchaseInvoiceLine", "sequence"),
    "accounts": ("account", "number"),
}
LINE_SETS = docs.LINE_SETS
#: sets without webhooks (BC: lines and ledger entries cannot be subscribed to)
NO_WEBHOOKS = frozenset(LINE_SETS.values()) | {"itemLedgerEntries"}
#: what add_company seeds, in this order (accounts first: G/L entries name them)
SEEDED = ("accounts", "vendors", "customers", "items", "salesOrders", "generalLedgerEntries", "salesInvoices",
          "salesCreditMemos", "purchaseInvoices")
DEMO_SIZES = {"vendors": 45, "items": 230, "customers": 60, "salesOrders": 40, "generalLedgerEntries": 500,
              "accounts": len(docs.CHART), "salesInvoices": 80, "salesCreditMemos": 8, "purchaseInvoices": 35}
SMALL_SIZES = {"vendors": 5, "items": 7, "customers": 3, "salesOrders": 2, "generalLedgerEntries": 10,
               "accounts": len(docs.CHART), "salesInvoices": 3, "salesCreditMemos": 1, "purchaseInvoices": 2}


_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def edm_type(field: str, sample: Any) -> str:
    """OData type of a property, inferred from a template value (enough for $filter checks)."""
    if isinstance(sample, bool):
        return "Edm.Boolean"
    if isinstance(sample, (int, float)):
        return "Edm.Int32" if field in ("entryNumber", "sequence", "timestamp") else "Edm.Decimal"
    if field == "id" or sample == ZERO_GUID or (field.endswith("Id") and _GUID.match(str(sample))):
        return "Edm.Guid"
    if field.endswith("DateTime") or field in ("systemCreatedAt", "systemModifiedAt"):
        return "Edm.DateTimeOffset"
    return "Edm.Date" if sample == BLANK_DATE or field.endswith("Date") else "Edm.String"


def _sv(value: Any, typ: str, guid_key: GuidKey = sql_key) -> tuple[int, Any]:
    """Sort value that never raises on mixed types (tests store odd values on purpose); GUIDs
    sort by `guid_key` (SQL Server's uniqueidentifier order unless the text reading is played)."""
    if value is None:
        return (0, 0)
    if isinstance(value, (bool, int, float)):
        return (1, float(value))
    if typ == "Edm.DateTimeOffset" and (dt := parse_dt(str(value))) is not None:
        return (1, dt.timestamp())
    return (2, guid_key(str(value)) if typ == "Edm.Guid" else str(value))


class EntitySet:
    """Rows of one set keyed by id; deleted rows stay as tombstones so old skiptokens still sort."""

    def __init__(self, name: str, template: dict[str, Any], guid_key: GuidKey = sql_key) -> None:
        self.name = name
        self.guid_key = guid_key
        self.type_name, self.pk = ENTITY_SETS[name]
        self.types = {k: edm_type(k, v) for k, v in template.items() if k != "@odata.etag"}
        self.rows: dict[str, dict[str, Any]] = {}
        self.gone: dict[str, dict[str, Any]] = {}
        self._orders: dict[str, tuple[list[tuple[Any, ...]], list[str]]] = {}

    def set_guid_order(self, guid_key: GuidKey) -> None:
        """Play another reading of GUID order (cached orderings are dropped)."""
        self.guid_key = guid_key
        self._orders.clear()

    def sort_key(self, rec: dict[str, Any], field: str) -> tuple[Any, ...]:
        gk = self.guid_key
        if field == "id":  # unique: no tie-break needed (and the big sets sort by it)
            return (gk(str(rec.get("id"))),)
        pk = (_sv(rec.get(self.pk), self.types.get(self.pk, ""), gk), gk(str(rec.get("id"))))
        return pk if field == self.pk else (_sv(rec.get(field), self.types.get(field, ""), gk), *pk)

    def ordered(self, field: str) -> tuple[list[tuple[Any, ...]], list[str]]:
        """(sorted keys, ids in that order), cached until a change touches `field` or the key."""
        if field not in self._orders:
            pairs = sorted((self.sort_key(r, field), i) for i, r in self.rows.items())
            self._orders[field] = ([k for k, _ in pairs], [i for _, i in pairs])
        return self._orders[field]

    def changed(self, fields: Any = None) -> None:
        if fields is None or self.pk in fields:
            self._orders.clear()
        else:
            for f in fields:
                self._orders.pop(f, None)

    def put(self, rec: dict[str, Any]) -> None:
        self.rows[rec["id"]] = rec
        self.gone.pop(rec["id"], None)
        self.changed()

    def remove(self, rid: str) -> dict[str, Any]:
        rec = self.rows.pop(rid)
        self.gone[rid] = rec
        self.changed()
        return rec

    def scan(self, field: str, desc: bool, after: str | None) -> Iterator[dict[str, Any]]:
        """Rows in order, starting just after the row with id `after` (live or deleted)."""
        keys, ids = self.ordered(field)
        if after is None:
            start = len(ids) - 1 if desc else 0
        else:
            rec = self.rows.get(after) or self.gone.get(after)
            if rec is None:
                raise KeyError(after)
            k = self.sort_key(rec, field)
            start = bisect_left(keys, k) - 1 if desc else bisect_right(keys, k)
        rng = range(start, -1, -1) if desc else range(start, len(ids))
        return (self.rows[ids[i]] for i in rng)


_ITEM_STUB = {"id": ZERO_GUID, "number": "", "displayName": "", "baseUnitOfMeasureId": ZERO_GUID,
              "baseUnitOfMeasureCode": "", "taxGroupCode": ""}


def _blank(name: str) -> dict[str, Any]:
    """A record with every property blank, in BC's property order: schema and `.add` defaults."""
    f = Factory(random.Random(0))
    party = {"id": ZERO_GUID, "number": "", "displayName": "", "addressLine1": ""}
    rec: dict[str, Any] = {
        "vendors": lambda: f.vendor(0), "customers": lambda: f.customer(0), "items": lambda: f.item(0),
        "salesOrders": lambda: f.sales_order({**party, "number": "", "displayName": ""}),
        "salesOrderLines": lambda: f.order_line({"id": ZERO_GUID, "orderDate": BLANK_DATE}, 0, {
            "id": ZERO_GUID, "number": "", "displayName": "", "baseUnitOfMeasureId": ZERO_GUID,
            "baseUnitOfMeasureCode": "", "taxGroupCode": ""}, 0, 0),
        "generalLedgerEntries": lambda: f.gl_pair()[0],
        "salesInvoices": lambda: docs.sales_invoice(f, party, number="", day="2025-01-01"),
        "salesCreditMemos": lambda: docs.sales_credit_memo(f, party, number="", day="2025-01-01"),
        "purchaseInvoices": lambda: docs.purchase_invoice(f, party, number="", day="2025-01-01"),
        "salesInvoiceLines": lambda: docs.document_line(f, ZERO_GUID, 0, _ITEM_STUB, 0, 0),
        "salesCreditMemoLines": lambda: docs.document_line(f, ZERO_GUID, 0, _ITEM_STUB, 0, 0),
        "purchaseInvoiceLines": lambda: docs.document_line(f, ZERO_GUID, 0, _ITEM_STUB, 0, 0, purchase=True),
        "accounts": lambda: docs.account(f, "", "", "", "", "", ZERO_GUID),
        "itemLedgerEntries": lambda: f.item_ledger_entry({"number": ""}, 0, BLANK_DATE),
        "companies": lambda: {"id": ZERO_GUID, "systemVersion": "", "timestamp": 0, "name": "", "displayName": "",
                              "businessProfileId": "", "systemCreatedAt": "", "systemCreatedBy": ZERO_GUID,
                              "systemModifiedAt": "", "systemModifiedBy": ZERO_GUID},
    }[name]()
    for k, v in rec.items():
        if isinstance(v, bool):
            rec[k] = False
        elif isinstance(v, (int, float)):
            rec[k] = 0
        elif edm_type(k, v) == "Edm.Guid":
            rec[k] = ZERO_GUID
        elif edm_type(k, v) == "Edm.Date":
            rec[k] = BLANK_DATE
        elif isinstance(v, str):
            rec[k] = BLANK_ENUM if k in ("blocked", "documentType", "sourceType") else ""
    return rec


TEMPLATES = {name: _blank(name) for name in ENTITY_SETS}


class CompanyStore:
    """One company's data and the mutation API tests use; every call takes the simulator's lock."""

    def __init__(self, company_id: str, tenant_id: str, seed: int, lock: threading.RLock,
                 clock: Callable[[], datetime], guid_key: GuidKey = sql_key) -> None:
        self.id, self.tenant_id, self._lock, self._clock = company_id, tenant_id, lock, clock
        self.factory = Factory(random.Random(f"{seed}:{company_id}"))
        self.sets = {n: EntitySet(n, TEMPLATES[n], guid_key) for n in ENTITY_SETS if n != "companies"}
        #: document id -> ids of its lines (every header set's; SystemIds are unique per company)
        self.lines_by_order: dict[str, set[str]] = {}
        #: account number -> id (G/L entries of postings name their accounts)
        self.account_ids: dict[str, str] = {}
        self.extensions: dict[str, dict[str, Any]] = {}
        self._version = 0  # feeds etags so every write gets a fresh one
        #: rows written but not committed yet: (entity_set, row), invisible until `commit()`
        self.uncommitted: list[tuple[str, dict[str, Any]]] = []
        #: (entity_set, record id, changeType) -> None: the webhook hub listens here
        self.on_change: Callable[[str, str, str], None] | None = None

    # ---- helpers -------------------------------------------------------------------------
    def _set(self, entity_set: str) -> EntitySet:
        if entity_set not in self.sets:
            raise KeyError(f"unknown entity set {entity_set!r}")
        return self.sets[entity_set]

    def _stamp(self, when: datetime | str | None) -> str:
        return when if isinstance(when, str) else fmt_dt(when or self._clock())

    def _store(self, entity_set: str, rec: dict[str, Any]) -> dict[str, Any]:
        """Finish a new row (etag first, extension fields last) and index it."""
        for field, value in self.extensions.get(entity_set, {}).items():
            rec.setdefault(field, value(rec) if callable(value) else value)
        rec = {"@odata.etag": etag_for(rec["id"], str(rec.get("lastModifiedDateTime", ""))), **rec}
        self.sets[entity_set].put(rec)
        if entity_set in NO_WEBHOOKS and "documentId" in rec:
            self.lines_by_order.setdefault(rec["documentId"], set()).add(rec["id"])
        elif entity_set == "accounts":
            self.account_ids[rec["number"]] = rec["id"]
        elif entity_set == "generalLedgerEntries":
            self._net_change(rec)
        return rec

    def _net_change(self, entry: dict[str, Any]) -> None:
        """An account's netChange is a FlowField: it follows its entries, its timestamp does not."""
        acc = self.sets["accounts"].rows.get(entry.get("accountId") or "")
        if acc is not None:
            acc["netChange"] = dec(float(acc["netChange"] or 0) + float(entry.get("debitAmount") or 0)
                                   - float(entry.get("creditAmount") or 0))
            self.sets["accounts"].changed({"netChange"})

    def _changed(self, entity_set: str, record_id: str, change_type: str) -> None:
        if self.on_change is not None:
            self.on_change(entity_set, record_id, change_type)

    def _touch(self, entity_set: str, rec: dict[str, Any], when: datetime | str | None, fields: Any) -> None:
        """Stamp lastModifiedDateTime, give a new etag, drop sort orders the change may affect."""
        self._changed(entity_set, rec["id"], "updated")
        if "lastModifiedDateTime" in rec:
            rec["lastModifiedDateTime"] = self._stamp(when)
        self._version += 1
        rec["@odata.etag"] = etag_for(rec["id"], str(rec.get("lastModifiedDateTime")), str(self._version))
        self.sets[entity_set].changed(set(fields) | {"lastModifiedDateTime"})

    def lines(self, order_id: str, line_set: str = "salesOrderLines") -> list[dict[str, Any]]:
        """A document's lines (live rows) in sequence order."""
        rows = self.sets[line_set].rows
        return sorted((rows[i] for i in self.lines_by_order.get(order_id, ()) if i in rows),
                      key=lambda r: r["sequence"])

    def _reprice_order(self, order_id: str, when: datetime | str | None) -> None:
        order = self.sets["salesOrders"].rows[order_id]
        lines = self.lines(order_id)
        for out, src in (("totalAmountExcludingTax", "amountExcludingTax"), ("totalTaxAmount", "totalTaxAmount"),
                         ("totalAmountIncludingTax", "amountIncludingTax")):
            order[out] = dec(sum(float(ln[src] or 0) for ln in lines))
        self._touch("salesOrders", order, when, ("totalAmountExcludingTax", "totalTaxAmount", "totalAmountIncludingTax"))

    # ---- seeding ---------------------------------------------------------------------------
    _TRANSIENT = ("_lock", "_clock", "on_change")  # the simulator's own: never part of a snapshot

    def snapshot(self) -> bytes:
        """The data and the factory's position (what `restore` needs to continue identically)."""
        with self._lock:
            return pickle.dumps({k: v for k, v in vars(self).items() if k not in self._TRANSIENT}, protocol=5)

    def restore(self, snapshot: bytes) -> None:
        with self._lock:
            vars(self).update(pickle.loads(snapshot))

    def bulk(self, entity_set: str, count: int) -> None:
        """Generate `count` more realistic rows (orders get 1-5 lines; stocked items an ILE)."""
        with self._lock:
            f, r = self.factory, self.factory.rng
            start = f.counters.get(entity_set, 0)
            for i in range(start, start + count):
                if entity_set == "vendors":
                    self._store("vendors", f.vendor(i))
                elif entity_set == "customers":
                    self._store("customers", f.customer(i))
                elif entity_set == "items":
                    item = self._store("items", f.item(i))
                    if item["inventory"] > 0:
                        self._store("itemLedgerEntries", f.item_ledger_entry(
                            item, item["inventory"], item["lastModifiedDateTime"]))
                elif entity_set == "accounts":
                    if i < len(docs.CHART):
                        no, name, cat, sub, typ = docs.CHART[i]
                        f.counters["accounts"] = i + 1
                    else:
                        no, name, cat, sub, typ = f.next_number("accounts"), f"Account {i}", "Expense", "", "Posting"
                    known = {n: aid for n, _, aid in f.accounts}
                    self._store("accounts", docs.account(f, no, name, cat, sub, typ, known.get(no) or f.new_id()))
                elif entity_set in ("salesInvoices", "salesCreditMemos", "purchaseInvoices"):
                    if i == start:
                        parties = list(self.sets["vendors" if entity_set == "purchaseInvoices" else "customers"]
                                       .rows.values())
                        items = [x for x in self.sets["items"].rows.values() if x["type"] != "Service"]
                        invoices = list(self.sets["salesInvoices"].rows.values())
                    if parties and items:
                        self._seed_document(entity_set, r.choice(parties), items, invoices)
                elif entity_set == "generalLedgerEntries":
                    if (i - start) % 2 == 0:
                        pair = f.gl_pair()
                        if i + 1 == start + count:  # odd count: give back the unused entry number
                            pair, f.counters[entity_set] = pair[:1], f.counters[entity_set] - 1
                        for e in pair:
                            self._store("generalLedgerEntries", e)
                elif entity_set == "salesOrders":
                    if i == start:  # once per call: bulk orders must stay O(n)
                        customers = list(self.sets["customers"].rows.values()) or [self.add("customers", {})]
                        items = [x for x in self.sets["items"].rows.values() if x["type"] != "Service"]
                    order = self._store("salesOrders", f.sales_order(r.choice(customers)))
                    for n in range(r.randint(1, 5)) if items else ():
                        it = r.choice(items)
                        self._store("salesOrderLines", f.order_line(order, 10000 * (n + 1), it, r.randint(1, 20),
                                                                    it["unitPrice"]))
                    self._reprice_order(order["id"], order["lastModifiedDateTime"])
                else:
                    raise KeyError(f"bulk seeding not supported for {entity_set!r}")

    def _seed_document(self, entity_set: str, party: dict[str, Any], items: list[dict[str, Any]],
                       invoices: list[dict[str, Any]]) -> None:
        """One posted document of the seed: most invoices came from an order (since posted and
        gone from salesOrders), some were made directly; a few credit memos correct an invoice."""
        f, r = self.factory, self.factory.rng
        day, number = docs.seed_day(f), f.next_number(entity_set)
        if entity_set == "salesInvoices":
            from_order = r.random() < 0.7
            head = docs.sales_invoice(f, party, number=number, day=day, status=r.choice(["Open", "Paid", "Paid"]),
                                      order_id=f.new_id() if from_order else ZERO_GUID,
                                      order_number=str(100001 + f.counters["salesInvoices"]) if from_order else "")
        elif entity_set == "salesCreditMemos":
            inv = r.choice(invoices) if invoices and r.random() < 0.6 else None
            head = docs.sales_credit_memo(f, party, number=number, day=day, invoice_id=inv["id"] if inv else ZERO_GUID,
                                          invoice_number=inv["number"] if inv else "")
        else:
            from_order = r.random() < 0.8
            head = docs.purchase_invoice(f, party, number=number, day=day, status=r.choice(["Open", "Paid"]),
                                         order_id=f.new_id() if from_order else ZERO_GUID,
                                         order_number=f.next_number("purchaseOrders") if from_order else "")
        purchase = entity_set == "purchaseInvoices"
        lines = []
        for n in range(r.randint(1, 4)):
            it = r.choice(items)
            price = it["unitCost"] if purchase else it["unitPrice"]
            lines.append(docs.document_line(f, head["id"], 10000 * (n + 1), it, r.randint(1, 12), price,
                                            purchase=purchase, day=day))
        self._store(entity_set, docs.total_document(head, lines))
        for ln in lines:
            self._store(LINE_SETS[entity_set], ln)

    # ---- read API ------------------------------------------------------------------------
    def records(self, entity_set: str) -> list[dict[str, Any]]:
        """Copies of all rows in primary-key order."""
        with self._lock:
            es = self._set(entity_set)
            return [dict(es.rows[i]) for i in es.ordered(es.pk)[1]]

    def get(self, entity_set: str, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            rec = self._set(entity_set).rows.get(record_id)
            return dict(rec) if rec else None

    # ---- write API -----------------------------------------------------------------------
    def add(self, entity_set: str, fields: dict[str, Any], *, modified_at: datetime | str | None = None,
            committed: bool = True) -> dict[str, Any]:
        """Insert with BC defaults; id/number/etag/lastModifiedDateTime generated when missing.

        `committed=False` plays a long transaction: the row is stamped now (or `modified_at`) and
        numbered at insert, but stays invisible (no read, no notification) until `commit()`."""
        with self._lock:
            if not committed:
                return self._add_uncommitted(entity_set, fields, modified_at)
            if entity_set == "salesOrderLines":
                f = dict(fields)
                return self.add_order_line(f.pop("documentId"), f.pop("itemId"), f.pop("quantity", 1),
                                           f.pop("unitPrice", None), **f)
            es = self._set(entity_set)
            rec = {k: v for k, v in TEMPLATES[entity_set].items() if k != "@odata.etag"}
            rec["id"] = self.factory.new_id()
            key = es.pk
            rec[key] = self.factory.next_number(entity_set) if key in ("number", "entryNumber") else rec[key]
            if "lastModifiedDateTime" in rec:
                rec["lastModifiedDateTime"] = self._stamp(modified_at)
            rec.update(fields)
            rec = self._store(entity_set, rec)
            self._changed(entity_set, rec["id"], "created")
            if entity_set == "items" and float(rec.get("inventory") or 0) > 0:
                self._store("itemLedgerEntries", self.factory.item_ledger_entry(
                    rec, float(rec["inventory"]), rec["lastModifiedDateTime"]))
            return dict(rec)

    def _add_uncommitted(self, entity_set: str, fields: dict[str, Any],
                         modified_at: datetime | str | None) -> dict[str, Any]:
        es = self._set(entity_set)
        rec = {k: v for k, v in TEMPLATES[entity_set].items() if k != "@odata.etag"}
        rec["id"] = self.factory.new_id()
        if es.pk in ("number", "entryNumber"):
            rec[es.pk] = self.factory.next_number(entity_set)
        if "lastModifiedDateTime" in rec:
            rec["lastModifiedDateTime"] = self._stamp(modified_at)
        rec.update(fields)
        rec = {"@odata.etag": etag_for(rec["id"], str(rec.get("lastModifiedDateTime", ""))), **rec}
        self.uncommitted.append((entity_set, rec))
        return dict(rec)

    def commit(self) -> list[str]:
        """The long transaction commits: its rows appear at once, with the stamps they were
        written with (earlier than any watermark taken meanwhile); returns their ids."""
        with self._lock:
            rows, self.uncommitted = self.uncommitted, []
            for entity_set, rec in rows:
                self._store(entity_set, {k: v for k, v in rec.items() if k != "@odata.etag"})
                self._changed(entity_set, rec["id"], "created")
            return [rec["id"] for _, rec in rows]

    def edit_line_only(self, line_id: str, **fields: Any) -> dict[str, Any]:
        """Edit a sales order line's description or shipment date the way BC can: the line
        changes, the order's `lastModifiedDateTime` (and etag) do NOT, yet the order's webhook
        subscription is told the order was `updated`."""
        allowed = {"description", "description2", "shipmentDate"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"a line-only edit changes only {sorted(allowed)}, not {sorted(set(fields) - allowed)}")
        with self._lock:
            line = self.sets["salesOrderLines"].rows[line_id]
            line.update(fields)
            self._version += 1
            line["@odata.etag"] = etag_for(line_id, str(self._version))
            self.sets["salesOrderLines"].changed(set(fields))
            self._changed("salesOrders", line["documentId"], "updated")
            return dict(line)

    def update(self, entity_set: str, record_id: str, *, modified_at: datetime | str | None = None,
               **fields: Any) -> dict[str, Any]:
        """Change fields and stamp lastModifiedDateTime (now, or `modified_at` for a late commit)."""
        with self._lock:
            if entity_set == "salesOrderLines":
                line = self.sets["salesOrderLines"].rows[record_id]
                return self.update_order_line(line["documentId"], record_id, modified_at=modified_at, **fields)
            rec = self._set(entity_set).rows[record_id]
            when = fields.pop("lastModifiedDateTime", modified_at)
            rec.update(fields)
            self._touch(entity_set, rec, when, fields)
            return dict(rec)

    def delete(self, entity_set: str, record_id: str) -> None:
        with self._lock:
            if entity_set == "salesOrderLines":
                line = self.sets["salesOrderLines"].rows[record_id]
                return self.remove_order_line(line["documentId"], record_id)
            self._set(entity_set).remove(record_id)
            self._changed(entity_set, record_id, "deleted")
            for lid in self.lines_by_order.pop(record_id, set()) if entity_set in LINE_SETS else ():
                if lid in self.sets[LINE_SETS[entity_set]].rows:
                    self.sets[LINE_SETS[entity_set]].remove(lid)

    def post_stock(self, item_id: str, quantity: float, *, modified_at: datetime | str | None = None,
                   document_number: str = "") -> dict[str, Any]:
        """Post an item ledger entry; inventory changes but the item's timestamp does NOT (as in BC)."""
        with self._lock:
            item = self.sets["items"].rows[item_id]
            n = self.factory.counters.get("itemLedgerEntries", 0) + 1
            entry = self._store("itemLedgerEntries", self.factory.item_ledger_entry(
                item, quantity, self._stamp(modified_at), document_number or f"SIM-ADJ{n:05d}"))
            item["inventory"] = dec(float(item["inventory"] or 0) + quantity)
            self.sets["items"].changed({"inventory"})
            return dict(entry)

    def add_order_line(self, order_id: str, item_id: str, quantity: float = 1, unit_price: float | None = None,
                       *, modified_at: datetime | str | None = None, **fields: Any) -> dict[str, Any]:
        with self._lock:
            order, item = self.sets["salesOrders"].rows[order_id], self.sets["items"].rows[item_id]
            seq = max((ln["sequence"] for ln in self.lines(order_id)), default=0) + 10000
            price = item["unitPrice"] if unit_price is None else unit_price
            line = self.factory.order_line(order, seq, item, quantity, price)
            line.update(fields)
            line = self._store("salesOrderLines", price_line(line))
            self._reprice_order(order_id, modified_at)
            return dict(line)

    def add_order_lines(self, order_id: str, item_id: str, count: int, quantity: float = 1,
                        *, modified_at: datetime | str | None = None) -> list[str]:
        """Add `count` lines at once (one reprice; an order with thousands of lines in O(n))."""
        with self._lock:
            order, item = self.sets["salesOrders"].rows[order_id], self.sets["items"].rows[item_id]
            seq = max((ln["sequence"] for ln in self.lines(order_id)), default=0)
            ids = []
            for n in range(count):
                line = self.factory.order_line(order, seq + 10000 * (n + 1), item, quantity, item["unitPrice"])
                ids.append(self._store("salesOrderLines", price_line(line))["id"])
            self._reprice_order(order_id, modified_at)
            return ids

    def remove_order_lines(self, order_id: str, line_ids: list[str], *,
                           modified_at: datetime | str | None = None) -> None:
        """Remove several lines at once (one reprice)."""
        with self._lock:
            for line_id in line_ids:
                self.lines_by_order.get(order_id, set()).remove(line_id)
                self.sets["salesOrderLines"].remove(line_id)
            self._reprice_order(order_id, modified_at)

    def update_order_line(self, order_id: str, line_id: str, *, modified_at: datetime | str | None = None,
                          **fields: Any) -> dict[str, Any]:
        with self._lock:
            line = self.sets["salesOrderLines"].rows[line_id]
            if line["documentId"] != order_id:
                raise KeyError(line_id)
            line.update(fields)
            price_line(line)
            self._version += 1
            line["@odata.etag"] = etag_for(line_id, str(self._version))
            self.sets["salesOrderLines"].changed(set(fields))
            self._reprice_order(order_id, modified_at)
            return dict(line)

    def remove_order_line(self, order_id: str, line_id: str, *,
                          modified_at: datetime | str | None = None) -> None:
        with self._lock:
            self.lines_by_order.get(order_id, set()).remove(line_id)
            self.sets["salesOrderLines"].remove(line_id)
            self._reprice_order(order_id, modified_at)

    # ---- posting (see posting.py) ---------------------------------------------------------
    def post_sales_order(self, order_id: str, quantities: dict[str, float] | None = None) -> dict[str, Any]:
        """Ship and invoice an order (all that is left, or `quantities` per line id): returns the
        posted sales invoice; a fully posted order leaves salesOrders."""
        with self._lock:
            return posting.post_sales_order(self, order_id, quantities)

    def create_sales_invoice(self, customer_id: str, lines: list[tuple[str, float]]) -> dict[str, Any]:
        """An invoice posted without an order (orderId = zero GUID)."""
        with self._lock:
            return posting.create_sales_invoice(self, customer_id, lines)

    def post_sales_credit_memo(self, customer_id: str, lines: list[tuple[str, float]],
                               invoice_id: str | None = None) -> dict[str, Any]:
        with self._lock:
            return posting.post_sales_credit_memo(self, customer_id, lines, invoice_id)

    def post_purchase_invoice(self, vendor_id: str, lines: list[tuple[str, float]], *, from_order: bool = True,
                              unit_costs: dict[str, float] | None = None) -> dict[str, Any]:
        with self._lock:
            return posting.post_purchase_invoice(self, vendor_id, lines, from_order=from_order, unit_costs=unit_costs)

    def add_extension_field(self, entity_set: str, field: str, value: Any) -> None:
        """A property added by an extension: present on every row, now and on rows added later."""
        with self._lock:
            es = self._set(entity_set)
            self.extensions.setdefault(entity_set, {})[field] = value
            for rec in es.rows.values():
                rec[field] = value(rec) if callable(value) else value
            first = next(iter(es.rows.values()), {field: None if callable(value) else value})
            es.types[field] = edm_type(field, first[field]) if first[field] is not None else "Edm.String"
            es.changed({field})

