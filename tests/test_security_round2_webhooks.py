"""Outbound webhooks signed the Standard Webhooks way too, and retries bound to their first attempt
(design §12): verified here with the `standardwebhooks` library, as a receiver would."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
from standardwebhooks import Webhook

from devtools.bcsim import BCSimulator
from shared import webhooks
from shared.app import App
from shared.keys import encode_key
from tests.support import Api, FakeClock, tick


class Receiver:
    """A loopback HTTPS webhook receiver (trusted like the simulator) keeping each body and its headers."""

    def __init__(self, tls_context: Any) -> None:
        self.got: list[tuple[bytes, dict[str, str]]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.got.append((body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers(sim: BCSimulator) -> Iterator[tuple[Receiver, Receiver]]:
    first, second = Receiver(sim.server_tls_context), Receiver(sim.server_tls_context)
    yield first, second
    first.close()
    second.close()


def test_a_new_secret_verifies_with_the_standardwebhooks_library_and_x_signature_256_stays(
    api: Api, app: App, sim: BCSimulator, receivers: tuple[Receiver, Receiver]
) -> None:
    receiver, _ = receivers
    created = api.create_integration(sim, entities=["suppliers"], webhookUrl=receiver.url)
    secret = created["webhookSecret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:], validate=True)) == 32
    assert api.sync(created["id"]).status == 200
    [(body, headers)] = receiver.got
    payload = Webhook(secret).verify(body, headers)  # raises on a bad signature or an old timestamp
    assert payload["event"] == "sync.completed" and payload["integrationId"] == created["id"]
    assert headers["webhook-id"] == headers["x-delivery-id"]
    assert headers["x-signature-256"] == webhooks.sign(secret, body)
    tampered = dict(headers, **{"webhook-signature": webhooks.standard_signature(secret, headers["webhook-id"], 1, body)})
    with pytest.raises(Exception):
        Webhook(secret).verify(body, tampered)


def test_a_retry_goes_to_the_first_url_under_the_first_secret(
    api: Api, app: App, sim: BCSimulator, clock: FakeClock, receivers: tuple[Receiver, Receiver]
) -> None:
    first, second = receivers
    first.status = 500
    created = api.create_integration(sim, entities=["suppliers"], webhookUrl=first.url)
    old_secret = created["webhookSecret"]
    api.sync(created["id"])
    assert len(first.got) == 1
    new_secret = api.patch(f"integrations/{created['id']}", {"webhookUrl": second.url}).data["webhookSecret"]
    assert new_secret != old_secret
    first.status = 200
    clock.advance(61)
    assert tick(app)["webhookRetries"] == 1
    assert second.got == []  # never sent to the new URL
    body, headers = first.got[-1]
    Webhook(old_secret).verify(body, headers)
    assert headers["x-signature-256"] == webhooks.sign(old_secret, body)
    with pytest.raises(Exception):
        Webhook(new_secret).verify(body, headers)
    stored = [dict(e) for e in app.store.table("WebhookDeliveries").list_entities()]
    assert stored and all(old_secret not in json.dumps(e) for e in stored)  # kept only encrypted


def test_a_secret_issued_before_verifies_by_its_text(api: Api, app: App, sim: BCSimulator,
                                                     receivers: tuple[Receiver, Receiver]) -> None:
    """Secrets from before (`whsec_` + URL-safe base64, no padding) keep X-Signature-256 as it was;
    for the Standard Webhooks headers the receiver passes the secret's bytes (docs/security.md)."""
    receiver, _ = receivers
    created = api.create_integration(sim, entities=["suppliers"], webhookUrl=receiver.url)
    legacy = "whsec_" + "Ab-_" * 10 + "xyz"
    entity = app.store.table("Integrations").get_entity(encode_key("user-1"), created["id"])
    entity["webhookSecretEnc"] = app.box.encrypt(legacy, context=f"integration:user-1:{created['id']}:webhook")
    app.store.table("Integrations").upsert_entity(entity, mode="replace")
    api.sync(created["id"])
    [(body, headers)] = receiver.got
    assert headers["x-signature-256"] == webhooks.sign(legacy, body)
    Webhook(legacy.encode("utf-8")).verify(body, headers)
