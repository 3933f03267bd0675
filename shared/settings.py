"""Settings from environment variables (App Settings in Azure, local.settings.json locally)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

from shared.crypto import parse_key
from shared.errors import ConfigurationError

DEFAULT_BC_API_BASE_URL = "https://api.businesscentral.dynamics.com"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
_QUEUE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,54}[a-z0-9])")  # leaves room for "-poison"


@dataclass(frozen=True)
class Settings:
    tables_connection_string: str
    queue_connection_string: str
    table_prefix: str
    bc_api_base_url: str
    authority_host: str
    credentials_key: bytes
    bc_page_size: int = 1000
    bc_max_retries: int = 5
    bc_max_retry_seconds: float = 120.0
    bc_timeout_seconds: float = 60.0
    lookback_minutes: int = 10
    lease_seconds: int = 300
    http_sync_budget_seconds: int = 200
    sync_queue_name: str = "sync-runs"
    slice_seconds: int = 240
    parallel_types: int = 3
    max_dequeue_count: int = 5
    bc_max_in_flight: int = 5
    bc_requests_per_5_minutes: int = 6000
    log_retention_days: int = 30
    write_concurrency: int = 8
    public_base_url: str | None = None  # realtime (design.md §10): the function app's public root


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; a bad one raises ConfigurationError naming it."""
    env = os.environ if env is None else env
    connection = env.get("TABLES_CONNECTION_STRING") or env.get("AzureWebJobsStorage")
    if not connection:
        raise ConfigurationError("Neither TABLES_CONNECTION_STRING nor AzureWebJobsStorage is set")
    queue_connection = env.get("AzureWebJobsStorage") or connection
    queue_name = (env.get("SYNC_QUEUE_NAME") or "sync-runs").strip()
    if not _QUEUE_NAME.fullmatch(queue_name) or "--" in queue_name:
        raise ConfigurationError("SYNC_QUEUE_NAME must be 3-56 lowercase letters, digits and single hyphens")
    prefix = env.get("TABLE_PREFIX", "")
    if prefix and not (prefix.isalnum() and prefix[0].isalpha() and len(prefix) <= 20):
        raise ConfigurationError("TABLE_PREFIX must be letters and digits, start with a letter, at most 20 long")
    return Settings(
        tables_connection_string=connection,
        queue_connection_string=queue_connection,
        sync_queue_name=queue_name,
        table_prefix=prefix,
        bc_api_base_url=(env.get("BC_API_BASE_URL") or DEFAULT_BC_API_BASE_URL).rstrip("/"),
        authority_host=(env.get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY_HOST).rstrip("/"),
        credentials_key=parse_key(env.get("CREDENTIALS_KEY")),
        bc_page_size=_int(env, "BC_PAGE_SIZE", 1000, 1, 20000),
        bc_max_retries=_int(env, "BC_MAX_RETRIES", 5, 0, 20),
        bc_max_retry_seconds=float(_int(env, "BC_MAX_RETRY_SECONDS", 120, 0, 3600)),
        bc_timeout_seconds=float(_int(env, "BC_TIMEOUT_SECONDS", 60, 1, 600)),
        lookback_minutes=_int(env, "SYNC_LOOKBACK_MINUTES", 10, 0, 1440),
        lease_seconds=_int(env, "SYNC_LEASE_SECONDS", 300, 30, 86400),
        slice_seconds=_int(env, "SYNC_SLICE_SECONDS", 240, 5, 3600),
        parallel_types=_int(env, "SYNC_PARALLEL_TYPES", 3, 1, 5),
        max_dequeue_count=_int(env, "SYNC_MAX_DEQUEUE_COUNT", 5, 1, 100),
        bc_max_in_flight=_int(env, "BC_MAX_IN_FLIGHT", 5, 1, 50),
        bc_requests_per_5_minutes=_int(env, "BC_REQUESTS_PER_5_MINUTES", 6000, 10, 1000000),
        http_sync_budget_seconds=_int(env, "SYNC_HTTP_BUDGET_SECONDS", 200, 5, 3600),
        log_retention_days=_int(env, "SYNC_LOG_RETENTION_DAYS", 30, 1, 3650),
        write_concurrency=_int(env, "STORAGE_WRITE_CONCURRENCY", 8, 1, 64),
        public_base_url=_public_base_url(env.get("PUBLIC_BASE_URL")),
    )


def _public_base_url(raw: str | None) -> str | None:
    """PUBLIC_BASE_URL: https (BC only calls https); plain http only to loopback, for tests."""
    from urllib.parse import urlsplit

    value = (raw or "").strip().rstrip("/")
    if not value:
        return None
    parts = urlsplit(value)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)) or parts.query or parts.fragment:
        raise ConfigurationError("PUBLIC_BASE_URL must be the https root of the function app, e.g. https://<app>.azurewebsites.net")
    return value
