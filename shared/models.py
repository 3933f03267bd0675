"""Request bodies, validated with pydantic; a 400 names the field and the rule."""
from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError as PydanticValidationError, field_validator, model_validator

from shared.bounds import check_name, check_property_size
from shared.clock import parse_iso
from shared.entities import DEFAULT_ENTITIES, ENTITY_TYPES, SERVICE_PROPERTIES
from shared.errors import ValidationError

GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
TENANT = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[A-Za-z0-9][A-Za-z0-9.-]{0,253})$"
ENVIRONMENT = r"^[A-Za-z0-9_-]{1,50}$"
PATTERN_RULES = {
    GUID: "must be a GUID such as 3f9a2c71-8b4e-4d05-a6c2-9e1b7d3f5a24",
    TENANT: "must be a tenant GUID or domain name",
    ENVIRONMENT: "must be an environment name: letters, digits, - and _, at most 50",
}
PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
#: Properties the service writes itself: a mapping may not overwrite them.
RESERVED_TARGETS = frozenset(
    {"PartitionKey", "RowKey", "Timestamp", "externalId", "externalSystem", "userId", "integrationId", "syncStatus",
     "syncError", "lastSyncedAt", "sourceModifiedAt", "contentHash", "sourceHash", "lineIds", "conflictAt", "platformModifiedAt",
     "deletedInBC", "deletedAt", "deletedReason", "changeKey"}
) | SERVICE_PROPERTIES
#: The data type keys, from their declarations (a new data type needs no change here).
EntityKey = Literal[tuple(ENTITY_TYPES)]  # type: ignore[valid-type]


def _check_url(value: str | None, field: str) -> str | None:
    """https only; plain http is accepted for loopback addresses (local development)."""
    if value is None:
        return None
    parts = urlsplit(value)
    if not parts.hostname or parts.scheme not in ("http", "https"):
        raise ValueError(f"{field} must be an absolute https URL")
    if parts.scheme == "http" and field == "baseUrl":
        raise ValueError("baseUrl must use https")
    if parts.scheme == "http":
        host = parts.hostname
        loopback = host == "localhost"
        try:
            loopback = loopback or ipaddress.ip_address(host).is_loopback
        except ValueError:
            pass
        if not loopback:
            raise ValueError(f"{field} must use https (plain http only for localhost)")
    if parts.username or parts.password:
        raise ValueError(f"{field} must not carry credentials")
    return value.rstrip("/") if field == "baseUrl" else value


class FieldMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=128)
    target: str = Field(min_length=1, max_length=128)
    type: Literal["text", "number", "decimal", "date", "boolean"]

    @field_validator("source", "target")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PROPERTY_NAME.fullmatch(value):  # fullmatch: `$` would let a trailing newline through
            raise ValueError("must be a property name: letters, digits and _, not starting with a digit")
        return value

    @field_validator("target")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_TARGETS:
            raise ValueError(f"'{value}' is written by the service itself and cannot be a mapping target")
        return value


FieldMappings = dict[EntityKey, list[FieldMapping]]


def _check_mappings(mappings: dict[str, list[FieldMapping]] | None) -> None:
    for key, items in (mappings or {}).items():
        model_fields = set(ENTITY_TYPES[key].model.model_fields)
        targets = [m.target for m in items]
        if len(targets) != len(set(targets)):
            raise ValueError(f"fieldMappings.{key}: each target may appear once")
        clash = sorted(set(targets) & model_fields)
        if clash:
            raise ValueError(f"fieldMappings.{key}: target '{clash[0]}' is a standard field of {key}")
        if len(items) > 100:
            raise ValueError(f"fieldMappings.{key}: at most 100 mappings")
    if mappings:
        check_property_size({k: [m.model_dump() for m in v] for k, v in mappings.items()}, "fieldMappings")


class _Checked(BaseModel):
    """URL and data-type-list rules shared by every body that has those fields."""

    @field_validator("baseUrl", "webhookUrl", check_fields=False)
    @classmethod
    def _url(cls, value: str | None, info: Any) -> str | None:
        return _check_url(value, info.field_name)

    @field_validator("name", check_fields=False)
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return check_name(value) if value is not None else None

    @field_validator("entities", check_fields=False)
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("must name at least one data type")
            if len(set(value)) != len(value):
                raise ValueError("must not repeat a data type")
        return value


