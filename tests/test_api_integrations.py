"""The integrations API against design.md §3: create, validation, identity, secrets, PATCH, DELETE, paging."""
from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from typing import Any

import pytest

from devtools.bcsim import (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_COMPANY_ID, DEMO_TENANT_ID,
                            DEMO_US_COMPANY_ID, BCSimulator)
from shared.app import App, use_app
from shared.errors import ConfigurationError
from shared.keys import encode_key, record_partition
from shared.settings import load_settings
from shared.storage.integrations import Integration
from tests.support import Api, FakeClock, Reply, integration_body

SECRET_WORDS = ("secret", "token", "password", "credential")


body = integration_body


def assert_error(reply: Reply, status: int, code: str, *names: str) -> None:
    assert reply.status == status, reply.body
    assert reply.error["code"] == code, reply.body
    for name in names:
        assert name in reply.error["message"], reply.body


def raw_integration(app: App, user: str, integration_id: str) -> dict[str, Any]:
    return dict(app.store.table("Integrations").get_entity(encode_key(user), encode_key(integration_id)))


def supplier_rows(app: App, user: str) -> list[dict[str, Any]]:
    return list(app.store.table("Suppliers").query_entities("userId eq @user", parameters={"user": user}))


def assert_no_secret_keys(value: Any) -> None:
    """No key of the integration as returned looks like a secret or token (only has* flags)."""
    if isinstance(value, dict):
        for key, item in value.items():
            lowered = key.lower()
            if any(word in lowered for word in SECRET_WORDS):
                assert lowered.startswith("has") and isinstance(item, bool), key
            assert_no_secret_keys(item)
    elif isinstance(value, list):
        for item in value:
            assert_no_secret_keys(item)


