"""Webhooks as BC runs them: the per-environment limit shared with other apps, environment copies,
`resource` forms (no leading slash, slash, absolute) and `collection` items for bursts (design.md §14)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.bcsim import DEMO_COMPANY_ID, DEMO_ENVIRONMENT, DEMO_TENANT_ID, BCSimulator, parse_dt
from tests.test_bcsim import client
from tests.test_bcsim_changes import Receiver, subscribe
from tests.test_bcsim_changes import sim as sim  # noqa: F401 - the fixture
from tests.test_bcsim_changes import receiver as receiver  # noqa: F401 - the fixture

SUBS = f"/v2.0/{DEMO_TENANT_ID}/{DEMO_ENVIRONMENT}/api/v2.0/subscriptions"


def test_limit_is_shared_with_other_apps_and_an_environment_copy_drops_all(sim: BCSimulator, receiver: Receiver) -> None:
    with client(sim) as c:
        r = c.post(f"{sim.base_url}/_sim/webhooks/foreign", json={"count": 198})
        assert r.json() == {"added": 198}
        subscribe(sim, receiver.url, "vendors")
        subscribe(sim, receiver.url, "customers")
        refused = c.post(f"{sim.base_url}{SUBS}", json={
            "notificationUrl": receiver.url, "resource": f"/api/v2.0/companies({DEMO_COMPANY_ID})/items",
            "clientState": "x"})
        assert refused.status_code == 400 and "maximum number of subscriptions (200)" in refused.json()["error"]["message"]
        listed = c.get(f"{sim.base_url}{SUBS}").json()["value"]
        assert len(listed) == 2, "other apps' subscriptions are not ours to see"
        assert c.post(f"{sim.base_url}/_sim/webhooks/environment_copy", json={}).json() == {"dropped": 200}
        assert c.get(f"{sim.base_url}{SUBS}").json()["value"] == []
        gone = c.get(f"{sim.base_url}{SUBS}({listed[0]['subscriptionId']})")
        assert gone.status_code == 404
        assert len(sim.webhooks.subscriptions) == 0


@pytest.mark.parametrize("form, prefix", [
    ("no_slash", "api/v2.0/"), ("slash", "/api/v2.0/"), ("absolute", "https://127.0.0.1:"),
    ("subscribed", "/api/v2.0/")])
def test_item_resource_forms(sim: BCSimulator, receiver: Receiver, form: str, prefix: str) -> None:
    subscribe(sim, receiver.url, "vendors")
    with client(sim) as c:
        assert c.post(f"{sim.base_url}/_sim/webhooks/options", json={"resource_form": form}).json()["resource_form"] == form
    vendor = sim.company().records("vendors")[0]
    sim.company().update("vendors", vendor["id"], displayName="Form probe")
    assert sim.webhooks.wait_idle(10)
    [item] = receiver.items()
    assert item["resource"].startswith(prefix)
    assert item["resource"].endswith(f"api/v2.0/companies({DEMO_COMPANY_ID})/vendors({vendor['id']})")
    if form == "absolute":
        assert f"/v2.0/{DEMO_TENANT_ID}/{DEMO_ENVIRONMENT}/api/v2.0/" in item["resource"]


def test_a_burst_of_deletes_arrives_as_one_collection(sim: BCSimulator, receiver: Receiver) -> None:
    subscribe(sim, receiver.url, "vendors")
    sim.webhooks.collection_threshold = 10
    sim.webhooks.resource_form = "no_slash"
    sim.webhooks.delay_seconds = 1.0  # every delete lands in one batching window
    store = sim.company()
    ids = [v["id"] for v in store.records("vendors")[:12]]
    before = sim.now
    for vid in ids:
        store.delete("vendors", vid)
    assert sim.webhooks.wait_idle(10)
    [item] = receiver.items()
    assert item["changeType"] == "collection"
    assert item["resource"].startswith(f"/api/v2.0/companies({DEMO_COMPANY_ID})/vendors?$filter=lastModifiedDateTime%20gt%20")
    assert all(vid not in item["resource"] for vid in ids), "the deleted ids are not named: a reconcile must find them"
    since = parse_dt(item["resource"].rsplit("%20", 1)[1])
    assert since is not None and since < before, "BC filters from 50 ms before the first change"


def test_under_the_threshold_each_change_is_its_own_item(sim: BCSimulator, receiver: Receiver) -> None:
    subscribe(sim, receiver.url, "vendors")
    sim.webhooks.collection_threshold = 10
    sim.webhooks.delay_seconds = 0.5
    store = sim.company()
    ids = [v["id"] for v in store.records("vendors")[:10]]
    for vid in ids:
        store.delete("vendors", vid)
    assert sim.webhooks.wait_idle(10)
    assert [(i["changeType"], i["resource"].rsplit("(", 1)[1][:-1]) for i in receiver.items()] == [
        ("deleted", vid) for vid in ids]
