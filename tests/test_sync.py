"""The sync endpoint end to end: counts, stored records, deltas, selection, owners, BC faults, record errors."""
from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any, Callable

import pytest

from devtools.bcsim import DEMO_CLIENT_ID, DEMO_TENANT_ID, BCSimulator, RecordedRequest, parse_dt
from shared.app import App
from shared.clock import parse_iso
from shared.keys import record_partition, record_row_key
from tests.support import Api, FakeClock

VENDORS, ITEMS = 45, 230
CORRELATION = re.compile(r"BC code \w+, correlation id [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# -- helpers ------------------------------------------------------------------------------------
def rows(app: App, table: str, user: str = "user-1") -> dict[str, dict[str, Any]]:
    """A user's stored records of one table, by externalId."""
    client = app.store.table(table)
    found = client.query_entities("userId eq @user", parameters={"user": user})
    return {e["externalId"]: e for e in found}


def etags(app: App, table: str, user: str = "user-1") -> dict[str, str]:
    return {k: e.metadata["etag"] for k, e in rows(app, table, user).items()}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """externalIds whose row was written (new etag) or created between two snapshots."""
    return {k for k, v in after.items() if before.get(k) != v}


def counts(reply: Any, key: str) -> tuple[int, int, int, int]:
    d = reply.data[key]
    return d["created"], d["updated"], d["unchanged"], d["errors"]


def logs(api: Api, integration_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
    entries = api.get(f"integrations/{integration_id}/sync-logs", params={"top": 1000}).data
    return [e for e in entries if run_id is None or e["runId"] == run_id]


def bc_calls(sim: BCSimulator, entity_set: str | None = None) -> list[RecordedRequest]:
    """Requests the service made to the BC API (token endpoint excluded), optionally for one set."""
    calls = [r for r in sim.requests if r.path.startswith("/v2.0/")]
    return [r for r in calls if entity_set is None or r.path.endswith(f"/{entity_set}")]


def full_sync(api: Api, sim: BCSimulator, **overrides: Any) -> dict[str, Any]:
    integration = api.create_integration(sim, **overrides)
    reply = api.sync(integration["id"])
    assert reply.status == 200, reply.body
    return integration


def integration_state(api: Api, integration_id: str) -> dict[str, Any]:
    return api.get(f"integrations/{integration_id}").data


# -- A1, A2: full syncs ---------------------------------------------------------------------------
def test_full_sync_creates_every_record_with_exact_counts(api: Api, sim: BCSimulator, app: App) -> None:
    """A first full sync answers created 45 suppliers / 230 products with no errors."""
    integration = api.create_integration(sim)
    reply = api.sync(integration["id"])
    assert reply.status == 200
    assert counts(reply, "suppliers") == (VENDORS, 0, 0, 0)
    assert counts(reply, "products") == (ITEMS, 0, 0, 0)
    assert set(reply.data) == {"suppliers", "products"}
    assert reply.headers.get("X-Sync-Run-Id", "").startswith("run-")


def test_stored_supplier_carries_bookkeeping_exact_money_and_decoded_enums(api: Api, sim: BCSimulator, app: App) -> None:
    """Suppliers are stored with the composite key, sync bookkeeping, money as exact text and blank enums as ''."""
    integration = full_sync(api, sim)
    stored = rows(app, "Suppliers")
    source = {v["id"]: v for v in sim.company().records("vendors")}
    assert set(stored) == set(source)
    blanks = 0
    for external_id, row in stored.items():
        bc = source[external_id]
        assert row["PartitionKey"] == record_partition(integration["id"], record_row_key(external_id))
        assert row["RowKey"] == record_row_key(external_id)
        assert row["externalSystem"] == "dynamics_bc"
        assert row["userId"] == "user-1"
        assert row["integrationId"] == integration["id"]
        assert row["syncStatus"] == "synced"
        assert parse_iso(row["lastSyncedAt"])
        assert parse_iso(row["sourceModifiedAt"]) == parse_dt(bc["lastModifiedDateTime"])
        assert row["name"] == bc["displayName"]
        assert isinstance(row["balance"], str) and Decimal(row["balance"]) == Decimal(str(bc["balance"]))
        if bc["blocked"] == "_x0020_":
            assert row["blocked"] == ""
            blanks += 1
        else:
            assert row["blocked"] == bc["blocked"]
    assert blanks > 0  # the demo data has blank enums, so the decoding was exercised


def test_stored_product_has_inventory_exact_prices_and_decoded_type(api: Api, sim: BCSimulator, app: App) -> None:
    """Products carry `inventory`, unit price/cost as exact text, and `Non_x002D_Inventory` decoded."""
    full_sync(api, sim)
    stored = rows(app, "Products")
    source = {i["id"]: i for i in sim.company().records("items")}
    assert len(stored) == ITEMS
    for external_id, row in stored.items():
        bc = source[external_id]
        assert row["inventory"] == float(bc["inventory"])
        assert Decimal(row["unitPrice"]) == Decimal(str(bc["unitPrice"]))
        assert Decimal(row["unitCost"]) == Decimal(str(bc["unitCost"]))
        assert row["type"] == bc["type"].replace("_x002D_", "-")
        assert row["syncStatus"] == "synced" and row["externalSystem"] == "dynamics_bc"
        assert parse_iso(row["sourceModifiedAt"]) == parse_dt(bc["lastModifiedDateTime"])
    assert any(r["type"] == "Non-Inventory" for r in stored.values())
    assert any(r["inventory"] > 0 for r in stored.values())


def test_second_full_sync_rewrites_nothing(api: Api, sim: BCSimulator, app: App) -> None:
    """Re-reading unchanged BC data counts everything as unchanged and leaves every row's etag as it was."""
    integration = full_sync(api, sim)
    before = {t: etags(app, t) for t in ("Suppliers", "Products")}
    reply = api.sync(integration["id"])
    assert counts(reply, "suppliers") == (0, 0, VENDORS, 0)
    assert counts(reply, "products") == (0, 0, ITEMS, 0)
    assert {t: etags(app, t) for t in ("Suppliers", "Products")} == before


# -- A3: delta, modifiedSince, validation ----------------------------------------------------------
def _change(sim: BCSimulator, vendors: int = 3, items: int = 2) -> tuple[set[str], set[str]]:
    company = sim.company()
    v = [r["id"] for r in company.records("vendors")[5 : 5 + vendors]]
    i = [r["id"] for r in company.records("items")[50 : 50 + items]]
    for n, rid in enumerate(v):
        company.update("vendors", rid, displayName=f"Changed vendor {n}")
    for n, rid in enumerate(i):
        company.update("items", rid, unitPrice=1000 + n + 0.25)
    return set(v), set(i)


def test_delta_writes_only_what_changed_in_bc(api: Api, sim: BCSimulator, app: App) -> None:
    """mode delta after a full sync: 3 vendors and 2 items changed -> updated 3 / 2, only those rows rewritten."""
    integration = full_sync(api, sim)
    before = {t: etags(app, t) for t in ("Suppliers", "Products")}
    vendors, items = _change(sim)
    reply = api.sync(integration["id"], {"mode": "delta"})
    assert reply.status == 200
    s_created, s_updated, _, s_errors = counts(reply, "suppliers")
    p_created, p_updated, _, p_errors = counts(reply, "products")
    assert (s_created, s_updated, s_errors) == (0, 3, 0)
    assert (p_created, p_updated, p_errors) == (0, 2, 0)
    assert changed(before["Suppliers"], etags(app, "Suppliers")) == vendors
    assert changed(before["Products"], etags(app, "Products")) == items
    stored = rows(app, "Suppliers")
    assert sorted(stored[v]["name"] for v in vendors) == ["Changed vendor 0", "Changed vendor 1", "Changed vendor 2"]
    assert {rows(app, "Products")[i]["unitPrice"] for i in items} == {"1000.25", "1001.25"}
    # A delta reads far less than everything.
    assert reply.data["suppliers"]["unchanged"] < VENDORS


def test_delta_creates_new_vendor_and_keeps_vendor_deleted_in_bc(api: Api, sim: BCSimulator, app: App) -> None:
    """A vendor added in BC is created by the next delta; one deleted in BC stays on the platform untouched."""
    integration = full_sync(api, sim)
    company = sim.company()
    new = company.add("vendors", {"displayName": "Brand New Supplier"})
    reply = api.sync(integration["id"], {"mode": "delta"})
    assert counts(reply, "suppliers")[:2] == (1, 0)
    assert rows(app, "Suppliers")[new["id"]]["name"] == "Brand New Supplier"

    doomed = company.records("vendors")[0]["id"]
    before = etags(app, "Suppliers")
    company.delete("vendors", doomed)
    assert api.sync(integration["id"], {"mode": "delta"}).status == 200
    reply = api.sync(integration["id"])  # and a full sync too
    assert counts(reply, "suppliers") == (0, 0, VENDORS, 0)
    after = rows(app, "Suppliers")
    assert len(after) == VENDORS + 1
    assert after[doomed]["syncStatus"] == "synced"
    assert etags(app, "Suppliers") == before


def test_modified_since_reads_exactly_the_changed_records(api: Api, sim: BCSimulator, app: App) -> None:
    """modifiedSince (with an offset) syncs the records BC changed at or after it and nothing else."""
    integration = full_sync(api, sim)
    before = {t: etags(app, t) for t in ("Suppliers", "Products")}
    since = sim.now.isoformat()  # "+00:00" offset
    vendors, items = _change(sim)
    sim.clear_requests()
    reply = api.sync(integration["id"], {"modifiedSince": since})
    assert reply.status == 200, reply.body
    assert counts(reply, "suppliers") == (0, 3, 0, 0)
    assert counts(reply, "products")[:2] == (0, 2)
    assert changed(before["Suppliers"], etags(app, "Suppliers")) == vendors
    assert changed(before["Products"], etags(app, "Products")) == items
    vendor_reads = bc_calls(sim, "vendors")
    assert vendor_reads and all(r.query["$filter"].startswith("lastModifiedDateTime ge ") for r in vendor_reads)
    entry = [e for e in logs(api, integration["id"], reply.headers["X-Sync-Run-Id"]) if e["entityType"] == "SUPPLIER"][0]
    assert entry["metadata"]["mode"] == "since" and entry["metadata"]["modifiedSince"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"modifiedSince": "2024-06-15T10:30:00"}, "modifiedSince"),
        ({"modifiedSince": "yesterday"}, "modifiedSince"),
        ({"modifiedSince": "2024-06-15T10:30:00Z", "mode": "delta"}, "modifiedSince or mode"),
        ({"mode": "bogus"}, "mode"),
        ({"entities": ["widgets"]}, "widgets"),
        ({"entities": ["customers"]}, "customers"),
        ({"unknownOption": 1}, "unknownOption"),
    ],
)
def test_sync_body_validation_answers_400(api: Api, sim: BCSimulator, app: App, body: dict[str, Any], field: str) -> None:
    """Bad sync bodies answer 400 validation_error naming the field, and nothing is read from BC."""
    integration = api.create_integration(sim)
    reply = api.sync(integration["id"], body)
    assert reply.status == 400
    assert reply.error["code"] == "validation_error"
    assert field in reply.error["message"]
    assert bc_calls(sim) == []
    assert rows(app, "Suppliers") == {}