def all_routes(integration_id: str) -> list[tuple[str, str, Any]]:
    return [
        ("GET", "integrations", None),
        ("POST", "integrations", body()),
        ("GET", f"integrations/{integration_id}", None),
        ("PATCH", f"integrations/{integration_id}", {"name": "x"}),
        ("DELETE", f"integrations/{integration_id}", None),
        ("POST", f"integrations/{integration_id}/dynamics/sync", None),
        ("POST", f"integrations/{integration_id}/dynamics/test", None),
        ("GET", f"integrations/{integration_id}/sync-logs", None),
        ("GET", f"integrations/{integration_id}/dynamics/companies", None),
        ("GET", f"integrations/{integration_id}/webhook-deliveries", None),
        ("POST", "dynamics/companies", {"tenantId": DEMO_TENANT_ID, "clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET}),
    ]


# -- 1. create ------------------------------------------------------------------------------------


def test_create_answers_201_with_id_and_defaults(api: Api, sim: BCSimulator) -> None:
    """A create answers 201 with an id and the contract's defaults filled in."""
    reply = api.post("integrations", body(environment=None))
    assert reply.status == 201, reply.body
    data = reply.data
    uuid.UUID(data["id"])
    assert data["name"] == "CRONUS"
    assert data["environment"] == "production"
    assert data["entities"] == ["suppliers", "products"]
    assert data["syncIntervalMinutes"] == 60
    assert data["status"] == "never_synced"
    assert data["lastSyncedAt"] is None and data["lastError"] is None
    assert data["companyId"] == DEMO_COMPANY_ID and data["tenantId"] == DEMO_TENANT_ID and data["clientId"] == DEMO_CLIENT_ID
    assert data["hasClientSecret"] is True


def test_create_and_read_never_return_the_secret(api: Api, sim: BCSimulator) -> None:
    """The client secret is write-only: it appears nowhere in create, get or list answers."""
    secret = "my-very-own-client-secret-0123456789"
    created = api.post("integrations", body(clientSecret=secret))
    assert created.status == 201
    replies = [created, api.get(f"integrations/{created.data['id']}"), api.get("integrations")]
    for reply in replies:
        text = json.dumps(reply.body)
        assert secret not in text
        assert "clientSecret\"" not in text and "clientSecretEnc" not in text
        assert_no_secret_keys(reply.body["data"])
    assert replies[1].data["hasClientSecret"] is True
    assert replies[2].data[0]["hasClientSecret"] is True


# -- 2. validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{not json", b'{"name": "x",}', b"\xff\xfe", b'["name"]', b'"text"', b"42", b"null"])
def test_create_rejects_bodies_that_are_not_a_json_object(api: Api, raw: bytes) -> None:
    """Malformed JSON and JSON that is not an object answer 400 invalid_json."""
    assert_error(api.post("integrations", raw=raw), 400, "invalid_json")


def test_create_rejects_an_empty_body(api: Api) -> None:
    """A create without a body answers 400 invalid_json (there is no default integration)."""
    assert_error(api.post("integrations"), 400, "invalid_json")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"syncIntervalMinutes": "60"}, "syncIntervalMinutes"),
        ({"syncIntervalMinutes": 60.5}, "syncIntervalMinutes"),
        ({"syncIntervalMinutes": True}, "syncIntervalMinutes"),
        ({"syncIntervalMinutes": 4}, "syncIntervalMinutes"),
        ({"syncIntervalMinutes": 1441}, "syncIntervalMinutes"),
        ({"entities": "suppliers"}, "entities"),
        ({"entities": {"suppliers": True}}, "entities"),
        ({"entities": ["suppliers", "widgets"]}, "entities"),
        ({"entities": []}, "entities"),
        ({"entities": ["suppliers", "suppliers"]}, "entities"),
        ({"colour": "blue"}, "colour"),
        ({"name": None}, "name"),
        ({"tenantId": None}, "tenantId"),
        ({"companyId": None}, "companyId"),
        ({"clientId": None}, "clientId"),
        ({"clientSecret": None}, "clientSecret"),
        ({"name": ""}, "name"),
        ({"name": 12}, "name"),
        ({"clientSecret": ""}, "clientSecret"),
        ({"webhookUrl": "http://example.com/hook"}, "webhookUrl"),
        ({"webhookUrl": "ftp://example.com/hook"}, "webhookUrl"),
        ({"webhookUrl": "not a url"}, "webhookUrl"),
        ({"webhookUrl": "https://user:pw@example.com/hook"}, "webhookUrl"),
        ({"baseUrl": "http://bc.example.com"}, "baseUrl"),
        ({"companyId": "not-a-guid"}, "companyId"),
        ({"companyId": "9b3c8e4a52f1ef119344000d3a2f8c17x"}, "companyId"),
        ({"clientId": "3f9a2c71-8b4e-4d05-a6c2"}, "clientId"),
        ({"environment": "prod/../x"}, "environment"),
        ({"fieldMappings": {"suppliers": [{"source": "eudrRiskLevel", "target": "riskLevel", "type": "money"}]}}, "fieldMappings.suppliers.0.type"),
        ({"fieldMappings": {"suppliers": [{"source": "eudrRiskLevel", "target": "externalId", "type": "text"}]}}, "externalId"),
        ({"fieldMappings": {"suppliers": [{"source": "eudrRiskLevel", "target": "syncStatus", "type": "text"}]}}, "syncStatus"),
        ({"fieldMappings": {"suppliers": [{"source": "eudrRiskLevel", "target": "name", "type": "text"}]}}, "fieldMappings.suppliers"),
        (
            {"fieldMappings": {"suppliers": [{"source": "a", "target": "riskLevel", "type": "text"}, {"source": "b", "target": "riskLevel", "type": "number"}]}},
            "fieldMappings.suppliers",
        ),
        ({"fieldMappings": {"widgets": [{"source": "a", "target": "b", "type": "text"}]}}, "fieldMappings.widgets"),
        ({"fieldMappings": {"suppliers": [{"source": "a", "target": "b"}]}}, "fieldMappings.suppliers.0.type"),
        ({"fieldMappings": {"suppliers": [{"source": "a b", "target": "b", "type": "text"}]}}, "fieldMappings.suppliers.0.source"),
        ({"fieldMappings": ["suppliers"]}, "fieldMappings"),
    ],
)
def test_create_validation_errors_name_the_field(api: Api, overrides: dict[str, Any], field: str) -> None:
    """Each invalid create body answers 400 validation_error whose message names the field."""
    reply = api.post("integrations", body(**overrides))  # None in the table means: leave the field out
    assert_error(reply, 400, "validation_error", field)
    assert api.get("integrations").data == []


