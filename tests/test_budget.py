"""BC's limits across instances (design.md §7): requests in flight and per five minutes per credential."""
from __future__ import annotations

import dataclasses
import json
import threading
from contextlib import ExitStack
from typing import Any

import pytest

from devtools.bcsim import DEMO_CLIENT_ID, DEMO_TENANT_ID, BCSimulator
from shared.app import App
from shared.bc.budget import TABLE, WINDOW_ROW, RequestBudget, credential_key
from shared.errors import BCUnavailable
from tests.support import Api, FakeClock


HELD_SECONDS = 12.0  # how long the other instance's slots stay taken (each second is 5 polls of the slots)


def _budget(app: App, **overrides: Any) -> RequestBudget:
    options = {"max_in_flight": app.settings.bc_max_in_flight, "per_5_minutes": app.settings.bc_requests_per_5_minutes, "slot_seconds": 70.0}
    options.update(overrides)
    return RequestBudget(app.store, app.clock, credential_key(DEMO_TENANT_ID, DEMO_CLIENT_ID), **options)


def test_requests_wait_while_another_instance_holds_every_slot_of_the_credential(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    integration = api.create_integration(sim, entities=["suppliers"])
    other_instance = _budget(app, slot_seconds=HELD_SECONDS)
    with ExitStack() as held:
        for _ in range(app.settings.bc_max_in_flight):
            held.enter_context(other_instance.request())
        sim.clear_requests()
        before = clock.monotonic()
        reply = api.sync(integration["id"])  # waits (on the test clock) until the held slots expire
    assert reply.status == 200, reply.body
    assert reply.data["suppliers"]["created"] == 45
    assert clock.monotonic() - before >= HELD_SECONDS  # nothing was sent before the other instance's slots expired
    held = [e for e in app.store.query(TABLE, "PartitionKey eq @pk", parameters={"pk": credential_key(DEMO_TENANT_ID, DEMO_CLIENT_ID)}) if e["RowKey"].startswith("slot-")]
    assert held == []  # all given back (a free slot has no row), the other instance's stale ones included


def test_a_credential_never_exceeds_its_five_minute_budget(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    app.settings = dataclasses.replace(app.settings, bc_requests_per_5_minutes=4, bc_page_size=5, http_sync_budget_seconds=3600)
    integration = api.create_integration(sim, entities=["suppliers"])
    started = clock.now()
    reply = api.sync(integration["id"])
    assert reply.status == 200, reply.body
    assert reply.data["suppliers"]["created"] == 45  # 9 pages of 5
    assert (clock.now() - started).total_seconds() >= 5 * 60  # it had to wait for room
    window = app.store.table(TABLE).get_entity(credential_key(DEMO_TENANT_ID, DEMO_CLIENT_ID), WINDOW_ROW)
    stamps = [(at, count) for at, count in json.loads(window["entries"])]
    assert sum(count for _, count in stamps) <= 4  # what is left in the row: the last five minutes


def _sends(app: App, budget: RequestBudget, clock: FakeClock, count: int, gap: float) -> list[float]:
    """Send `count` requests through the budget, `gap` seconds apart; the epoch second of each."""
    times = []
    for _ in range(count):
        with budget.request():
            times.append(clock.now().timestamp())
        clock.advance(gap)
    return times


def _most_in_any_window(times: list[float], seconds: float = 300.0) -> int:
    return max(sum(1 for t in times if start <= t < start + seconds) for start in times)


def test_the_window_slides_so_no_five_minutes_hold_more_than_the_limit(app: App, clock: FakeClock) -> None:
    """Fixed per-minute buckets let 4 requests at the end of one minute and 4 more at the start of
    the minute that drops it (8 within about 4 minutes); the sliding window never does."""
    minute = 60.0
    clock.advance(minute - (clock.now().timestamp() % minute) + 55)  # 5 s before a minute boundary
    first, second = _budget(app, max_in_flight=1, per_5_minutes=4), _budget(app, max_in_flight=1, per_5_minutes=4)
    times = _sends(app, first, clock, 4, 1.0)  # the end of one minute, from one instance
    clock.advance(4 * minute - 4)  # the first minute bucket is about to leave a 5-minute bucket window
    times += _sends(app, second, clock, 4, 1.0)  # another instance, across the old bucket boundary
    times += _sends(app, first, clock, 4, 1.0)
    assert len(times) == 12
    assert _most_in_any_window(times) <= 4
    assert times[4] - times[0] >= 300  # the fifth waited until the first left the window


def test_two_instances_share_the_in_flight_limit(app: App, clock: FakeClock) -> None:
    """Slots taken by one instance are not available to another until given back."""
    first, second = _budget(app, max_in_flight=2), _budget(app, max_in_flight=2, max_wait_seconds=1.0)
    with first.request(), first.request():
        with pytest.raises(BCUnavailable):  # the limit held: it gave up after its wait
            with second.request():
                pass
    with second.request():  # given back: the other instance gets one at once
        pass
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with first.request():
            holding.set()
            done.wait(60)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert holding.wait(60)
        with second.request():  # one slot left of two: taken
            with pytest.raises(BCUnavailable):  # none after it while the other instance holds its one
                with second.request():
                    pass
    finally:
        done.set()
        worker.join(60)
    assert not worker.is_alive()
    with second.request(), second.request():  # both given back
        pass
