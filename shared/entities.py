"""The data types the service syncs, declared once each: BC source, platform table, model and
behaviours.

Adding a data type means adding a model and one EntityType here; the engine, endpoints, logs
and test connection work from these declarations. Model field aliases are BC's property names,
so the `$select` list is derived from them. What makes a type special is declared as a
behaviour (plain data here; the sync carries them out, shared/sync/behaviours.py):

    Lines(type, parent_key)  a document's lines: read with it ($expand), written before it in
                             their own table, removed when BC no longer has them, embedded as
                             `lines` by the read API
    StockFeed()              stock postings do not touch the item: after a delta, item ledger
                             entries name the items to re-read (shared/sync/stock.py)
    Lineage(source, field,   the type's documents are made from `source` documents and name
            backlink)        them in `field`: a source that leaves BC because it was posted is
                             flagged `deletedReason: "posted"` (shared/sync/lineage.py)

Value types come from `shared.bcvalues`; `shared.mapping` reads these declarations (one
direction, no circle)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field

from shared.bcvalues import BCDate, BCDateTime, Flag, Guid, Integer, Money, Quantity, RequiredInteger, RequiredText, Text


class _BCModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    sourceModifiedAt: BCDateTime = Field(default=None, alias="lastModifiedDateTime")


class _Address(_BCModel):
    addressLine1: Text = None
    addressLine2: Text = None
    city: Text = None
    state: Text = None
    country: Text = None
    postalCode: Text = None
    phoneNumber: Text = None
    email: Text = None
    website: Text = None


class Supplier(_Address):
    number: Text = None
    name: RequiredText = Field(alias="displayName")
    taxRegistrationNumber: Text = None
    currencyCode: Text = None
    paymentTermsId: Guid = None
    blocked: Text = None
    balance: Money = None


class Product(_BCModel):
    number: Text = None
    name: RequiredText = Field(alias="displayName")
    type: Text = None
    itemCategoryCode: Text = None
    blocked: Flag = None
    gtin: Text = None
    inventory: Quantity = None
    unitPrice: Money = None
    unitCost: Money = None
    baseUnitOfMeasureCode: Text = None


class Customer(_Address):
    number: Text = None
    name: RequiredText = Field(alias="displayName")
    type: Text = None
    taxRegistrationNumber: Text = None
    currencyCode: Text = None
    balanceDue: Money = None
    creditLimit: Money = None
    blocked: Text = None


class _SalesLine(_BCModel):
    """The lines of sales documents (orders, invoices, credit memos) share BC's line shape."""

    sequence: Integer = None
    itemId: Guid = None
    accountId: Guid = None
    lineType: Text = None
    lineObjectNumber: Text = None
    description: Text = None
    unitOfMeasureCode: Text = None
    quantity: Quantity = None
    unitPrice: Money = None
    discountAmount: Money = None
    discountPercent: Quantity = None
    amountExcludingTax: Money = None
    totalTaxAmount: Money = None
    amountIncludingTax: Money = None
    shipmentDate: BCDate = None


class SalesOrderLine(_SalesLine):
    pass


class SalesInvoiceLine(_SalesLine):
    pass


class SalesCreditMemoLine(_SalesLine):
    pass


class PurchaseInvoiceLine(_BCModel):
    sequence: Integer = None
    itemId: Guid = None
    accountId: Guid = None
    lineType: Text = None
    lineObjectNumber: Text = None
    description: Text = None
    unitOfMeasureCode: Text = None
    quantity: Quantity = None
    unitCost: Money = None
    discountAmount: Money = None
    discountPercent: Quantity = None
    amountExcludingTax: Money = None
    totalTaxAmount: Money = None
    amountIncludingTax: Money = None
    expectedReceiptDate: BCDate = None


class SalesOrder(_BCModel):
    number: RequiredText
    externalDocumentNumber: Text = None
    orderDate: BCDate = None
    postingDate: BCDate = None
    customerId: Guid = None
    customerNumber: Text = None
    customerName: Text = None
    currencyCode: Text = None
    status: Text = None
    fullyShipped: Flag = None
    requestedDeliveryDate: BCDate = None
    totalAmountExcludingTax: Money = None
    totalTaxAmount: Money = None
    totalAmountIncludingTax: Money = None