def test_create_rejects_missing_fields_all_named(api: Api) -> None:
    """An empty object names every missing required field."""
    reply = api.post("integrations", {})
    assert_error(reply, 400, "validation_error", "name", "tenantId", "companyId", "clientId", "clientSecret")
    assert "required" in reply.error["message"]


def test_create_rejects_null_for_required_fields(api: Api) -> None:
    """An explicit null for a required field is a 400 naming it, not a crash."""
    assert_error(api.post("integrations", {**body(), "tenantId": None}), 400, "validation_error", "tenantId")


def test_create_accepts_boundaries_and_loopback_webhooks(api: Api) -> None:
    """5 and 1440 minutes are accepted, as is plain http to a loopback webhook (local development)."""
    low = api.create_integration(None, companyId=str(uuid.uuid4()), syncIntervalMinutes=5)
    high = api.create_integration(None, companyId=str(uuid.uuid4()), syncIntervalMinutes=1440)
    assert (low["syncIntervalMinutes"], high["syncIntervalMinutes"]) == (5, 1440)
    hooked = api.create_integration(None, companyId=str(uuid.uuid4()), webhookUrl="http://127.0.0.1:9/x")
    assert hooked["webhookUrl"] == "http://127.0.0.1:9/x"
    assert hooked["webhookSecret"].startswith("whsec_") and hooked["hasWebhookSecret"] is True
    secure = api.create_integration(None, companyId=str(uuid.uuid4()), webhookUrl="https://hooks.example.com/bc")
    assert secure["webhookSecret"] != hooked["webhookSecret"]
    mapped = api.create_integration(
        None,
        companyId=str(uuid.uuid4()),
        entities=["suppliers", "customers"],
        fieldMappings={"suppliers": [{"source": "eudrRiskLevel", "target": "riskLevel", "type": "text"}]},
    )
    assert mapped["entities"] == ["suppliers", "customers"]
    assert mapped["fieldMappings"] == {"suppliers": [{"source": "eudrRiskLevel", "target": "riskLevel", "type": "text"}]}
    assert len(api.get("integrations").data) == 5


def test_webhook_secret_is_shown_once(api: Api) -> None:
    """The webhook secret is answered by the create only; GET and list never show it."""
    created = api.create_integration(None, webhookUrl="https://hooks.example.com/bc")
    secret = created["webhookSecret"]
    for reply in (api.get(f"integrations/{created['id']}"), api.get("integrations")):
        text = json.dumps(reply.body)
        assert secret not in text and "webhookSecret\"" not in text
    assert api.get(f"integrations/{created['id']}").data["hasWebhookSecret"] is True


# -- 3. identity ----------------------------------------------------------------------------------


def test_every_route_needs_a_caller_identity(api: Api, sim: BCSimulator) -> None:
    """Without X-MS-CLIENT-PRINCIPAL-ID every route answers 401 unauthenticated and changes nothing."""
    integration = api.create_integration(sim)
    anonymous = api.as_user(None)
    for method, path, sent in all_routes(integration["id"]):
        reply = anonymous.call(method, path, sent)
        assert_error(reply, 401, "unauthenticated", "X-MS-CLIENT-PRINCIPAL-ID")
    blank = anonymous.call("GET", "integrations", headers={"X-MS-CLIENT-PRINCIPAL-ID": "   "})
    assert_error(blank, 401, "unauthenticated")
    current = api.get(f"integrations/{integration['id']}").data
    assert current["name"] == "CRONUS" and current["status"] == "never_synced"
    assert len(api.get("integrations").data) == 1
    assert not [r for r in sim.requests if r.path.startswith("/v2.0/")]


