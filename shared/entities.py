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


class SalesOrderLine(_BCModel):
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


Behaviour = Union[Lines, StockFeed]


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

    @property
    def child(self) -> "EntityType | None":
        """The lines' declaration (kept for callers written before `lines`)."""
        lines = self.lines
        return lines.type if lines else None

    def select(self, extra: list[str] = ()) -> list[str]:  # type: ignore[assignment]
        fields = ["id"] + [f.alias or name for name, f in self.model.model_fields.items()]
        return list(dict.fromkeys(fields + list(extra)))


SALES_ORDER_LINES = EntityType(
    key="salesOrderLines",
    log_type="SALES_ORDER_LINE",
    entity_set="salesOrderLines",
    table="SalesOrderLines",
    model=SalesOrderLine,
)

ENTITY_TYPES: dict[str, EntityType] = {
    e.key: e
    for e in (
        EntityType("suppliers", "SUPPLIER", "vendors", "Suppliers", Supplier),
        EntityType("products", "PRODUCT", "items", "Products", Product, (StockFeed(),)),
        EntityType("customers", "CUSTOMER", "customers", "Customers", Customer),
        EntityType("salesOrders", "SALES_ORDER", "salesOrders", "SalesOrders", SalesOrder, (Lines(SALES_ORDER_LINES, "orderExternalId"),)),
        EntityType("ledgerEntries", "LEDGER_ENTRY", "generalLedgerEntries", "LedgerEntries", LedgerEntry),
    )
}
LOG_TYPES = {e.log_type: e for e in ENTITY_TYPES.values()}
DEFAULT_ENTITIES = ["suppliers", "products"]
