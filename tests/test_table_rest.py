"""Point operations and queries sent directly (shared/storage/rest.py), not through the SDK's
TableClient: what they store and read must be exactly what the SDK stores and reads, their
refusals the SDK's errors, and their retries the SDK's rules. Against real Azurite, with faults
from a proxy at the process boundary."""
from __future__ import annotations

import uuid
from typing import Iterator

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableEntity, UpdateMode

from devtools.azurite import AzuriteServer
from devtools.storagefaults import StorageFaultProxy
from shared.storage import rest
from shared.storage.tables import TableStore, decode_continuation, encode_continuation
from tests.faultproxy import DroppingProxy
from tests.test_table_batch import _values


@pytest.fixture
def store(azurite: AzuriteServer) -> TableStore:
    return TableStore(azurite.connection_string, prefix="r" + uuid.uuid4().hex[:8])


def _sdk(store: TableStore, name: str) -> TableClient:
    """The SDK's own client for the same table: the reference."""
    return store._service.get_table_client(store.table(name).table_name)  # noqa: SLF001


def test_what_one_writes_the_other_reads_the_same(store: TableStore) -> None:
    client, sdk = store.table("Rest"), _sdk(store, "Rest")
    mine = client.upsert_entity({"PartitionKey": "p'1", "RowKey": "a b%c", **_values()})
    sdk.upsert_entity({"PartitionKey": "sdk", "RowKey": "sdk", **_values()})
    read_by_sdk, read_by_me = sdk.get_entity("p'1", "a b%c"), client.get_entity("p'1", "a b%c")
    reference = client.get_entity("sdk", "sdk")
    assert isinstance(read_by_me, TableEntity)
    assert read_by_me.metadata["etag"] == read_by_sdk.metadata["etag"] == mine["etag"]
    for name in _values():
        if name == "missing":
            assert name not in read_by_me and name not in read_by_sdk
        elif name == "nan":
            assert read_by_me[name] != read_by_me[name]
        else:
            assert read_by_me[name] == read_by_sdk[name] == reference[name], name
            assert type(read_by_me[name]) is type(read_by_sdk[name]) is type(reference[name]), name
    assert dict(client.get_entity("sdk", "sdk", select=["small", "text"])) == {"small": 7, "text": _values()["text"]}


def test_merge_replace_and_conditions_behave_as_the_sdks(store: TableStore) -> None:
    client = store.table("Rest")
    client.create_entity({"PartitionKey": "p", "RowKey": "r", "a": "1", "b": "2"})
    with pytest.raises(ResourceExistsError) as exists:
        client.create_entity({"PartitionKey": "p", "RowKey": "r", "a": "x"})
    assert exists.value.error_code == "EntityAlreadyExists" and exists.value.status_code == 409
    assert "ErrorCode:EntityAlreadyExists" in str(exists.value)

    client.upsert_entity({"PartitionKey": "p", "RowKey": "r", "a": "m"})  # merge by default
    assert dict(client.get_entity("p", "r")) == {"PartitionKey": "p", "RowKey": "r", "a": "m", "b": "2"}
    stale = client.get_entity("p", "r")
    fresh = client.update_entity({"PartitionKey": "p", "RowKey": "r", "a": "u"}, mode="replace",
                                 etag=stale.metadata["etag"], match_condition=MatchConditions.IfNotModified)
    assert dict(client.get_entity("p", "r")) == {"PartitionKey": "p", "RowKey": "r", "a": "u"}
    with pytest.raises(ResourceModifiedError) as modified:
        client.update_entity(stale, mode=UpdateMode.MERGE, match_condition=MatchConditions.IfNotModified)  # its own etag
    assert modified.value.error_code == "UpdateConditionNotSatisfied"
    with pytest.raises(ResourceNotFoundError):
        client.update_entity({"PartitionKey": "p", "RowKey": "absent", "a": "1"})  # update never creates
    with pytest.raises(ResourceModifiedError):
        client.delete_entity("p", "r", etag=stale.metadata["etag"], match_condition=MatchConditions.IfNotModified)
    client.delete_entity("p", "r", etag=fresh["etag"], match_condition=MatchConditions.IfNotModified)
    client.delete_entity("p", "r")  # already gone: not an error, as with the SDK
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_entity("p", "r")
    assert missing.value.status_code == 404 and missing.value.error_code == "ResourceNotFound"


def test_queries_page_with_the_sdks_continuation_tokens(store: TableStore) -> None:
    client, sdk = store.table("Rest"), _sdk(store, "Rest")
    store.write("Rest", [("upsert", {"PartitionKey": f"p{i % 3}", "RowKey": f"{i:04d}", "n": i}) for i in range(260)])
    mine = client.query_entities("n ge @low", parameters={"low": 5}, results_per_page=100).by_page()
    theirs = sdk.query_entities("n ge @low", parameters={"low": 5}, results_per_page=100).by_page()
    pages = 0
    for my_page, their_page in zip(mine, theirs):
        assert [dict(e) for e in my_page] == [dict(e) for e in their_page]
        assert mine.continuation_token == theirs.continuation_token  # the same dict of next keys
        pages += 1
    assert pages == 3 and mine.continuation_token is None
    assert next(theirs, None) is None

    # a token handed out (encoded) resumes where the SDK's own token would
    first, token = store.query_page("Rest", "PartitionKey eq @pk", parameters={"pk": "p1"}, top=50, continuation_token=None)
    resumed = sdk.query_entities("PartitionKey eq 'p1'", results_per_page=50).by_page(continuation_token=decode_continuation(token))
    second, _ = store.query_page("Rest", "PartitionKey eq @pk", parameters={"pk": "p1"}, top=50, continuation_token=token)
    assert [e["RowKey"] for e in second] == [e["RowKey"] for e in next(resumed)]
    assert len(first) == 50 and {e["RowKey"] for e in first}.isdisjoint(e["RowKey"] for e in second)
    assert encode_continuation(None) is None
    assert [e["RowKey"] for e in client.list_entities(select="RowKey")][:2] == ["0000", "0003"]


