"""Sync logs and company discovery endpoints against design.md §3."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from devtools.bcsim import (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_COMPANY_ID, DEMO_COMPANY_NAME, DEMO_TENANT_ID,
                            DEMO_US_COMPANY_ID, DEMO_US_COMPANY_NAME, BCSimulator)
from shared.app import App
from shared.clock import parse_iso, to_iso
from tests.support import Api, FakeClock, Reply

ENTRY_KEYS = {"id", "integrationId", "entityType", "action", "status", "recordsAffected", "metadata", "createdAt"}
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def assert_error(reply: Reply, status: int, code: str, *names: str) -> None:
    assert reply.status == status, reply.body
    assert reply.error["code"] == code, reply.body
    for name in names:
        assert name in reply.error["message"], reply.body


def logs(api: Api, integration_id: str, **params: Any) -> Reply:
    return api.get(f"integrations/{integration_id}/sync-logs", params=params or None)


def all_pages(api: Api, integration_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every entry, following continuation tokens (asserting each page respects top)."""
    entries: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(100):
        query = dict(params, **({"continuationToken": token} if token else {}))
        reply = logs(api, integration_id, **query)
        assert reply.status == 200, reply.body
        assert len(reply.data) <= int(params.get("top", 50))
        entries.extend(reply.data)
        token = reply.body["continuationToken"]
        if token is None:
            return entries
    raise AssertionError("paging never ended")


def three_runs(api: Api, sim: BCSimulator, clock: FakeClock) -> tuple[str, list[str], str]:
    """A clean full sync, a full sync with one broken vendor (PARTIAL), then a clean one; returns
    the integration id, each run's createdAt and the broken vendor's id."""
    integration = api.create_integration(sim)
    moments = []
    first = api.sync(integration["id"])
    assert first.status == 200, first.body
    moments.append(to_iso(clock.now()))
    clock.advance(60)
    sim.advance(60)
    vendor_id = sim.company().records("vendors")[0]["id"]
    sim.company().update("vendors", vendor_id, displayName=None)
    second = api.sync(integration["id"], {"mode": "full"})
    assert second.status == 200, second.body
    assert second.data["suppliers"]["errors"] == 1
    moments.append(to_iso(clock.now()))
    clock.advance(60)
    sim.advance(60)
    sim.company().update("vendors", vendor_id, displayName="Fixed Vendor")
    third = api.sync(integration["id"], {"mode": "full"})
    assert third.status == 200, third.body
    assert third.data["suppliers"]["updated"] == 1
    moments.append(to_iso(clock.now()))
    return integration["id"], moments, vendor_id


# -- 9. sync logs ---------------------------------------------------------------------------------


def test_sync_log_entries_have_the_contract_shape(api: Api, sim: BCSimulator, clock: FakeClock) -> None:
    """Entries are one per data type per run, newest first, shaped exactly as design.md §3."""
    integration_id, moments, vendor_id = three_runs(api, sim, clock)
    reply = logs(api, integration_id)
    assert reply.status == 200 and reply.body["continuationToken"] is None
    entries = reply.data
    assert len(entries) == 6
    assert len({e["id"] for e in entries}) == 6
    for entry in entries:
        assert ENTRY_KEYS <= set(entry), entry
        assert entry["integrationId"] == integration_id
        assert entry["entityType"] in ("SUPPLIER", "PRODUCT")
        assert entry["action"] == "UPSERT"
        assert entry["status"] in ("SUCCESS", "PARTIAL")
        assert ISO_Z.match(entry["createdAt"]), entry["createdAt"]
        meta = entry["metadata"]
        assert isinstance(meta["created"], int) and isinstance(meta["updated"], int)
        assert isinstance(meta["errors"], list)
        assert entry["recordsAffected"] == meta["created"] + meta["updated"]
    created = [parse_iso(e["createdAt"]) for e in entries]
    assert created == sorted(created, reverse=True)
    assert [e["createdAt"] for e in entries] == [moments[2]] * 2 + [moments[1]] * 2 + [moments[0]] * 2

    by_run = [{e["entityType"]: e for e in entries[i:i + 2]} for i in (4, 2, 0)]
    assert set(by_run[0]) == set(by_run[1]) == set(by_run[2]) == {"SUPPLIER", "PRODUCT"}
    first, second, third = by_run
    assert first["SUPPLIER"]["status"] == "SUCCESS"
    assert first["SUPPLIER"]["metadata"]["created"] == 45 and first["SUPPLIER"]["recordsAffected"] == 45
    assert first["PRODUCT"]["metadata"]["created"] == 230 and first["PRODUCT"]["recordsAffected"] == 230
    assert first["SUPPLIER"]["metadata"]["errors"] == []

    partial = second["SUPPLIER"]
    assert partial["status"] == "PARTIAL"
    assert second["PRODUCT"]["status"] == "SUCCESS"
    assert len(partial["metadata"]["errors"]) == 1
    error = partial["metadata"]["errors"][0]
    assert {"externalId", "error", "data"} <= set(error)
    assert error["externalId"] == vendor_id
    assert "name" in error["error"].lower() or "displayName" in error["error"]
    assert isinstance(error["data"], dict) and "displayName" in error["data"]
    assert error["data"]["displayName"] is None
    assert partial["recordsAffected"] == partial["metadata"]["created"] + partial["metadata"]["updated"] == 0

    assert third["SUPPLIER"]["status"] == "SUCCESS"
    assert third["SUPPLIER"]["metadata"]["updated"] == 1 and third["SUPPLIER"]["recordsAffected"] == 1


