"""Telemetry: a no-op without Application Insights, structured run records, never a secret."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from devtools.bcsim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT_ID, BCSimulator
from shared import telemetry
from tests.support import ROOT, Api


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def test_without_a_connection_string_nothing_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    assert telemetry.configure() is False
    assert telemetry.configure({"APPLICATIONINSIGHTS_CONNECTION_STRING": "  "}) is False
    assert telemetry._configured is False
    assert not any(type(h).__module__.startswith("opentelemetry") for h in logging.getLogger("shared").handlers)


def test_a_run_logs_one_record_per_type_and_one_per_run(api: Api, sim: BCSimulator, caplog: pytest.LogCaptureFixture) -> None:
    """The records carry integrationId, runId, dataType and counts as attributes (custom dimensions)."""
    company = sim.company()
    company.update("vendors", company.records("vendors")[0]["id"], displayName=None)
    integration = api.create_integration(sim)
    with caplog.at_level(logging.INFO, logger="shared.telemetry"):
        reply = api.sync(integration["id"])
    assert reply.status == 200
    run_id = reply.headers["X-Sync-Run-Id"]
    by_type = {r.dataType: r for r in records(caplog, "sync.type")}
    assert set(by_type) == {"suppliers", "products"}
    suppliers = by_type["suppliers"]
    assert (suppliers.integrationId, suppliers.runId, suppliers.status) == (integration["id"], run_id, "PARTIAL")
    assert (suppliers.recordsCreated, suppliers.recordsFailed) == (reply.data["suppliers"]["created"], 1)
    assert (suppliers.trigger, suppliers.mode) == ("manual", "full")
    (run,) = records(caplog, "sync.run")
    assert (run.runId, run.status, run.dataTypes) == (run_id, "succeeded", "suppliers,products")
    assert run.recordsCreated == reply.data["suppliers"]["created"] + reply.data["products"]["created"]
    assert run.bcRequests > 0 and run.durationMs >= 0


def test_a_refused_credential_is_a_failed_run_with_its_code_and_no_secret(
    api: Api, sim: BCSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    integration = api.create_integration(sim)
    sim.set_client_secret(DEMO_TENANT_ID, DEMO_CLIENT_ID, "rotated-secret-value")
    with caplog.at_level(logging.INFO, logger="shared.telemetry"):
        assert api.sync(integration["id"]).status == 502
    (run,) = records(caplog, "sync.run")
    assert (run.status, run.errorCode) == ("failed", "bc_auth_failed")
    assert {r.status for r in records(caplog, "sync.type")} == {"FAILED"}
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert DEMO_CLIENT_SECRET not in text and "rotated-secret-value" not in text


def test_dimensions_keep_only_known_scalar_names() -> None:
    dims = telemetry.dimensions(integrationId="i", clientSecret="s3cret", token="t", counts={"a": 1},
                                dataTypes=["a", "b"], errorMessage="x" * 2000, runId=None)
    assert dims == {"integrationId": "i", "dataTypes": "a,b", "errorMessage": "x" * 500}


def test_with_a_connection_string_the_exporter_is_installed() -> None:
    """In a fresh process (configuration is process-wide), importing shared.app configures it."""
    code = textwrap.dedent(
        """
        import logging, os
        os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"] = (
            "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/")
        os.environ["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] = "ClientId=11111111-1111-1111-1111-111111111111;Authorization=AAD"
        import shared.app
        from shared import telemetry
        assert telemetry._configured
        names = [type(h).__name__ for h in logging.getLogger("shared").handlers]
        print("HANDLERS", names)
        os._exit(0)  # skip the exporter's flush to an address that does not answer
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "LoggingHandler" in done.stdout, done.stdout
