"""The data types the service syncs, declared once each: BC source, platform table, model.

Adding a data type means adding a model and one EntityType here; the engine, endpoints, logs
and test connection work from these declarations. Model field aliases are BC's property names,
so the `$select` list is derived from them."""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from shared.mapping import BCDate, BCDateTime, Flag, Guid, Integer, Money, Quantity, RequiredInteger, RequiredText, Text


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
class EntityType:
    key: str  # the API's data type key
    log_type: str  # entityType in sync logs
    entity_set: str  # BC API v2.0 entity set (or navigation property for a child)
    table: str  # platform table
    model: type[_BCModel]
    child: "EntityType | None" = None
    parent_key: str = ""  # on a child: the property naming its parent's externalId
    stock_feed: bool = False  # inventory changes arrive as item ledger entries, not as item edits

    @property
    def navigation(self) -> str:
        return self.entity_set

    def select(self, extra: list[str] = ()) -> list[str]:  # type: ignore[assignment]
        fields = ["id"] + [f.alias or name for name, f in self.model.model_fields.items()]
        return list(dict.fromkeys(fields + list(extra)))


SALES_ORDER_LINES = EntityType(
    key="salesOrderLines",
    log_type="SALES_ORDER_LINE",
    entity_set="salesOrderLines",
    table="SalesOrderLines",
    model=SalesOrderLine,
    parent_key="orderExternalId",
)

ENTITY_TYPES: dict[str, EntityType] = {
    e.key: e
    for e in (
        EntityType("suppliers", "SUPPLIER", "vendors", "Suppliers", Supplier),
        EntityType("products", "PRODUCT", "items", "Products", Product, stock_feed=True),
        EntityType("customers", "CUSTOMER", "customers", "Customers", Customer),
        EntityType("salesOrders", "SALES_ORDER", "salesOrders", "SalesOrders", SalesOrder, child=SALES_ORDER_LINES),
        EntityType("ledgerEntries", "LEDGER_ENTRY", "generalLedgerEntries", "LedgerEntries", LedgerEntry),
    )
}
LOG_TYPES = {e.log_type: e for e in ENTITY_TYPES.values()}
DEFAULT_ENTITIES = ["suppliers", "products"]