def test_sync_log_filters(api: Api, sim: BCSimulator, clock: FakeClock) -> None:
    """entityType, status and since (inclusive) filter entries, alone and together."""
    integration_id, moments, _ = three_runs(api, sim, clock)
    suppliers = logs(api, integration_id, entityType="SUPPLIER").data
    assert [e["entityType"] for e in suppliers] == ["SUPPLIER"] * 3
    assert [e["createdAt"] for e in suppliers] == list(reversed(moments))
    assert [e["entityType"] for e in logs(api, integration_id, entityType="PRODUCT").data] == ["PRODUCT"] * 3
    assert logs(api, integration_id, entityType="CUSTOMER").data == []

    partial = logs(api, integration_id, status="PARTIAL").data
    assert [(e["entityType"], e["createdAt"]) for e in partial] == [("SUPPLIER", moments[1])]
    assert len(logs(api, integration_id, status="SUCCESS").data) == 5
    assert logs(api, integration_id, status="FAILED").data == []
    assert len(logs(api, integration_id, status="SUCCESS", entityType="SUPPLIER").data) == 2

    since_second = logs(api, integration_id, since=moments[1]).data
    assert sorted(e["createdAt"] for e in since_second) == [moments[1]] * 2 + [moments[2]] * 2
    just_after = to_iso(parse_iso(moments[1]) + timedelta(milliseconds=1))
    assert [e["createdAt"] for e in logs(api, integration_id, since=just_after).data] == [moments[2]] * 2
    just_before = to_iso(parse_iso(moments[0]) - timedelta(milliseconds=1))
    assert len(logs(api, integration_id, since=just_before).data) == 6
    assert len(logs(api, integration_id, since=moments[0]).data) == 6
    offset = parse_iso(moments[1]).astimezone(timezone(timedelta(hours=2))).isoformat(timespec="milliseconds")
    assert "+02:00" in offset
    assert len(logs(api, integration_id, since=offset).data) == 4
    future = to_iso(clock.now() + timedelta(days=1))
    assert logs(api, integration_id, since=future).data == []
    combined = logs(api, integration_id, since=moments[1], entityType="SUPPLIER", status="PARTIAL").data
    assert [e["createdAt"] for e in combined] == [moments[1]]


def test_since_is_inclusive_to_the_millisecond(api: Api, sim: BCSimulator, clock: FakeClock) -> None:
    """For many entry times, since = createdAt includes the entry and since = createdAt + 1 ms excludes it."""
    integration = api.create_integration(sim, entities=["suppliers"])
    # Timestamps whose milliseconds do not survive float arithmetic exactly.
    base = datetime(2024, 6, 15, 10, 30, 0, tzinfo=timezone.utc)
    stamps = [base + timedelta(milliseconds=ms) for ms in (1, 3, 7, 9, 57, 123, 289, 291, 577, 999)]
    misses = []
    for moment in stamps:
        clock.advance((moment - clock.now()).total_seconds())
        assert api.sync(integration["id"], {"mode": "delta"}).status == 200
        created = to_iso(clock.now())
        included = logs(api, integration["id"], since=created).data
        later = to_iso(clock.now() + timedelta(milliseconds=1))
        excluded = logs(api, integration["id"], since=later).data
        if [e["createdAt"] for e in included] != [created] or excluded != []:
            misses.append(created)
    assert misses == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2024-06-15T10:30:00"}, "since"),
        ({"since": "2024-06-15"}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"entityType": "FOO"}, "entityType"),
        ({"entityType": "supplier"}, "entityType"),
        ({"status": "BAD"}, "status"),
        ({"top": 0}, "top"),
        ({"top": 1001}, "top"),
        ({"top": "abc"}, "top"),
        ({"continuationToken": "garbage"}, "continuationToken"),
    ],
)
def test_sync_log_query_validation(api: Api, sim: BCSimulator, params: dict[str, Any], field: str) -> None:
    """Bad filters and paging parameters answer 400 validation_error naming the parameter."""
    integration = api.create_integration(sim)
    assert_error(logs(api, integration["id"], **params), 400, "validation_error", field)


def test_sync_log_paging_covers_every_entry_once(api: Api, sim: BCSimulator, clock: FakeClock) -> None:
    """Paging with top and continuationToken returns every entry exactly once, newest first."""
    integration_id, _, _ = three_runs(api, sim, clock)
    everything = logs(api, integration_id).data
    for top in (1, 2, 4, 5, 6):
        paged = all_pages(api, integration_id, top=top)
        assert [e["id"] for e in paged] == [e["id"] for e in everything], top
    first = logs(api, integration_id, top=4)
    assert len(first.data) == 4 and isinstance(first.body["continuationToken"], str)
    last = logs(api, integration_id, top=4, continuationToken=first.body["continuationToken"])
    assert len(last.data) == 2 and last.body["continuationToken"] is None
    suppliers = all_pages(api, integration_id, top=1, entityType="SUPPLIER")
    assert [e["id"] for e in suppliers] == [e["id"] for e in everything if e["entityType"] == "SUPPLIER"]