def test_someone_elses_integration_is_answered_like_a_missing_one(api: Api, sim: BCSimulator) -> None:
    """Another user's id answers 404 not_found with exactly the body a random missing id gets."""
    mine = api.create_integration(sim)
    other = api.as_user("user-2")
    missing = str(uuid.uuid4())
    calls = [
        ("GET", "integrations/{id}", None),
        ("PATCH", "integrations/{id}", {"name": "stolen"}),
        ("DELETE", "integrations/{id}", None),
        ("POST", "integrations/{id}/dynamics/sync", None),
        ("POST", "integrations/{id}/dynamics/test", None),
        ("GET", "integrations/{id}/sync-logs", None),
        ("GET", "integrations/{id}/dynamics/companies", None),
        ("GET", "integrations/{id}/webhook-deliveries", None),
    ]
    for method, template, sent in calls:
        theirs = other.call(method, template.format(id=mine["id"]), sent)
        absent = other.call(method, template.format(id=missing), sent)
        assert_error(theirs, 404, "not_found")
        assert theirs.body == absent.body, (method, template)
        assert theirs.status == absent.status
    current = api.get(f"integrations/{mine['id']}").data
    assert current["name"] == "CRONUS" and current["status"] == "never_synced" and current["hasClientSecret"] is True
    assert api.get(f"integrations/{mine['id']}/sync-logs").data == []
    assert not [r for r in sim.requests if r.path.startswith("/v2.0/")]


def test_list_shows_only_the_callers_integrations(api: Api, sim: BCSimulator) -> None:
    """Each caller lists only its own integrations."""
    mine = api.create_integration(sim, name="mine")
    theirs = api.as_user("user-2").create_integration(sim, name="theirs")
    assert [i["id"] for i in api.get("integrations").data] == [mine["id"]]
    assert [i["id"] for i in api.as_user("user-2").get("integrations").data] == [theirs["id"]]
    assert api.as_user("user-3").get("integrations").data == []


def test_user_ids_with_key_forbidden_characters_work_and_stay_isolated(api: Api, app: App, sim: BCSimulator) -> None:
    """User ids with / \\ # ? and unicode create, list, get and sync, and never see each other."""
    odd = "us/er\\#?é-名前 ✓"
    lookalike = "us%2Fer%5C%23%3F%C3%A9-%E5%90%8D%E5%89%8D%20%E2%9C%93"  # its encoded form, as a user id
    first, second = api.as_user(odd), api.as_user(lookalike)
    one = first.create_integration(sim)
    two = second.create_integration(sim)
    assert [i["id"] for i in first.get("integrations").data] == [one["id"]]
    assert [i["id"] for i in second.get("integrations").data] == [two["id"]]
    assert first.get(f"integrations/{one['id']}").data["id"] == one["id"]
    assert_error(first.get(f"integrations/{two['id']}"), 404, "not_found")
    assert_error(second.get(f"integrations/{one['id']}"), 404, "not_found")
    assert_error(api.as_user("us").get(f"integrations/{one['id']}"), 404, "not_found")

    reply = first.sync(one["id"])
    assert reply.status == 200, reply.body
    assert reply.data["suppliers"]["created"] == 45
    rows = supplier_rows(app, odd)
    assert len(rows) == 45
    assert {r["userId"] for r in rows} == {odd}
    assert {r["integrationId"] for r in rows} == {one["id"]}
    assert supplier_rows(app, lookalike) == []
    assert first.get(f"integrations/{one['id']}").data["status"] == "connected"
    assert second.get(f"integrations/{two['id']}").data["status"] == "never_synced"


# -- 4. secrets at rest ---------------------------------------------------------------------------


