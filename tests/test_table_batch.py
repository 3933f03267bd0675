"""Entity-group transactions written by shared/storage/batch.py (not the SDK's submit_transaction):
what they store must read back exactly as what the SDK itself stores, and refusals must come
back per entity with Table Storage's error code. Against real Azurite."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from devtools.azurite import AzuriteServer
from shared.storage.tables import TableStore


@pytest.fixture
def store(azurite: AzuriteServer) -> TableStore:
    return TableStore(azurite.connection_string, prefix="b" + uuid.uuid4().hex[:8])


def _values() -> dict[str, Any]:
    return {
        "text": "Möbel \"quoted\" ' and \\ ünïcode ✓", "empty": "", "small": 7, "negative": -2**31, "big": (2**40, "Edm.Int64"),
        "price": 12.5, "whole": 3.0, "nan": float("nan"), "flag": True, "off": False, "missing": None,
        "when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc), "blob": b"\x00\x01bytes", "guid": uuid.UUID(int=5),
    }


def test_every_value_type_reads_back_as_the_sdk_stores_it(store: TableStore) -> None:
    keys = [("p|1", "a'b"), ("p|1", "c%2Fd"), ("p 2", "e f")]
    store.write("Batch", [("upsert", {"PartitionKey": pk, "RowKey": rk, **_values()}) for pk, rk in keys])
    client = store.table("Batch")
    sdk = store._service.get_table_client(client.table_name)  # noqa: SLF001 - the SDK's own client, the reference
    sdk.upsert_entity({"PartitionKey": "sdk", "RowKey": "sdk", **_values()})
    reference = sdk.get_entity("sdk", "sdk")
    for pk, rk in keys:
        got = client.get_entity(pk, rk)
        assert (got["PartitionKey"], got["RowKey"]) == (pk, rk)
        for name in _values():
            if name == "missing":
                assert name not in got
            elif name == "nan":
                assert got[name] != got[name] and reference[name] != reference[name]
            else:
                assert got[name] == reference[name], name
                assert type(got[name]) is type(reference[name]), name


def test_merge_keeps_other_properties_and_upsert_replaces(store: TableStore) -> None:
    store.write("Batch", [("upsert", {"PartitionKey": "p", "RowKey": "m", "a": "1", "b": "2"}),
                          ("upsert", {"PartitionKey": "p", "RowKey": "u", "a": "1", "b": "2"})])
    store.write("Batch", [("merge", {"PartitionKey": "p", "RowKey": "m", "a": "x"}),
                          ("upsert", {"PartitionKey": "p", "RowKey": "u", "a": "x"})])
    client = store.table("Batch")
    merged, replaced = client.get_entity("p", "m"), client.get_entity("p", "u")
    assert (merged["a"], merged["b"]) == ("x", "2")
    assert replaced["a"] == "x" and "b" not in replaced


def test_a_refused_operation_fails_alone_with_the_services_code(store: TableStore) -> None:
    store.write("Batch", [("create", {"PartitionKey": "p", "RowKey": "taken", "v": 1})])
    failures = store.write("Batch", [
        ("upsert", {"PartitionKey": "p", "RowKey": "one", "v": 1}),
        ("create", {"PartitionKey": "p", "RowKey": "taken", "v": 2}),  # exists: 409
        ("update", {"PartitionKey": "p", "RowKey": "absent", "v": 3}),  # missing: 404
        ("delete", {"PartitionKey": "p", "RowKey": "gone"}),  # missing: 404
        ("upsert", {"PartitionKey": "p", "RowKey": "two", "v": 1}),
    ])
    codes = {f.entity["RowKey"]: getattr(f.error, "error_code", None) for f in failures}
    assert codes == {"taken": "EntityAlreadyExists", "absent": "ResourceNotFound", "gone": "ResourceNotFound"}
    client = store.table("Batch")
    assert client.get_entity("p", "taken")["v"] == 1
    assert [e["RowKey"] for e in client.query_entities("PartitionKey eq 'p'")] == ["one", "taken", "two"]


def test_a_conditional_update_with_a_stale_etag_is_refused(store: TableStore) -> None:
    client = store.table("Batch")
    client.upsert_entity({"PartitionKey": "p", "RowKey": "seq", "value": 1})
    etag = client.get_entity("p", "seq").metadata["etag"]
    assert store.write("Batch", [("update-if", {"PartitionKey": "p", "RowKey": "seq", "value": 2}, etag)]) == []
    failures = store.write("Batch", [("update-if", {"PartitionKey": "p", "RowKey": "seq", "value": 3}, etag)])
    assert [getattr(f.error, "error_code", None) for f in failures] == ["UpdateConditionNotSatisfied"]
    assert client.get_entity("p", "seq")["value"] == 2


def test_queries_read_back_every_page_with_types_and_etags(store: TableStore) -> None:
    values = {k: v for k, v in _values().items() if k not in ("missing", "nan")}
    store.write("Batch", [("upsert", {"PartitionKey": "q", "RowKey": f"{i:04d}", "n": i, **values}) for i in range(250)])
    store.write("Batch", [("upsert", {"PartitionKey": "other", "RowKey": "x", "n": 1})])
    sdk = store._service.get_table_client(store.table("Batch").table_name)  # noqa: SLF001 - the SDK's own client
    reference = list(sdk.query_entities("PartitionKey eq 'q'"))
    pages = list(store.query_pages("Batch", "PartitionKey eq @pk and n ge @low", parameters={"pk": "q", "low": 10}, page_size=100))
    assert [len(page) for page in pages] == [100, 100, 40]  # continuation followed to the end
    got = [row for page in pages for row in page]
    assert [row["RowKey"] for row in got] == [f"{i:04d}" for i in range(10, 250)]
    for mine, theirs in zip(got, reference[10:]):
        assert dict(mine) == dict(theirs)
        assert mine.metadata["etag"] == theirs.metadata["etag"] and mine.metadata["etag"]
    projected = next(store.query("Batch", "PartitionKey eq 'q'", select=["RowKey", "price"]))
    assert dict(projected) == {"RowKey": "0000", "price": 12.5}
    # braces and quotes in a filter's values (a document's children range ends in '}')
    store.write("Batch", [("upsert", {"PartitionKey": "{q}", "RowKey": f"o'{i}|x", "n": i}) for i in range(3)])
    ranged = list(store.query("Batch", "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                              parameters={"pk": "{q}", "low": "o'1|", "high": "o'1}"}))
    assert [row["RowKey"] for row in ranged] == ["o'1|x"]


def test_a_query_on_a_missing_table_raises_the_sdks_error(azurite: AzuriteServer) -> None:
    from azure.core.exceptions import HttpResponseError

    store = TableStore(azurite.connection_string, prefix="b" + uuid.uuid4().hex[:8])
    client = store.table("Gone")
    store._service.delete_table(client.table_name)  # noqa: SLF001 - the table vanishes under the store
    with pytest.raises(HttpResponseError) as raised:
        list(store.query("Gone", "PartitionKey eq 'x'"))
    assert raised.value.status_code == 404