def test_delta_on_never_synced_integration_syncs_everything(api: Api, sim: BCSimulator, app: App) -> None:
    """mode delta without stored watermarks is a full read: created 45 / 230."""
    integration = api.create_integration(sim)
    reply = api.sync(integration["id"], {"mode": "delta"})
    assert counts(reply, "suppliers") == (VENDORS, 0, 0, 0)
    assert counts(reply, "products") == (ITEMS, 0, 0, 0)
    assert "$filter" not in bc_calls(sim, "vendors")[0].query


# -- A4: entity subsets ---------------------------------------------------------------------------
def test_entities_subset_syncs_and_logs_only_that_type(api: Api, sim: BCSimulator, app: App) -> None:
    """{"entities": ["suppliers"]} answers only the suppliers key, logs only SUPPLIER and reads no items."""
    integration = api.create_integration(sim)
    reply = api.sync(integration["id"], {"entities": ["suppliers"]})
    assert reply.status == 200
    assert set(reply.data) == {"suppliers"}
    assert counts(reply, "suppliers") == (VENDORS, 0, 0, 0)
    assert [e["entityType"] for e in logs(api, integration["id"])] == ["SUPPLIER"]
    assert bc_calls(sim, "items") == []
    assert rows(app, "Products") == {}


# -- A5: owners -----------------------------------------------------------------------------------
def test_two_users_of_one_company_get_independent_records(api: Api, sim: BCSimulator, app: App) -> None:
    """The same BC company synced by two users gives two record sets; one user's sync never touches the other's."""
    other = api.as_user("user-2")
    first = api.create_integration(sim)
    second = other.create_integration(sim)
    for client, integration in ((api, first), (other, second)):
        reply = client.sync(integration["id"])
        assert counts(reply, "suppliers") == (VENDORS, 0, 0, 0)
        assert counts(reply, "products") == (ITEMS, 0, 0, 0)
    mine, theirs = rows(app, "Suppliers", "user-1"), rows(app, "Suppliers", "user-2")
    assert set(mine) == set(theirs) and len(mine) == VENDORS
    assert {r["integrationId"] for r in theirs.values()} == {second["id"]}
    assert {r["userId"] for r in theirs.values()} == {"user-2"}

    theirs_before = etags(app, "Suppliers", "user-2")
    vendors, _ = _change(sim, vendors=1, items=0)
    reply = api.sync(first["id"], {"mode": "delta"})
    assert counts(reply, "suppliers")[1] == 1
    (vendor,) = vendors
    assert rows(app, "Suppliers", "user-1")[vendor]["name"] == "Changed vendor 0"
    assert rows(app, "Suppliers", "user-2")[vendor]["name"] != "Changed vendor 0"
    assert etags(app, "Suppliers", "user-2") == theirs_before
    # And the other user's integration is not visible to the first one.
    assert api.sync(second["id"]).status == 404