class LedgerEntry(_BCModel):
    entryNumber: RequiredInteger
    postingDate: BCDate = None
    documentNumber: Text = None
    documentType: Text = None
    accountId: Guid = None
    accountNumber: Text = None
    description: Text = None
    debitAmount: Money = None
    creditAmount: Money = None


class _Totals(_BCModel):
    currencyCode: Text = None
    status: Text = None
    pricesIncludeTax: Flag = None
    discountAmount: Money = None
    totalAmountExcludingTax: Money = None
    totalTaxAmount: Money = None
    totalAmountIncludingTax: Money = None


class _Document(_Totals):
    """What every posted document header has: its number and dates besides the totals."""

    number: RequiredText
    postingDate: BCDate = None
    dueDate: BCDate = None


class _CustomerDocument(_Document):
    """A sales document's customer and bill-to customer."""

    externalDocumentNumber: Text = None
    customerId: Guid = None
    customerNumber: Text = None
    customerName: Text = None
    billToCustomerId: Guid = None
    billToCustomerNumber: Text = None
    billToName: Text = None


class SalesInvoice(_CustomerDocument):
    """A posted (or draft) sales invoice; `orderExternalId` names the sales order it was
    posted from (BC's orderId; the zero GUID of an invoice made without an order -> absent)."""

    invoiceDate: BCDate = None
    customerPurchaseOrderReference: Text = None
    orderExternalId: Guid = Field(default=None, alias="orderId")
    orderNumber: Text = None
    remainingAmount: Money = None


class SalesCreditMemo(_CustomerDocument):
    """A return or correction; `invoiceExternalId` names the invoice it credits (BC's invoiceId)."""

    creditMemoDate: BCDate = None
    invoiceExternalId: Guid = Field(default=None, alias="invoiceId")
    invoiceNumber: Text = None


class PurchaseInvoice(_Document):
    """What was bought from which supplier; `orderExternalId` names the purchase order (not synced)."""

    vendorInvoiceNumber: Text = None
    invoiceDate: BCDate = None
    vendorId: Guid = None
    vendorNumber: Text = None
    vendorName: Text = None
    payToVendorId: Guid = None
    payToVendorNumber: Text = None
    payToName: Text = None
    orderExternalId: Guid = Field(default=None, alias="orderId")
    orderNumber: Text = None


class Account(_BCModel):
    """The chart of accounts: what G/L entries' accountId and accountNumber mean."""

    number: RequiredText
    name: Text = Field(default=None, alias="displayName")
    category: Text = None
    subCategory: Text = None
    accountType: Text = None
    blocked: Flag = None
    directPosting: Flag = None
    netChange: Money = None


@dataclass(frozen=True)
class Lines:
    """Behaviour: the type is a document whose lines come with it (BC's navigation property,
    `$expand`ed) and live in their own table under the document's key."""

    type: "EntityType"  # the lines' own declaration (entity_set = BC's navigation property)
    parent_key: str  # the line property naming its document's externalId
    name: str = "lines"  # where the read API embeds them


@dataclass(frozen=True)
class StockFeed:
    """Behaviour: stock postings do not change the record's lastModifiedDateTime; after each
    delta, `ledger_set` entries posted since the stock mark name (by `number_field`) the
    records (by `match_field`) to re-read."""

    ledger_set: str = "itemLedgerEntries"
    number_field: str = "itemNumber"
    match_field: str = "number"


@dataclass(frozen=True)
class Lineage:
    """Behaviour: the type's documents are made from documents of `source` (a sales invoice
    posted from a sales order) and name them in `field`. A small index links each source to
    its documents; when the source leaves BC (flagged deletedInBC) a document naming it makes
    the reason "posted" instead of "deleted", and `backlink` on the source lists them
    (design.md §11)."""

    source: str  # the data type key of the source documents
    field: str  # the property naming the source's externalId
    backlink: str  # the property listing the documents on a flagged source


Behaviour = Union[Lines, StockFeed, Lineage]


