"""Key rotation covers the refresh-token caches of delegated integrations, and housekeeping does
not walk every integration each tick (design §12)."""
from __future__ import annotations

import base64
import os

import pytest

from devtools.bcsim import DEMO_COMPANY_ID, BCSimulator
from shared.app import App
from shared.keys import encode_key
from shared.runs.housekeeping import housekeeping
from tests.oauth_support import delegated_app  # noqa: F401 - the `app` fixture
from tests.oauth_support import create_delegated, sign_in
from tests.security_support import rebuild
from tests.support import Api, FakeClock



def test_a_dormant_delegated_integration_survives_removing_the_old_key(
    api: Api, app: App, sim: BCSimulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    created = create_delegated(api, companyId=DEMO_COMPANY_ID)
    assert sign_in(api, sim, created["id"]).status == 200
    old_key = env["CREDENTIALS_KEY"]
    new_key = base64.b64encode(os.urandom(32)).decode()
    rotated = rebuild(monkeypatch, clock, CREDENTIALS_KEY=new_key, CREDENTIALS_KEYS_PREVIOUS=old_key)
    row = rotated.store.table("OAuthTokens").get_entity(encode_key("user-1"), encode_key(created["id"]))
    assert not rotated.box.is_current(row["cacheEnc"])  # the dormant cache is under the old key

    first = housekeeping(rotated)["keysReencrypted"]
    assert first["reencrypted"] >= 1 and first["phase"] == "integrations"
    row = rotated.store.table("OAuthTokens").get_entity(encode_key("user-1"), encode_key(created["id"]))
    assert rotated.box.is_current(row["cacheEnc"])
    # The pass is done: later ticks do not walk the integrations again (until the next key).
    assert housekeeping(rotated)["keysReencrypted"] == {"phase": "done", "reencrypted": 0, "failed": 0}

    rebuild(monkeypatch, clock, CREDENTIALS_KEYS_PREVIOUS=None)  # the old key removed
    assert api.post(f"integrations/{created['id']}/dynamics/test").status == 200