# -- A6: BC faults ---------------------------------------------------------------------------------
TRANSIENT: dict[str, Callable[[BCSimulator], Any]] = {
    "429 with Retry-After": lambda sim: sim.faults.add(429, retry_after=7, path_contains="/vendors"),
    "429 without Retry-After": lambda sim: sim.faults.add(429, path_contains="$skiptoken"),
    "503": lambda sim: sim.faults.add(503, path_contains="/items"),
    "504 HTML": lambda sim: sim.faults.add(504, path_contains="/vendors"),
    "dropped connection": lambda sim: sim.faults.drop_connection(path_contains="$skiptoken"),
}


@pytest.mark.parametrize("fault", list(TRANSIENT))
@pytest.mark.bc_page_size(100)
def test_transient_bc_failure_is_retried_and_sync_succeeds(api: Api, sim: BCSimulator, app: App, clock: FakeClock, fault: str) -> None:
    """One 429 / 503 / 504 / dropped socket is retried after a wait; the run succeeds with exact counts."""
    integration = api.create_integration(sim)
    TRANSIENT[fault](sim)
    reply = api.sync(integration["id"])
    assert reply.status == 200, reply.body
    assert counts(reply, "suppliers") == (VENDORS, 0, 0, 0)
    assert counts(reply, "products") == (ITEMS, 0, 0, 0)
    assert sim.faults.pending() == []  # the fault did fire
    failed = [r for r in bc_calls(sim) if r.status != 200]
    assert len(failed) == 1, [(r.status, r.method, r.path[-40:], r.query, r.headers.get("prefer")) for r in failed]
    retried = [r for r in bc_calls(sim) if r.path == failed[0].path and r.query == failed[0].query and r.status == 200]
    assert retried, "the failed request was not repeated"
    assert len(clock.sleeps) == 1
    if fault == "429 with Retry-After":
        assert clock.sleeps == [7.0]
    else:
        assert 0.5 <= clock.sleeps[0] <= 1.0  # exponential backoff's first step, with jitter
    assert integration_state(api, integration["id"])["status"] == "connected"