@dataclass(frozen=True)
class EntityType:
    key: str  # the API's data type key
    log_type: str  # entityType in sync logs
    entity_set: str  # BC API v2.0 entity set (or navigation property for lines)
    table: str  # platform table
    model: type[_BCModel]
    behaviours: tuple[Any, ...] = ()  # declared behaviours (Lines, StockFeed, ...)

    @property
    def navigation(self) -> str:
        return self.entity_set

    @property
    def lines(self) -> Lines | None:
        """The document's lines, when it declares them (mapping and the read API embed them)."""
        return next((b for b in self.behaviours if isinstance(b, Lines)), None)

    def select(self, extra: list[str] = ()) -> list[str]:  # type: ignore[assignment]
        fields = ["id"] + [f.alias or name for name, f in self.model.model_fields.items()]
        return list(dict.fromkeys(fields + list(extra)))


def _lines(key: str, log_type: str, entity_set: str, table: str, model: type[_BCModel]) -> EntityType:
    """The declaration of a document's lines (BC's navigation property is their entity set)."""
    return EntityType(key, log_type, entity_set, table, model)


SALES_ORDER_LINES = _lines("salesOrderLines", "SALES_ORDER_LINE", "salesOrderLines", "SalesOrderLines", SalesOrderLine)
SALES_INVOICE_LINES = _lines("salesInvoiceLines", "SALES_INVOICE_LINE", "salesInvoiceLines", "SalesInvoiceLines", SalesInvoiceLine)
SALES_CREDIT_MEMO_LINES = _lines("salesCreditMemoLines", "SALES_CREDIT_MEMO_LINE", "salesCreditMemoLines", "SalesCreditMemoLines", SalesCreditMemoLine)
PURCHASE_INVOICE_LINES = _lines("purchaseInvoiceLines", "PURCHASE_INVOICE_LINE", "purchaseInvoiceLines", "PurchaseInvoiceLines", PurchaseInvoiceLine)

#: Lines of documents other than sales orders name their document here (sales order lines keep
#: `orderExternalId`, as they always have).
DOCUMENT_KEY = "documentExternalId"

ENTITY_TYPES: dict[str, EntityType] = {
    e.key: e
    for e in (
        EntityType("suppliers", "SUPPLIER", "vendors", "Suppliers", Supplier),
        EntityType("products", "PRODUCT", "items", "Products", Product, (StockFeed(),)),
        EntityType("customers", "CUSTOMER", "customers", "Customers", Customer),
        EntityType("salesOrders", "SALES_ORDER", "salesOrders", "SalesOrders", SalesOrder, (Lines(SALES_ORDER_LINES, "orderExternalId"),)),
        EntityType("ledgerEntries", "LEDGER_ENTRY", "generalLedgerEntries", "LedgerEntries", LedgerEntry),
        EntityType("salesInvoices", "SALES_INVOICE", "salesInvoices", "SalesInvoices", SalesInvoice,
                   (Lines(SALES_INVOICE_LINES, DOCUMENT_KEY), Lineage("salesOrders", "orderExternalId", "invoiceExternalIds"))),
        EntityType("salesCreditMemos", "SALES_CREDIT_MEMO", "salesCreditMemos", "SalesCreditMemos", SalesCreditMemo, (Lines(SALES_CREDIT_MEMO_LINES, DOCUMENT_KEY),)),
        EntityType("purchaseInvoices", "PURCHASE_INVOICE", "purchaseInvoices", "PurchaseInvoices", PurchaseInvoice, (Lines(PURCHASE_INVOICE_LINES, DOCUMENT_KEY),)),
        EntityType("accounts", "ACCOUNT", "accounts", "Accounts", Account),
    )
}
LOG_TYPES = {e.log_type: e for e in ENTITY_TYPES.values()}
DEFAULT_ENTITIES = ["suppliers", "products"]


def lineages_into(source_key: str) -> list[tuple[EntityType, Lineage]]:
    """The document types made from `source_key` documents, with their declared lineage."""
    return [(e, b) for e in ENTITY_TYPES.values() for b in e.behaviours if isinstance(b, Lineage) and b.source == source_key]


#: Properties the service writes on records itself: a field mapping may not target them.
SERVICE_PROPERTIES = frozenset(
    {lines.parent_key for e in ENTITY_TYPES.values() if (lines := e.lines) is not None}
    | {b.backlink for e in ENTITY_TYPES.values() for b in e.behaviours if isinstance(b, Lineage)}
)
