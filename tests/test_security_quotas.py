"""Issue 9, quotas and rate limits: integrations per user, manual syncs per hour, discoveries per caller."""
from __future__ import annotations

import uuid

import pytest

from devtools.bcsim import BCSimulator
from shared.api.timer import run_scheduled
from shared.app import App
from shared.bc.auth import TokenProvider
from shared.settings import load_settings
from tests.security_support import rebuild
from tests.support import Api, FakeClock, integration_body


def _discovery(**overrides: str) -> dict[str, str]:
    body = {k: v for k, v in integration_body().items() if k not in ("name", "companyId")}
    body.update(overrides)
    return body


def test_quota_defaults(env: dict) -> None:
    settings = load_settings()
    assert (settings.max_integrations_per_user, settings.manual_syncs_per_hour) == (50, 60)


def test_creating_more_integrations_than_the_quota_answers_403(api: Api, app: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    rebuild(monkeypatch, clock, MAX_INTEGRATIONS_PER_USER="3")
    made = [api.create_integration(None, companyId=str(uuid.uuid4())) for _ in range(3)]
    assert api.delete(f"integrations/{made[0]['id']}").status == 200  # disconnected ones still count
    reply = api.post("integrations", integration_body(companyId=str(uuid.uuid4())))
    assert reply.status == 403 and reply.error["code"] == "quota_exceeded"
    assert "MAX_INTEGRATIONS_PER_USER" in reply.error["message"]
    assert len(api.get("integrations").data) == 3
    assert api.as_user("user-2").post("integrations", integration_body()).status == 201  # per user


def test_manual_syncs_beyond_the_hourly_limit_answer_429_with_retry_after(
    api: Api, app: App, sim: BCSimulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = rebuild(monkeypatch, clock, MANUAL_SYNCS_PER_HOUR="2")
    one = api.create_integration(sim, entities=["suppliers"])
    two = api.create_integration(sim, entities=["suppliers"], companyId=str(uuid.uuid4()))
    assert api.sync(one["id"]).status == 200
    clock.advance(600)
    assert api.sync(one["id"], {"mode": "delta"}).status == 200
    clock.advance(60)
    reply = api.sync(one["id"])
    assert reply.status == 429 and reply.error["code"] == "rate_limited"
    assert "at most 2 per hour" in reply.error["message"]
    retry_after = int(reply.headers["Retry-After"])
    assert 3600 - 660 - 2 <= retry_after <= 3600 - 660 + 1
    assert api.sync(two["id"]).status != 429  # per integration
    run_scheduled(app)  # the timer's syncs are not manual and do not count
    clock.advance(retry_after)
    assert api.sync(one["id"]).status == 200


def test_company_discovery_is_rate_limited_per_caller(api: Api, app: App, sim: BCSimulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    rebuild(monkeypatch, clock, DISCOVERIES_PER_HOUR="2")
    for _ in range(2):
        assert api.post("dynamics/companies", _discovery()).status == 200
    reply = api.post("dynamics/companies", _discovery(clientSecret="guess"))
    assert reply.status == 429 and reply.error["code"] == "rate_limited" and int(reply.headers["Retry-After"]) > 0
    assert api.as_user("user-2").post("dynamics/companies", _discovery()).status == 200


def test_failed_discoveries_do_not_evict_other_tenants_cached_tokens(
    api: Api, app: App, sim: BCSimulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TokenProvider, "_MAX_APPS", 2)
    created = api.create_integration(sim)
    assert api.post(f"integrations/{created['id']}/dynamics/test").status == 200
    sim.clear_requests()
    for attempt in range(6):
        reply = api.as_user(f"attacker-{attempt}").post("dynamics/companies", _discovery(clientSecret=f"guess-{attempt}"))
        assert reply.status == 502 and reply.error["code"] == "bc_auth_failed"
    token_calls = [r for r in sim.requests if "token" in r.path]
    assert len(token_calls) == 6
    sim.clear_requests()
    assert api.post(f"integrations/{created['id']}/dynamics/test").status == 200
    assert not [r for r in sim.requests if "token" in r.path], "the integration's cached token was evicted"
