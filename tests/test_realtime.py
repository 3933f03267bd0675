"""Near-real-time sync through BC webhooks (design.md §10): subscriptions with the handshake,
the notification endpoint over real HTTP (the simulator calls the function folders served by
FunctionHost), coalescing, deletes flagged, renewal, removal, and the faults around them."""
from __future__ import annotations

import dataclasses
import json
import time
from datetime import timedelta
from typing import Any, Iterator

import httpx
import pytest

from devtools.bcsim import DEMO_COMPANY_ID, BCSimulator
from devtools.funchost import FunctionHost
from shared.app import App, use_app
from shared.keys import encode_key, record_partition
from shared.runs.dispatch import RunRequest, start_run
from shared.runs.slices import run_slice
from shared.settings import load_settings
from shared.storage.subscriptions import SubscriptionRepository, hash_client_state
from tests.support import ROOT, Api, FakeClock, drain

URL = "/api/bc/notifications"


@pytest.fixture
def host() -> Iterator[FunctionHost]:
    with FunctionHost(ROOT) as served:
        yield served


@pytest.fixture
def rt_app(env: dict[str, str], clock: FakeClock, host: FunctionHost, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The App with PUBLIC_BASE_URL = the local host, and the simulator batching quickly."""
    monkeypatch.setenv("PUBLIC_BASE_URL", host.base_url)
    sim.webhooks.delay_seconds = 0.2
    sim.webhooks.retry_seconds = 0.2
    instance = App(load_settings(), clock=clock)
    use_app(instance)
    yield instance
    use_app(None)


@pytest.fixture
def rt_api(rt_app: App) -> Api:
    return Api()


def _create(api: Api, sim: BCSimulator, **overrides: Any) -> dict[str, Any]:
    return api.create_integration(sim, realtime=True, **overrides)


def _sub_of(sim: BCSimulator, entity_set: str) -> Any:
    [sub] = [s for s in sim.webhooks.subscriptions.values() if s.entity_set == entity_set]
    return sub


def _notify(host: FunctionHost, items: list[dict[str, Any]] | None = None, *, raw: bytes | None = None) -> httpx.Response:
    body = raw if raw is not None else json.dumps({"value": items}).encode()
    return httpx.post(host.base_url + URL, content=body, headers={"Content-Type": "application/json"}, timeout=10)


def _item(sub: Any, change: str = "updated", *, resource: str | None = None, client_state: str | None = None, at: str = "2026-12-01T10:00:00Z") -> dict[str, Any]:
    return {"subscriptionId": sub.subscriptionId, "clientState": sub.clientState if client_state is None else client_state,
            "expirationDateTime": "2026-12-04T10:00:00Z", "resource": resource or sub.resource, "changeType": change,
            "lastModifiedDateTime": at}


def _record(app: App, table: str, integration_id: str, external_id: str) -> dict[str, Any]:
    key = encode_key(external_id)
    return dict(app.store.table(table).get_entity(record_partition(integration_id, key), key))


def _runs(app: App, integration_id: str) -> list[Any]:
    return app.runs.list(integration_id, top=100, continuation_token=None)[0]


def _queue_length(app: App) -> int:
    app.queue._ensure()
    return int(app.queue.client.get_queue_properties().approximate_message_count)


# -- subscribing ----------------------------------------------------------------------------------
def test_realtime_on_create_subscribes_each_type_with_the_handshake_and_shows_it(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    created = _create(rt_api, sim, entities=["suppliers", "products"])
    assert created["realtime"]["enabled"] is True
    subs = created["realtime"]["subscriptions"]
    assert set(subs) == {"suppliers", "products"}
    assert all(s["status"] == "active" and s["error"] is None and s["expiresAt"] for s in subs.values())
    assert len(sim.webhooks.handshakes) == 2 and all(status == 200 for _, status in sim.webhooks.handshakes)
    vendors = _sub_of(sim, "vendors")
    assert vendors.resource == f"/api/v2.0/companies({DEMO_COMPANY_ID})/vendors"
    assert vendors.notificationUrl == host.base_url + URL
    assert len(vendors.clientState) >= 32
    assert vendors.clientState != _sub_of(sim, "items").clientState
    # stored only hashed: the clientState is nowhere in the subscriptions table
    rows = [dict(r) for r in rt_app.store.query("BCSubscriptions", "PartitionKey ne @x", parameters={"x": ""})]
    assert len(rows) == 2 and vendors.clientState not in json.dumps(rows, default=str)
    assert hash_client_state(vendors.clientState) in {r["clientStateHash"] for r in rows}
    shown = rt_api.get(f"integrations/{created['id']}").data
    assert shown["realtime"]["subscriptions"]["suppliers"]["status"] == "active"
    assert "realtimeFollowUp" not in shown and "clientStateHash" not in json.dumps(shown)


def test_realtime_defaults_to_off_and_must_be_a_boolean(rt_api: Api, sim: BCSimulator) -> None:
    created = rt_api.create_integration(sim)
    assert created["realtime"] == {"enabled": False, "subscriptions": {}}
    assert sim.webhooks.subscriptions == {}
    bad = rt_api.post("integrations", {"name": "x", "realtime": "yes"})
    assert bad.status == 400 and "realtime" in bad.error["message"]
    bad_patch = rt_api.patch(f"integrations/{created['id']}", {"realtime": None})
    assert bad_patch.status == 400 and "realtime" in bad_patch.error["message"]


def test_without_public_base_url_realtime_is_accepted_but_every_type_shows_failed(api: Api, app: App, sim: BCSimulator) -> None:
    assert app.settings.public_base_url is None
    created = api.create_integration(sim, realtime=True, entities=["suppliers", "customers"])
    subs = created["realtime"]["subscriptions"]
    assert {k: v["status"] for k, v in subs.items()} == {"suppliers": "failed", "customers": "failed"}
    assert subs["suppliers"]["error"]["code"] == "public_base_url_missing"
    assert "PUBLIC_BASE_URL" in subs["suppliers"]["error"]["message"]
    assert sim.webhooks.subscriptions == {}
    assert api.sync(created["id"]).status == 200  # polling carries on


def test_bc_refusing_at_its_limit_is_shown_per_type_and_polling_carries_on(rt_api: Api, rt_app: App, sim: BCSimulator) -> None:
    sim.webhooks.limit = 1
    created = _create(rt_api, sim, entities=["suppliers", "products"])
    subs = created["realtime"]["subscriptions"]
    assert subs["suppliers"]["status"] == "active"
    assert subs["products"]["status"] == "failed" and subs["products"]["expiresAt"] is None
    assert "maximum number of subscriptions" in subs["products"]["error"]["message"]
    assert subs["products"]["error"]["code"] == "bc_error"
    assert rt_api.sync(created["id"]).data["products"]["created"] == 230
    # once BC has room again, the timer's retry subscribes it
    sim.webhooks.limit = 200
    clock: FakeClock = rt_app.clock  # type: ignore[assignment]
    clock.advance(31 * 60)
    from shared.runs.housekeeping import housekeeping

    assert housekeeping(rt_app)["subscriptions"]["retried"] == 1
    shown = rt_api.get(f"integrations/{created['id']}").data["realtime"]["subscriptions"]
    assert shown["products"]["status"] == "active" and shown["products"]["error"] is None


def test_a_handshake_the_function_app_does_not_answer_fails_that_type(rt_api: Api, rt_app: App, sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    rt_app_wrong = App(dataclasses.replace(rt_app.settings, public_base_url="http://127.0.0.1:9"), clock=rt_app.clock)
    use_app(rt_app_wrong)
    try:
        created = Api().create_integration(sim, realtime=True, entities=["suppliers"])
    finally:
        use_app(rt_app)
    sub = created["realtime"]["subscriptions"]["suppliers"]
    assert sub["status"] == "failed" and "could not be validated" in sub["error"]["message"]
    assert sim.webhooks.subscriptions == {}


# -- the handshake ---------------------------------------------------------------------------------
def test_the_handshake_echoes_the_token_as_plain_text_on_get_and_post(rt_app: App, host: FunctionHost) -> None:
    for method in ("GET", "POST"):
        reply = httpx.request(method, host.base_url + URL, params={"validationToken": "abc-123_XYZ"}, timeout=10)
        assert reply.status_code == 200 and reply.text == "abc-123_XYZ"
        assert reply.headers["content-type"].startswith("text/plain")
    assert httpx.get(host.base_url + URL, params={"validationToken": "x" * 2000}, timeout=10).status_code == 400
    assert httpx.get(host.base_url + URL, timeout=10).status_code == 405


def test_renewal_repeats_the_handshake_and_moves_the_expiry(rt_api: Api, rt_app: App, sim: BCSimulator, clock: FakeClock) -> None:
    created = _create(rt_api, sim, entities=["suppliers"])
    first = created["realtime"]["subscriptions"]["suppliers"]["expiresAt"]
    sub = _sub_of(sim, "vendors")
    old_etag, old_id = sub.etag, sub.subscriptionId
    from shared.runs.housekeeping import housekeeping

    assert housekeeping(rt_app)["subscriptions"]["renewed"] == 0  # not due yet
    sim.advance(2 * 86400 + 3600)
    clock.advance(2 * 86400 + 3600)  # now within 24 h of the expiry
    handshakes = len(sim.webhooks.handshakes)
    assert housekeeping(rt_app)["subscriptions"]["renewed"] == 1
    assert len(sim.webhooks.handshakes) == handshakes + 1  # BC repeated it; we answered
    assert sub.subscriptionId == old_id and sub.etag != old_etag
    renewed = rt_api.get(f"integrations/{created['id']}").data["realtime"]["subscriptions"]["suppliers"]
    assert renewed["status"] == "active" and renewed["expiresAt"] > first
    patches = [r for r in sim.requests if r.method == "PATCH" and "subscriptions" in r.path and r.status == 200]
    assert len(patches) == 1 and patches[0].headers["if-match"] == old_etag  # (a 401 before it: the token aged 2 days)
    assert housekeeping(rt_app)["subscriptions"]["renewed"] == 0  # due again only a day before the new expiry


def test_bc_answering_404_on_renewal_creates_the_subscription_again(rt_api: Api, rt_app: App, sim: BCSimulator, clock: FakeClock, host: FunctionHost) -> None:
    created = _create(rt_api, sim, entities=["suppliers"])
    old = _sub_of(sim, "vendors")
    sim.webhooks.subscriptions.clear()  # BC forgot it (expired, or dropped after an error)
    clock.advance(2 * 86400 + 3600)
    from shared.runs.housekeeping import housekeeping

    assert housekeeping(rt_app)["subscriptions"]["recreated"] == 1
    new = _sub_of(sim, "vendors")
    assert new.subscriptionId != old.subscriptionId and new.clientState != old.clientState
    shown = rt_api.get(f"integrations/{created['id']}").data["realtime"]["subscriptions"]["suppliers"]
    assert shown["status"] == "active"
    # the old id is no longer ours; the new one works
    assert _notify(host, [_item(old)]).status_code == 401
    assert _notify(host, [_item(new)]).status_code == 202


# -- removal ----------------------------------------------------------------------------------------
def test_realtime_false_and_delete_remove_the_subscriptions_with_if_match(rt_api: Api, rt_app: App, sim: BCSimulator) -> None:
    created = _create(rt_api, sim, entities=["suppliers", "products"])
    etags = {s.subscriptionId: s.etag for s in sim.webhooks.subscriptions.values()}
    off = rt_api.patch(f"integrations/{created['id']}", {"realtime": False}).data
    assert off["realtime"] == {"enabled": False, "subscriptions": {}}
    assert sim.webhooks.subscriptions == {}
    deletes = [r for r in sim.requests if r.method == "DELETE" and "subscriptions" in r.path]
    assert sorted(r.headers["if-match"] for r in deletes) == sorted(etags.values())
    on = rt_api.patch(f"integrations/{created['id']}", {"realtime": True, "entities": ["customers"]}).data
    assert set(on["realtime"]["subscriptions"]) == {"customers"} and len(sim.webhooks.subscriptions) == 1
    # dropping a type removes its subscription
    fewer = rt_api.patch(f"integrations/{created['id']}", {"entities": ["suppliers"]}).data
    assert set(fewer["realtime"]["subscriptions"]) == {"suppliers"}
    assert [s.entity_set for s in sim.webhooks.subscriptions.values()] == ["vendors"]
    gone = rt_api.delete(f"integrations/{created['id']}")
    assert gone.status == 200 and gone.data["status"] == "disconnected"
    assert sim.webhooks.subscriptions == {}
    assert list(SubscriptionRepository(rt_app.store).list_for(created["id"])) == []


def test_bc_failing_the_delete_never_blocks_the_patch(rt_api: Api, rt_app: App, sim: BCSimulator) -> None:
    created = _create(rt_api, sim, entities=["suppliers"])
    sim.faults.add(500, times=None, path_contains="subscriptions")
    reply = rt_api.patch(f"integrations/{created['id']}", {"realtime": False})
    sim.faults.clear()
    assert reply.status == 200 and reply.data["realtime"]["enabled"] is False
    assert list(SubscriptionRepository(rt_app.store).list_for(created["id"])) == []
