"""Housekeeping within its budget, shared fairly (design §12): one tenant's tarpit webhook endpoint
and hundreds of queued retries never delay another tenant's BC subscription renewal."""
from __future__ import annotations

import time
from datetime import timedelta
from typing import Iterator

import pytest

from devtools.bcsim import BCSimulator
from devtools.funchost import FunctionHost
from shared import webhooks
from shared.app import App, use_app
from shared.runs.housekeeping import housekeeping, register_step, steps
from shared.settings import load_settings
from tests.security_support import Trickle
from tests.support import ROOT, Api, FakeClock

BUDGET = 5  # HOUSEKEEPING_SECONDS, its smallest allowed value
TARPIT_BUDGET = 2  # a tick given less (as a caller may): the tarpit test waits out a budget
FLOOD = 100  # tenant A's due retries: well past what one tick may retry (webhooks.RETRIES_PER_TICK)


@pytest.fixture
def host() -> Iterator[FunctionHost]:
    with FunctionHost(ROOT) as served:  # answers BC's handshake on subscribe and renew
        yield served


@pytest.fixture
def tarpit(sim: BCSimulator) -> Iterator[Trickle]:
    server = Trickle(sim.server_tls_context, interval=0.5, lasts=60)  # accepts TLS, then trickles for a minute
    yield server
    server.close()


@pytest.fixture
def rt_app(env: dict[str, str], clock: FakeClock, host: FunctionHost, sim: BCSimulator,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("PUBLIC_BASE_URL", host.base_url)
    monkeypatch.setenv("HOUSEKEEPING_SECONDS", str(BUDGET))
    instance = App(load_settings(), clock=clock)
    use_app(instance)
    yield instance
    use_app(None)


def _queue(app: App, integration_id: str, user: str, url: str, count: int) -> None:
    for n in range(count):
        delivery_id = f"whd-flood-{n:04d}"
        sealed = app.box.encrypt("whsec_c2VjcmV0", context=f"webhook-delivery:{integration_id}:{delivery_id}")
        app.deliveries.create(integration_id=integration_id, user_id=user, url=url, event="sync.completed",
                              body='{"event":"sync.completed"}', at=app.clock.now() - timedelta(seconds=n),
                              secret_enc=sealed, delivery_id=delivery_id)


def test_a_tarpit_tenant_never_delays_another_tenants_renewal(
    rt_app: App, sim: BCSimulator, clock: FakeClock, tarpit: Trickle
) -> None:
    tenant_b = Api(user="tenant-b").create_integration(sim, realtime=True, entities=["suppliers", "products"])
    assert all(s["status"] == "active" for s in tenant_b["realtime"]["subscriptions"].values())
    tenant_a = Api(user="tenant-a").create_integration(None, companyId="a" * 8 + "-0000-0000-0000-" + "0" * 12,
                                                       webhookUrl=f"{tarpit.url}/hook")
    sim.advance(2 * 86400 + 3600)
    clock.advance(2 * 86400 + 3600)  # B's subscriptions are due for renewal
    _queue(rt_app, tenant_a["id"], "tenant-a", f"{tarpit.url}/hook", FLOOD)

    started = time.monotonic()
    summary = housekeeping(rt_app, seconds=TARPIT_BUDGET)
    elapsed = time.monotonic() - started

    assert summary["subscriptions"]["renewed"] == 2, summary
    assert elapsed < TARPIT_BUDGET + 2.5, f"the tick took {elapsed:.1f}s for a {TARPIT_BUDGET}s budget"
    detail = summary["webhookRetryDetail"]
    assert tarpit.connections <= webhooks.RETRIES_PER_INTEGRATION  # bounded per integration per tick
    assert detail["deferred"] >= FLOOD - webhooks.RETRIES_PER_INTEGRATION
    renewed = Api(user="tenant-b").get(f"integrations/{tenant_b['id']}").data["realtime"]["subscriptions"]
    assert all(s["status"] == "active" for s in renewed.values())


def test_steps_run_in_priority_order_and_a_registered_job_gets_the_budget(rt_app: App) -> None:
    seen: list[float] = []
    register_step("testJob", lambda app, budget: seen.append(budget.remaining()) or {"pruned": 0})
    try:
        names = [name for name, _ in steps()]
        assert names[0] == "subscriptions" and names[-1] == "webhookRetries"
        assert names.index("testJob") < names.index("webhookRetries")
        summary = housekeeping(rt_app)
        assert summary["testJob"] == {"pruned": 0} and 0 < seen[0] <= BUDGET
        # a spent budget skips the rest (renewal aside, which always goes first)
        assert "skipped" in str(housekeeping(rt_app, seconds=0)["testJob"])
    finally:
        from shared.runs import housekeeping as module

        module._EXTRA_STEPS[:] = [s for s in module._EXTRA_STEPS if s[0] != "testJob"]


def test_deliveries_are_pruned_after_the_retention(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    created = api.create_integration(sim, entities=["suppliers"])
    for age_days, name in ((10, "old"), (1, "new")):
        app.deliveries.create(integration_id=created["id"], user_id="user-1", url="https://example.invalid/h",
                              event="sync.completed", body="{}", at=clock.now() - timedelta(days=age_days),
                              delivery_id=f"whd-{name}")
    summary = housekeeping(app)
    assert summary["deliveriesRemoved"] == 1
    left = {d["id"] for d in api.get(f"integrations/{created['id']}/webhook-deliveries").data}
    assert left == {"whd-new"}
    assert all("whd-old" not in e["RowKey"] for e in app.store.table("WebhookDue").list_entities())



def test_a_delivery_left_pending_by_the_previous_version_is_indexed_and_retried(
    api: Api, app: App, sim: BCSimulator, clock: FakeClock
) -> None:
    from tests.security_support import Trap

    trap = Trap(sim.server_tls_context)
    try:
        created = api.create_integration(sim, entities=["suppliers"], webhookUrl=f"{trap.url}/hook")
        # as the version before wrote it: no due index row, no secret of its own
        app.store.table("WebhookDeliveries").upsert_entity({
            "PartitionKey": created["id"], "RowKey": "0999-whd-legacy", "id": "whd-legacy", "userId": "user-1",
            "url": f"{trap.url}/hook", "event": "sync.completed", "body": "{}", "status": "pending",
            "attempts": "[]", "nextAttemptAt": "2000-01-01T00:00:00.000Z", "createdAt": "2000-01-01T00:00:00.000Z"})
        first = housekeeping(app)
        assert first["webhookIndex"] == "done"
        assert [path for _, path, _ in trap.hits] == ["/hook"]  # indexed, then retried in the same tick
        assert housekeeping(app)["webhookIndex"] == "done"
    finally:
        trap.close()
