"""Issue 9, webhooks: public https hosts only (when saved and before each delivery); every
delivery failure is contained to that delivery and never stops the others or housekeeping."""
from __future__ import annotations

import json
import socket
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from devtools.bcsim import BCSimulator
from shared import webhooks
from shared.api.timer import run_scheduled
from shared.app import App
from shared.destinations import check_webhook_url, is_public
from shared.errors import ValidationError
from tests.security_support import Trap, rebuild
from tests.support import Api, FakeClock

NON_PUBLIC = [
    "https://127.0.0.1/x", "https://127.1.2.3/x", "https://localhost/x", "https://[::1]/x", "https://10.0.0.1/x",
    "https://172.16.5.4/x", "https://192.168.1.1/x", "https://100.64.0.1/x", "https://100.127.255.254/x",
    "https://169.254.169.254/latest/meta-data", "https://[fe80::1]/x", "https://[fd00::1]/x", "https://[fc00::1]/x",
    "https://224.0.0.1/x", "https://[ff02::1]/x", "https://0.0.0.0/x", "https://[::]/x",
    "https://[::ffff:127.0.0.1]/x", "https://[::ffff:10.0.0.1]/x", "https://[::ffff:169.254.169.254]/x",
    "https://[64:ff9b::a00:1]/x", "https://[2002:a00:1::]/x", "http://127.0.0.1:9/x", "http://93.184.216.34/x",
]


@pytest.fixture
def trap(sim: BCSimulator) -> Iterator[Trap]:
    server = Trap(sim.server_tls_context)
    yield server
    server.close()


