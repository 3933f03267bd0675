"""Real BC responses (tests/fixtures/bc, with attribution) replayed through the service's own BC
client over real HTTPS and through its mapping: the code is pinned to what BC really sends.

The simulator serves each recorded body as is (its fault plan answers a matching request with a
given status, body and content type before any routing), so nothing between BC's bytes and the
client is ours. Single-entity documentation examples are served in BC's list shape (`value`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from devtools.bcsim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_COMPANY_ID, DEMO_TENANT_ID, BCSimulator
from shared.bc.auth import TokenProvider
from shared.bc.client import BCClient, service_root
from shared.entities import ENTITY_TYPES
from shared.errors import BCAuthError, BCCompanyNotFound, BCError, BCUnavailable
from shared.bcvalues import ZERO_GUID
from shared.mapping import map_record
from tests.support import FakeClock
from tests.test_bcsim import bc_url, client, read_all

FIXTURES = Path(__file__).parent / "fixtures" / "bc"
AMP_TENANT = "5c6241d0-74cc-48a2-b667-3eb0d738af72"
AMP_COMPANY = "70c0c603-f4f9-ef11-9344-6045bdc8c234"
VCR_COMPANY = "2cd06086-7b01-f111-a1fd-7ced8d2674f8"
BC_HOST = "https://api.businesscentral.dynamics.com"
#: BC entity set -> the service's data type that reads it
MAPPED = {e.entity_set: e for e in ENTITY_TYPES.values()}


def load(rel: str) -> Any:
    return json.loads((FIXTURES / rel).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sim() -> Iterator[BCSimulator]:
    with BCSimulator(seed=42) as s:
        for tenant in (AMP_TENANT,):
            s.register_app(tenant, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
        yield s


@pytest.fixture()
def bc(sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A factory of the service's real BCClient against the simulator's HTTPS port."""
    monkeypatch.setenv("SSL_CERT_FILE", sim.ca_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim.ca_path)
    TokenProvider._apps.clear()
    sim.faults.clear()
    made: list[BCClient] = []

    def make(tenant: str = DEMO_TENANT_ID, company: str = DEMO_COMPANY_ID, environment: str = "Production",
             max_retries: int = 0) -> BCClient:
        tokens = TokenProvider(authority_host=sim.base_url, tenant_id=tenant, client_id=DEMO_CLIENT_ID,
                               client_secret=DEMO_CLIENT_SECRET, shared_cache=False)
        c = BCClient(root=service_root(api_base_url=sim.base_url, tenant_id=tenant, environment=environment,
                                       base_url=None), company_id=company, tokens=tokens, clock=FakeClock(),
                     page_size=100, max_retries=max_retries, timeout_seconds=10)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
    sim.faults.clear()


def serve(sim: BCSimulator, path_contains: str, body: Any, status: int = 200, content_type: str | None = None,
          times: int = 1) -> None:
    sim.faults.add(status, body=body, content_type=content_type or "application/json; odata.metadata=minimal",
                   path_contains=path_contains, times=times)


