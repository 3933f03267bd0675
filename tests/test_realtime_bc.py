"""Notifications as Business Central really sends them (design.md §10, §14; issue 16 item 4):
every `resource` form, records named by a notification read again by id (a line-only edit),
a `collection` queueing a reconcile, and BC refusing a subscription retried with growing pauses.
Notifications are POSTed to the notification function served over HTTP, as BC does."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from devtools.bcsim import DEMO_COMPANY_ID, DEMO_TENANT_ID, BCSimulator
from devtools.funchost import FunctionHost
from shared.app import App
from shared.realtime.pending import TABLE as PENDING_TABLE
from shared.realtime.resources import parse
from shared.realtime.subscriptions import renew_due
from tests.support import Api, FakeClock, drain
from tests.test_realtime import _item, _notify, _record, _runs, _sub_of, host, rt_api, rt_app  # noqa: F401 - fixtures


def _synced(api: Api, sim: BCSimulator, entities: list[str]) -> dict[str, Any]:
    created = api.create_integration(sim, realtime=True, entities=entities)
    assert api.sync(created["id"]).status == 200
    return created


def _by_id_reads(sim: BCSimulator, entity_set: str, record_id: str) -> int:
    return sum(1 for r in sim.requests if r.method == "GET" and r.path.endswith(f"/{entity_set}({record_id})") and r.status == 200)


# -- resource forms -------------------------------------------------------------------------------
def test_the_resource_forms_bc_sends_all_parse_to_the_same_set() -> None:
    company, vendor = DEMO_COMPANY_ID, "26814998-936a-401c-81c1-0e848a64971d"
    subscribed = parse(f"/api/v2.0/companies({company})/vendors")
    forms = [
        f"api/v2.0/companies({company})/vendors({vendor})",  # Microsoft's sample: no leading slash
        f"/api/v2.0/companies({company})/vendors({vendor})",
        f"https://api.businesscentral.dynamics.com/v2.0/{DEMO_TENANT_ID}/production/api/v2.0/companies({company.upper()})/vendors({vendor.upper()})",
        f"/api/v2.0/companies(%27{company}%27)/vendors(%7B{vendor}%7D)",
        f"api/v2.0/companies('{company}')/vendors('{vendor}')",
    ]
    for form in forms:
        named = parse(form)
        assert named is not None and subscribed is not None and named.same_set(subscribed), form
        assert named.record_id == vendor, form
    collection = parse(f"/api/v2.0/companies({company})/vendors?$filter=lastModifiedDateTime%20gt%202018-10-15T11:00:00Z")
    assert collection is not None and collection.key is None and collection.same_set(subscribed)  # type: ignore[arg-type]
    for other in (f"/api/v2.0/companies({company})/customers({vendor})", f"/api/v2.0/companies(00000000-0000-0000-0000-000000000001)/vendors",
                  "vendors", "", None, f"/api/v2.0/companies({company})/vendors({vendor})/defaultDimensions"):
        named = parse(other)
        assert named is None or not named.same_set(subscribed), other  # type: ignore[arg-type]


def test_a_resource_without_a_leading_slash_is_accepted_and_queues_a_run(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    created = _synced(rt_api, sim, ["suppliers"])
    sub = _sub_of(sim, "vendors")
    vendor = sim.company().records("vendors")[0]
    before = len(_runs(rt_app, created["id"]))
    reply = _notify(host, [_item(sub, "updated", resource=f"{sub.resource.lstrip('/')}({vendor['id']})")])
    assert reply.status_code == 202, reply.text  # a 401 would make BC delete the subscription
    runs = _runs(rt_app, created["id"])
    assert len(runs) == before + 1
    [queued] = [r for r in runs if r.trigger == "notification"]
    assert queued.entities == ["suppliers"] and queued.mode == "delta"
    assert sub.subscriptionId in sim.webhooks.subscriptions


def test_an_absolute_resource_is_accepted_and_its_record_read_by_id(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    created = _synced(rt_api, sim, ["suppliers"])
    sub = _sub_of(sim, "vendors")
    vendor = sim.company().records("vendors")[3]
    absolute = (f"https://api.businesscentral.dynamics.com/v2.0/{DEMO_TENANT_ID}/production/api/v2.0/"
                f"companies({DEMO_COMPANY_ID.upper()})/vendors({vendor['id'].upper()})")
    reply = _notify(host, [_item(sub, "updated", resource=absolute)])
    assert reply.status_code == 202, reply.text
    sim.clear_requests()
    drain(rt_app)
    assert _by_id_reads(sim, "vendors", vendor["id"]) == 1
    assert [r.status for r in _runs(rt_app, created["id"]) if r.trigger == "notification"] == ["succeeded"]
    assert list(rt_app.store.query(PENDING_TABLE, "PartitionKey ne @x", parameters={"x": ""})) == []  # done, removed


# -- a line-only edit -----------------------------------------------------------------------------
def test_a_line_only_edit_arrives_through_the_notifications_read_by_id(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    created = _synced(rt_api, sim, ["salesOrders"])
    company = sim.company()
    order = company.records("salesOrders")[0]
    line = company.lines(order["id"])[0]
    stamp = order["lastModifiedDateTime"]
    with company._lock:  # BC: a line's description edited; the header's timestamp does not move
        company.sets["salesOrderLines"].rows[line["id"]]["description"] = "Edited on the line only"
        company.sets["salesOrderLines"].changed({"description"})
    assert company.get("salesOrders", order["id"])["lastModifiedDateTime"] == stamp

    def stored_description() -> str:
        [row] = list(rt_app.store.query("SalesOrderLines", "externalId eq @id", parameters={"id": line["id"]}))
        return str(row.get("description"))

    assert rt_api.sync(created["id"], {"mode": "delta"}).status == 200
    assert stored_description() != "Edited on the line only"  # a timestamp delta cannot see it

    sub = _sub_of(sim, "salesOrders")
    item = _item(sub, "updated", resource=f"api/v2.0/companies({DEMO_COMPANY_ID})/salesOrders({order['id']})")
    assert _notify(host, [item]).status_code == 202
    drain(rt_app)
    assert stored_description() == "Edited on the line only"
    [run] = [r for r in _runs(rt_app, created["id"]) if r.trigger == "notification"]
    assert run.status == "succeeded" and run.progress["salesOrders"].updated == 1


def test_a_notified_record_bc_no_longer_has_is_dropped_and_the_run_succeeds(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    created = _synced(rt_api, sim, ["suppliers"])
    sub = _sub_of(sim, "vendors")
    gone = "0a91419f-7b01-f111-8000-000000000001"
    assert _notify(host, [_item(sub, "created", resource=f"{sub.resource}({gone})")]).status_code == 202
    drain(rt_app)
    [run] = [r for r in _runs(rt_app, created["id"]) if r.trigger == "notification"]
    assert run.status == "succeeded" and run.progress["suppliers"].errors == 0
    assert list(rt_app.store.query(PENDING_TABLE, "PartitionKey ne @x", parameters={"x": ""})) == []


# -- collection ----------------------------------------------------------------------------------
def test_a_collection_queues_a_reconcile_after_its_delta_and_hidden_deletes_are_flagged(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    created = _synced(rt_api, sim, ["suppliers"])
    company = sim.company()
    victim = company.records("vendors")[5]
    with company._lock:  # deleted in a burst BC reported only as one collection
        company.sets["vendors"].remove(victim["id"])
    sub = _sub_of(sim, "vendors")
    collection = _item(sub, "collection", resource=f"{sub.resource}?$filter=lastModifiedDateTime%20gt%202026-12-01T10:00:00Z")
    assert _notify(host, [collection, dict(collection)]).status_code == 202  # repeated: one reconcile
    finished = [o.run for o in drain(rt_app) if o.state == "finished"]  # in the order they ended
    assert [(r.mode, r.trigger, r.status) for r in finished] == [("delta", "notification", "succeeded"), ("reconcile", "notification", "succeeded")]
    assert [r.mode for r in _runs(rt_app, created["id"]) if r.trigger == "notification"].count("reconcile") == 1
    assert _record(rt_app, "Suppliers", created["id"], victim["id"]).get("deletedInBC") is True


# -- refused subscriptions -----------------------------------------------------------------------
def test_a_refused_subscription_shows_bcs_code_and_is_retried_with_growing_pauses(rt_api: Api, rt_app: App, sim: BCSimulator, clock: FakeClock) -> None:
    sim.webhooks.limit = 1  # the environment's other apps hold the rest of BC's 200
    created = rt_api.create_integration(sim, realtime=True, entities=["suppliers", "customers"])
    shown = rt_api.get(f"integrations/{created['id']}").data["realtime"]["subscriptions"]
    assert shown["suppliers"]["status"] == "active"
    failed = shown["customers"]
    assert failed["status"] == "failed"
    assert failed["error"]["bcCode"] == "BadRequest" and failed["error"]["httpStatus"] == 400
    assert "maximum number of subscriptions" in failed["error"]["message"] and failed["error"]["attempts"] == 1

    def attempts() -> int:
        return sum(1 for r in sim.requests if r.method == "POST" and r.path.endswith("/subscriptions"))

    started, tried = clock.now(), attempts()
    pauses: list[float] = []
    for expected in (5, 15, 60, 60):
        minutes = 0
        while attempts() == tried:
            clock.advance(60)
            minutes += 1
            renew_due(rt_app)
            assert minutes <= 61, "not retried within an hour"
        tried = attempts()
        pauses.append(minutes)
        assert rt_api.sync(created["id"]).status == 200  # polling goes on meanwhile
    assert pauses == [5, 15, 60, 60]
    error = rt_api.get(f"integrations/{created['id']}").data["realtime"]["subscriptions"]["customers"]["error"]
    assert error["attempts"] == 5 and error["retryAt"] > (started + timedelta(minutes=140)).isoformat()[:16]
    sim.webhooks.limit = 200
    clock.advance(61 * 60)
    renew_due(rt_app)
    now_shown = rt_api.get(f"integrations/{created['id']}").data["realtime"]["subscriptions"]
    assert now_shown["customers"]["status"] == "active" and now_shown["customers"]["error"] is None
    assert now_shown["suppliers"]["status"] == "active"  # the other type never suffered


def test_a_client_state_bc_sends_back_in_another_case_still_matches(rt_api: Api, rt_app: App, sim: BCSimulator, host: FunctionHost) -> None:
    """Microsoft's example shows BC answering a clientState in lower case: ours is lower-case hex,
    and the comparison folds case, so either reading keeps the subscription alive."""
    created = _synced(rt_api, sim, ["suppliers"])
    sub = _sub_of(sim, "vendors")
    assert sub.clientState == sub.clientState.lower() and len(sub.clientState) == 64
    reply = _notify(host, [_item(sub, "updated", client_state=sub.clientState.upper())])
    assert reply.status_code == 202, reply.text
    assert [r.trigger for r in _runs(rt_app, created["id"])].count("notification") == 1
    assert _notify(host, [_item(sub, "updated", client_state=sub.clientState[:-1] + "x")]).status_code == 401
