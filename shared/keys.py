"""Table Storage keys from arbitrary ids: PartitionKey/RowKey forbid / \\ # ? and control characters."""
from __future__ import annotations

import hashlib
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


#: An integration's records spread over this many partitions (design.md §8): Azure's target is
#: 2,000 entities/s per partition, so one partition would cap a big first sync.
RECORD_PARTITIONS = 16


def record_partition(integration_id: str, row_key: str) -> str:
    """PartitionKey of a platform record: its integration (so two companies of one user never
    share records, even when they share BC ids) and a stable bucket of its key."""
    bucket = hashlib.sha256(row_key.encode("utf-8")).digest()[0] % RECORD_PARTITIONS
    return f"{encode_key(integration_id)}|{bucket:02d}"


def record_partitions(integration_id: str) -> list[str]:
    """Every partition of one integration's records of a type (for scans: reconcile, read API)."""
    return [f"{encode_key(integration_id)}|{bucket:02d}" for bucket in range(RECORD_PARTITIONS)]


def child_row_key(parent_row_key: str, child_key: str) -> str:
    """A child (sales order line) sorts under its parent, so an order's lines are one range."""
    return f"{parent_row_key}|{child_key}"


def children_range(parent_row_key: str) -> tuple[str, str]:
    """RowKey bounds [low, high) of a parent's children ('|' is never inside an encoded key)."""
    return f"{parent_row_key}|", f"{parent_row_key}}}"
