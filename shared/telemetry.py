"""Structured run telemetry: one log record per run and per data type, with custom dimensions.

Why log records: Application Insights indexes a record's attributes (the `extra` of a logging
call) as `customDimensions`, so KQL can filter and chart runs without parsing messages. When
`APPLICATIONINSIGHTS_CONNECTION_STRING` is set, `configure()` (called once at import) routes the
`shared` loggers through OpenTelemetry (azure-monitor-opentelemetry); otherwise nothing is
installed and the records go wherever logging already goes (the Functions host, pytest's caplog).

Only names in `_ALLOWED` ever become dimensions and values are scalars, so a secret cannot leak
into telemetry by someone passing a whole object along.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping

log = logging.getLogger("shared.telemetry")

RUN_EVENT = "sync.run"
TYPE_EVENT = "sync.type"
# LogRecord has its own `created`, so counts are named records*: {count key: dimension}.
_COUNTS = {"created": "recordsCreated", "updated": "recordsUpdated", "unchanged": "recordsUnchanged", "errors": "recordsFailed"}
_ALLOWED = frozenset(
    {"event", "integrationId", "runId", "trigger", "mode", "status", "dataType", "durationMs", "bcRequests",
     "dataTypes", "paused", "errorCode", "errorMessage", *_COUNTS.values()}
)
_MAX_TEXT = 500

_lock = threading.Lock()
_configured = False


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Send the `shared` loggers to Application Insights when its connection string is set.

    With `APPLICATIONINSIGHTS_AUTHENTICATION_STRING` = `ClientId=<id>;Authorization=AAD` (what the
    Bicep template sets) the exporter authenticates with that managed identity (Entra auth; the
    resource has local auth disabled). Returns whether telemetry is (now) configured."""
    global _configured
    env = os.environ if env is None else env
    connection = (env.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or "").strip()
    if not connection:
        return False
    with _lock:
        if _configured:
            return True
        from azure.monitor.opentelemetry import configure_azure_monitor

        # Azure SDK spans are off: a big sync makes thousands of table calls, each would be a span.
        # BC calls (httpx) stay as dependencies, with their duration and status.
        kwargs: dict[str, Any] = {
            "connection_string": connection,
            "logger_name": "shared",
            "instrumentation_options": {"azure_sdk": {"enabled": False}},
        }
        credential = _credential(env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING") or "")
        if credential is not None:
            kwargs["credential"] = credential
        configure_azure_monitor(**kwargs)
        _configured = True
        return True


def _credential(auth: str) -> Any:
    parts = dict(p.split("=", 1) for p in auth.split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("ClientId")
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def dimensions(**values: Any) -> dict[str, Any]:
    """The allowed names only, as scalars (text capped), None dropped."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in _ALLOWED or value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if not isinstance(value, (bool, int, float, str)):
            value = str(value)
        if isinstance(value, str):
            value = value[:_MAX_TEXT]
        out[name] = value
    return out


def _error_dims(error: Any) -> dict[str, Any]:
    if error is None:
        return {}
    if isinstance(error, Mapping):
        return {"errorCode": error.get("code"), "errorMessage": error.get("message")}
    return {"errorCode": getattr(error, "code", type(error).__name__), "errorMessage": getattr(error, "message", str(error))}


def type_finished(*, integration_id: str, run_id: str, data_type: str, status: str, counts: Mapping[str, Any],
                  trigger: str, mode: str, error: Any = None, paused: bool = False) -> None:
    """One record per data type of a run (`status` SUCCESS, PARTIAL or FAILED)."""
    dims = dimensions(event=TYPE_EVENT, integrationId=integration_id, runId=run_id, dataType=data_type,
                      status=status, trigger=trigger, mode=mode, paused=paused or None,
                      **{d: int(counts.get(k) or 0) for k, d in _COUNTS.items()}, **_error_dims(error))
    level = logging.WARNING if status == "FAILED" else logging.INFO
    _emit(level, "%s %s %s for integration %s: %s created, %s updated, %s errors", TYPE_EVENT, data_type, status,
          integration_id, dims["recordsCreated"], dims["recordsUpdated"], dims["recordsFailed"], dims=dims)


def run_finished(*, integration_id: str, run_id: str, status: str, trigger: str, mode: str, duration_ms: float,
                 bc_requests: int, counts: Mapping[str, Mapping[str, Any]], error: Any = None) -> None:
    """One record per run, totals over its data types (`status` succeeded, failed or paused)."""
    totals = {d: sum(int(c.get(k) or 0) for c in counts.values()) for k, d in _COUNTS.items()}
    dims = dimensions(event=RUN_EVENT, integrationId=integration_id, runId=run_id, status=status, trigger=trigger,
                      mode=mode, durationMs=round(duration_ms), bcRequests=bc_requests, dataTypes=list(counts),
                      **totals, **_error_dims(error))
    level = logging.WARNING if status == "failed" else logging.INFO
    _emit(level, "%s %s for integration %s in %d ms (%d BC requests)", RUN_EVENT, status, integration_id,
          dims["durationMs"], bc_requests, dims=dims)


def _emit(level: int, message: str, *args: Any, dims: dict[str, Any]) -> None:
    """Telemetry never fails a run: a broken handler costs the record, not the sync."""
    try:
        log.log(level, message, *args, extra=dims)
    except Exception:  # noqa: BLE001
        pass


configure()
