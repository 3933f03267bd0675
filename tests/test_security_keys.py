"""Issue 9, keys: key ids in ciphertexts, previous keys decrypt, re-encryption on use and by housekeeping."""
from __future__ import annotations

import base64
import os
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from devtools.bcsim import DEMO_CLIENT_SECRET, BCSimulator
from shared.app import App
from shared.errors import ConfigurationError
from shared.keyrotation import reencrypt_integrations
from shared.keys import encode_key
from shared.settings import SAMPLE_DEV_KEY, load_settings
from tests.security_support import Trap, rebuild
from tests.support import Api, FakeClock


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _stored(app: App, integration_id: str) -> dict:
    return dict(app.store.table("Integrations").get_entity(encode_key("user-1"), integration_id))


def _set(app: App, integration_id: str, **values: str) -> None:
    entity = _stored(app, integration_id)
    entity.update(values)
    app.store.table("Integrations").upsert_entity(entity, mode="replace")


def test_an_old_format_ciphertext_still_decrypts_and_is_rewritten_under_the_current_key(api: Api, app: App, sim: BCSimulator, env: dict) -> None:
    created = api.create_integration(sim)
    key = base64.b64decode(env["CREDENTIALS_KEY"])
    nonce = os.urandom(12)  # exactly what the service stored before key ids existed
    legacy = "v1:" + base64.b64encode(nonce + AESGCM(key).encrypt(nonce, DEMO_CLIENT_SECRET.encode(), f"integration:user-1:{created['id']}".encode())).decode()
    _set(app, created["id"], clientSecretEnc=legacy)
    assert api.post(f"integrations/{created['id']}/dynamics/test").status == 200
    assert _stored(app, created["id"])["clientSecretEnc"].startswith(f"v2:{app.box.current_id}:")


def test_rotating_the_key_keeps_every_secret_working(
    api: Api, app: App, sim: BCSimulator, env: dict, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old key moved to CREDENTIALS_KEYS_PREVIOUS: secrets open, are rewritten on use, and then
    the old key can be dropped altogether."""
    created = api.create_integration(sim)
    old_key, new_key = env["CREDENTIALS_KEY"], _key()
    before = _stored(app, created["id"])["clientSecretEnc"]

    alone = rebuild(monkeypatch, clock, CREDENTIALS_KEY=new_key)  # a rotation done wrong: clear error
    reply = api.post(f"integrations/{created['id']}/dynamics/test")
    assert reply.status == 500 and reply.error["code"] == "configuration_error"
    assert "CREDENTIALS_KEYS_PREVIOUS" in reply.error["message"]

    rotated = rebuild(monkeypatch, clock, CREDENTIALS_KEY=new_key, CREDENTIALS_KEYS_PREVIOUS=f"{_key()},{old_key}")
    assert rotated.box.current_id == alone.box.current_id
    assert api.post(f"integrations/{created['id']}/dynamics/test").status == 200
    after = _stored(app, created["id"])["clientSecretEnc"]
    assert after != before and after.startswith(f"v2:{rotated.box.current_id}:")

    rebuild(monkeypatch, clock, CREDENTIALS_KEYS_PREVIOUS=None)
    assert api.post(f"integrations/{created['id']}/dynamics/test").status == 200
    assert api.sync(created["id"]).status == 200


def test_a_webhook_secret_is_rewritten_on_delivery(
    api: Api, app: App, sim: BCSimulator, env: dict, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    trap = Trap(sim.server_tls_context)
    try:
        created = api.create_integration(sim, entities=["suppliers"], webhookUrl=f"{trap.url}/hook")
        rotated = rebuild(monkeypatch, clock, CREDENTIALS_KEY=_key(), CREDENTIALS_KEYS_PREVIOUS=env["CREDENTIALS_KEY"])
        assert api.sync(created["id"]).status == 200
        assert len(trap.hits) == 1
        stored = _stored(app, created["id"])
        assert stored["webhookSecretEnc"].startswith(f"v2:{rotated.box.current_id}:")
        assert stored["clientSecretEnc"].startswith(f"v2:{rotated.box.current_id}:")
    finally:
        trap.close()


def test_housekeeping_reencrypts_unused_secrets_and_one_bad_record_fails_alone(
    api: Api, app: App, sim: BCSimulator, env: dict, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [api.create_integration(None, companyId=str(uuid.uuid4()), webhookUrl="https://93.184.216.34/h")["id"] for _ in range(4)]
    _set(app, ids[0], clientSecretEnc="v2:deadbeef:AAAA")  # a key nobody has any more
    rotated = rebuild(monkeypatch, clock, CREDENTIALS_KEY=_key(), CREDENTIALS_KEYS_PREVIOUS=env["CREDENTIALS_KEY"])

    first = reencrypt_integrations(rotated, limit=2)
    assert first.reencrypted == 2  # the limit bounds one tick's work
    rest = reencrypt_integrations(rotated, limit=100)
    assert rest.reencrypted == 5 and rest.failed == [ids[0]]
    for integration_id in ids:
        entity = _stored(rotated, integration_id)
        assert entity["webhookSecretEnc"].startswith(f"v2:{rotated.box.current_id}:")
        if integration_id != ids[0]:
            assert entity["clientSecretEnc"].startswith(f"v2:{rotated.box.current_id}:")
    assert reencrypt_integrations(rotated, limit=100).reencrypted == 0
    rebuild(monkeypatch, clock, CREDENTIALS_KEYS_PREVIOUS=None)
    assert api.post(f"integrations/{ids[1]}/dynamics/test").status != 500


def test_the_sample_dev_key_is_refused_in_azure(api: Api, app: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    rebuild(monkeypatch, clock, CREDENTIALS_KEY=SAMPLE_DEV_KEY)  # locally it is fine
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc123")
    with pytest.raises(ConfigurationError, match="sample dev key"):
        load_settings()
    from shared.app import use_app

    use_app(None)  # the functions build their App from the settings, as in Azure
    reply = api.get("integrations")
    assert reply.status == 500 and reply.error["code"] == "configuration_error" and "sample" in reply.error["message"]
    import json

    sample = json.load(open("local.settings.sample.json"))["Values"]
    assert sample["CREDENTIALS_KEY"] == SAMPLE_DEV_KEY


def test_a_malformed_previous_key_is_a_configuration_error(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_KEYS_PREVIOUS", f"{_key()}, not-base64!")
    with pytest.raises(ConfigurationError, match="CREDENTIALS_KEYS_PREVIOUS entry 2"):
        load_settings()
