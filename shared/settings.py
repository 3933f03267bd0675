"""Settings from environment variables (App Settings in Azure, local.settings.json locally)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping

from shared.crypto import parse_key
from shared.destinations import default_allowed_hosts, parse_allowed_hosts
from shared.errors import ConfigurationError

DEFAULT_BC_API_BASE_URL = "https://api.businesscentral.dynamics.com"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
#: The key in local.settings.sample.json: published, so never acceptable in Azure.
SAMPLE_DEV_KEY = "ZGV2LW9ubHkta2V5LW5vdC1mb3ItcHJvZHVjdGlvbiE="
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
    reconcile_interval_hours: int = 24  # 0: the timer never reconciles
    # Delegated sign-in (design §9): the platform's own multi-tenant app registration.
    oauth_client_id: str = ""
    oauth_client_secret: str = field(default="", repr=False)
    oauth_redirect_uri: str = ""
    oauth_return_url: str = ""
    # -- security (design.md section 12) --
    tables_account_url: str | None = None
    queues_account_url: str | None = None
    bc_allowed_hosts: tuple[str, ...] = ()
    allow_private_webhooks: bool = False
    credentials_keys_previous: tuple[bytes, ...] = ()
    max_integrations_per_user: int = 50
    manual_syncs_per_hour: int = 60
    discoveries_per_hour: int = 30
    require_client_principal: bool = False
    change_feed_retention_days: int = 7  # change rows older than this are pruned (design.md §13)
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


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def _account_url(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not raw.startswith("https://") or "?" in raw:
        raise ConfigurationError(f"{name} must be an https endpoint URL without a query (no SAS token), got {raw!r}")
    return raw.rstrip("/")


def _keys(env: Mapping[str, str]) -> tuple[bytes, tuple[bytes, ...]]:
    current_raw = env.get("CREDENTIALS_KEY")
    if env.get("WEBSITE_INSTANCE_ID") and (current_raw or "").strip() == SAMPLE_DEV_KEY:
        raise ConfigurationError(
            "CREDENTIALS_KEY is the published sample dev key: in Azure set a random key (a Key Vault reference)"
        )
    current = parse_key(current_raw)
    previous = []
    for position, part in enumerate((env.get("CREDENTIALS_KEYS_PREVIOUS") or "").split(",")):
        if part.strip():
            try:
                previous.append(parse_key(part))
            except ConfigurationError as error:
                raise ConfigurationError(f"CREDENTIALS_KEYS_PREVIOUS entry {position + 1}: {error.message}") from None
    return current, tuple(k for k in previous if k != current)


def _queues_account_url(env: Mapping[str, str], queue_connection: str) -> str | None:
    """QUEUES_ACCOUNT_URL, else the host's own identity-based storage (AzureWebJobsStorage__queueServiceUri
    or __accountName, as the Functions host reads them); a connection string needs neither."""
    explicit = _account_url(env, "QUEUES_ACCOUNT_URL")
    if explicit:
        return explicit
    if queue_connection:
        return None
    uri = (env.get("AzureWebJobsStorage__queueServiceUri") or "").strip()
    account = (env.get("AzureWebJobsStorage__accountName") or "").strip()
    if uri:
        return uri.rstrip("/")
    if account:
        return f"https://{account}.queue.core.windows.net"
    raise ConfigurationError("The runs queue needs AzureWebJobsStorage (a connection string), AzureWebJobsStorage__accountName or QUEUES_ACCOUNT_URL")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; a bad one raises ConfigurationError naming it."""
    env = os.environ if env is None else env
    tables_account_url = _account_url(env, "TABLES_ACCOUNT_URL")
    connection = env.get("TABLES_CONNECTION_STRING") or env.get("AzureWebJobsStorage") or ""
    if not connection and not tables_account_url:
        raise ConfigurationError("None of TABLES_ACCOUNT_URL, TABLES_CONNECTION_STRING, AzureWebJobsStorage is set")
    queue_connection = env.get("AzureWebJobsStorage") or connection
    if tables_account_url:
        connection = ""  # the managed identity wins over any connection string
    queue_name = (env.get("SYNC_QUEUE_NAME") or "sync-runs").strip()
    if not _QUEUE_NAME.fullmatch(queue_name) or "--" in queue_name:
        raise ConfigurationError("SYNC_QUEUE_NAME must be 3-56 lowercase letters, digits and single hyphens")
    bc_api_base_url = (env.get("BC_API_BASE_URL") or DEFAULT_BC_API_BASE_URL).rstrip("/")
    raw_hosts = env.get("BC_ALLOWED_HOSTS") or ""
    allowed = parse_allowed_hosts(raw_hosts) if raw_hosts.strip() else default_allowed_hosts(bc_api_base_url)
    key, previous_keys = _keys(env)
    prefix = env.get("TABLE_PREFIX", "")
    if prefix and not (prefix.isalnum() and prefix[0].isalpha() and len(prefix) <= 20):
        raise ConfigurationError("TABLE_PREFIX must be letters and digits, start with a letter, at most 20 long")
    return Settings(
        tables_connection_string=connection,
        queue_connection_string=queue_connection,
        sync_queue_name=queue_name,
        table_prefix=prefix,
        bc_api_base_url=bc_api_base_url,
        authority_host=(env.get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY_HOST).rstrip("/"),
        credentials_key=key,
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
        reconcile_interval_hours=_int(env, "RECONCILE_INTERVAL_HOURS", 24, 0, 8760),
        oauth_client_id=(env.get("OAUTH_CLIENT_ID") or "").strip(),
        oauth_client_secret=env.get("OAUTH_CLIENT_SECRET") or "",
        oauth_redirect_uri=(env.get("OAUTH_REDIRECT_URI") or "").strip(),
        oauth_return_url=(env.get("OAUTH_RETURN_URL") or "").strip(),
        tables_account_url=tables_account_url,
        queues_account_url=_queues_account_url(env, queue_connection),
        bc_allowed_hosts=allowed,
        allow_private_webhooks=_bool(env, "ALLOW_PRIVATE_WEBHOOKS"),
        credentials_keys_previous=previous_keys,
        max_integrations_per_user=_int(env, "MAX_INTEGRATIONS_PER_USER", 50, 1, 100000),
        manual_syncs_per_hour=_int(env, "MANUAL_SYNCS_PER_HOUR", 60, 1, 100000),
        discoveries_per_hour=_int(env, "DISCOVERIES_PER_HOUR", 30, 1, 100000),
        require_client_principal=_bool(env, "REQUIRE_CLIENT_PRINCIPAL"),
        change_feed_retention_days=_int(env, "CHANGE_FEED_RETENTION_DAYS", 7, 1, 3650),
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
