"""Runs on the Functions host (design.md §7, §8): asynchronous syncs with progress, the runs
queue and its worker, continuations, poison messages, duplicates, the dispatcher."""
from __future__ import annotations

import base64
import dataclasses
import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from devtools.bcsim import DEMO_COMPANY_ID, DEMO_US_COMPANY_ID, BCSimulator
from devtools.funchost import FunctionHost
from shared.api.timer import run_scheduled
from shared.app import App, use_app
from shared.clock import to_iso
from shared.runs.dispatch import RunRequest, start_run
from shared.runs.queue import SliceMessage
from shared.runs.slices import handle_message, run_slice
from shared.runs.worker import process
from shared.storage.integrations import Integration
from shared.storage.schedule import schedule_key
from tests.support import ROOT, Api, FakeClock, drain, integration_body, tick

ASYNC = {"Prefer": "respond-async"}


def _stored(app: App, integration_id: str, user: str = "user-1") -> Integration:
    integration = app.integrations.get(user, integration_id)
    assert integration is not None
    return integration


def _records(app: App, table: str, integration_id: str) -> list[dict[str, Any]]:
    return list(app.store.query(table, "integrationId eq @id", parameters={"id": integration_id}))


def _queue_length(app: App) -> int:
    app.queue._ensure()
    return int(app.queue.client.get_queue_properties().approximate_message_count)