@pytest.mark.parametrize("status", [503, 502])
def test_persistent_outage_fails_run_as_bc_unavailable(api: Api, sim: BCSimulator, app: App, clock: FakeClock, status: int) -> None:
    """BC answering 5xx on every retry -> 502 bc_unavailable, FAILED logs per type, status error, no HTML leaked."""
    integration = api.create_integration(sim)
    sim.faults.add(status, times=None)
    reply = api.sync(integration["id"])
    assert reply.status == 502
    error = reply.error
    assert error["code"] == "bc_unavailable"
    assert "<html" not in error["message"].lower() and "<" not in error["message"]
    if status == 503:
        assert "Application_ServiceUnavailable" in error["message"] and CORRELATION.search(error["message"])
    assert len(clock.sleeps) == 4  # BC_MAX_RETRIES=4 in tests, then it gives up

    entries = logs(api, integration["id"])
    assert sorted(e["entityType"] for e in entries) == ["PRODUCT", "SUPPLIER"]
    for entry in entries:
        assert entry["status"] == "FAILED"
        assert entry["metadata"]["error"]["code"] == "bc_unavailable"
        assert entry["metadata"]["error"]["message"]
        assert "<html" not in entry["metadata"]["error"]["message"].lower()
    state = integration_state(api, integration["id"])
    assert state["status"] == "error"
    assert set(state["lastError"]) >= {"code", "message", "at"}
    assert state["lastError"]["code"] == "bc_unavailable" and parse_iso(state["lastError"]["at"])
    assert state["lastSyncedAt"] is None
    assert rows(app, "Suppliers") == {}


