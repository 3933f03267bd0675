"""Table Storage keys from arbitrary ids: PartitionKey/RowKey forbid / \\ # ? and control characters."""
from __future__ import annotations

from urllib.parse import quote

from shared.errors import RecordError

MAX_KEY_BYTES = 1024
EXTERNAL_SYSTEM = "dynamics_bc"


def encode_key(value: str) -> str:
    """Reversible percent-encoding: every character outside [A-Za-z0-9_.~-] becomes %XX."""
    return quote(value, safe="")


def record_row_key(external_id: str) -> str:
    """RowKey of a platform record; an id too long for a key is a per-record error."""
    if not external_id:
        raise RecordError("Missing required field: id", {"id": external_id})
    key = encode_key(external_id)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise RecordError(f"id is too long for a Table Storage key ({len(key)} bytes encoded, max {MAX_KEY_BYTES})")
    return key


def owner_partition(user_id: str) -> str:
    """PartitionKey of a user's platform records: matching is by (externalId, externalSystem, userId)."""
    return f"{EXTERNAL_SYSTEM}|{encode_key(user_id)}"