def test_client_secret_is_encrypted_at_rest_and_bound_to_its_integration(api: Api, app: App, sim: BCSimulator) -> None:
    """The stored entity holds no plaintext secret, and its ciphertext opens only for its own integration."""
    one = api.create_integration(sim)
    two = api.create_integration(sim, companyId=DEMO_US_COMPANY_ID)
    entity = raw_integration(app, "user-1", one["id"])
    for name, value in entity.items():
        assert DEMO_CLIENT_SECRET not in str(value), name
    sealed = entity["clientSecretEnc"]
    assert sealed.startswith(f"v2:{app.box.current_id}:")
    first = Integration.from_entity(entity)
    second = Integration.from_entity(raw_integration(app, "user-1", two["id"]))
    assert app.box.decrypt(sealed, context=first.secret_context) == DEMO_CLIENT_SECRET
    with pytest.raises(ConfigurationError):
        app.box.decrypt(sealed, context=second.secret_context)
    assert second.clientSecretEnc != sealed


def test_a_changed_credentials_key_fails_the_sync_clearly(
    api: Api, app: App, sim: BCSimulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """After CREDENTIALS_KEY changes, a sync of an old integration fails saying so; a new secret fixes it."""
    integration = api.create_integration(sim)
    monkeypatch.setenv("CREDENTIALS_KEY", base64.b64encode(os.urandom(32)).decode())
    use_app(App(load_settings(), clock=clock))
    caplog.set_level(logging.DEBUG)
    reply = api.sync(integration["id"])
    assert reply.status == 500, reply.body
    assert reply.error["code"] == "configuration_error"
    assert "CREDENTIALS_KEY" in reply.error["message"]
    assert DEMO_CLIENT_SECRET not in caplog.text
    state = api.get(f"integrations/{integration['id']}").data
    assert state["status"] == "error"
    assert state["lastError"]["code"] == "configuration_error"
    assert "CREDENTIALS_KEY" in state["lastError"]["message"]
    assert not [r for r in sim.requests if "token" in r.path]

    fixed = api.patch(f"integrations/{integration['id']}", {"clientSecret": DEMO_CLIENT_SECRET})
    assert fixed.status == 200, fixed.body
    assert fixed.data["status"] == "never_synced"
    assert api.sync(integration["id"]).status == 200


def test_secrets_and_tokens_never_reach_the_logs(api: Api, sim: BCSimulator, caplog: pytest.LogCaptureFixture) -> None:
    """Neither the client secret nor an access token appears in any log record, through success and auth failure."""
    caplog.set_level(logging.DEBUG)
    for name in ("shared", "msal", "urllib3", "azure", "devtools"):
        caplog.set_level(logging.DEBUG, logger=name)
    integration = api.create_integration(sim)
    assert api.sync(integration["id"]).status == 200
    assert api.post(f"integrations/{integration['id']}/dynamics/test").status == 200
    tokens = {r.headers.get("Authorization", "").partition(" ")[2] for r in sim.requests} - {""}
    tokens |= set(sim.directory.tokens)
    assert tokens

    sim.set_client_secret(DEMO_TENANT_ID, DEMO_CLIENT_ID, "rotated-" + uuid.uuid4().hex)
    sim.revoke_tokens()
    failed = api.sync(integration["id"], {"mode": "full"})
    assert_error(failed, 502, "bc_auth_failed")
    tested = api.post(f"integrations/{integration['id']}/dynamics/test")
    assert_error(tested, 502, "bc_auth_failed")
    wrong = "wrong-" + uuid.uuid4().hex
    found = api.post("dynamics/companies", {"tenantId": DEMO_TENANT_ID, "clientId": DEMO_CLIENT_ID, "clientSecret": wrong})
    assert_error(found, 502, "bc_auth_failed")

    assert len(caplog.records) > 0
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + str(record.exc_text or "")
        assert DEMO_CLIENT_SECRET not in text, record.name
        assert wrong not in text, record.name
        for token in tokens:
            assert token not in text, record.name
    assert DEMO_CLIENT_SECRET not in caplog.text
    assert not any(token in caplog.text for token in tokens)
    for reply in (failed, tested, found):
        assert DEMO_CLIENT_SECRET not in json.dumps(reply.body) and wrong not in json.dumps(reply.body)


# -- 5. CREDENTIALS_KEY missing or malformed ------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [None, "", "not base64 at all!!", base64.b64encode(os.urandom(16)).decode(), base64.b64encode(os.urandom(33)).decode()],
    ids=["unset", "empty", "not-base64", "16-bytes", "33-bytes"],
)
def test_a_bad_credentials_key_answers_configuration_error_everywhere(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    """Every HTTP function answers 500 configuration_error naming CREDENTIALS_KEY when it is missing or malformed."""
    if key is None:
        monkeypatch.delenv("CREDENTIALS_KEY")
    else:
        monkeypatch.setenv("CREDENTIALS_KEY", key)
    use_app(None)
    api = Api()
    for method, path, sent in all_routes(str(uuid.uuid4())):
        reply = api.call(method, path, sent)
        assert_error(reply, 500, "configuration_error", "CREDENTIALS_KEY")
    anonymous = api.as_user(None).get("integrations")
    assert_error(anonymous, 500, "configuration_error", "CREDENTIALS_KEY")


# -- 6. PATCH -------------------------------------------------------------------------------------


def test_patch_updates_fields(api: Api, sim: BCSimulator) -> None:
    """PATCH changes name, interval and entities, and GET shows the change."""
    integration = api.create_integration(sim)
    reply = api.patch(
        f"integrations/{integration['id']}",
        {"name": "Renamed", "syncIntervalMinutes": 15, "entities": ["suppliers", "customers", "salesOrders"]},
    )
    assert reply.status == 200, reply.body
    assert (reply.data["name"], reply.data["syncIntervalMinutes"]) == ("Renamed", 15)
    current = api.get(f"integrations/{integration['id']}").data
    assert current["name"] == "Renamed"
    assert current["syncIntervalMinutes"] == 15
    assert current["entities"] == ["suppliers", "customers", "salesOrders"]
    assert current["hasClientSecret"] is True and current["tenantId"] == DEMO_TENANT_ID
    synced = api.sync(integration["id"])
    assert synced.status == 200, synced.body
    assert set(synced.data) == {"suppliers", "customers", "salesOrders"}


@pytest.mark.parametrize(
    ("sent", "field"),
    [
        ({"syncIntervalMinutes": 4}, "syncIntervalMinutes"),
        ({"syncIntervalMinutes": 1441}, "syncIntervalMinutes"),
        ({"syncIntervalMinutes": "30"}, "syncIntervalMinutes"),
        ({"entities": ["widgets"]}, "entities"),
        ({"entities": "suppliers"}, "entities"),
        ({"colour": "blue"}, "colour"),
        ({"webhookUrl": "http://example.com"}, "webhookUrl"),
        ({"companyId": "nope"}, "companyId"),
        ({"fieldMappings": {"suppliers": [{"source": "a", "target": "externalId", "type": "text"}]}}, "externalId"),
        ({"name": None}, "name"),
        ({"tenantId": None}, "tenantId"),
        ({"clientSecret": None}, "clientSecret"),
        ({"entities": None}, "entities"),
        ({"syncIntervalMinutes": None}, "syncIntervalMinutes"),
    ],
)
def test_patch_validation_errors_name_the_field(api: Api, sim: BCSimulator, sent: dict[str, Any], field: str) -> None:
    """An invalid PATCH (including null for a required field) answers 400 naming the field and changes nothing."""
    integration = api.create_integration(sim)
    reply = api.patch(f"integrations/{integration['id']}", sent)
    assert_error(reply, 400, "validation_error", field)
    current = api.get(f"integrations/{integration['id']}").data
    for key in ("name", "tenantId", "entities", "syncIntervalMinutes", "webhookUrl", "companyId", "fieldMappings", "hasClientSecret"):
        assert current[key] == integration[key], key


def test_patch_rejects_bad_json(api: Api, sim: BCSimulator) -> None:
    """PATCH with malformed JSON, an array or no body answers 400 invalid_json."""
    integration = api.create_integration(sim)
    path = f"integrations/{integration['id']}"
    assert_error(api.patch(path, raw=b"{oops"), 400, "invalid_json")
    assert_error(api.patch(path, raw=b'[{"name": "x"}]'), 400, "invalid_json")
    assert_error(api.patch(path), 400, "invalid_json")


def test_patch_setting_a_webhook_returns_its_secret_once(api: Api, sim: BCSimulator) -> None:
    """A PATCH that sets webhookUrl answers a new webhookSecret once; GET never shows it; clearing removes it."""
    integration = api.create_integration(sim)
    assert "webhookSecret" not in integration and integration["hasWebhookSecret"] is False
    path = f"integrations/{integration['id']}"
    first = api.patch(path, {"webhookUrl": "https://hooks.example.com/a"})
    assert first.status == 200, first.body
    secret = first.data["webhookSecret"]
    assert secret.startswith("whsec_")
    shown = api.get(path)
    assert "webhookSecret" not in shown.data and secret not in json.dumps(shown.body)
    assert shown.data["hasWebhookSecret"] is True
    renamed = api.patch(path, {"name": "no new secret"})
    assert "webhookSecret" not in renamed.data and secret not in json.dumps(renamed.body)
    second = api.patch(path, {"webhookUrl": "https://hooks.example.com/b"})
    assert second.data["webhookSecret"] not in (secret, None)
    cleared = api.patch(path, {"webhookUrl": None})
    assert cleared.data["webhookUrl"] is None and cleared.data["hasWebhookSecret"] is False
    assert "webhookSecret" not in cleared.data


def test_one_integration_per_company_and_user(api: Api, sim: BCSimulator) -> None:
    """A second integration of the same company for the same user is 409; another user may connect it."""
    first = api.create_integration(sim)
    again = api.post("integrations", body(name="again"))
    assert_error(again, 409, "integration_exists", first["id"])
    upper = api.post("integrations", body(name="again", companyId=DEMO_COMPANY_ID.upper()))
    assert_error(upper, 409, "integration_exists")
    shouting = api.post("integrations", body(name="again", tenantId=DEMO_TENANT_ID.upper(), clientId=DEMO_CLIENT_ID.upper()))
    assert_error(shouting, 409, "integration_exists")
    other = api.as_user("user-2").post("integrations", body(name="theirs"))
    assert other.status == 201, other.body
    us = api.create_integration(sim, companyId=DEMO_US_COMPANY_ID)
    moved = api.patch(f"integrations/{us['id']}", {"companyId": DEMO_COMPANY_ID})
    assert_error(moved, 409, "integration_exists")
    assert api.get(f"integrations/{us['id']}").data["companyId"] == DEMO_US_COMPANY_ID
    assert len(api.get("integrations").data) == 2


# -- 7. DELETE = disconnect -----------------------------------------------------------------------


def test_delete_disconnects_keeps_data_and_patch_reconnects(api: Api, app: App, sim: BCSimulator) -> None:
    """DELETE erases credentials but keeps the integration, its logs and data; PATCH with a secret reconnects it."""
    integration = api.create_integration(sim, webhookUrl="https://hooks.example.com/bc")
    path = f"integrations/{integration['id']}"
    assert api.sync(integration["id"]).status == 200
    logs_before = api.get(f"{path}/sync-logs").data
    assert len(logs_before) == 2

    deleted = api.delete(path)
    assert deleted.status == 200, deleted.body
    assert deleted.data["status"] == "disconnected"
    assert deleted.data["hasClientSecret"] is False and deleted.data["hasWebhookSecret"] is False
    entity = raw_integration(app, "user-1", integration["id"])
    assert "clientSecretEnc" not in entity and "webhookSecretEnc" not in entity
    assert "nextSyncAt" not in entity
    assert api.get(path).data["status"] == "disconnected"
    assert [i["status"] for i in api.get("integrations").data] == ["disconnected"]
    assert api.get(f"{path}/sync-logs").data == logs_before
    assert len(supplier_rows(app, "user-1")) == 45

    assert_error(api.sync(integration["id"]), 409, "integration_disconnected")
    assert_error(api.post(f"{path}/dynamics/test"), 409, "integration_disconnected")
    assert_error(api.get(f"{path}/dynamics/companies"), 409, "integration_disconnected")
    assert api.get(path).data["status"] == "disconnected"
    again = api.delete(path)
    assert again.status == 200 and again.data["status"] == "disconnected"

    renamed = api.patch(path, {"name": "still disconnected"})
    assert renamed.data["status"] == "disconnected"
    reconnected = api.patch(path, {"clientSecret": DEMO_CLIENT_SECRET})
    assert reconnected.status == 200, reconnected.body
    assert reconnected.data["status"] == "connected"
    assert reconnected.data["hasClientSecret"] is True
    synced = api.sync(integration["id"])
    assert synced.status == 200, synced.body
    assert synced.data["suppliers"]["created"] == 0
    assert api.get(path).data["status"] == "connected"
    assert len(api.get(f"{path}/sync-logs").data) == 4


def test_delete_of_a_never_synced_integration_reconnects_as_never_synced(api: Api, sim: BCSimulator) -> None:
    """Reconnecting an integration that never synced puts it back to never_synced."""
    integration = api.create_integration(sim)
    path = f"integrations/{integration['id']}"
    assert api.delete(path).data["status"] == "disconnected"
    reply = api.patch(path, {"clientSecret": DEMO_CLIENT_SECRET})
    assert reply.data["status"] == "never_synced" and reply.data["hasClientSecret"] is True
    assert api.post(f"{path}/dynamics/test").status == 200


# -- 8. list paging -------------------------------------------------------------------------------


def test_list_pages_with_top_and_continuation_token(api: Api, sim: BCSimulator) -> None:
    """top=2 over three integrations gives 2 + a token, then 1 + a null token; together all three once."""
    created = {api.create_integration(sim, companyId=str(uuid.uuid4()), name=f"n{i}")["id"] for i in range(3)}
    first = api.get("integrations", params={"top": 2})
    assert first.status == 200
    assert len(first.data) == 2 and isinstance(first.body["continuationToken"], str)
    second = api.get("integrations", params={"top": 2, "continuationToken": first.body["continuationToken"]})
    assert len(second.data) == 1 and second.body["continuationToken"] is None
    assert {i["id"] for i in first.data + second.data} == created
    everything = api.get("integrations")
    assert len(everything.data) == 3 and everything.body["continuationToken"] is None


@pytest.mark.parametrize(
    "params",
    [{"top": 0}, {"top": 1001}, {"top": "abc"}, {"top": -1}, {"top": "1.5"}, {"continuationToken": "garbage"}, {"continuationToken": "%%%"}],
)
def test_list_rejects_bad_paging_parameters(api: Api, sim: BCSimulator, params: dict[str, Any]) -> None:
    """top outside 1..1000, not a number, or an unreadable continuationToken answer 400 validation_error."""
    api.create_integration(sim)
    reply = api.get("integrations", params=params)
    assert_error(reply, 400, "validation_error", next(iter(params)))


def test_list_accepts_the_top_boundaries(api: Api, sim: BCSimulator) -> None:
    """top=1 and top=1000 are accepted."""
    api.create_integration(sim)
    assert len(api.get("integrations", params={"top": 1}).data) == 1
    assert len(api.get("integrations", params={"top": 1000}).data) == 1
