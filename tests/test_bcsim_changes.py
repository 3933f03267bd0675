"""Line-only edits and late commits behave as in BC (design.md §14 "Lines", "Late commits")."""
from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from devtools.bcsim import DEMO_COMPANY_ID, DEMO_ENVIRONMENT, DEMO_TENANT_ID, BCSimulator, fmt_dt, parse_dt
from tests.test_bcsim import bc_url, client


class Receiver:
    """A notification URL on loopback (HTTPS with the simulator's certificate) that answers the
    validation handshake and records every notification body."""

    def __init__(self, sim: BCSimulator) -> None:
        received = self.received = []  # type: list[dict[str, Any]]

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                token = parse_qs(urlsplit(self.path).query).get("validationToken")
                out = token[0].encode() if token else b""
                if not token:
                    received.append(json.loads(body))
                self.send_response(200 if token else 202)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.socket = sim.server_tls_context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/hook"

    def items(self) -> list[dict[str, Any]]:
        return [i for body in self.received for i in body["value"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[BCSimulator]:
    with BCSimulator(seed=5) as s:
        monkeypatch.setenv("SSL_CERT_FILE", s.ca_path)
        s.webhooks._http = httpx.Client(timeout=5, trust_env=False, verify=ssl.create_default_context(cafile=s.ca_path))
        s.webhooks.delay_seconds = 0.1
        yield s


@pytest.fixture()
def receiver(sim: BCSimulator) -> Iterator[Receiver]:
    r = Receiver(sim)
    yield r
    r.close()


def subscribe(sim: BCSimulator, url: str, entity_set: str, company: str = DEMO_COMPANY_ID) -> dict[str, Any]:
    resource = f"/api/v2.0/companies({company})/{entity_set}"
    with client(sim) as c:
        r = c.post(f"{sim.base_url}/v2.0/{DEMO_TENANT_ID}/{DEMO_ENVIRONMENT}/api/v2.0/subscriptions",
                   json={"notificationUrl": url, "resource": resource, "clientState": "state-123"})
    assert r.status_code == 201, r.text
    return r.json()


def test_line_only_edit_keeps_the_order_stamp_but_notifies_the_order(sim: BCSimulator, receiver: Receiver) -> None:
    store = sim.company()
    order = store.records("salesOrders")[0]
    line = store.lines(order["id"])[0]
    sub = subscribe(sim, receiver.url, "salesOrders")
    sim.advance(60)
    with client(sim) as c:
        r = c.post(f"{sim.base_url}/_sim/companies/{DEMO_COMPANY_ID}/lines/{line['id']}",
                   json={"description": "Handle with care", "shipmentDate": "2025-04-01"})
        assert r.status_code == 200 and r.json()["description"] == "Handle with care"
        after = c.get(bc_url(sim, f"/salesOrders({order['id']})")).json()
        lines = c.get(bc_url(sim, f"/salesOrders({order['id']})/salesOrderLines")).json()["value"]
        delta = c.get(bc_url(sim, "/salesOrders"), params={
            "$filter": f"lastModifiedDateTime gt {order['lastModifiedDateTime']}"}).json()["value"]
    assert after["lastModifiedDateTime"] == order["lastModifiedDateTime"]
    assert after["@odata.etag"] == order["@odata.etag"]
    assert {"description": "Handle with care", "shipmentDate": "2025-04-01"}.items() <= \
        next(ln for ln in lines if ln["id"] == line["id"]).items()
    assert order["id"] not in {o["id"] for o in delta}, "a delta on the header timestamp misses it"
    assert sim.webhooks.wait_idle(10)
    items = receiver.items()
    assert [(i["changeType"], i["resource"]) for i in items] == [
        ("updated", f"/api/v2.0/companies({DEMO_COMPANY_ID})/salesOrders({order['id']})")]
    assert items[0]["subscriptionId"] == sub["subscriptionId"]
    with pytest.raises(ValueError):
        store.edit_line_only(line["id"], quantity=3)


def test_late_commit_is_stamped_early_and_appears_only_at_commit(sim: BCSimulator, receiver: Receiver) -> None:
    store = sim.company()
    subscribe(sim, receiver.url, "vendors")
    started = sim.now
    sim.advance(900)  # the posting ran 15 minutes: longer than a 10-minute look-back
    with client(sim) as c:
        r = c.post(f"{sim.base_url}/_sim/companies/{DEMO_COMPANY_ID}/uncommitted/vendors",
                   json={"displayName": "Committed late", "modified_at": fmt_dt(started)})
        vendor = r.json()
        gl = store.add("generalLedgerEntries", {"description": "Late posting", "debitAmount": 12.5},
                       modified_at=started, committed=False)
        watermark = fmt_dt(sim.now - timedelta(minutes=10))
        params = {"$filter": f"lastModifiedDateTime gt {watermark}"}
        before = [v["id"] for v in c.get(bc_url(sim, "/vendors")).json()["value"]]
        assert vendor["id"] not in before and store.get("vendors", vendor["id"]) is None
        assert c.get(bc_url(sim, f"/generalLedgerEntries({gl['id']})")).status_code == 404
        assert c.post(f"{sim.base_url}/_sim/companies/{DEMO_COMPANY_ID}/commit").json() == {
            "committed": [vendor["id"], gl["id"]]}
        delta = [v["id"] for v in c.get(bc_url(sim, "/vendors"), params=params).json()["value"]]
        full = [v["id"] for v in c.get(bc_url(sim, "/vendors")).json()["value"]]
        entry = c.get(bc_url(sim, f"/generalLedgerEntries({gl['id']})")).json()
    assert vendor["id"] in full and vendor["id"] not in delta, "a look-back delta can never see it"
    assert parse_dt(vendor["lastModifiedDateTime"]) < parse_dt(watermark)
    assert entry["lastModifiedDateTime"] == gl["lastModifiedDateTime"] and entry["debitAmount"] == 12.5
    assert sim.webhooks.wait_idle(10)
    assert [(i["changeType"], i["resource"].rsplit("(", 1)[-1]) for i in receiver.items()] == [
        ("created", f"{vendor['id']})")]