def test_a_transaction_is_all_or_nothing(store: TableStore) -> None:
    client = store.table("Rest")
    client.create_entity({"PartitionKey": "t", "RowKey": "old", "v": 1})
    client.submit_transaction([("create", {"PartitionKey": "t", "RowKey": "new", "v": 1}), ("delete", {"PartitionKey": "t", "RowKey": "old"})])
    assert [e["RowKey"] for e in client.query_entities("PartitionKey eq 't'")] == ["new"]
    with pytest.raises(HttpResponseError):
        client.submit_transaction([("create", {"PartitionKey": "t", "RowKey": "other", "v": 1}), ("create", {"PartitionKey": "t", "RowKey": "new"})])
    assert [e["RowKey"] for e in client.query_entities("PartitionKey eq 't'")] == ["new"]


@pytest.fixture
def refusing(azurite: AzuriteServer) -> Iterator[tuple[StorageFaultProxy, TableStore]]:
    with StorageFaultProxy(azurite.connection_string) as proxy:
        yield proxy, TableStore(proxy.connection_string, prefix="r" + uuid.uuid4().hex[:8])


@pytest.mark.parametrize(("method", "status", "retried"), [
    ("PUT", 503, True), ("PUT", 500, True), ("POST", 503, True), ("POST", 502, False), ("PATCH", 429, False),
])
def test_a_refused_request_is_retried_by_the_sdks_rules(refusing: tuple[StorageFaultProxy, TableStore], method: str, status: int, retried: bool) -> None:
    """PUT and DELETE are repeated on 408/429/500/502/503/504; POST and PATCH, whose repeat could
    act twice, only on 500/503/504."""
    proxy, store = refusing
    client = store.table("Rest")
    client.upsert_entity({"PartitionKey": "p", "RowKey": "seed", "v": 0})
    proxy.refuse("retried", status=status, code="ServerBusy", times=1)
    write = {
        "PUT": lambda: client.upsert_entity({"PartitionKey": "p", "RowKey": "retried", "v": 1}, mode="replace"),
        "POST": lambda: client.create_entity({"PartitionKey": "p", "RowKey": "retried", "v": 1}),
        "PATCH": lambda: client.upsert_entity({"PartitionKey": "p", "RowKey": "retried", "v": 1}),
    }[method]
    if retried:
        write()
        assert client.get_entity("p", "retried")["v"] == 1
    else:
        with pytest.raises(HttpResponseError) as refused:
            write()
        assert refused.value.status_code == status and refused.value.error_code == "ServerBusy"
        with pytest.raises(ResourceNotFoundError):
            client.get_entity("p", "retried")
    assert len(proxy.refused) == 1


def test_a_lost_answer_is_read_again_but_a_merge_is_not_sent_twice(azurite: AzuriteServer) -> None:
    proxy = DroppingProxy("127.0.0.1", azurite.port, marker=b"RowKey='lost'")
    try:
        endpoint = f"TableEndpoint=http://127.0.0.1:{azurite.port}/devstoreaccount1;"
        proxied = azurite.connection_string.replace(endpoint, f"TableEndpoint=http://127.0.0.1:{proxy.port}/devstoreaccount1;")
        client = TableStore(proxied, prefix="r" + uuid.uuid4().hex[:8]).table("Rest")
        client.upsert_entity({"PartitionKey": "p", "RowKey": "lost", "v": 1})
        proxy.drop = 1
        assert client.get_entity("p", "lost")["v"] == 1  # GET: the dropped connection is retried
        proxy.drop = 1
        with pytest.raises(ServiceResponseError):
            client.upsert_entity({"PartitionKey": "p", "RowKey": "lost", "v": 2})  # PATCH: the SDK does not repeat it
        assert proxy.dropped == 2
    finally:
        proxy.close()


def test_proxies_from_the_standard_variables_are_used_unless_the_host_is_excluded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert type(rest._pool("http", "127.0.0.1")).__name__ == "PoolManager"
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    through = rest._pool("http", "account.table.core.windows.net")
    assert type(through).__name__ == "ProxyManager" and through.proxy.host == "proxy.internal"
    monkeypatch.setenv("NO_PROXY", "core.windows.net")
    assert type(rest._pool("http", "account.table.core.windows.net")).__name__ == "PoolManager"


def test_a_bearer_token_is_never_sent_over_plain_http() -> None:
    with pytest.raises(ValueError, match="https"):
        rest.TableHttp("http://account.table.core.windows.net", rest.BearerToken(object()))