def _wrong_secret(sim: BCSimulator) -> None:
    sim.set_client_secret(DEMO_TENANT_ID, DEMO_CLIENT_ID, "rotated-" + uuid.uuid4().hex)


def _no_permission(sim: BCSimulator) -> None:
    sim.set_permissions(DEMO_CLIENT_ID, False)


def _outage(sim: BCSimulator) -> None:
    sim.faults.add(503, times=None)


FATAL: dict[str, tuple[Callable[[BCSimulator], Any], dict[str, Any], str, str, str]] = {
    # name: (set-up, integration overrides, code, integration status, step test connection names)
    "wrong credentials": (_wrong_secret, {}, "bc_auth_failed", "auth_expired", "authentication"),
    "permission removed": (_no_permission, {}, "bc_forbidden", "error", "company"),
    "unknown company": (lambda sim: None, {"companyId": str(uuid.uuid4())}, "bc_company_not_found", "error", "company"),
    "BC unavailable": (_outage, {}, "bc_unavailable", "error", "company"),
}


@pytest.mark.parametrize("case", list(FATAL))
def test_fatal_bc_failure_codes_for_sync_and_test_connection(api: Api, sim: BCSimulator, app: App, case: str) -> None:
    """Each kind of BC/Entra failure answers 502 with its own code on sync and test, test naming the failed step."""
    setup, overrides, code, status, step = FATAL[case]
    integration = api.create_integration(sim, **overrides)
    setup(sim)
    reply = api.sync(integration["id"])
    assert reply.status == 502, reply.body
    assert reply.error["code"] == code
    state = integration_state(api, integration["id"])
    assert state["status"] == status
    assert state["lastError"]["code"] == code
    if code == "bc_auth_failed":
        assert "re-authenticate" in state["lastError"]["message"]
    if code in ("bc_forbidden", "bc_company_not_found", "bc_unavailable"):
        assert CORRELATION.search(reply.error["message"]), reply.error["message"]
    for entry in logs(api, integration["id"]):
        assert entry["status"] == "FAILED" and entry["metadata"]["error"]["code"] == code

    test = api.post(f"integrations/{integration['id']}/dynamics/test")
    assert not 200 <= test.status < 300
    assert test.error["code"] == code
    assert test.error["step"] == step
    assert test.error["message"]


def test_wrong_credentials_message_carries_entra_correlation(api: Api, sim: BCSimulator, app: App) -> None:
    """Entra ID's refusal names its error and correlation id, never the secret."""
    integration = api.create_integration(sim)
    _wrong_secret(sim)
    reply = api.sync(integration["id"])
    message = reply.error["message"]
    assert "invalid_client" in message and re.search(r"correlation id [0-9a-f-]{36}", message)
    assert "sim-client-secret" not in message


