"""BC's limits: slow heavy pages (408/504/late answers), a sliding request window per credential,
5 requests processed at once with a queue, 429 with or without Retry-After (design.md §14)."""
from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from devtools.bcsim import DEMO_TENANT_ID, BCSimulator
from tests.test_bcsim import bc_url, client, get_token


@pytest.fixture()
def sim() -> Iterator[BCSimulator]:
    with BCSimulator(seed=9) as s:
        yield s


def _page(c: httpx.Client, sim: BCSimulator, size: int) -> httpx.Response:
    return c.get(bc_url(sim, "/items"), headers={"Prefer": f"odata.maxpagesize={size}"})


def _until(check: object, timeout: float = 5.0) -> None:
    """Wait for simulator state (not for time): the condition is what the test needs."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_heavy_pages_outlast_the_client_timeout_and_half_a_page_gets_through(sim: BCSimulator) -> None:
    token = get_token(sim).json()["access_token"]
    with client(sim, token) as c:
        assert c.post(f"{sim.base_url}/_sim/slow", json={"threshold": 100, "seconds": 3}).status_code == 200
        c.timeout = httpx.Timeout(1.0)
        with pytest.raises(httpx.ReadTimeout):
            _page(c, sim, 200)
        with pytest.raises(httpx.ReadTimeout):  # the server default (20,000) is heavy too
            c.get(bc_url(sim, "/items"))
        half = _page(c, sim, 100)  # within the same 1 s client timeout
        assert half.status_code == 200 and len(half.json()["value"]) == 100
        single = c.get(bc_url(sim, f"/items({half.json()['value'][0]['id']})"))
        assert single.status_code == 200, "reading one record is never slow"
    assert sim.slow.slowed == 2
    sim.slow.release()


@pytest.mark.parametrize("status, ctype", [(408, "application/json"), (504, "text/html")])
def test_heavy_pages_can_answer_408_or_504(sim: BCSimulator, status: int, ctype: str) -> None:
    sim.slow.configure(threshold=50, seconds=0.2, status=status)
    with client(sim) as c:
        r = _page(c, sim, 51)
        assert r.status_code == status and r.headers["content-type"].startswith(ctype)
        if status == 408:
            assert r.json()["error"]["code"] == "Application_OperationTimeout"
        assert _page(c, sim, 50).status_code == 200
        sim.slow.off()
        assert _page(c, sim, 51).status_code == 200


def test_sliding_window_per_credential(sim: BCSimulator) -> None:
    sim.limits.configure(per_window=5, window_seconds=60)
    other = "0c9a7e2b-1111-4d05-a6c2-9e1b7d3f5a24"
    sim.register_app(DEMO_TENANT_ID, other, "other-secret")
    with client(sim) as c:
        assert [_page(c, sim, 1).status_code for _ in range(3)] == [200] * 3
        sim.advance(40)
        assert [_page(c, sim, 1).status_code for _ in range(3)] == [200, 200, 429]
        refused = _page(c, sim, 1)
        assert refused.json()["error"]["code"] == "Application_TooManyRequests"
        assert "retry-after" not in refused.headers
        with httpx.Client(verify=ssl.create_default_context(cafile=sim.ca_path)) as raw:
            tok = raw.post(f"{sim.base_url}/{DEMO_TENANT_ID}/oauth2/v2.0/token", data={
                "grant_type": "client_credentials", "client_id": other, "client_secret": "other-secret",
                "scope": "https://api.businesscentral.dynamics.com/.default"}).json()["access_token"]
        with client(sim, tok) as c2:
            assert _page(c2, sim, 1).status_code == 200, "another app registration has its own window"
        sim.advance(21)  # 61 s after the first three: they left the window, the later two did not
        assert [_page(c, sim, 1).status_code for _ in range(4)] == [200, 200, 200, 429]
        sim.limits.configure(retry_after=7)
        assert _page(c, sim, 1).headers["retry-after"] == "7"


def test_five_at_once_then_a_queue_then_429(sim: BCSimulator) -> None:
    sim.limits.configure(concurrent=2, queued=1)
    sim.slow.configure(threshold=10, seconds=10)  # heavy pages are held until released
    token = get_token(sim).json()["access_token"]
    results: list[int] = []

    def heavy() -> None:
        with client(sim, token) as c:
            results.append(_page(c, sim, 20).status_code)

    threads = [threading.Thread(target=heavy) for _ in range(3)]
    for t in threads[:2]:
        t.start()
    _until(lambda: sim.limits.in_flight(f"{DEMO_TENANT_ID}|{'3f9a2c71-8b4e-4d05-a6c2-9e1b7d3f5a24'}|") == 2)
    threads[2].start()
    _until(lambda: sum(sim.limits._waiting.values()) == 1)
    with client(sim, token) as c:
        assert _page(c, sim, 1).status_code == 429, "2 running + 1 queued: the next one is refused"
    sim.slow.release()
    for t in threads:
        t.join(10)
    assert results == [200, 200, 200]
    with client(sim, token) as c:
        assert _page(c, sim, 1).status_code == 200


def test_reset_controls_restores_bcs_defaults(sim: BCSimulator) -> None:
    sim.limits.configure(per_window=1, retry_after=3)
    sim.slow.configure(threshold=1, seconds=5, status=408)
    sim.webhooks.resource_form, sim.webhooks.collection_threshold = "absolute", 2
    sim.set_id_order("text")
    with client(sim) as c:
        assert _page(c, sim, 1).status_code == 200
        sim.slow.off()
        assert _page(c, sim, 1).status_code == 429
        sim.reset_controls()
        assert _page(c, sim, 500).status_code == 200, "window emptied, limits and slow pages back to BC's"
    assert (sim.limits.per_window, sim.limits.retry_after, sim.slow.threshold) == (6000, None, None)
    assert (sim.webhooks.resource_form, sim.webhooks.collection_threshold, sim.id_order) == ("subscribed", 1000, "sql")


def test_a_fault_hold_keeps_one_request_until_released(sim: BCSimulator) -> None:
    hold = sim.faults.hold(path_contains="$skiptoken")
    token = get_token(sim).json()["access_token"]
    got: list[int] = []
    with client(sim, token) as c:
        first = _page(c, sim, 50).json()
        worker = threading.Thread(target=lambda: got.append(c.get(first["@odata.nextLink"]).status_code))
        worker.start()
        _until(lambda: any("$skiptoken" in r.query for r in sim.requests) or sim.faults.pending() == [])
        worker.join(0.3)
        assert worker.is_alive() and got == [], "the second page is held"
        hold.release()
        worker.join(5)
    assert got == [200]
