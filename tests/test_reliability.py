"""Schedules you can trust: leases, late commits, resume, the timer, status, webhooks, retention."""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
import uuid
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.bcsim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_COMPANY_ID, DEMO_TENANT_ID, BCSimulator
from shared.api.timer import run_scheduled
from shared.app import App
from shared.clock import parse_iso, to_iso
from shared.keys import record_partition, record_row_key
from shared.storage.integrations import Integration
from shared.storage.leases import LeaseLost
from shared.storage.logs import inverted_time_key
from shared.storage.state import TypeState
from shared.runs.dispatch import RunRequest, start_run
from shared.runs.slices import run_slice
from tests.support import Api, FakeClock, drain, tick

HOUR = 3600.0


# -- helpers ---------------------------------------------------------------------------------
def _stored(app: App, user: str, integration_id: str) -> Integration:
    integration = app.integrations.get(user, integration_id)
    assert integration is not None
    return integration


def _all_logs(api: Api, integration_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every log entry of an integration, following continuation tokens."""
    entries: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        query = dict(params, top=1000)
        if token:
            query["continuationToken"] = token
        reply = api.get(f"integrations/{integration_id}/sync-logs", params=query)
        assert reply.status == 200, reply.body
        entries.extend(reply.data)
        token = reply.body["continuationToken"]
        if not token:
            return entries


def _requests_to(sim: BCSimulator, entity_set: str) -> list[Any]:
    return [r for r in sim.requests if r.path.endswith(f"/{entity_set}")]


def _skiptoken(next_link: str) -> str:
    return parse_qs(urlsplit(next_link).query)["$skiptoken"][0]


def _product_rows(app: App, user: str = "user-1") -> list[dict[str, Any]]:
    return list(app.store.query("Products", "userId eq @user", parameters={"user": user}))


def _ms(moment: datetime) -> datetime:
    """A moment at the millisecond precision every stored timestamp has."""
    return parse_iso(to_iso(moment))


class Receiver:
    """A webhook receiver as a platform would run one: records headers and the raw body."""

    def __init__(self) -> None:
        self.hits: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.hits.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/bc"

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.hits]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def _verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does: recompute the HMAC of the raw body and compare in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("x-signature-256", ""))


# -- 1. leases -------------------------------------------------------------------------------
def test_concurrent_sync_of_one_integration_answers_409_and_the_first_run_completes(api: Api, app: App, sim: BCSimulator) -> None:
    """While a sync runs, a second one answers 409 sync_in_progress; the first finishes with exact counts."""
    integration = api.create_integration(sim)
    hold = sim.faults.hold(path_contains="vendors")  # the first run waits on its first page
    first: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: first.update(reply=api.sync(integration["id"])))
    worker.start()
    try:
        hold.wait()
        assert app.leases.holder(integration["id"]) is not None
        second = api.sync(integration["id"])
        shown = api.get(f"integrations/{integration['id']}").data
    finally:
        hold.release()
        worker.join(60)
    assert not worker.is_alive()
    assert second.status == 409
    assert second.error["code"] == "sync_in_progress"
    assert shown["syncInProgress"] is True
    reply = first["reply"]
    assert reply.status == 200, reply.body
    assert {k: (v["created"], v["updated"], v["errors"]) for k, v in reply.data.items()} == {
        "suppliers": (45, 0, 0),
        "products": (230, 0, 0),
    }
    assert app.leases.holder(integration["id"]) is None
    again = api.sync(integration["id"])
    assert again.status == 200
    assert again.data["suppliers"]["unchanged"] == 45 and again.data["products"]["unchanged"] == 230


def test_a_lease_left_by_a_crashed_run_blocks_until_it_expires(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """A dead run's lease answers 409 until SYNC_LEASE_SECONDS pass; then the next sync takes over."""
    integration = api.create_integration(sim, entities=["suppliers"])
    dead = app.leases.acquire(integration["id"], "dead-run")
    assert dead is not None
    assert api.sync(integration["id"]).error["code"] == "sync_in_progress"
    clock.advance(app.settings.lease_seconds - 60)
    assert api.sync(integration["id"]).status == 409
    clock.advance(61)
    reply = api.sync(integration["id"])
    assert reply.status == 200, reply.body
    assert reply.data["suppliers"]["created"] == 45
    with pytest.raises(LeaseLost):
        dead.renew()  # the crashed run, were it to wake up, must not keep writing
    assert app.leases.holder(integration["id"]) is None


# -- 2. late commits and the watermark ---------------------------------------------------------
def test_a_late_commit_inside_the_look_back_window_is_picked_up_once(api: Api, app: App, sim: BCSimulator) -> None:
    """A record stamped before the watermark (within the look-back) is updated by a delta; re-reads count as unchanged."""
    integration = api.create_integration(sim, entities=["suppliers"])
    assert api.sync(integration["id"]).data["suppliers"]["created"] == 45
    watermark = app.states.get(integration["id"], "suppliers").watermark
    assert watermark is not None
    vendors = sim.company().records("vendors")
    newest = max(v["lastModifiedDateTime"] for v in vendors)
    assert parse_iso(watermark) == parse_iso(newest)  # the newest record written, not "now"
    late = min(vendors, key=lambda v: v["lastModifiedDateTime"])
    sim.company().update("vendors", late["id"], displayName="Late", modified_at=parse_iso(watermark) - timedelta(minutes=5))

    sim.clear_requests()
    delta = api.sync(integration["id"], {"mode": "delta"})
    assert delta.status == 200, delta.body
    assert (delta.data["suppliers"]["created"], delta.data["suppliers"]["updated"]) == (0, 1)
    sent = _requests_to(sim, "vendors")[0].query["$filter"]
    assert sent.startswith("lastModifiedDateTime gt ")
    assert parse_iso(sent.split(" gt ")[1]) == parse_iso(watermark) - timedelta(minutes=10)
    row = app.store.table("Suppliers").get_entity(record_partition(integration["id"], record_row_key(late["id"])), record_row_key(late["id"]))
    assert row["name"] == "Late"

    again = api.sync(integration["id"], {"mode": "delta"})
    assert (again.data["suppliers"]["updated"], again.data["suppliers"]["created"]) == (0, 0)
    assert again.data["suppliers"]["unchanged"] >= 2  # the late record and the newest are re-read
    assert app.states.get(integration["id"], "suppliers").watermark == watermark  # never moved backwards


def test_the_watermark_never_passes_the_runs_start(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """A BC stamp ahead of our clock caps the watermark at the run's start, so nothing after it is skipped."""
    integration = api.create_integration(sim, entities=["suppliers"])
    vendor = sim.company().records("vendors")[3]
    sim.company().update("vendors", vendor["id"], displayName="From the future", modified_at=clock.now() + timedelta(hours=2))
    started = clock.now()
    assert api.sync(integration["id"]).status == 200
    rows = list(app.store.query("SyncState", "PartitionKey eq @pk", parameters={"pk": integration["id"]}))
    suppliers = [r for r in rows if r["RowKey"] == "suppliers"]
    assert len(suppliers) == 1 and "checkpoint" not in suppliers[0]
    assert parse_iso(suppliers[0]["watermark"]) == _ms(started)
    last_run = _stored(app, "user-1", integration["id"]).lastRun
    assert last_run is not None
    assert all(parse_iso(r["watermark"]) <= parse_iso(last_run["startedAt"]) for r in rows if r.get("watermark"))

    # A change made after the run began (stamped between the watermark and now) is not lost.
    clock.advance(120)
    sim.company().update("vendors", sim.company().records("vendors")[7]["id"], displayName="Changed meanwhile", modified_at=started + timedelta(seconds=30))
    delta = api.sync(integration["id"], {"mode": "delta"})
    assert delta.data["suppliers"]["updated"] == 1


# -- 3. resume after an interrupted run ---------------------------------------------------------
@pytest.mark.bc_page_size(100)
def test_a_paused_full_sync_continues_from_its_checkpoint_by_itself(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """A slice out of time stops after a page and queues its continuation, which starts at the saved nextLink and ends with exactly 230 products."""
    created = api.create_integration(sim, entities=["products"])
    started = start_run(app, _stored(app, "user-1", created["id"]), RunRequest(mode="full"), enqueue=False)
    outcome = run_slice(app, started.integration, started.run, budget_seconds=0)
    assert outcome.state == "continued"
    assert outcome.run.progress["products"].created == 100 and not outcome.run.progress["products"].done
    checkpoint = app.states.get(created["id"], "products").checkpoint
    assert checkpoint is not None and "$skiptoken" in checkpoint.next_link
    shown = api.get(f"integrations/{created['id']}").data
    assert shown["syncInProgress"] is True and shown["lastSyncedAt"] is None
    assert len(_product_rows(app)) == 100
    assert api.sync(created["id"]).error["code"] == "sync_in_progress"  # the run goes on; no second one

    clock.advance(1)
    sim.clear_requests()
    outcomes = drain(app)
    assert [o.state for o in outcomes] == ["finished"]
    first_read = _requests_to(sim, "items")[0]
    assert first_read.query.get("$skiptoken") == _skiptoken(checkpoint.next_link)
    run = api.get(f"integrations/{created['id']}/sync-runs/{started.run.runId}").data
    assert run["status"] == "succeeded" and run["slices"] == 2
    assert run["counts"]["products"]["created"] == 230 and run["counts"]["products"]["unchanged"] == 0
    rows = _product_rows(app)
    assert len(rows) == 230
    assert {r["externalId"] for r in rows} == {i["id"] for i in sim.company().records("items")}
    state = app.states.get(created["id"], "products")
    assert state.checkpoint is None and state.watermark is not None
    logs = _all_logs(api, created["id"], entityType="PRODUCT")
    assert len(logs) == 1  # one entry per data type per run, summed over its slices
    assert logs[0]["metadata"]["created"] == 230 and logs[0]["metadata"]["slices"] == 2


@pytest.mark.bc_page_size(100)
def test_a_run_killed_mid_way_resumes_without_duplicates(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """BC failing on a later page leaves a checkpoint; once BC recovers the next run continues from it."""
    integration = api.create_integration(sim, entities=["products"])
    sim.faults.add(503, times=None, path_contains="skiptoken")
    failed = api.sync(integration["id"])
    assert failed.status == 502 and failed.error["code"] == "bc_unavailable"
    checkpoint = app.states.get(integration["id"], "products").checkpoint
    assert checkpoint is not None
    assert len(_product_rows(app)) == 100

    sim.faults.clear()
    sim.clear_requests()
    clock.advance(1)
    reply = api.sync(integration["id"])
    assert reply.status == 200, reply.body
    assert _requests_to(sim, "items")[0].query.get("$skiptoken") == _skiptoken(checkpoint.next_link)
    logs = _all_logs(api, integration["id"], entityType="PRODUCT")
    assert [e["status"] for e in logs] == ["SUCCESS", "FAILED"]
    assert sum(e["metadata"]["created"] for e in logs) == 230
    rows = _product_rows(app)
    assert len(rows) == 230 and len({r["externalId"] for r in rows}) == 230


@pytest.mark.bc_page_size(100)
def test_a_resume_link_bc_no_longer_accepts_restarts_the_pass(api: Api, app: App, sim: BCSimulator) -> None:
    """When BC refuses the saved skiptoken, the pass starts over cleanly: nothing duplicated, nothing missed."""
    created = api.create_integration(sim, entities=["products"])
    started = start_run(app, _stored(app, "user-1", created["id"]), RunRequest(mode="full"), enqueue=False)
    assert run_slice(app, started.integration, started.run, budget_seconds=0).state == "continued"
    state = app.states.get(created["id"], "products")
    assert state.checkpoint is not None
    stale = state.checkpoint.next_link.replace(_skiptoken(state.checkpoint.next_link), str(uuid.uuid4()))
    app.states.save(created["id"], "products", TypeState(state.watermark, dataclasses.replace(state.checkpoint, next_link=stale)))

    sim.clear_requests()
    assert [o.state for o in drain(app)] == ["finished"]
    reads = _requests_to(sim, "items")
    assert reads[0].status == 400  # the stale link, refused by BC
    assert "$skiptoken" not in reads[1].query  # then the pass restarts at the first page
    products = api.get(f"integrations/{created['id']}/sync-runs/{started.run.runId}").data["counts"]["products"]
    assert (products["created"], products["unchanged"], products["errors"]) == (230, 100, 0)  # summed over both slices
    rows = _product_rows(app)
    assert len(rows) == 230 and len({r["externalId"] for r in rows}) == 230
    after = app.states.get(created["id"], "products")
    assert after.checkpoint is None and after.watermark is not None


# -- 4. the timer ------------------------------------------------------------------------------
def test_the_timer_syncs_only_integrations_that_are_due(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """A manually synced integration waits its interval; the others get a delta sync logged as trigger "timer"."""
    ids = [api.as_user(f"user-{n}").create_integration(sim, entities=["suppliers"])["id"] for n in "abc"]
    manual = api.as_user("user-a").sync(ids[0])
    assert manual.status == 200
    summary = tick(app)
    assert sorted(summary["synced"]) == sorted(ids[1:]) and summary["failed"] == []
    for user, integration_id in zip("bc", ids[1:]):
        logs = _all_logs(api.as_user(f"user-{user}"), integration_id)
        assert len(logs) == 1
        assert logs[0]["metadata"]["trigger"] == "timer" and logs[0]["metadata"]["mode"] == "delta"
        assert logs[0]["metadata"]["created"] == 45  # delta of a never-synced integration = everything
        shown = api.as_user(f"user-{user}").get(f"integrations/{integration_id}").data
        assert shown["status"] == "connected"
        assert parse_iso(shown["nextSyncAt"]) == _ms(clock.now() + timedelta(minutes=60))
    assert [e["metadata"]["trigger"] for e in _all_logs(api.as_user("user-a"), ids[0])] == ["manual"]

    clock.advance(59 * 60)
    assert tick(app)["synced"] == []
    clock.advance(60)
    api.host.run_timer("sync_timer")  # the function folder itself, as the host fires it: it only queues
    assert all(_all_logs(api.as_user(f"user-{u}"), i)[0]["metadata"]["unchanged"] == 0 for u, i in zip("abc", ids))
    assert [o.state for o in drain(app)] == ["finished"] * 3  # the worker runs them
    for user, integration_id in zip("abc", ids):
        logs = _all_logs(api.as_user(f"user-{user}"), integration_id)
        assert logs[0]["metadata"]["trigger"] == "timer"
        assert logs[0]["metadata"]["unchanged"] >= 1 and logs[0]["metadata"]["created"] == 0


def test_the_timer_coalesces_into_a_run_already_active(api: Api, app: App, sim: BCSimulator) -> None:
    """A due integration with a manual run in progress gets no second run: the tick coalesces into it."""
    integration = api.create_integration(sim, entities=["suppliers"])
    started = start_run(app, _stored(app, "user-1", integration["id"]), RunRequest(mode="full"), enqueue=False)
    summary = tick(app)
    assert summary["coalesced"] == [integration["id"]] and summary["queued"] == [] and summary["synced"] == []
    assert _stored(app, "user-1", integration["id"]).activeRunId == started.run.runId
    assert run_slice(app, started.integration, started.run, budget_seconds=60).state == "finished"
    assert _stored(app, "user-1", integration["id"]).activeRunId is None


def test_a_failing_integration_never_stops_the_healthy_ones(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """Bad credentials and a missing company fail alone; auth_expired waits for a PATCH; disconnected never runs."""
    healthy = [api.as_user(u).create_integration(sim, entities=["suppliers"])["id"] for u in ("user-h1", "user-h2")]
    bad_auth = api.as_user("user-x").create_integration(sim, entities=["suppliers"], clientSecret="not-the-secret")["id"]
    no_company = api.as_user("user-y").create_integration(sim, entities=["suppliers"], companyId=str(uuid.uuid4()))["id"]
    gone = api.as_user("user-z").create_integration(sim, entities=["suppliers"])["id"]
    assert api.as_user("user-z").delete(f"integrations/{gone}").status == 200

    summary = tick(app)
    assert sorted(summary["synced"]) == sorted(healthy)
    assert sorted(summary["failed"]) == sorted([bad_auth, no_company])
    for user, integration_id in (("user-h1", healthy[0]), ("user-h2", healthy[1])):
        assert api.as_user(user).get(f"integrations/{integration_id}").data["status"] == "connected"

    x = api.as_user("user-x").get(f"integrations/{bad_auth}").data
    assert x["status"] == "auth_expired" and x["lastError"]["code"] == "bc_auth_failed"
    assert "PATCH" in x["lastError"]["message"]
    x_logs = _all_logs(api.as_user("user-x"), bad_auth)
    assert [(e["status"], e["metadata"]["error"]["code"]) for e in x_logs] == [("FAILED", "bc_auth_failed")]

    y = api.as_user("user-y").get(f"integrations/{no_company}").data
    assert y["status"] == "error" and y["lastError"]["code"] == "bc_company_not_found"
    assert [e["status"] for e in _all_logs(api.as_user("user-y"), no_company)] == ["FAILED"]

    assert _all_logs(api.as_user("user-z"), gone) == []
    assert api.as_user("user-z").get(f"integrations/{gone}").data["status"] == "disconnected"

    clock.advance(61 * 60)
    summary = tick(app)
    assert bad_auth not in summary["synced"] + summary["failed"] + summary["queued"] + summary["coalesced"]
    assert no_company in summary["failed"]  # other errors are retried on schedule
    assert gone not in summary["synced"] + summary["failed"]
    assert len(_all_logs(api.as_user("user-x"), bad_auth)) == 1
    assert _all_logs(api.as_user("user-z"), gone) == []

    patched = api.as_user("user-x").patch(f"integrations/{bad_auth}", {"clientSecret": DEMO_CLIENT_SECRET})
    assert patched.status == 200 and patched.data["status"] == "never_synced" and patched.data["lastError"] is None
    assert bad_auth in tick(app)["synced"]
    assert api.as_user("user-x").get(f"integrations/{bad_auth}").data["status"] == "connected"


def test_a_secret_rotated_in_entra_id_marks_the_integration_auth_expired(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """Credentials that worked and were then rotated fail as auth_expired on the next tick; a PATCH with the new secret heals it."""
    other_client = str(uuid.uuid4())
    sim.register_app(DEMO_TENANT_ID, other_client, "first-secret")
    rotated = api.as_user("user-r").create_integration(sim, entities=["suppliers"], clientId=other_client, clientSecret="first-secret")["id"]
    healthy = api.as_user("user-h").create_integration(sim, entities=["suppliers"])["id"]
    assert sorted(tick(app)["synced"]) == sorted([rotated, healthy])

    sim.set_client_secret(DEMO_TENANT_ID, other_client, "second-secret")
    sim.revoke_tokens()  # Entra ID drops the tokens issued under the old secret
    clock.advance(60 * 60)
    summary = tick(app)
    assert summary["synced"] == [healthy] and summary["failed"] == [rotated]
    shown = api.as_user("user-r").get(f"integrations/{rotated}").data
    assert shown["status"] == "auth_expired" and shown["lastError"]["code"] == "bc_auth_failed"
    assert shown["lastSyncedAt"] is not None  # the last good sync stays visible

    clock.advance(60 * 60)
    assert rotated not in tick(app)["failed"]  # not retried against Entra ID
    assert api.as_user("user-r").patch(f"integrations/{rotated}", {"clientSecret": "second-secret"}).data["status"] == "connected"
    assert rotated in tick(app)["synced"]
    assert api.as_user("user-r").get(f"integrations/{rotated}").data["lastError"] is None


@pytest.mark.bc_page_size(100)
def test_a_run_cut_short_by_its_slice_continues_by_itself(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """A throttled run that outlives its slice pauses at a checkpoint and its queued continuation finishes it in the same tick."""
    app.settings = dataclasses.replace(app.settings, slice_seconds=60)
    integration = api.create_integration(sim, entities=["products"])
    sim.faults.add(429, times=1, retry_after=61, path_contains="/items")
    summary = tick(app)
    assert summary["queued"] == [integration["id"]] and summary["synced"] == [integration["id"]]
    shown = api.get(f"integrations/{integration['id']}").data
    assert shown["lastRun"]["status"] == "succeeded" and shown["lastRun"]["slices"] == 2
    assert shown["status"] == "connected"
    assert len(_product_rows(app)) == 230
    logs = _all_logs(api, integration["id"])
    assert len(logs) == 1 and logs[0]["metadata"]["created"] == 230 and logs[0]["metadata"]["resumed"] is True


# -- 5. status monitoring --------------------------------------------------------------------
def test_the_integration_shows_status_last_error_and_run_statistics(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """GET shows status, lastSyncedAt, lastError {code,message,at}, nextSyncAt and 24h/7d statistics."""
    integration = api.create_integration(sim)
    path = f"integrations/{integration['id']}"
    fresh = api.get(path).data
    assert fresh["status"] == "never_synced" and fresh["lastSyncedAt"] is None and fresh["lastError"] is None
    assert fresh["statistics"]["last24h"] == {"runs": 0, "failures": 0, "records": {}}

    assert api.sync(integration["id"]).status == 200
    ok = api.get(path).data
    synced_at = ok["lastSyncedAt"]
    assert ok["status"] == "connected" and synced_at == to_iso(clock.now())
    assert parse_iso(ok["nextSyncAt"]) == _ms(clock.now() + timedelta(minutes=60))

    clock.advance(300)
    sim.faults.add(503, times=None)
    assert api.sync(integration["id"]).status == 502
    sim.faults.clear()
    failed = api.get(path).data
    assert failed["status"] == "error" and failed["lastSyncedAt"] == synced_at
    error = failed["lastError"]
    assert error["code"] == "bc_unavailable" and "unavailable" in error["message"]
    assert parse_iso(error["at"]) == _ms(clock.now())
    stats = failed["statistics"]
    assert stats["last24h"] == {"runs": 2, "failures": 1, "records": {"suppliers": 45, "products": 230}}
    assert stats["last7d"] == stats["last24h"]

    clock.advance(25 * HOUR)
    assert api.sync(integration["id"]).status == 200
    later = api.get(path).data
    assert later["status"] == "connected" and later["lastError"] is None
    assert later["lastSyncedAt"] == to_iso(clock.now())
    assert later["statistics"]["last24h"] == {"runs": 1, "failures": 0, "records": {"suppliers": 0, "products": 0}}
    assert later["statistics"]["last7d"] == {"runs": 3, "failures": 1, "records": {"suppliers": 45, "products": 230}}

    clock.advance((7 * 24 + 1) * HOUR)
    assert api.get(path).data["statistics"]["last7d"]["runs"] == 0


# -- 6. outbound webhooks ----------------------------------------------------------------------
def test_a_sync_notifies_the_webhook_with_a_verifiable_signature(api: Api, app: App, sim: BCSimulator, receiver: Receiver) -> None:
    """sync.completed and sync.failed arrive signed with HMAC-SHA256 of the raw body under the secret shown once."""
    created = api.create_integration(sim, entities=["suppliers"], webhookUrl=receiver.url)
    secret = created["webhookSecret"]
    assert secret and created["hasWebhookSecret"] is True
    shown = api.get(f"integrations/{created['id']}").data
    assert "webhookSecret" not in shown and secret not in json.dumps(shown)
    assert secret not in json.dumps(api.get("integrations").body)

    reply = api.sync(created["id"])
    assert reply.status == 200
    assert len(receiver.hits) == 1
    headers, body = receiver.hits[0]
    assert _verify(secret, headers, body)
    assert not _verify(secret, headers, body + b" ")  # the signature covers the exact bytes
    payload = json.loads(body)
    assert set(payload) == {"event", "integrationId", "runId", "status", "counts", "error", "occurredAt"}
    assert payload["event"] == "sync.completed" and payload["status"] == "succeeded" and payload["error"] is None
    assert payload["integrationId"] == created["id"]
    assert payload["runId"] == reply.headers["X-Sync-Run-Id"]
    assert payload["counts"]["suppliers"]["created"] == 45
    assert parse_iso(payload["occurredAt"]) == _ms(app.clock.now())

    sim.faults.add(503, times=None)
    assert api.sync(created["id"]).status == 502
    headers, body = receiver.hits[1]
    assert _verify(secret, headers, body)
    failed = json.loads(body)
    assert failed["event"] == "sync.failed" and failed["status"] == "failed"
    assert failed["error"]["code"] == "bc_unavailable"


def test_a_failed_delivery_is_retried_by_the_timer_until_delivered(api: Api, app: App, sim: BCSimulator, clock: FakeClock, receiver: Receiver) -> None:
    """A receiver answering 500 leaves the delivery pending with its attempts; the timer retries it after a minute."""
    created = api.create_integration(sim, entities=["suppliers"], webhookUrl=receiver.url)
    receiver.status = 500
    assert api.sync(created["id"]).status == 200  # a webhook never fails the sync
    path = f"integrations/{created['id']}/webhook-deliveries"
    [delivery] = api.get(path).data
    assert delivery["status"] == "pending" and delivery["event"] == "sync.completed"
    assert [a["statusCode"] for a in delivery["attempts"]] == [500]
    assert parse_iso(delivery["nextAttemptAt"]) == parse_iso(delivery["attempts"][0]["at"]) + timedelta(minutes=1)

    clock.advance(30)
    assert tick(app)["webhookRetries"] == 0  # not due yet
    receiver.status = 200
    clock.advance(31)
    assert tick(app)["webhookRetries"] == 1
    [delivery] = api.get(path).data
    assert delivery["status"] == "delivered" and delivery["nextAttemptAt"] is None
    assert [a["statusCode"] for a in delivery["attempts"]] == [500, 200]
    assert len(receiver.hits) == 2 and receiver.hits[0][1] == receiver.hits[1][1]  # the same signed body
    assert _verify(created["webhookSecret"], *receiver.hits[1])
    clock.advance(3600)
    assert tick(app)["webhookRetries"] == 0  # delivered: never sent again
    assert api.as_user("someone-else").get(path).status == 404


def test_a_delivery_that_keeps_failing_gives_up_after_the_retry_schedule(api: Api, app: App, sim: BCSimulator, clock: FakeClock, receiver: Receiver) -> None:
    """Retries follow 1 min, 5 min, 30 min, 2 h, 6 h; after the sixth failed attempt the delivery is failed."""
    created = api.create_integration(sim, entities=["suppliers"], webhookUrl=receiver.url, syncIntervalMinutes=1440)
    receiver.status = 503
    assert api.sync(created["id"]).status == 200
    path = f"integrations/{created['id']}/webhook-deliveries"
    for minutes in (1, 5, 30, 120, 360):
        clock.advance(minutes * 60 - 1)
        assert tick(app)["webhookRetries"] == 0
        clock.advance(1)
        assert tick(app)["webhookRetries"] == 1
    [delivery] = api.get(path).data
    assert delivery["status"] == "failed" and delivery["nextAttemptAt"] is None
    assert [a["statusCode"] for a in delivery["attempts"]] == [503] * 6
    clock.advance(24 * HOUR)
    receiver.status = 200
    tick(app)
    assert len(receiver.hits) == 6 + 1  # given up: only the new day's sync is delivered
    assert json.loads(receiver.hits[-1][1])["runId"] != delivery["payload"]["runId"]


def test_webhook_url_must_be_https_except_for_loopback(api: Api, sim: BCSimulator) -> None:
    """http://example.com is refused at create; the message names the field."""
    body = {"name": "x", "tenantId": DEMO_TENANT_ID, "companyId": DEMO_COMPANY_ID, "clientId": DEMO_CLIENT_ID,
            "clientSecret": DEMO_CLIENT_SECRET, "webhookUrl": "http://example.com/hook"}
    reply = api.post("integrations", body)
    assert reply.status == 400
    assert reply.error["code"] == "validation_error" and "webhookUrl" in reply.error["message"]
    assert api.get("integrations").data == []


# -- 7. retention and large log listings ---------------------------------------------------------
def test_the_timer_removes_only_logs_older_than_the_retention(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """Entries older than SYNC_LOG_RETENTION_DAYS (30) go on a timer tick; newer ones stay."""
    integration = api.create_integration(sim, entities=["suppliers"])
    assert api.sync(integration["id"]).status == 200
    now = clock.now()

    def add(days: float) -> str:
        entry = app.logs.add(integration_id=integration["id"], run_id="run-old", entity_type="SUPPLIER", status="SUCCESS",
                             records_affected=1, metadata={"created": 1}, created_at=now - timedelta(days=days))
        return str(entry["id"])

    old = {add(40), add(31), add(30.01)}
    kept = {add(29.99), add(1)}
    before = {e["id"] for e in _all_logs(api, integration["id"])}
    assert old | kept <= before

    summary = tick(app)
    assert summary["logsRemoved"] == 3
    after = {e["id"] for e in _all_logs(api, integration["id"])}
    assert after == before - old
    assert tick(app)["logsRemoved"] == 0


def test_retention_also_applies_to_disconnected_integrations(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """A disconnected integration keeps its logs visible, but old ones still age out."""
    integration = api.create_integration(sim, entities=["suppliers"])
    assert api.sync(integration["id"]).status == 200
    app.logs.add(integration_id=integration["id"], run_id="run-old", entity_type="SUPPLIER", status="SUCCESS",
                 records_affected=0, metadata={}, created_at=clock.now() - timedelta(days=45))
    assert api.delete(f"integrations/{integration['id']}").status == 200
    assert tick(app)["logsRemoved"] == 1
    logs = _all_logs(api, integration["id"])
    assert len(logs) == 1 and logs[0]["runId"] != "run-old"


def test_a_long_log_history_pages_newest_first(api: Api, app: App, sim: BCSimulator, clock: FakeClock) -> None:
    """With 2,000 entries the first page holds the newest 50, and paging visits each entry once, in order."""
    integration = api.create_integration(sim, entities=["suppliers"])
    now = clock.now()
    entities = []
    for n in range(2000):
        at = now - timedelta(seconds=n * 7)
        log_id = f"log-{n:016x}"
        entities.append(("upsert", {
            "PartitionKey": integration["id"], "RowKey": f"{inverted_time_key(at)}-{log_id}", "id": log_id,
            "integrationId": integration["id"], "runId": f"run-{n // 2}", "entityType": "SUPPLIER" if n % 2 else "PRODUCT",
            "action": "UPSERT", "status": "SUCCESS", "recordsAffected": n, "metadata": json.dumps({"created": n}),
            "createdAt": to_iso(at),
        }))
    assert app.store.write("SyncLogs", entities) == []
    expected = [e["id"] for _, e in entities]  # already newest first

    first = api.get(f"integrations/{integration['id']}/sync-logs")
    assert first.status == 200
    assert [e["id"] for e in first.data] == expected[:50]
    assert first.body["continuationToken"]

    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"top": 300}
        if token:
            params["continuationToken"] = token
        reply = api.get(f"integrations/{integration['id']}/sync-logs", params=params)
        assert reply.status == 200
        assert len(reply.data) <= 300
        seen.extend(e["id"] for e in reply.data)
        pages += 1
        token = reply.body["continuationToken"]
        if not token:
            break
    assert seen == expected and pages >= 7

    products = _all_logs(api, integration["id"], entityType="PRODUCT")
    assert [e["id"] for e in products] == expected[0::2]
    since = to_iso(now - timedelta(seconds=7 * 99))
    recent = _all_logs(api, integration["id"], since=since)
    assert [e["id"] for e in recent] == expected[:100]
