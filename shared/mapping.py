"""A BC record -> a platform record (pure), the content hash, and Table Storage's limits.

Value conversion lives in `shared.bcvalues`, the data type declarations in `shared.entities`;
this module reads both and is read by the sync stages (no circle)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from decimal import InvalidOperation
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from shared.bcvalues import convert_mapped
from shared.entities import EntityType
from shared.errors import RecordError
from shared.keys import EXTERNAL_SYSTEM, record_row_key

# -- Table Storage limits -------------------------------------------------------------------
MAX_PROPERTIES = 252
MAX_STRING_BYTES = 64 * 1024
MAX_ENTITY_BYTES = 1024 * 1024


def check_table_limits(entity: dict[str, Any]) -> None:
    """Refuse an entity Table Storage would refuse, naming the limit (never truncate silently).
    One pass over the properties: it runs for every record of every page."""
    own = len(entity) - ("PartitionKey" in entity) - ("RowKey" in entity)
    if own > MAX_PROPERTIES:
        raise RecordError(f"Table Storage limit: {own} properties, at most {MAX_PROPERTIES} per entity")
    size = 4 + (len(entity["PartitionKey"]) + len(entity["RowKey"])) * 2
    for name, value in entity.items():
        if name == "PartitionKey" or name == "RowKey":
            continue
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
    source_hash: str = ""  # of BC's record as read (see source_hash): set by the map stage


#: Part of every source hash: bump it when mapping changes what a BC record maps to, so the
#: next sync maps every record again instead of trusting hashes of the old mapping.
MAPPING_VERSION = "1"


def source_salt(entity_key: str, custom: list[dict[str, str]] | None) -> bytes:
    """What besides BC's record decides its mapping: the data type, the field mappings, the code."""
    return json.dumps([MAPPING_VERSION, entity_key, custom or []], sort_keys=True).encode("utf-8")


def source_hash(raw: dict[str, Any], salt: bytes) -> str:
    """A hash of BC's record exactly as read (its lines included): equal to the stored one means
    the record maps to what is stored, so a re-read need not be mapped at all (re-syncs)."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode("utf-8"), key=salt[:64], digest_size=16).hexdigest()


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
    entity: EntityType,
    raw: dict[str, Any],
    *,
    user_id: str,
    integration_id: str,
    custom: list[dict[str, str]] | None = None,
    parent: PlatformRecord | None = None,
    parent_key: str = "",
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
            value = convert_mapped(mapping["type"], raw[source])
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
        properties[parent_key] = parent.external_id
    record = PlatformRecord(
        row_key=record_row_key(external_id),
        external_id=external_id,
        properties=properties,
        content_hash="",
        source_modified_at=source_modified,
    )
    lines = entity.lines
    if lines is not None:  # a document: its lines arrive $expanded under BC's navigation property
        record.children = [
            map_record(lines.type, line, user_id=user_id, integration_id=integration_id, parent=record, parent_key=lines.parent_key)
            for line in raw.get(lines.type.navigation) or []
        ]
    record.content_hash = content_hash(properties, record.children)
    return record