def test_a_failed_run_logs_failed_entries(api: Api, sim: BCSimulator) -> None:
    """A run that fails on credentials writes a FAILED entry per data type with metadata.error."""
    integration = api.create_integration(sim)
    sim.set_client_secret(DEMO_TENANT_ID, DEMO_CLIENT_ID, "rotated-secret-value")
    assert_error(api.sync(integration["id"]), 502, "bc_auth_failed")
    entries = logs(api, integration["id"], status="FAILED").data
    assert sorted(e["entityType"] for e in entries) == ["PRODUCT", "SUPPLIER"]
    for entry in entries:
        assert entry["recordsAffected"] == 0
        assert entry["metadata"]["error"]["code"] == "bc_auth_failed"
        assert entry["metadata"]["error"]["message"]
    assert api.get(f"integrations/{integration['id']}").data["status"] == "auth_expired"


# -- 10. companies --------------------------------------------------------------------------------


def test_integration_companies_lists_both_demo_companies(api: Api, sim: BCSimulator) -> None:
    """GET .../dynamics/companies lists the companies the integration's app can see."""
    integration = api.create_integration(sim)
    reply = api.get(f"integrations/{integration['id']}/dynamics/companies")
    assert reply.status == 200, reply.body
    by_id = {c["id"]: c for c in reply.data}
    assert set(by_id) == {DEMO_COMPANY_ID, DEMO_US_COMPANY_ID}
    assert by_id[DEMO_COMPANY_ID]["displayName"] == DEMO_COMPANY_NAME == "CRONUS International Ltd."
    assert by_id[DEMO_US_COMPANY_ID]["displayName"] == DEMO_US_COMPANY_NAME == "CRONUS USA, Inc."
    assert all(c["name"] for c in reply.data)


def test_discover_companies_before_any_integration(api: Api, sim: BCSimulator) -> None:
    """POST /api/dynamics/companies lists companies for bare credentials, storing nothing."""
    reply = api.post("dynamics/companies", {"tenantId": DEMO_TENANT_ID, "clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET})
    assert reply.status == 200, reply.body
    names = sorted(c["displayName"] for c in reply.data)
    assert names == ["CRONUS International Ltd.", "CRONUS USA, Inc."]
    assert {c["id"] for c in reply.data} == {DEMO_COMPANY_ID, DEMO_US_COMPANY_ID}
    assert api.get("integrations").data == []


def test_discover_companies_with_a_wrong_secret_is_bc_auth_failed(api: Api, sim: BCSimulator) -> None:
    """Wrong credentials answer 502 bc_auth_failed without echoing the secret."""
    reply = api.post("dynamics/companies", {"tenantId": DEMO_TENANT_ID, "clientId": DEMO_CLIENT_ID, "clientSecret": "not-the-secret-42"})
    assert_error(reply, 502, "bc_auth_failed")
    assert "not-the-secret-42" not in reply.error["message"]


@pytest.mark.parametrize(
    ("sent", "field"),
    [
        ({"clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET}, "tenantId"),
        ({"tenantId": DEMO_TENANT_ID, "clientSecret": DEMO_CLIENT_SECRET}, "clientId"),
        ({"tenantId": DEMO_TENANT_ID, "clientId": DEMO_CLIENT_ID}, "clientSecret"),
        ({"tenantId": DEMO_TENANT_ID, "clientId": "nope", "clientSecret": DEMO_CLIENT_SECRET}, "clientId"),
        ({"tenantId": DEMO_TENANT_ID, "clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET, "baseUrl": "http://bc.example.com"}, "baseUrl"),
    ],
)
def test_discover_companies_validation(api: Api, sim: BCSimulator, sent: dict[str, Any], field: str) -> None:
    """Missing or invalid discovery fields answer 400 validation_error naming the field, before calling BC."""
    assert_error(api.post("dynamics/companies", sent), 400, "validation_error", field)
    assert_error(api.post("dynamics/companies"), 400, "invalid_json")
    assert not [r for r in sim.requests if "token" in r.path or r.path.startswith("/v2.0/")]


def test_entries_written_within_one_millisecond_stay_newest_first(app: App) -> None:
    """Log keys order by microsecond: entries of one run written in the same millisecond keep their order."""
    base = app.clock.now().replace(microsecond=123000)
    for offset in range(10):
        app.logs.add(
            integration_id="int-same-ms",
            run_id="run-1",
            entity_type="SUPPLIER",
            status="SUCCESS",
            records_affected=offset,
            metadata={"created": offset, "updated": 0, "errors": []},
            created_at=base + timedelta(microseconds=offset * 10),
        )
    entries, _ = app.logs.list("int-same-ms", entity_type=None, status=None, since=None, top=50, continuation_token=None)
    assert [e["recordsAffected"] for e in entries] == list(range(9, -1, -1))