def test_revoked_token_is_reacquired_once(api: Api, sim: BCSimulator, app: App) -> None:
    """Tokens revoked between syncs: one 401, one new token, and the sync succeeds."""
    integration = full_sync(api, sim)
    sim.revoke_tokens()
    sim.clear_requests()
    reply = api.sync(integration["id"])
    assert reply.status == 200, reply.body
    assert counts(reply, "suppliers") == (0, 0, VENDORS, 0)
    assert [r.status for r in bc_calls(sim)].count(401) == 1
    token_requests = [r for r in sim.requests if r.path.endswith("/oauth2/v2.0/token")]
    assert len(token_requests) == 1
    assert integration_state(api, integration["id"])["status"] == "connected"


def test_credentials_rotated_and_tokens_revoked_mid_life_is_auth_failure(api: Api, sim: BCSimulator, app: App) -> None:
    """After a good sync, a rotated secret plus revoked tokens -> 502 bc_auth_failed and auth_expired."""
    integration = full_sync(api, sim)
    _wrong_secret(sim)
    sim.revoke_tokens()
    reply = api.sync(integration["id"])
    assert reply.status == 502 and reply.error["code"] == "bc_auth_failed"
    state = integration_state(api, integration["id"])
    assert state["status"] == "auth_expired" and "re-authenticate" in state["lastError"]["message"]
    assert state["lastSyncedAt"] is not None  # the earlier success is still reported
    assert len(rows(app, "Suppliers")) == VENDORS  # synced data kept


def test_company_not_found_needs_no_retries(api: Api, sim: BCSimulator, app: App, clock: FakeClock) -> None:
    """An unknown company fails at once (no backoff) and stops the whole run after the first type."""
    integration = api.create_integration(sim, companyId=str(uuid.uuid4()))
    assert api.sync(integration["id"]).error["code"] == "bc_company_not_found"
    assert clock.sleeps == []
    assert bc_calls(sim, "items") == []


# -- A7: record errors ----------------------------------------------------------------------------
def test_record_without_name_is_logged_and_the_rest_created(api: Api, sim: BCSimulator, app: App) -> None:
    """A vendor with displayName null -> errors 1, 44 created, PARTIAL log with externalId, error and data."""
    company = sim.company()
    bad = company.records("vendors")[3]["id"]
    company.update("vendors", bad, displayName=None)
    integration = api.create_integration(sim)
    reply = api.sync(integration["id"])
    assert reply.status == 200
    assert counts(reply, "suppliers") == (VENDORS - 1, 0, 0, 1)
    assert reply.data["suppliers"]["status"] == "PARTIAL"
    assert bad not in rows(app, "Suppliers")
    (entry,) = [e for e in logs(api, integration["id"]) if e["entityType"] == "SUPPLIER"]
    assert entry["status"] == "PARTIAL"
    assert entry["recordsAffected"] == VENDORS - 1
    assert entry["metadata"]["errors"] == [
        {"externalId": bad, "error": "Missing required field: name", "data": {"displayName": None}}
    ]
    (product_entry,) = [e for e in logs(api, integration["id"]) if e["entityType"] == "PRODUCT"]
    assert product_entry["status"] == "SUCCESS"


def test_id_with_key_forbidden_characters_is_stored_and_resynced_unchanged(api: Api, sim: BCSimulator, app: App) -> None:
    """An id containing / \\ # ? gets an encoded RowKey, keeps its externalId and re-syncs as unchanged."""
    weird = "weird/id#1?x\\y"
    sim.company().add("vendors", {"id": weird, "displayName": "W"})
    integration = api.create_integration(sim)
    reply = api.sync(integration["id"])
    assert counts(reply, "suppliers") == (VENDORS + 1, 0, 0, 0)
    row = rows(app, "Suppliers")[weird]
    assert row["RowKey"] == record_row_key(weird) == "!" + "weird%2Fid%231%3Fx%5Cy"
    assert not set("/\\#?") & set(row["RowKey"])
    assert row["name"] == "W"
    before = etags(app, "Suppliers")
    reply = api.sync(integration["id"])
    assert counts(reply, "suppliers") == (0, 0, VENDORS + 1, 0)
    assert etags(app, "Suppliers") == before