def check_mapping(entity_set: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Map one BC record with the service's mapping and check BC's encodings were undone."""
    entity = MAPPED[entity_set]
    rec = map_record(entity, raw, user_id="user-1", integration_id="integration-1")
    assert rec.external_id == raw["id"] and rec.properties["externalId"] == raw["id"]
    for name, field in entity.model.model_fields.items():
        source = field.alias or name
        if source not in raw:
            continue
        value, out = raw[source], rec.properties.get(name)
        if value in (ZERO_GUID, "0001-01-01") or (isinstance(value, str) and value.startswith("0001-01-01T")):
            assert out is None, f"{source}={value!r} is BC's blank, not a value"
        elif isinstance(value, str) and "_x" in value:
            assert out is not None and not re.search(r"_x[0-9A-Fa-f]{4}_", out), (source, value, out)
        elif isinstance(value, (int, float, Decimal)) and not isinstance(value, bool) and isinstance(out, str):
            assert Decimal(out) == Decimal(str(value)), f"money {source} must stay exact"
    return rec.properties


# ---- paging: nextLink with aid=FIN, $skiptoken, etags, enums, zero GUIDs -----------------------------------
def test_amp_customers_pages_follow_bcs_next_link_and_map(sim: BCSimulator, bc: Any) -> None:
    page1, page2 = load("amp-labs-connectors/customers_page1_with_nextLink.json"), \
        load("amp-labs-connectors/customers_page2_last_empty.json")
    link = page1["@odata.nextLink"]
    assert "aid=FIN&$skiptoken=" in link and link.startswith(BC_HOST)
    page1 = {**page1, "@odata.nextLink": link.replace(BC_HOST, sim.base_url)}
    serve(sim, f"companies({AMP_COMPANY})/customers", page1)
    serve(sim, f"$skiptoken={link.rsplit('=', 1)[1]}", page2)
    sim.clear_requests()
    pages = list(bc(tenant=AMP_TENANT, company=AMP_COMPANY).pages("customers"))
    assert [len(p.records) for p in pages] == [len(page1["value"]), len(page2["value"])]
    followed = [r for r in sim.requests if "/customers" in r.path][1]
    assert followed.query["aid"] == "FIN" and followed.query["$skiptoken"] == page1["value"][-1]["id"]
    rows = [r for p in pages for r in p.records]
    assert [r["@odata.etag"] for r in rows] == [r["@odata.etag"] for r in page1["value"] + page2["value"]]
    first = check_mapping("customers", rows[0])
    assert rows[0]["blocked"] == "_x0020_" and first.get("blocked") in ("", None)
    assert isinstance(rows[0]["balanceDue"], int) and first["balanceDue"] == "0"
    assert first["sourceModifiedAt"].startswith("2025-03-05T19:19:22.273")


def test_amp_balance_sheet_page_and_created_contact_read_through_the_client(sim: BCSimulator, bc: Any) -> None:
    sheet = load("amp-labs-connectors/balanceSheets_last_page.json")
    serve(sim, "/balanceSheets", sheet)
    [page] = list(bc(tenant=AMP_TENANT, company=AMP_COMPANY).pages("balanceSheets"))
    assert page.next_link is None and len(page.records) == len(sheet["value"])
    money = [v for r in page.records for v in r.values() if isinstance(v, Decimal)]
    assert money, "fractional JSON numbers arrive as exact Decimals"
    contact = load("amp-labs-connectors/contact_created_entity.json")
    serve(sim, "/contacts", {"value": [contact]})
    [page] = list(bc(tenant=AMP_TENANT, company=AMP_COMPANY).pages("contacts"))
    assert page.records[0]["@odata.etag"] == contact["@odata.etag"]


VCR = sorted(p.name for p in (FIXTURES / "hotglue-tap-dynamics-bc-vcr").glob("*.json"))


@pytest.mark.parametrize("name", VCR)
def test_recorded_tap_dynamics_bc_responses_replay_and_map(sim: BCSimulator, bc: Any, name: str) -> None:
    cassette = load(f"hotglue-tap-dynamics-bc-vcr/{name}")
    response, uri = cassette["response"], cassette["request"]["uri"]
    body = response["body"]
    m = re.search(r"/companies\((?P<cid>[^)]+)\)/(?P<set>\w+)", uri)
    ctype = response["headers"].get("Content-Type")
    if m is None:  # the companies list (or the admin API's environments): served as the companies page
        serve(sim, "/companies", body, content_type=ctype)
        records = bc().list_companies()
        assert len(records) == len(body["value"])
        return
    entity_set = m["set"]
    if "nextLink" in json.dumps(body):
        body = json.loads(json.dumps(body).replace(BC_HOST, sim.base_url))
    serve(sim, f"companies({m['cid']})/{entity_set}", body, content_type=ctype)
    pages = list(bc(company=m["cid"]).pages(entity_set))
    rows = [r for p in pages for r in p.records]
    assert len(rows) == len(body["value"]) and [r["id"] for r in rows if "id" in r] == \
        [r["id"] for r in body["value"] if "id" in r]
    # The recorder scrubbed every value but ids, names, timestamps and nextLinks: only those are
    # BC's, so only those are checked (the others are fake text such as '-Fallback-').
    stamps = [r["lastModifiedDateTime"] for r in rows if "lastModifiedDateTime" in r]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z", t) for t in stamps), stamps
    assert all(re.fullmatch(r"[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}", r["id"]) for r in rows if "id" in r)


DOC_EXAMPLES = {"vendor_get.json": "vendors", "customer_get.json": "customers", "item_get.json": "items",
                "salesOrder_get.json": "salesOrders", "generalLedgerEntry_get.json": "generalLedgerEntries"}


@pytest.mark.parametrize("name, entity_set", sorted(DOC_EXAMPLES.items()))
def test_microsoft_documented_examples_map(sim: BCSimulator, bc: Any, name: str, entity_set: str) -> None:
    example = load(f"ms-docs/{name}")["example_response"]
    serve(sim, f"/{entity_set}", {"value": [example]})
    [page] = list(bc().pages(entity_set))
    props = check_mapping(entity_set, page.records[0])
    assert props["externalId"] == example["id"]


def test_documented_sales_order_line_maps_under_its_order() -> None:
    order = load("ms-docs/salesOrder_get.json")["example_response"]
    line = load("ms-docs/salesOrderLine_get.json")["example_response"]
    mapped = map_record(ENTITY_TYPES["salesOrders"], {**order, "salesOrderLines": [line]},
                        user_id="user-1", integration_id="integration-1")
    [child] = mapped.children
    assert child.external_id == line["id"] and child.properties["orderExternalId"] == order["id"]
    if line.get("itemId") == ZERO_GUID:
        assert "itemId" not in child.properties


# ---- errors: JSON and XML bodies -> the service's error codes -------------------------------------------
ERRORS = [
    # file, status served, expected class, expected service code, expected BC code
    ("errors/amp_400_BadRequest_unknown_property.json", 400, BCError, "bc_error", "BadRequest"),
    ("errors/400_BadRequest_InvalidToken__simple-odata-client-667.json", None, BCError, "bc_error",
     "BadRequest_InvalidToken"),
    ("errors/400_BadRequest_interface__book.json", None, BCError, "bc_error", "BadRequest"),
    ("errors/401_Authentication_InvalidCredentials__nav-docker-570.json", None, BCAuthError, "bc_auth_failed",
     "Authentication_InvalidCredentials"),
    ("errors/404_BadRequest_NotFound_no_http_resource__AL-8283.json", None, BCError, "bc_error", "BadRequest_NotFound"),
    ("errors/amp_404_BadRequest_ResourceNotFound.json", 404, BCError, "bc_error", "BadRequest_ResourceNotFound"),
    ("errors/Internal_RecordNotFound__unknown-repo.json", 404, BCError, "bc_error", "Internal_RecordNotFound"),
    ("errors/429_Application_TooManyRequests__book.json", None, BCUnavailable, "bc_unavailable",
     "Application_TooManyRequests"),
]


@pytest.mark.parametrize("rel, status, cls, code, bc_code", ERRORS, ids=[e[0].split("/")[1] for e in ERRORS])
def test_json_error_bodies_decode_to_the_right_codes(sim: BCSimulator, bc: Any, rel: str, status: int | None,
                                                     cls: type, code: str, bc_code: str) -> None:
    data = load(rel)
    body = data.get("body", data)
    status = status or data["status"]
    serve(sim, "/vendors", body, status=status, content_type="application/json; charset=utf-8", times=2)
    with pytest.raises(BCError) as caught:
        list(bc().pages("vendors"))
    err = caught.value
    assert type(err) is cls and err.code == code and err.bc_code == bc_code and err.http_status == status
    if m := re.search(r"CorrelationId:?\s*([0-9a-fA-F-]{36})", body["error"]["message"]):
        assert err.correlation_id == m[1].lower()
        assert "CorrelationId:" not in err.message, "BC's label is parsed off, the id kept as its own field"


def test_xml_no_environment_is_company_not_found_with_bcs_code(sim: BCSimulator, bc: Any) -> None:
    xml = (FIXTURES / "errors/amp_404_NoEnvironment.xml").read_bytes()
    serve(sim, "/vendors", xml, status=404, content_type="application/xml")
    with pytest.raises(BCError) as caught:
        list(bc(environment="Nowhere").pages("vendors"))
    err = caught.value
    assert isinstance(err, BCCompanyNotFound) and err.code == "bc_company_not_found" and err.http_status == 404
    assert "<error" not in err.message, "an XML page is never echoed"
    assert err.bc_code == "NoEnvironment", "BC's code is read from the XML body as from JSON"


def test_deadlock_409_is_retried_like_other_transient_failures(sim: BCSimulator, bc: Any) -> None:
    data = load("errors/409_Internal_ServerError_deadlock__tap-dynamics-bc-test.json")
    serve(sim, "/vendors", data["body"], status=data["status"], content_type="application/json; charset=utf-8")
    pages = list(bc(max_retries=2).pages("vendors", select=["id"]))
    assert sum(len(p.records) for p in pages) == 45, "the read goes on once the deadlock is gone"


# ---- the simulator's own shapes match the real ones ------------------------------------------------------
def test_simulator_next_links_have_bcs_shape(sim: BCSimulator) -> None:
    examples = load("paging/nextLink_examples.json")["examples"]
    real = next(e["nextLink"] for e in examples if "$select=id%2CdisplayName%2Cemail&aid=FIN&$skiptoken=" in e["nextLink"])
    with client(sim) as c:
        r = c.get(bc_url(sim, "/customers"), params={"$select": "id,displayName,email"},
                  headers={"Prefer": "odata.maxpagesize=2"}).json()
    ours = r["@odata.nextLink"]
    assert ours.split("/customers", 1)[1].rsplit("=", 1)[0] == real.split("/customers", 1)[1].rsplit("=", 1)[0]
    assert ours.rsplit("=", 1)[1] == r["value"][-1]["id"], "$skiptoken is the last row's id, as in BC"


def test_simulator_records_carry_the_fields_bc_documents(sim: BCSimulator) -> None:
    """Every property of Microsoft's v2.0 examples exists on the simulator's records (same names)."""
    pairs = {"vendor_get.json": "vendors", "customer_get.json": "customers", "item_get.json": "items",
             "salesOrder_get.json": "salesOrders", "salesOrderLine_get.json": "salesOrderLines",
             "generalLedgerEntry_get.json": "generalLedgerEntries", "itemLedgerEntry_get.json": "itemLedgerEntries"}
    with client(sim) as c:
        for name, entity_set in pairs.items():
            example = load(f"ms-docs/{name}")["example_response"]
            ours, _ = read_all(c, bc_url(sim, f"/{entity_set}"), 1000)
            missing = {k for k in example if not k.startswith("@")} - set(ours[0])
            assert not missing, f"{entity_set}: {sorted(missing)}"


def test_simulator_notifications_and_subscriptions_have_bcs_keys(sim: BCSimulator) -> None:
    sample = load("webhooks/notification_payload_docs_v2.json")["notification_payload"]["value"][0]
    created = load("webhooks/subscription_create_response_docs.json")["example_response"]
    with client(sim) as c:
        ours = c.get(f"{sim.base_url}/v2.0/{DEMO_TENANT_ID}/production/api/v2.0/subscriptions").json()
    assert ours["value"] == [] and "@odata.context" in ours
    from devtools.bcsim.webhooks import Subscription
    from datetime import datetime, timezone
    now = datetime.now(timezone.utc)
    sub = Subscription("s1", DEMO_TENANT_ID, "production", "https://x", "/api/v2.0/companies(c)/vendors", "st", now,
                       "W/\"x\"", "c", "vendors", now)
    assert set(created) - {"@odata.context"} <= set(sub.to_api()) | {"@odata.etag"}
    sim.webhooks.resource_form = "no_slash"
    try:
        item_resource = sim.webhooks.item_resource(sub, "vendors(abc)")
    finally:
        sim.webhooks.resource_form = "subscribed"
    assert re.sub(r"\([^)]*\)", "()", item_resource) == re.sub(r"\([^)]*\)", "()", sample["resource"]).replace("items", "vendors")
