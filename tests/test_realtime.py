"""Near-real-time sync through BC webhooks (design.md §10): subscriptions with the handshake,
the notification endpoint over real HTTP (the simulator calls the function folders served by
FunctionHost), coalescing, deletes flagged, renewal, removal, and the faults around them."""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Iterator

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError

from devtools.bcsim import DEMO_COMPANY_ID, BCSimulator
from devtools.funchost import FunctionHost
from shared.app import App, use_app
from shared.keys import record_partition, record_row_key
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
    key = record_row_key(external_id)
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


# -- notifications: the whole way, from a change in BC to the record stored ------------------------
def test_a_change_in_bc_is_notified_queued_as_one_delta_and_stored(rt_api: Api, rt_app: App, sim: BCSimulator) -> None:
    created = _create(rt_api, sim, entities=["suppliers"])
    assert rt_api.sync(created["id"]).status == 200
    vendor = sim.company().records("vendors")[0]
    sim.company().update("vendors", vendor["id"], displayName="Renamed in BC")
    sim.company().update("vendors", vendor["id"], displayName="Renamed twice")  # one batch, one delta
    assert sim.webhooks.wait_idle(10)
    [delivery] = sim.webhooks.deliveries
    assert delivery.status == 202 and [i["changeType"] for i in delivery.items] == ["updated", "updated"]
    assert delivery.at - delivery.sent < 5  # answered well within BC's 5 seconds, nothing synced inline
    runs = [r for r in _runs(rt_app, created["id"]) if r.trigger != "manual"]
    assert [(r.trigger, r.mode, r.entities) for r in runs] == [("notification", "delta", ["suppliers"])]
    assert _queue_length(rt_app) == 1
    [outcome] = drain(rt_app)
    assert outcome.run.status == "succeeded" and outcome.run.progress["suppliers"].updated == 1
    assert _record(rt_app, "Suppliers", created["id"], vendor["id"])["name"] == "Renamed twice"


def test_a_burst_past_the_threshold_arrives_as_collection_and_queues_a_delta(rt_api: Api, rt_app: App, sim: BCSimulator) -> None:
    sim.webhooks.collection_threshold = 5
    created = _create(rt_api, sim, entities=["suppliers"])
    assert rt_api.sync(created["id"]).status == 200
    vendors = sim.company().records("vendors")[:8]
    for n, vendor in enumerate(vendors):
        sim.company().update("vendors", vendor["id"], displayName=f"Bulk {n}")
    assert sim.webhooks.wait_idle(10)
    [delivery] = sim.webhooks.deliveries
    assert [i["changeType"] for i in delivery.items] == ["collection"] and "$filter" in delivery.items[0]["resource"]
    delta, reconcile = drain(rt_app)  # a collection may hide deletes: its reconcile follows the delta (design.md §10)
    assert delta.run.trigger == "notification" and delta.run.progress["suppliers"].updated == 8
    assert reconcile.run.trigger == "notification" and reconcile.run.mode == "reconcile" and reconcile.run.status == "succeeded"