def test_record_that_turns_invalid_keeps_last_good_data_until_fixed(api: Api, sim: BCSimulator, app: App) -> None:
    """A synced record that becomes invalid keeps its data with syncStatus error; fixing it in BC makes it synced."""
    integration = full_sync(api, sim)
    company = sim.company()
    vendor = company.records("vendors")[7]
    company.update("vendors", vendor["id"], displayName="", balance=1)
    reply = api.sync(integration["id"], {"mode": "delta"})
    assert counts(reply, "suppliers")[3] == 1
    row = rows(app, "Suppliers")[vendor["id"]]
    assert row["syncStatus"] == "error"
    assert row["syncError"] == "Missing required field: name"
    assert row["name"] == vendor["displayName"]
    assert Decimal(row["balance"]) == Decimal(str(vendor["balance"]))  # last good data, not BC's new balance

    # Fixed in BC back to exactly the old content: still rewritten, because it was flagged.
    company.update("vendors", vendor["id"], displayName=vendor["displayName"], balance=vendor["balance"])
    reply = api.sync(integration["id"], {"mode": "delta"})
    assert reply.data["suppliers"]["errors"] == 0
    assert reply.data["suppliers"]["updated"] == 1
    row = rows(app, "Suppliers")[vendor["id"]]
    assert row["syncStatus"] == "synced"
    assert "syncError" not in row
    assert row["name"] == vendor["displayName"]


# -- A8: request hygiene --------------------------------------------------------------------------
@pytest.mark.bc_page_size(100)
def test_bc_requests_are_read_only_paged_selected_and_filtered(api: Api, sim: BCSimulator, app: App) -> None:
    """Every BC request asks for a read replica and 100-row pages; reads $select, follow nextLinks, deltas filter."""
    integration = full_sync(api, sim)
    calls = bc_calls(sim)
    assert calls
    for call in calls:
        assert call.headers.get("data-access-intent") == "ReadOnly", call
        assert call.headers.get("prefer") == "odata.maxpagesize=100", call
        assert call.method == "GET"
    vendor_reads, item_reads = bc_calls(sim, "vendors"), bc_calls(sim, "items")
    assert "$select" in vendor_reads[0].query and "displayName" in vendor_reads[0].query["$select"].split(",")
    assert "inventory" in item_reads[0].query["$select"].split(",")
    assert len(item_reads) == 3  # 230 items in pages of 100
    assert all("$skiptoken" in r.query for r in item_reads[1:])
    assert all(r.query.get("$select") == item_reads[0].query["$select"] for r in item_reads)

    sim.clear_requests()
    _change(sim, vendors=1, items=0)
    assert api.sync(integration["id"], {"mode": "delta"}).status == 200
    for read in bc_calls(sim, "vendors"):
        assert re.fullmatch(r"lastModifiedDateTime gt \d{4}-\d\d-\d\dT[\d:.]+Z", read.query["$filter"]), read.query


def test_a_dropped_storage_connection_during_a_write_is_retried_and_loses_nothing(api: Api, sim: BCSimulator, app: App, azurite: Any, clock: Any) -> None:
    """The aio writer sends a transaction again when its connection drops (the SDK does not)."""
    import dataclasses

    from shared.app import App as AppClass, use_app
    from tests.faultproxy import DroppingProxy

    integration = api.create_integration(sim, entities=["suppliers"])
    proxy = DroppingProxy("127.0.0.1", azurite.port)
    try:
        endpoint = f"TableEndpoint=http://127.0.0.1:{azurite.port}/devstoreaccount1;"
        proxied = app.settings.tables_connection_string.replace(endpoint, f"TableEndpoint=http://127.0.0.1:{proxy.port}/devstoreaccount1;")
        use_app(AppClass(dataclasses.replace(app.settings, tables_connection_string=proxied), clock=clock))
        proxy.drop = 2
        reply = api.sync(integration["id"])
    finally:
        use_app(app)
        proxy.close()
    assert proxy.dropped == 2
    assert reply.status == 200, reply.body
    assert counts(reply, "suppliers") == (VENDORS, 0, 0, 0)
    assert len(rows(app, "Suppliers")) == VENDORS
