"""BC values -> platform values (pure functions), and a BC record -> a platform record.

Every converter accepts BC's raw JSON value: enum values arrive XML-escaped (`_x0020_` is a
blank), empty lookups are the zero GUID, empty dates are 0001-01-01, and money arrives as a
JSON number that the client already parsed into Decimal and we store as exact text."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, ValidationError as PydanticValidationError

from shared.clock import parse_iso, to_iso
from shared.errors import RecordError
from shared.keys import EXTERNAL_SYSTEM, record_row_key

if TYPE_CHECKING:
    from shared.entities import EntityType

ZERO_GUID = "00000000-0000-0000-0000-000000000000"
_XML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def decode_bc_text(value: Any) -> Any:
    """`_x0020_` -> ' ', `Non_x002D_Inventory` -> 'Non-Inventory'; blanks become ''."""
    if isinstance(value, str):
        return _XML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value).strip()
    return value


def _text(value: Any) -> str | None:
    value = decode_bc_text(value)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise ValueError("expected text, got a structure")
    return str(value)


def _required_text(value: Any) -> str:
    text = _text(value)
    if not text:
        raise ValueError("required")
    return text


def _money(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("expected a number") from None
    if not number.is_finite():
        raise ValueError("expected a finite number")
    return number


def _quantity(value: Any) -> float | None:
    number = _money(value)
    return None if number is None else float(number)


def _date(value: Any) -> str | None:
    if value in (None, "", "0001-01-01"):
        return None
    return date.fromisoformat(str(value)[:10]).isoformat()


def _datetime(value: Any) -> str | None:
    if value in (None, "") or str(value).startswith("0001-01-01"):
        return None
    return to_iso(parse_iso(str(value)))


def _guid(value: Any) -> str | None:
    if value in (None, "", ZERO_GUID):
        return None
    return str(value).lower()


def _boolean(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    if isinstance(value, (int, Decimal)) and value in (0, 1):
        return bool(value)
    raise ValueError("expected true or false")


def _integer(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    number = Decimal(str(value))
    if number != number.to_integral_value():
        raise ValueError("expected a whole number")
    return int(number)


_money_text = PlainSerializer(lambda v: None if v is None else format(v, "f"), return_type=str | None)

Text = Annotated[str | None, BeforeValidator(_text)]
RequiredText = Annotated[str, BeforeValidator(_required_text)]
Money = Annotated[Decimal | None, BeforeValidator(_money), _money_text]
Quantity = Annotated[float | None, BeforeValidator(_quantity)]
BCDate = Annotated[str | None, BeforeValidator(_date)]
BCDateTime = Annotated[str | None, BeforeValidator(_datetime)]
Guid = Annotated[str | None, BeforeValidator(_guid)]
Flag = Annotated[bool | None, BeforeValidator(_boolean)]
Integer = Annotated[int | None, BeforeValidator(_integer)]
RequiredInteger = Annotated[int, BeforeValidator(_integer)]

#: Converters for user-defined field mappings, by the `type` named in fieldMappings.
MAPPING_CONVERTERS = {
    "text": _text,
    "number": _quantity,
    "decimal": lambda v: None if (d := _money(v)) is None else format(d, "f"),
    "date": _date,
    "boolean": _boolean,
}

# -- Table Storage limits -------------------------------------------------------------------
MAX_PROPERTIES = 252
MAX_STRING_BYTES = 64 * 1024
MAX_ENTITY_BYTES = 1024 * 1024


def check_table_limits(entity: dict[str, Any]) -> None:
    """Refuse an entity Table Storage would refuse, naming the limit (never truncate silently)."""
    own = [k for k in entity if k not in ("PartitionKey", "RowKey")]
    if len(own) > MAX_PROPERTIES:
        raise RecordError(f"Table Storage limit: {len(own)} properties, at most {MAX_PROPERTIES} per entity")
    size = 4 + (len(entity["PartitionKey"]) + len(entity["RowKey"])) * 2
    for name in own:
        value = entity[name]
        size += 8 + len(name) * 2
        if isinstance(value, str):
            # Short strings cannot reach the limit: skip the UTF-16 encoding on the hot path.
            encoded = len(value) * 2 if len(value) <= MAX_STRING_BYTES // 4 else len(value.encode("utf-16-le"))
            if encoded > MAX_STRING_BYTES:
                raise RecordError(
                    f"Table Storage limit: property '{name}' is {encoded} bytes, strings are at most 64 KiB",
                    {name: value[:200] + "..."},
                )
            size += 4 + encoded
        else:
            size += 8
    if size > MAX_ENTITY_BYTES:
        raise RecordError(f"Table Storage limit: entity is about {size} bytes, at most 1 MiB")


# -- records --------------------------------------------------------------------------------
#: Bookkeeping properties that do not describe BC's content (left out of the content hash).
VOLATILE = frozenset({"syncStatus", "syncError", "lastSyncedAt", "contentHash", "lineIds", "conflictAt"})


@dataclass
class PlatformRecord:
    row_key: str
    external_id: str
    properties: dict[str, Any]
    content_hash: str
    source_modified_at: str | None
    children: list["PlatformRecord"] = field(default_factory=list)


def content_hash(properties: dict[str, Any], children: list[PlatformRecord] = ()) -> str:  # type: ignore[assignment]
    payload = {k: v for k, v in properties.items() if k not in VOLATILE}
    payload["_children"] = [c.content_hash for c in children]
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def _describe(error: PydanticValidationError, raw: dict[str, Any], model: Any) -> RecordError:
    """Name the platform field and show BC's offending value, as the sync log promises."""
    first = error.errors()[0]
    source = str(first["loc"][0]) if first["loc"] else "record"
    target = next((name for name, f in model.model_fields.items() if (f.alias or name) == source), source)
    data = {source: raw.get(source)}
    if first["type"] == "missing" or "required" in str(first.get("msg", "")):
        return RecordError(f"Missing required field: {target}", data)
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return RecordError(f"Invalid value for {target}: {message}", data)