class IntegrationCreate(_Checked):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    authMode: Literal["app", "delegated"] = "app"
    name: str = Field(min_length=1, max_length=200)
    tenantId: str = Field(pattern=TENANT)
    environment: str = Field(default="production", pattern=ENVIRONMENT)
    companyId: str = Field(pattern=GUID)
    clientId: str = Field(pattern=GUID)
    clientSecret: str = Field(min_length=1, max_length=1024)
    entities: list[EntityKey] = Field(default_factory=lambda: list(DEFAULT_ENTITIES))
    syncIntervalMinutes: StrictInt = Field(default=60, ge=5, le=1440)
    baseUrl: str | None = Field(default=None, max_length=500)
    fieldMappings: FieldMappings = Field(default_factory=dict)
    webhookUrl: str | None = Field(default=None, max_length=2000)
    realtime: StrictBool = False  # BC webhooks (design.md §10)

    @model_validator(mode="after")
    def _mappings(self) -> "IntegrationCreate":
        _check_mappings(self.fieldMappings)
        return self


class DelegatedIntegrationCreate(IntegrationCreate):
    """`authMode: delegated`: a person signs in later (authorize); the platform's own app
    registration is used, so the integration carries no clientId or clientSecret, and the
    company may be chosen after the sign-in."""

    authMode: Literal["app", "delegated"] = "delegated"
    companyId: str | None = Field(default=None, pattern=GUID)  # type: ignore[assignment]
    clientId: Any = None
    clientSecret: Any = None

    @model_validator(mode="after")
    def _no_app_credentials(self) -> "DelegatedIntegrationCreate":
        for name in ("clientId", "clientSecret"):
            if name in self.model_fields_set:
                raise ValueError(f"{name}: must be absent when authMode is delegated (the platform's own app registration is used)")
        return self


class AuthorizeBody(BaseModel):
    """Optional body of POST .../dynamics/authorize."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    loginHint: str | None = Field(default=None, min_length=1, max_length=256)


class IntegrationUpdate(_Checked):
    """PATCH: every field optional; `null` clears the optional ones (baseUrl, webhookUrl)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    tenantId: str | None = Field(default=None, pattern=TENANT)
    environment: str | None = Field(default=None, pattern=ENVIRONMENT)
    companyId: str | None = Field(default=None, pattern=GUID)
    clientId: str | None = Field(default=None, pattern=GUID)
    clientSecret: str | None = Field(default=None, min_length=1, max_length=1024)
    entities: list[EntityKey] | None = None
    syncIntervalMinutes: StrictInt | None = Field(default=None, ge=5, le=1440)
    baseUrl: str | None = Field(default=None, max_length=500)
    fieldMappings: FieldMappings | None = None
    webhookUrl: str | None = Field(default=None, max_length=2000)
    realtime: StrictBool | None = None

    @model_validator(mode="after")
    def _mappings(self) -> "IntegrationUpdate":
        _check_mappings(self.fieldMappings)
        for required in ("name", "tenantId", "environment", "companyId", "clientId", "clientSecret", "entities", "syncIntervalMinutes", "fieldMappings", "realtime"):
            if required in self.model_fields_set and getattr(self, required) is None:
                raise ValueError(f"{required} cannot be null")
        return self


class CompanyDiscovery(_Checked):
    """Credentials to list companies with, before an integration exists."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    tenantId: str = Field(pattern=TENANT)
    environment: str = Field(default="production", pattern=ENVIRONMENT)
    clientId: str = Field(pattern=GUID)
    clientSecret: str = Field(min_length=1, max_length=1024)
    baseUrl: str | None = Field(default=None, max_length=500)



class SyncBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modifiedSince: str | None = None
    entities: list[str] | None = None
    mode: Literal["full", "delta", "reconcile"] | None = None

    @field_validator("modifiedSince")
    @classmethod
    def _since(cls, value: str | None) -> str | None:
        if value is not None:
            parse_since(value, "modifiedSince")
        return value

    @model_validator(mode="after")
    def _exclusive(self) -> "SyncBody":
        if self.modifiedSince is not None and self.mode is not None:
            raise ValueError("give either modifiedSince or mode, not both")
        return self


def parse_since(value: str, field: str) -> datetime:
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d{2}-\d{2}T", value):
        raise ValueError(f"{field} must be an ISO-8601 date-time with an offset, e.g. 2024-06-15T10:30:00Z")
    try:
        return parse_iso(value)
    except ValueError:
        raise ValueError(f"{field} must be an ISO-8601 date-time with an offset, e.g. 2024-06-15T10:30:00Z") from None


def validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Validate or raise a 400 whose message names each field and the rule it broke."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as error:
        problems = []
        for item in error.errors()[:5]:
            where = ".".join(str(p) for p in item["loc"]) or "body"
            message = str(item["msg"]).removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "is not a known field"
            elif item["type"] == "missing":
                message = "is required"
            elif item["type"] == "string_pattern_mismatch":
                message = PATTERN_RULES.get(item.get("ctx", {}).get("pattern"), "has an invalid format")
            problems.append(f"{where}: {message}")
        raise ValidationError("; ".join(problems)) from None