@pytest.fixture
def strict(app: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> App:
    """Settings as in Azure: private webhook addresses not allowed."""
    return rebuild(monkeypatch, clock, ALLOW_PRIVATE_WEBHOOKS="false")


@pytest.mark.parametrize("url", NON_PUBLIC)
def test_a_non_public_webhook_url_is_refused_when_saved(api: Api, strict: App, url: str) -> None:
    reply = api.post("integrations", {**_body(), "webhookUrl": url})
    assert reply.status == 400 and reply.error["code"] == "validation_error", reply.body
    assert "webhookUrl" in reply.error["message"]
    assert api.get("integrations").data == []


def test_a_public_webhook_url_is_accepted_and_patches_are_checked_too(api: Api, strict: App) -> None:
    created = api.post("integrations", {**_body(), "webhookUrl": "https://93.184.216.34/hook"})
    assert created.status == 201, created.body
    path = f"integrations/{created.data['id']}"
    reply = api.patch(path, {"webhookUrl": "https://169.254.169.254/latest"})
    assert reply.status == 400 and "webhookUrl" in reply.error["message"]
    assert api.get(path).data["webhookUrl"] == "https://93.184.216.34/hook"
    assert api.patch(path, {"webhookUrl": "https://[2606:4700:4700::1111]/hook"}).status == 200


def test_every_resolved_address_must_be_public() -> None:
    """DNS answers are checked whole: one private address among public ones is enough to refuse."""
    check_webhook_url("https://hooks.example/x", allow_private=False, resolver=lambda h, p: ["93.184.216.34", "2606:4700::1"])
    for answer in (["93.184.216.34", "10.0.0.5"], ["::ffff:192.168.0.1"], []):
        with pytest.raises(ValidationError, match="webhookUrl"):
            check_webhook_url("https://hooks.example/x", allow_private=False, resolver=lambda h, p, a=answer: a)

    def fails(host: str, port: int) -> list[str]:
        raise socket.gaierror("no such host")

    with pytest.raises(ValidationError, match="does not resolve"):
        check_webhook_url("https://nowhere.invalid/x", allow_private=False, resolver=fails)
    assert not any(is_public(a) for a in ("100.64.1.1", "::ffff:127.0.0.1", "fe80::1%eth0", "not-an-ip"))
    assert all(is_public(a) for a in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"))


def test_the_address_rule_is_checked_again_before_each_delivery(
    api: Api, app: App, sim: BCSimulator, trap: Trap, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved while allowed (or while DNS said public): the delivery is still refused, nothing is sent."""
    created = api.create_integration(sim, entities=["suppliers"], webhookUrl=f"{trap.url}/hook")
    assert api.sync(created["id"]).status == 200
    assert len(trap.hits) == 1  # control: allowed, it arrives
    rebuild(monkeypatch, clock, ALLOW_PRIVATE_WEBHOOKS="false")
    assert api.sync(created["id"]).status == 200  # the sync itself is unaffected
    assert len(trap.hits) == 1
    deliveries = api.get(f"integrations/{created['id']}/webhook-deliveries").data
    refused = [d for d in deliveries if d["status"] == "pending"]
    assert len(refused) == 1 and refused[0]["attempts"][0]["error"].startswith("refused: ")
    assert "non-public" in refused[0]["attempts"][0]["error"]


def test_redirects_are_not_followed(api: Api, app: App, sim: BCSimulator, trap: Trap) -> None:
    created = api.create_integration(sim, entities=["suppliers"], webhookUrl=f"{trap.url}/hook")
    trap.status = 307
    api.sync(created["id"])
    assert len(trap.hits) == 1
    [delivery] = api.get(f"integrations/{created['id']}/webhook-deliveries").data
    assert delivery["status"] == "pending" and delivery["attempts"][0]["statusCode"] == 307


def test_one_bad_delivery_never_stops_the_others_or_housekeeping(
    api: Api, app: App, sim: BCSimulator, trap: Trap, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unparseable URL, an undecryptable secret and a host that never answers, next to a good one."""
    monkeypatch.setattr(webhooks, "TIMEOUT_SECONDS", 0.5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts TCP, never says a word: a timeout
    made = {name: api.create_integration(None, companyId=str(uuid.uuid4()), webhookUrl=f"{trap.url}/{name}")
            for name in ("badurl", "badsecret", "silent", "good")}
    urls = {"badurl": "https://bad host/x", "badsecret": f"{trap.url}/badsecret",
            "silent": f"https://127.0.0.1:{silent.getsockname()[1]}/x", "good": f"{trap.url}/good"}
    for name, integration in made.items():  # each delivery keeps its first attempt's URL and secret
        delivery_id = f"whd-{name}"
        sealed = app.box.encrypt("whsec_c2VjcmV0", context=f"webhook-delivery:{integration['id']}:{delivery_id}")
        app.deliveries.create(integration_id=integration["id"], user_id="user-1", url=urls[name], event="sync.completed",
                              body=json.dumps({"event": "sync.completed", "integrationId": integration["id"]}), at=clock.now(),
                              secret_enc="v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" if name == "badsecret" else sealed,
                              delivery_id=delivery_id)
    for name, integration in made.items():  # not due for a sync: only the deliveries run

        def change(stored: Any, name: str = name) -> None:
            stored.nextSyncAt = "2999-01-01T00:00:00Z"
            if name == "badsecret":  # a ciphertext no key opens (what a lost key leaves behind)
                stored.webhookSecretEnc = "v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

        assert app.integrations.update("user-1", integration["id"], change) is not None
    old = app.logs.add(integration_id=made["good"]["id"], run_id="run-old", entity_type="SUPPLIER", status="SUCCESS",
                       records_affected=1, metadata={}, created_at=clock.now() - timedelta(days=90))
    try:
        summary = run_scheduled(app)
    finally:
        silent.close()
    assert summary["webhookRetries"] == 4
    assert summary["logsRemoved"] >= 1
    assert old["id"] not in {e["id"] for e in api.get(f"integrations/{made['good']['id']}/sync-logs").data}
    assert [path for _, path, _ in trap.hits] == ["/good"]
    errors = {}
    for name, integration in made.items():
        [delivery] = api.get(f"integrations/{integration['id']}/webhook-deliveries").data
        errors[name] = delivery["attempts"][0].get("error") or delivery["status"]
    assert errors["good"] == "delivered"
    assert errors["badsecret"] == "webhook secret cannot be decrypted"
    assert errors["badurl"] and errors["silent"] in ("ConnectTimeout", "ReadTimeout")


def test_the_answer_is_read_bounded(api: Api, app: App, sim: BCSimulator) -> None:
    """A receiver answering a huge body costs at most MAX_RESPONSE_BYTES of reading: the delivery
    is recorded as delivered and the receiver gets to send only a small part of its 64 MiB answer
    before the connection is closed on it."""
    huge = 64 << 20
    sent: list[int] = []
    finished = threading.Event()

    class Endless(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(huge))
            self.end_headers()
            total, chunk = 0, b" " * 65536
            try:
                while total < huge:
                    self.wfile.write(chunk)
                    total += len(chunk)
            except OSError:  # the client hung up
                pass
            sent.append(total)
            finished.set()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    server.socket = sim.server_tls_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        created = api.create_integration(sim, entities=["suppliers"], webhookUrl=f"https://127.0.0.1:{server.server_address[1]}/hook")
        reply = api.sync(created["id"])
        assert reply.status == 200 and reply.data["suppliers"]["created"] == 45, reply.body
        [delivery] = api.get(f"integrations/{created['id']}/webhook-deliveries").data
        assert delivery["status"] == "delivered" and delivery["attempts"][0].get("statusCode") == 200, delivery
        assert finished.wait(60), "the receiver was never cut off"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert sent[0] < huge // 4, sent  # read up to MAX_RESPONSE_BYTES, then closed (socket buffers hold a little more)


def _body() -> dict[str, object]:
    from tests.support import integration_body

    return integration_body()