def test_a_delete_in_bc_flags_the_record_and_bc_returning_it_clears_the_flag(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    created = _create(rt_api, sim, entities=["suppliers"])
    assert rt_api.sync(created["id"]).status == 200
    vendor = sim.company().records("vendors")[3]
    sim.company().delete("vendors", vendor["id"])
    assert sim.webhooks.wait_idle(10)
    [delivery] = sim.webhooks.deliveries
    assert delivery.status == 202 and delivery.items[0]["resource"].endswith(f"/vendors({vendor['id']})")
    stored = _record(rt_app, "Suppliers", created["id"], vendor["id"])
    assert stored["deletedInBC"] is True and stored["deletedAt"] and stored["name"] == vendor["displayName"]  # kept
    assert _queue_length(rt_app) == 0  # a delete alone needs no delta
    # a delete of something never stored creates nothing
    sub = _sub_of(sim, "vendors")
    missing = "00000000-0000-0000-0000-0000000000aa"
    assert _notify(host, [_item(sub, "deleted", resource=f"{sub.resource}({missing})")]).status_code == 202
    with pytest.raises(ResourceNotFoundError):
        _record(rt_app, "Suppliers", created["id"], missing)
    assert len(list(rt_app.store.query("Suppliers", "integrationId eq @id", parameters={"id": created["id"]}))) == 45
    # BC has the record again (restored, or the delete was a mistake): the next delta clears the flag
    sim.company().sets["vendors"].put({**vendor, "lastModifiedDateTime": sim.company()._stamp(None)})
    assert rt_api.sync(created["id"], {"mode": "delta"}).data["suppliers"]["updated"] == 1
    again = _record(rt_app, "Suppliers", created["id"], vendor["id"])
    assert "deletedInBC" not in again and "deletedAt" not in again


def test_a_flagged_record_unchanged_in_bc_is_rewritten_without_the_flag(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    """`_unchanged` in the engine: same content but deletedInBC stored -> written again, cleared."""
    created = _create(rt_api, sim, entities=["suppliers"])
    assert rt_api.sync(created["id"]).status == 200
    vendor = sim.company().records("vendors")[0]
    sub = _sub_of(sim, "vendors")
    assert _notify(host, [_item(sub, "deleted", resource=f"{sub.resource}({vendor['id']})")]).status_code == 202
    assert _record(rt_app, "Suppliers", created["id"], vendor["id"])["deletedInBC"] is True
    full = rt_api.sync(created["id"], {"mode": "full"}).data["suppliers"]
    assert full["updated"] == 1 and full["unchanged"] == 44
    assert "deletedInBC" not in _record(rt_app, "Suppliers", created["id"], vendor["id"])


# -- forged and malformed notifications ------------------------------------------------------------
def test_forged_notifications_answer_401_and_change_nothing(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    created = _create(rt_api, sim, entities=["suppliers"])
    assert rt_api.sync(created["id"]).status == 200
    sub = _sub_of(sim, "vendors")
    vendor = sim.company().records("vendors")[0]
    runs_before = len(_runs(rt_app, created["id"]))
    deleted = f"{sub.resource}({vendor['id']})"
    forged = [
        [_item(sub, client_state="x" * 43)],  # wrong clientState
        [_item(sub, client_state=sub.clientState[:-1])],  # almost right
        [{**_item(sub), "clientState": None}],
        [{**_item(sub), "subscriptionId": "unknown-subscription"}],  # unknown subscription
        [_item(sub, "deleted", resource=deleted, client_state="wrong")],
        [_item(sub, resource="/api/v2.0/companies(00000000-0000-0000-0000-000000000001)/vendors")],  # another company
        [_item(sub, resource=sub.resource.replace("vendors", "customers"))],  # another set
        ["not an object", 42, None],
        [],
    ]
    for items in forged:
        reply = _notify(host, items)
        assert reply.status_code == 401, (items, reply.text)
        assert reply.json()["error"]["code"] == "unauthenticated"
    assert len(_runs(rt_app, created["id"])) == runs_before and _queue_length(rt_app) == 0
    assert "deletedInBC" not in _record(rt_app, "Suppliers", created["id"], vendor["id"])
    # one valid item among forged ones: only it counts
    mixed = _notify(host, [_item(sub, client_state="wrong"), _item(sub)])
    assert mixed.status_code == 202 and mixed.json()["data"]["accepted"] == 1


def test_malformed_and_oversized_notification_bodies(rt_app: App, host: FunctionHost) -> None:
    for raw in (b"{not json", b"[1, 2]", b'{"value": "x"}', b'"text"', b"\xff\xfe"):
        reply = _notify(host, raw=raw)
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_json", raw
    deep = b'{"value": [' + b"[" * 100000 + b"]" * 100000 + b"]}"
    assert _notify(host, raw=deep).status_code == 400
    nested = b'{"value": [' + b"[" * 40 + b"]" * 40 + b"]}"
    reply = _notify(host, raw=nested)
    assert reply.status_code == 400 and "32 levels" in reply.json()["error"]["message"]
    big = b'{"value": [], "pad": "' + b"a" * (1024 * 1024) + b'"}'
    reply = _notify(host, raw=big)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "payload_too_large"


# -- duplicates, out of order, coalescing -----------------------------------------------------------
def test_duplicate_and_out_of_order_notifications_coalesce_and_nothing_is_doubled(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    created = _create(rt_api, sim, entities=["suppliers"])
    assert rt_api.sync(created["id"]).status == 200
    vendor = sim.company().records("vendors")[0]
    sim.company().update("vendors", vendor["id"], displayName="Latest")
    sub = _sub_of(sim, "vendors")
    newer, older = _item(sub, at="2026-12-01T10:00:05Z"), _item(sub, at="2026-12-01T10:00:01Z")
    for items in ([newer], [newer], [older], [newer, older, newer]):  # BC's retries and reordering
        assert _notify(host, items).status_code == 202
    assert sim.webhooks.wait_idle(10)  # the simulator's own notification too
    assert len([r for r in _runs(rt_app, created["id"]) if r.trigger == "notification"]) == 1
    assert _queue_length(rt_app) == 1
    outcomes = drain(rt_app)
    assert [o.run.progress["suppliers"].updated for o in outcomes] == [1]
    rows = list(rt_app.store.query("Suppliers", "integrationId eq @id", parameters={"id": created["id"]}))
    assert len(rows) == 45 and [r["name"] for r in rows if r["externalId"] == vendor["id"]] == ["Latest"]


def test_a_notification_while_a_run_is_running_past_that_type_gets_a_follow_up_run(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    created = _create(rt_api, sim, entities=["suppliers"])
    integration = rt_app.integrations.get("user-1", created["id"])
    assert integration is not None
    started = start_run(rt_app, integration, RunRequest(mode="full", trigger="manual"), enqueue=False)
    run = started.run
    rt_app.runs.update(run.integrationId, run.runId, lambda r: setattr(r, "status", "running") or True)
    vendor = sim.company().records("vendors")[0]
    sim.company().update("vendors", vendor["id"], displayName="Changed during the run")
    sub = _sub_of(sim, "vendors")
    sim.webhooks._pending.clear()  # we send the notification ourselves, at the right moment
    reply = _notify(host, [_item(sub)])
    assert reply.status_code == 202 and reply.json()["data"]["outcome"]["suppliers"] == "follow_up"
    assert rt_app.integrations.get("user-1", created["id"]).realtimeFollowUp == ["suppliers"]
    # the run finishes (it read vendors before the change reached it); the follow-up is queued
    current = rt_app.runs.get(run.integrationId, run.runId)
    run_slice(rt_app, started.integration, current, budget_seconds=60)
    after = rt_app.integrations.get("user-1", created["id"])
    assert after.realtimeFollowUp is None and after.activeRunId and after.activeRunId != run.runId
    follow = rt_app.runs.get(created["id"], after.activeRunId)
    assert follow.trigger == "notification" and follow.mode == "delta" and follow.entities == ["suppliers"]
    [outcome] = drain(rt_app)
    assert outcome.run.runId == follow.runId and outcome.run.status == "succeeded"


def test_the_queue_unavailable_answers_503_and_bcs_retry_then_succeeds(rt_api: Api, rt_app: App, sim: BCSimulator) -> None:
    created = _create(rt_api, sim, entities=["suppliers"])
    assert rt_api.sync(created["id"]).status == 200
    dead = rt_app.settings.queue_connection_string.split("QueueEndpoint=")[0] + "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    broken = App(dataclasses.replace(rt_app.settings, queue_connection_string=dead), clock=rt_app.clock)
    sim.webhooks.retry_seconds = 1.5
    use_app(broken)
    try:
        vendor = sim.company().records("vendors")[0]
        sim.company().update("vendors", vendor["id"], displayName="Sent while the queue was down")
        deadline = time.monotonic() + 10
        while not sim.webhooks.deliveries and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        use_app(rt_app)  # the queue is back before BC retries
    assert sim.webhooks.wait_idle(15)
    statuses = [d.status for d in sim.webhooks.deliveries]
    assert statuses[0] == 503 and statuses[-1] == 202, statuses
    assert sim.webhooks.dropped == []  # 5xx: BC keeps the subscription and retries
    [outcome] = drain(rt_app)
    assert outcome.run.trigger == "notification" and outcome.run.status == "succeeded"
    assert _record(rt_app, "Suppliers", created["id"], vendor["id"])["name"] == "Sent while the queue was down"


def test_end_to_end_with_the_queue_worker_served_by_the_local_host(env: dict[str, str], sim: BCSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """No drain: the host's queue listener runs sync_worker, as the Functions host would."""
    with FunctionHost(ROOT, queues=True) as served:
        monkeypatch.setenv("PUBLIC_BASE_URL", served.base_url)
        sim.webhooks.delay_seconds = 0.2
        api = httpx.Client(base_url=served.base_url + "/api", headers={"X-MS-CLIENT-PRINCIPAL-ID": "user-e2e"}, timeout=60)
        from tests.support import integration_body

        created = api.post("/integrations", json=integration_body(entities=["suppliers"], realtime=True)).json()["data"]
        assert created["realtime"]["subscriptions"]["suppliers"]["status"] == "active"
        assert api.post(f"/integrations/{created['id']}/dynamics/sync").status_code == 200
        vendor = sim.company().records("vendors")[5]
        sim.company().update("vendors", vendor["id"], displayName="Arrived by itself")
        from shared.app import get_app

        app = get_app()
        deadline, name = time.monotonic() + 20, None
        while time.monotonic() < deadline and name != "Arrived by itself":
            time.sleep(0.1)
            name = _record(app, "Suppliers", created["id"], vendor["id"]).get("name")
        assert name == "Arrived by itself"
        runs: list[Any] = []
        while time.monotonic() < deadline and not (runs and runs[0].status == "succeeded"):
            time.sleep(0.1)
            runs = [r for r in _runs(app, created["id"]) if r.trigger == "notification"]
        assert len(runs) == 1 and runs[0].status == "succeeded"


# -- settings ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["ftp://x", "http://example.com", "https://", "https://app.example.com/?k=1", "not a url"])
def test_public_base_url_must_be_https_or_loopback_http(env: dict[str, str], value: str) -> None:
    from shared.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="PUBLIC_BASE_URL"):
        load_settings({**env, "PUBLIC_BASE_URL": value})


def test_public_base_url_accepts_https_and_drops_a_trailing_slash(env: dict[str, str]) -> None:
    assert load_settings({**env, "PUBLIC_BASE_URL": "https://app.azurewebsites.net/"}).public_base_url == "https://app.azurewebsites.net"
    assert load_settings({**env, "PUBLIC_BASE_URL": "http://127.0.0.1:7071"}).public_base_url == "http://127.0.0.1:7071"
    assert load_settings({**env, "PUBLIC_BASE_URL": ""}).public_base_url is None


# -- the simulator behaves as BC does ----------------------------------------------------------------
class _Receiver:
    """A notification URL at the process boundary: echoes handshakes, answers notifications with
    the statuses it is given (then 200)."""

    def __init__(self, statuses: list[int] | None = None, *, echo: bool = True) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        receiver = self
        self.statuses = list(statuses or [])
        self.bodies: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                query = parse_qs(urlsplit(self.path).query)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "validationToken" in query:
                    payload = query["validationToken"][0].encode() if echo else b"nope"
                    status = 200
                else:
                    receiver.bodies.append(json.loads(body))
                    status, payload = (receiver.statuses.pop(0) if receiver.statuses else 200), b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _bc(sim: BCSimulator) -> httpx.Client:
    """A BC client with a token from the simulator's authority (what the service does)."""
    from devtools.bcsim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT_ID

    token = httpx.post(f"{sim.base_url}/{DEMO_TENANT_ID}/oauth2/v2.0/token", verify=sim.ca_path, data={
        "grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET,
        "scope": "https://api.businesscentral.dynamics.com/.default"}).json()["access_token"]
    return httpx.Client(base_url=f"{sim.base_url}/v2.0/{DEMO_TENANT_ID}/production/api/v2.0", verify=sim.ca_path,
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_simulator_subscriptions_handshake_etags_expiry_limit_and_if_match(sim: BCSimulator) -> None:
    receiver, bad = _Receiver(), _Receiver(echo=False)
    try:
        bc = _bc(sim)
        resource = f"/api/v2.0/companies({DEMO_COMPANY_ID})/vendors"
        refused = bc.post("/subscriptions", json={"notificationUrl": bad.url, "resource": resource, "clientState": "s" * 32})
        assert refused.status_code == 400 and "validated" in refused.json()["error"]["message"]
        created = bc.post("/subscriptions", json={"notificationUrl": receiver.url, "resource": resource, "clientState": "s" * 32})
        assert created.status_code == 201, created.text
        sub = created.json()
        expires = sub["expirationDateTime"]
        from devtools.bcsim import parse_dt

        assert abs((parse_dt(expires) - sim.now).total_seconds() - 3 * 86400) < 5
        sid, etag = sub["subscriptionId"], sub["@odata.etag"]
        assert [s["subscriptionId"] for s in bc.get("/subscriptions").json()["value"]] == [sid]
        assert bc.patch(f"/subscriptions('{sid}')", json={}).status_code == 428  # If-Match required
        assert bc.patch(f"/subscriptions('{sid}')", json={}, headers={"If-Match": 'W/"other"'}).status_code == 412
        sim.advance(600)  # (tokens live about an hour)
        renewed = bc.patch(f"/subscriptions('{sid}')", json={}, headers={"If-Match": etag})
        assert renewed.status_code == 200 and renewed.json()["@odata.etag"] != etag
        assert renewed.json()["expirationDateTime"] > expires
        assert len([h for h in sim.webhooks.handshakes if h[0] == receiver.url]) == 2  # create + renewal
        sim.webhooks.limit = 1
        over = bc.post("/subscriptions", json={"notificationUrl": receiver.url, "resource": resource.replace("vendors", "items"), "clientState": "t" * 32})
        assert over.status_code == 400 and "maximum number" in over.json()["error"]["message"]
        unsupported = bc.post("/subscriptions", json={"notificationUrl": receiver.url, "resource": resource.replace("vendors", "salesOrderLines")})
        assert unsupported.status_code == 400
        assert bc.delete(f"/subscriptions('{sid}')", headers={"If-Match": renewed.json()["@odata.etag"]}).status_code == 204
        assert bc.get(f"/subscriptions('{sid}')").status_code == 404
    finally:
        receiver.close()
        bad.close()


def test_simulator_batches_retries_on_5xx_and_drops_on_4xx(sim: BCSimulator) -> None:
    sim.webhooks.delay_seconds, sim.webhooks.retry_seconds = 0.2, 0.1
    receiver = _Receiver([503, 500])
    try:
        bc = _bc(sim)
        resource = f"/api/v2.0/companies({DEMO_COMPANY_ID})/vendors"
        bc.post("/subscriptions", json={"notificationUrl": receiver.url, "resource": resource, "clientState": "c" * 32})
        company = sim.company()
        first, second = company.records("vendors")[:2]
        company.update("vendors", first["id"], displayName="A")
        company.add("vendors", {"displayName": "New"})
        company.delete("vendors", second["id"])
        assert sim.webhooks.wait_idle(10)
        assert [d.status for d in sim.webhooks.deliveries] == [503, 500, 200]  # retried, same batch
        items = receiver.bodies[-1]["value"]
        assert [i["changeType"] for i in items] == ["updated", "created", "deleted"]
        assert items[2]["resource"] == f"{resource}({second['id']})" and items[0]["clientState"] == "c" * 32
        assert receiver.bodies[0] == receiver.bodies[-1]
        receiver.statuses = [410]  # any other error: BC deletes the subscription
        company.update("vendors", first["id"], displayName="B")
        assert sim.webhooks.wait_idle(10)
        assert sim.webhooks.subscriptions == {} and len(sim.webhooks.dropped) == 1
        company.update("vendors", first["id"], displayName="C")  # nobody is told any more
        assert sim.webhooks.wait_idle(5) and len(receiver.bodies) == 4
    finally:
        receiver.close()


def test_moving_the_integration_to_another_company_moves_its_subscriptions(rt_api: Api, rt_app: App, sim: BCSimulator) -> None:
    from devtools.bcsim import DEMO_US_COMPANY_ID

    created = _create(rt_api, sim, entities=["suppliers"])
    old = _sub_of(sim, "vendors")
    moved = rt_api.patch(f"integrations/{created['id']}", {"companyId": DEMO_US_COMPANY_ID}).data
    assert moved["realtime"]["subscriptions"]["suppliers"]["status"] == "active"
    [new] = list(sim.webhooks.subscriptions.values())
    assert new.subscriptionId != old.subscriptionId and new.company_id == DEMO_US_COMPANY_ID
    assert new.resource == f"/api/v2.0/companies({DEMO_US_COMPANY_ID})/vendors"


def test_a_notification_for_an_integration_with_realtime_off_changes_nothing(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    created = _create(rt_api, sim, entities=["suppliers"])
    sub = _sub_of(sim, "vendors")
    sim.faults.add(503, times=None, path_contains="subscriptions")  # BC cannot delete it: it keeps notifying
    assert rt_api.patch(f"integrations/{created['id']}", {"realtime": False}).status == 200
    sim.faults.clear()
    assert _notify(host, [_item(sub)]).status_code == 401  # we no longer know it: BC drops it on 401
    assert _runs(rt_app, created["id"]) == [] and _queue_length(rt_app) == 0


def test_one_renewal_failing_never_stops_the_others(rt_api: Api, rt_app: App, sim: BCSimulator, clock: FakeClock) -> None:
    from devtools.bcsim import DEMO_US_COMPANY_ID
    from shared.runs.housekeeping import housekeeping

    broken = _create(rt_api, sim, entities=["suppliers"])
    fine = _create(rt_api, sim, entities=["suppliers"], companyId=DEMO_US_COMPANY_ID, name="US")
    rt_app.integrations.update("user-1", broken["id"], lambda i: setattr(i, "clientSecretEnc", None))  # its renewal fails
    clock.advance(2 * 86400 + 3600)
    counts = housekeeping(rt_app)["subscriptions"]
    assert counts["renewed"] == 1 and counts["failed"] == 1
    ok = rt_api.get(f"integrations/{fine['id']}").data["realtime"]["subscriptions"]["suppliers"]
    bad = rt_api.get(f"integrations/{broken['id']}").data["realtime"]["subscriptions"]["suppliers"]
    assert ok["status"] == "active" and ok["error"] is None
    assert bad["status"] == "active" and bad["error"]["code"] == "bc_auth_failed"  # still valid until it expires
    clock.advance(86400)  # past its expiry: shown failed, retried every 30 minutes
    housekeeping(rt_app)
    bad = rt_api.get(f"integrations/{broken['id']}").data["realtime"]["subscriptions"]["suppliers"]
    assert bad["status"] == "failed" and bad["error"]["code"] == "bc_auth_failed"