def map_record(
    entity: "EntityType",
    raw: dict[str, Any],
    *,
    user_id: str,
    integration_id: str,
    custom: list[dict[str, str]] | None = None,
    parent: PlatformRecord | None = None,
) -> PlatformRecord:
    """Map one BC record (and its children) to a platform record, or raise RecordError."""
    external_id = raw.get("id")
    if not isinstance(external_id, str) or not external_id:
        raise RecordError("Missing required field: id", {"id": external_id})
    try:
        model = entity.model.model_validate(raw)
    except PydanticValidationError as error:
        raise _describe(error, raw, entity.model) from None
    properties = {k: v for k, v in model.model_dump(exclude_none=True).items()}
    for mapping in custom or ():
        source, target = mapping["source"], mapping["target"]
        if source not in raw:
            continue
        try:
            value = MAPPING_CONVERTERS[mapping["type"]](raw[source])
        except (ValueError, TypeError, InvalidOperation) as error:
            raise RecordError(f"Invalid value for mapped field {source} ({mapping['type']}): {error}", {source: raw[source]}) from None
        if value is not None:
            properties[target] = value
    source_modified = parent.source_modified_at if parent else properties.get("sourceModifiedAt")
    properties.update(
        externalId=external_id,
        externalSystem=EXTERNAL_SYSTEM,
        userId=user_id,
        integrationId=integration_id,
    )
    if source_modified:
        properties["sourceModifiedAt"] = source_modified
    if parent is not None:
        properties[entity.parent_key] = parent.external_id
    record = PlatformRecord(
        row_key=record_row_key(external_id),
        external_id=external_id,
        properties=properties,
        content_hash="",
        source_modified_at=source_modified,
    )
    if entity.child is not None:
        lines = raw.get(entity.child.navigation) or []
        record.children = [
            map_record(entity.child, line, user_id=user_id, integration_id=integration_id, parent=record)
            for line in lines
        ]
    record.content_hash = content_hash(properties, record.children)
    return record