# -- asynchronous sync and its status -----------------------------------------------------------
def test_an_async_sync_answers_202_and_its_run_shows_progress_until_it_succeeds(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    integration = api.create_integration(sim)
    reply = api.post(f"integrations/{integration['id']}/dynamics/sync", {"mode": "full"}, headers=ASYNC)
    assert reply.status == 202, reply.body
    run_id = reply.data["runId"]
    assert reply.data["status"] == "queued"
    assert reply.headers["Location"] == f"/api/integrations/{integration['id']}/sync-runs/{run_id}"
    assert int(reply.headers["Retry-After"]) >= 1

    queued = api.get(f"integrations/{integration['id']}/sync-runs/{run_id}").data
    assert queued["status"] == "queued" and queued["trigger"] == "manual" and queued["mode"] == "full"
    assert queued["startedAt"] is None and queued["finishedAt"] is None and queued["error"] is None
    assert queued["progress"]["suppliers"] == {"read": 0, "created": 0, "updated": 0, "unchanged": 0, "errors": 0, "done": False}
    assert api.sync(integration["id"]).error["code"] == "sync_in_progress"  # queued counts as running
    assert api.post(f"integrations/{integration['id']}/dynamics/sync", None, headers=ASYNC).status == 409

    assert [o.state for o in drain(app)] == ["finished"]
    done = api.get(f"integrations/{integration['id']}/sync-runs/{run_id}").data
    assert done["status"] == "succeeded" and done["startedAt"] and done["finishedAt"]
    assert done["progress"]["suppliers"] == {"read": 45, "created": 45, "updated": 0, "unchanged": 0, "errors": 0, "done": True}
    assert done["progress"]["products"]["created"] == 230 and done["progress"]["products"]["done"] is True
    assert done["counts"]["suppliers"]["created"] == 45 and done["counts"]["products"]["created"] == 230
    shown = api.get(f"integrations/{integration['id']}").data
    assert shown["status"] == "connected" and shown["syncInProgress"] is False

    clock.advance(1)  # run ids sort by their creation time
    second = api.post(f"integrations/{integration['id']}/dynamics/sync", {"mode": "delta"}, headers=ASYNC).data["runId"]
    [outcome] = drain(app)
    assert outcome.state == "finished" and outcome.run.runId == second and outcome.run.status == "succeeded"
    listed = api.get(f"integrations/{integration['id']}/sync-runs").body
    assert [r["runId"] for r in listed["data"]] == [second, run_id]  # newest first
    assert [r["status"] for r in listed["data"]] == ["succeeded", "succeeded"]
    delta = listed["data"][0]["counts"]
    assert {t: (delta[t]["created"], delta[t]["updated"]) for t in ("suppliers", "products")} == {"suppliers": (0, 0), "products": (0, 0)}
    assert listed["continuationToken"] is None
    paged = api.get(f"integrations/{integration['id']}/sync-runs", params={"top": 1})
    assert [r["runId"] for r in paged.data] == [second] and paged.body["continuationToken"]
    rest = api.get(f"integrations/{integration['id']}/sync-runs", params={"top": 1, "continuationToken": paged.body["continuationToken"]})
    assert [r["runId"] for r in rest.data] == [run_id]


def test_runs_of_someone_else_or_unknown_answer_404(api: Api, app: App, sim: BCSimulator) -> None:
    integration = api.create_integration(sim, entities=["suppliers"])
    run_id = api.post(f"integrations/{integration['id']}/dynamics/sync", None, headers=ASYNC).data["runId"]
    other = api.as_user("user-2")
    assert other.get(f"integrations/{integration['id']}/sync-runs/{run_id}").error["code"] == "not_found"
    assert other.get(f"integrations/{integration['id']}/sync-runs").error["code"] == "not_found"
    assert api.get(f"integrations/{integration['id']}/sync-runs/run-nope").error["code"] == "not_found"
    assert api.get(f"integrations/{integration['id']}/sync-runs/{'x' * 300}").status == 404
    assert api.as_user(None).get(f"integrations/{integration['id']}/sync-runs/{run_id}").status == 401


def test_an_async_sync_validates_its_body_like_the_synchronous_one(api: Api, app: App, sim: BCSimulator) -> None:
    integration = api.create_integration(sim, entities=["suppliers"])
    path = f"integrations/{integration['id']}/dynamics/sync"
    assert api.post(path, {"modifiedSince": "2024-01-01T00:00:00"}, headers=ASYNC).error["code"] == "validation_error"
    assert api.post(path, {"entities": ["products"]}, headers=ASYNC).status == 400
    assert api.post(path, raw=b"{nope", headers=ASYNC).error["code"] == "invalid_json"
    assert api.as_user("user-2").post(path, None, headers=ASYNC).status == 404
    assert _queue_length(app) == 0 and app.runs.list(integration["id"], top=10, continuation_token=None)[0] == []
    assert api.delete(f"integrations/{integration['id']}").status == 200
    assert api.post(path, None, headers=ASYNC).error["code"] == "integration_disconnected"


@pytest.mark.bc_page_size(100)
def test_a_synchronous_sync_that_reaches_its_budget_answers_paused_and_the_run_goes_on(api: Api, app: App, sim: BCSimulator) -> None:
    app.settings = dataclasses.replace(app.settings, http_sync_budget_seconds=0)
    integration = api.create_integration(sim, entities=["products"])
    reply = api.sync(integration["id"])
    assert reply.status == 200, reply.body
    assert reply.data["paused"] is True and reply.data["runId"]
    assert reply.data["products"]["created"] == 100 and reply.data["products"]["paused"] is True
    run = api.get(f"integrations/{integration['id']}/sync-runs/{reply.data['runId']}").data
    assert run["status"] == "running" and run["progress"]["products"]["done"] is False
    assert _queue_length(app) == 1  # its continuation, queued at once
    assert [o.state for o in drain(app)] == ["finished"]  # the worker's slice has SYNC_SLICE_SECONDS
    run = api.get(f"integrations/{integration['id']}/sync-runs/{reply.data['runId']}").data
    assert run["status"] == "succeeded" and run["counts"]["products"]["created"] == 230 and run["slices"] == 2
    assert len(_records(app, "Products", integration["id"])) == 230


@pytest.mark.bc_page_size(100)
def test_a_since_sync_that_pauses_continues_from_its_own_checkpoint(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """modifiedSince runs keep a checkpoint of their own: the continuation reads on, the watermark never moves."""
    integration = api.create_integration(sim, entities=["products"])
    assert api.sync(integration["id"]).status == 200
    watermark = app.states.get(integration["id"], "products").watermark
    app.settings = dataclasses.replace(app.settings, http_sync_budget_seconds=0)
    sim.clear_requests()
    reply = api.sync(integration["id"], {"modifiedSince": "2000-01-01T00:00:00Z"})
    assert reply.data["paused"] is True
    drain(app)
    reads = [r for r in sim.requests if r.path.endswith("/items")]
    assert "$skiptoken" not in reads[0].query and all("$skiptoken" in r.query for r in reads[1:])  # continued, never restarted
    run = app.runs.get(integration["id"], reply.data["runId"])
    assert run is not None and run.status == "succeeded"
    assert run.progress["products"].unchanged == 230 and run.progress["products"].read == 230
    assert app.states.get(integration["id"], "products").watermark == watermark


# -- the worker, as the host runs it ------------------------------------------------------------
def test_the_queue_trigger_served_by_the_local_host_completes_an_async_run(api: Api, app: App, sim: BCSimulator) -> None:
    """devtools' host serves sync_worker from the Azurite queue (base64 messages) as the Functions host does."""
    host = FunctionHost(ROOT, queues=True).start()
    try:
        assert [l.function for l in host.listeners] == ["sync_poison", "sync_worker"]
        integration = api.create_integration(sim)
        run_id = api.post(f"integrations/{integration['id']}/dynamics/sync", None, headers=ASYNC).data["runId"]
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            status = api.get(f"integrations/{integration['id']}/sync-runs/{run_id}").data["status"]
            if status in ("succeeded", "failed"):
                break
            time.sleep(0.2)
        assert status == "succeeded"
        assert len(_records(app, "Suppliers", integration["id"])) == 45
    finally:
        host.stop()
    raw = app.queue.client.peek_messages()
    assert raw == []


def test_a_message_that_keeps_failing_is_poisoned_and_never_blocks_the_others(api: Api, app: App, sim: BCSimulator) -> None:
    broken = api.create_integration(sim, entities=["suppliers"])
    healthy = api.as_user("user-2").create_integration(sim, entities=["suppliers"])
    api.post(f"integrations/{broken['id']}/dynamics/sync", None, headers=ASYNC)
    api.as_user("user-2").post(f"integrations/{healthy['id']}/dynamics/sync", None, headers=ASYNC)
    # State only a bug or a damaged row produces: the lease row of the broken integration is unreadable.
    app.store.table("SyncLeases").upsert_entity({"PartitionKey": "lease", "RowKey": broken["id"], "runId": "x", "expiresAt": "not a time"})
    outcomes = drain(app, failures=True)
    assert outcomes.count("retried") == app.settings.max_dequeue_count - 1 and outcomes.count("poisoned") == 1
    assert len(drain.errors) == app.settings.max_dequeue_count  # type: ignore[attr-defined]
    assert [o.run.integrationId for o in outcomes if hasattr(o, "run")] == [healthy["id"]]
    shown = api.get(f"integrations/{broken['id']}").data
    assert shown["status"] == "error" and shown["lastError"]["code"] == "run_failed" and shown["syncInProgress"] is False
    [run] = api.get(f"integrations/{broken['id']}/sync-runs").data
    assert run["status"] == "failed" and run["error"]["code"] == "run_failed"
    assert api.as_user("user-2").get(f"integrations/{healthy['id']}").data["status"] == "connected"
    assert process(b"not json at all") is None  # unreadable: dropped, never retried
    assert process(base64.b64encode(b"{}")) is None


def test_the_same_message_delivered_twice_at_once_runs_once(api: Api, app: App, sim: BCSimulator) -> None:
    integration = api.create_integration(sim, entities=["products"])
    run_id = api.post(f"integrations/{integration['id']}/dynamics/sync", None, headers=ASYNC).data["runId"]
    [message] = list(app.queue.client.receive_messages(max_messages=1))
    app.queue.client.delete_message(message)
    decoded = SliceMessage.decode(message.content)
    hold = sim.faults.hold(path_contains="/items")  # the first instance waits on its first page
    outcomes: list[Any] = []
    threads = [threading.Thread(target=lambda: outcomes.append(handle_message(app, decoded))) for _ in range(2)]
    threads[0].start()
    hold.wait()  # the first instance holds the run's lease and reads
    threads[1].start()
    threads[1].join(60)
    assert [o.state for o in outcomes] == ["skipped"]  # the second backed off while the first ran
    hold.release()
    threads[0].join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(o.state for o in outcomes) == ["finished", "skipped"]
    assert len(_records(app, "Products", integration["id"])) == 230
    run = app.runs.get(integration["id"], run_id)
    assert run is not None and run.status == "succeeded" and run.progress["products"].created == 230
    # The instance that backed off put the message back; once delivered it is stale and dropped.
    assert _queue_length(app) == 1
    stale = handle_message(app, decoded)
    assert stale.state == "skipped"
    assert len(api.get(f"integrations/{integration['id']}/sync-logs").data) == 1


@pytest.mark.bc_page_size(100)
def test_a_continuation_of_a_disconnected_integration_stops_cleanly(api: Api, app: App, sim: BCSimulator) -> None:
    app.settings = dataclasses.replace(app.settings, http_sync_budget_seconds=0)
    integration = api.create_integration(sim, entities=["products"])
    reply = api.sync(integration["id"])
    assert reply.data["paused"] is True
    assert api.delete(f"integrations/{integration['id']}").status == 200
    sim.clear_requests()
    assert [o.state for o in drain(app)] == ["finished"]
    assert [r for r in sim.requests if "/items" in r.path] == []  # nothing more read from BC
    run = api.get(f"integrations/{integration['id']}/sync-runs/{reply.data['runId']}").data
    assert run["status"] == "failed" and run["error"]["code"] == "integration_disconnected"
    shown = api.get(f"integrations/{integration['id']}").data
    assert shown["status"] == "disconnected" and shown["syncInProgress"] is False
    assert len(_records(app, "Products", integration["id"])) == 100  # what was synced stays


def test_a_continuation_of_a_deleted_integration_stops_cleanly(api: Api, app: App, sim: BCSimulator) -> None:
    integration = api.create_integration(sim, entities=["suppliers"])
    run_id = api.post(f"integrations/{integration['id']}/dynamics/sync", None, headers=ASYNC).data["runId"]
    app.store.table("Integrations").delete_entity("user-1", integration["id"])
    assert [o.state for o in drain(app)] == ["finished"]
    run = app.runs.get(integration["id"], run_id)
    assert run is not None and run.status == "failed" and run.error["code"] == "not_found"


def test_the_queue_being_unavailable_answers_503_and_leaves_nothing_half_queued(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    integration = api.create_integration(sim, entities=["suppliers"])
    dead = app.settings.queue_connection_string.split("QueueEndpoint=")[0] + "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    broken = App(dataclasses.replace(app.settings, queue_connection_string=dead), clock=clock)
    use_app(broken)
    try:
        reply = api.post(f"integrations/{integration['id']}/dynamics/sync", None, headers=ASYNC)
    finally:
        use_app(app)
    assert reply.status == 503 and reply.error["code"] == "queue_unavailable"
    assert "nothing was queued" in reply.error["message"]
    shown = api.get(f"integrations/{integration['id']}").data
    assert shown["syncInProgress"] is False and shown["status"] == "never_synced"
    [run] = app.runs.list(integration["id"], top=10, continuation_token=None)[0]
    assert run.status == "failed" and run.error["code"] == "queue_unavailable"
    again = api.post(f"integrations/{integration['id']}/dynamics/sync", None, headers=ASYNC)
    assert again.status == 202  # once the queue is back, nothing stands in the way


# -- the dispatcher -----------------------------------------------------------------------------
def test_the_timer_queues_only_the_due_integrations_among_thousands(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    later = to_iso(clock.now() + timedelta(hours=1))
    now = to_iso(clock.now())
    integrations = [
        Integration(id=f"int-{n:05d}", userId=f"user-{n % 97}", name="x", tenantId="t", companyId="c", clientId="k",
                    entities=["suppliers"], nextSyncAt=now if n % 400 == 0 else later, createdAt=now)
        for n in range(5000)
    ]
    # Written in bulk in the shapes the repository writes (an upsert each would take minutes).
    assert app.store.write("Integrations", [("upsert", i.to_entity()) for i in integrations]) == []
    index = [("upsert", {"PartitionKey": "due", "RowKey": schedule_key(i), "userId": i.userId, "integrationId": i.id}) for i in integrations]
    assert app.store.write("SyncSchedule", index) == []
    due = [i.id for n, i in enumerate(integrations) if n % 400 == 0]
    summary = run_scheduled(app)
    assert sorted(summary["queued"]) == sorted(due) and summary["failed"] == [] and summary["stale"] == 0
    assert _queue_length(app) == len(due)
    again = run_scheduled(app)  # still due (their runs are queued): coalesced, not queued twice
    assert sorted(again["coalesced"]) == sorted(due) and again["queued"] == []
    assert _queue_length(app) == len(due)


def test_housekeeping_walks_integrations_a_batch_per_tick(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    for n in range(120):
        app.integrations.upsert(Integration(id=f"int-{n:04d}", userId="u", name="x", tenantId="t", companyId="c", clientId="k",
                                            nextSyncAt=to_iso(clock.now() + timedelta(hours=1))))
    checked = [run_scheduled(app)["retentionChecked"] for _ in range(4)]
    assert checked[:3] == [50, 50, 20] and checked[3] == 50  # then it starts over


# -- records per integration (§8) ---------------------------------------------------------------
def test_two_companies_of_one_user_sharing_bc_ids_keep_separate_records(api: Api, app: App, sim: BCSimulator) -> None:
    """A copied company keeps its SystemIds: each integration gets its own set, spread over partitions."""
    us = sim.company(DEMO_US_COMPANY_ID)
    for vendor in sim.company(DEMO_COMPANY_ID).records("vendors")[:10]:
        us.add("vendors", {"id": vendor["id"], "displayName": "Copy of " + vendor["displayName"]})
    first = api.create_integration(sim, entities=["suppliers"])
    second = api.create_integration(sim, entities=["suppliers"], companyId=DEMO_US_COMPANY_ID)
    assert api.sync(first["id"]).data["suppliers"]["created"] == 45
    us_count = len(us.records("vendors"))
    assert api.sync(second["id"]).data["suppliers"]["created"] == us_count
    mine = _records(app, "Suppliers", first["id"])
    theirs = _records(app, "Suppliers", second["id"])
    assert len(mine) == 45 and len(theirs) == us_count
    shared = {r["externalId"] for r in mine} & {r["externalId"] for r in theirs}
    assert len(shared) == 10
    assert all(not r["name"].startswith("Copy of") for r in mine)
    assert sum(r["name"].startswith("Copy of") for r in theirs) == 10
    assert len({r["PartitionKey"] for r in mine}) > 4  # spread over several partitions
    assert api.sync(first["id"]).data["suppliers"]["unchanged"] == 45  # matched within its integration


@pytest.mark.bc_page_size(100)
def test_a_worker_killed_mid_slice_leaves_a_message_that_finishes_the_run_exactly_once(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """A real worker process is killed after its first page: the message reappears, the dead
    slice's lease expires, and the next delivery continues from the checkpoint."""
    import os
    import signal
    import subprocess
    import sys

    integration = api.create_integration(sim, entities=["products"])
    run_id = api.post(f"integrations/{integration['id']}/dynamics/sync", None, headers=ASYNC).data["runId"]
    hold = sim.faults.hold(path_contains="skiptoken")  # the worker waits on page 2 until it is killed
    worker = subprocess.Popen(
        [sys.executable, "-c", (
            "from shared.app import get_app\n"
            "from shared.runs.worker import process\n"
            "app = get_app()\n"
            "[m] = list(app.queue.client.receive_messages(max_messages=1, visibility_timeout=600))\n"
            "print(m.id, m.pop_receipt, flush=True)\n"
            "process(m.content, dequeue_count=m.dequeue_count)\n"
        )],
        cwd=str(ROOT), env=dict(os.environ), stdout=subprocess.PIPE, text=True,
    )
    try:
        message_id, pop_receipt = worker.stdout.readline().split()  # type: ignore[union-attr]
        hold.wait()
        deadline = time.monotonic() + 60
        def checkpointed() -> bool:  # page 1 written, then its checkpoint saved (the write-behind order)
            state = app.states.get(integration["id"], "products")
            return state.checkpoint is not None

        while time.monotonic() < deadline and not checkpointed():
            time.sleep(0.05)  # page 1 is being written (a real condition; the bound only ends a failing test)
        assert checkpointed() and len(_records(app, "Products", integration["id"])) == 100  # page 1 stored, page 2 pending
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        worker.stdout.close()  # type: ignore[union-attr]
    sim.faults.clear()
    assert app.leases.holder(integration["id"]) == run_id  # the dead slice's lease is still there
    assert _queue_length(app) == 1 and app.queue.client.peek_messages() == []  # invisible while "processed"
    # The message's visibility timeout passes (Azure's clock, not the service's): it reappears.
    app.queue.client.update_message(message_id, pop_receipt, visibility_timeout=0)
    outcomes = drain(app)
    assert [o.state for o in outcomes] == ["skipped"]  # the lease has not expired: it backs off
    clock.advance(app.settings.lease_seconds + 120)  # (the worker's real clock ran ahead of the test's)
    run = app.runs.get(integration["id"], run_id)
    assert run is not None
    assert handle_message(app, SliceMessage("user-1", integration["id"], run_id, run.seq)).state == "finished"
    run = app.runs.get(integration["id"], run_id)
    assert run is not None and run.status == "succeeded"
    rows = _records(app, "Products", integration["id"])
    assert sorted(r["externalId"] for r in rows) == sorted(i["id"] for i in sim.company().records("items"))
    first_page = [r for r in sim.requests if r.path.endswith("/items") and "$skiptoken" not in r.query]
    assert len(first_page) == 1  # page 1 was not read again: the checkpoint held
