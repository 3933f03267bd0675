"""Table Storage keys from arbitrary ids: PartitionKey/RowKey forbid / \\ # ? and control characters.

Record RowKeys sort as Business Central sorts ids (design.md §14): BC's `$orderby=id` follows SQL
Server's uniqueidentifier order, so a GUID's RowKey is its SQL Server sort key (32 lower-case hex
digits, `guid_sort_key`) and one BC page is one contiguous RowKey range in every partition. An id
that is not a GUID (never sent by BC; tests and odd sources use some) gets `!` + its percent-encoded
text: `!` is never produced by the encoding nor a hex digit, so the two forms never meet, and `!`
sorts before the digits and far before the change feed's `~c|` rows.

Keys written before this layout (issue 16) were the percent-encoded id itself (`legacy_row_key`);
shared/sync/rekey.py moves such rows to the current key. The partition of a record is computed from
its id's legacy text, so a record with a lower-case GUID (as BC sends them) keeps its partition
and moves in one transaction."""
from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, unquote

from shared.errors import RecordError

MAX_KEY_BYTES = 1024
EXTERNAL_SYSTEM = "dynamics_bc"
OTHER_ID_PREFIX = "!"  # RowKey prefix of ids that are not GUIDs
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SORT_KEY = re.compile(r"[0-9a-f]{32}")


def encode_key(value: str) -> str:
    """Reversible percent-encoding: every character outside [A-Za-z0-9_.~-] becomes %XX."""
    return quote(value, safe="")


def guid_sort_key(guid: str) -> str | None:
    """Text that sorts as SQL Server sorts the uniqueidentifier (like .NET SqlGuid.CompareTo):
    bytes 10-15 left to right, then 8-9, then 7,6, then 5,4, then 3,2,1,0; None if `guid` is not
    a hyphenated GUID. A bijection on GUIDs (case aside): `guid_from_sort_key` inverts it."""
    if len(guid) != 36 or not _GUID.fullmatch(guid):
        return None
    g = guid.lower()
    return g[24:36] + g[19:23] + g[16:18] + g[14:16] + g[11:13] + g[9:11] + g[6:8] + g[4:6] + g[2:4] + g[0:2]


def guid_from_sort_key(key: str) -> str:
    """The lower-case hyphenated GUID of a sort key made by `guid_sort_key`."""
    k = key
    return f"{k[30:32]}{k[28:30]}{k[26:28]}{k[24:26]}-{k[22:24]}{k[20:22]}-{k[18:20]}{k[16:18]}-{k[12:16]}-{k[0:12]}"


def record_row_key(external_id: str) -> str:
    """RowKey of a platform record (see the module docstring); an id too long for a key is a
    per-record error."""
    if not external_id:
        raise RecordError("Missing required field: id", {"id": external_id})
    key = guid_sort_key(external_id) or OTHER_ID_PREFIX + encode_key(external_id)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise RecordError(f"id is too long for a Table Storage key ({len(key)} bytes encoded, max {MAX_KEY_BYTES})")
    return key


def legacy_row_key(external_id: str) -> str:
    """The RowKey records had before the sort-key layout: the percent-encoded id."""
    return encode_key(external_id)


def is_current_row_key(row_key: str) -> bool:
    """True for keys of the current layout (a GUID's sort key or `!`...). A legacy key of an id
    that is itself 32 lower-case hex digits looks current: callers that can, check `externalId`."""
    return row_key.startswith(OTHER_ID_PREFIX) or bool(len(row_key) == 32 and _SORT_KEY.fullmatch(row_key))


def current_row_key(row_key: str) -> str | None:
    """The current RowKey of the record a key of either layout names (the change feed's rows
    written before the migration name legacy keys); None if that id has no valid key."""
    if is_current_row_key(row_key):
        return row_key
    try:
        return record_row_key(unquote(row_key))
    except RecordError:
        return None


def _partition_text(row_key: str) -> str:
    """The legacy text of a key's id: partitions stay where the legacy layout put them."""
    if row_key.startswith(OTHER_ID_PREFIX):
        return row_key[len(OTHER_ID_PREFIX):]
    if len(row_key) == 32 and _SORT_KEY.fullmatch(row_key):
        return guid_from_sort_key(row_key)
    return row_key  # a legacy key


#: The record-key layout this code writes (record_row_key). An integration created under it has
#: no record under a legacy key, so its runs skip the migration's scan (shared/sync/rekey.py).
KEY_LAYOUT = "sortkey-v1"

#: An integration's records spread over this many partitions (design.md §8): Azure's target is
#: 2,000 entities/s per partition, so one partition would cap a big first sync.
RECORD_PARTITIONS = 16


def record_partition(integration_id: str, row_key: str) -> str:
    """PartitionKey of a platform record: its integration (so two companies of one user never
    share records, even when they share BC ids) and a stable bucket of its id. Either layout of
    a record's key gives the same partition (GUIDs in lower case, as BC sends them)."""
    bucket = hashlib.sha256(_partition_text(row_key).encode("utf-8")).digest()[0] % RECORD_PARTITIONS
    return f"{encode_key(integration_id)}|{bucket:02d}"


def record_partitions(integration_id: str) -> list[str]:
    """Every partition of one integration's records of a type (for scans: reconcile, read API)."""
    return [f"{encode_key(integration_id)}|{bucket:02d}" for bucket in range(RECORD_PARTITIONS)]


def child_row_key(parent_row_key: str, child_key: str) -> str:
    """A child (sales order line) sorts under its parent, so an order's lines are one range."""
    return f"{parent_row_key}|{child_key}"


def children_range(parent_row_key: str) -> tuple[str, str]:
    """RowKey bounds [low, high) of a parent's children ('|' is never inside a record key)."""
    return f"{parent_row_key}|", f"{parent_row_key}}}"
