"""The process-wide application context: settings, storage, repositories and the clock.

Functions call `get_app()`; it is built once per process (clients are expensive) and rebuilt
when the settings change, which is what lets tests point each test at its own tables."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import shared.telemetry  # noqa: F401 - configures Application Insights once, when its connection string is set
from shared.bc.auth import TokenProvider, Tokens
from shared.bc.budget import RequestBudget, credential_key
from shared.bc.delegated import DelegatedTokenProvider
from shared.bc.client import BCClient, service_root
from shared.clock import Clock, SystemClock
from shared.crypto import SecretBox
from shared.destinations import check_base_url
from shared.errors import BCAuthError, BCError, ValidationError
from shared.keyrotation import rewrap
from shared.settings import Settings, load_settings
from shared.runs.queue import RunQueue
from shared.runs.repository import RunRepository
from shared.storage.credentials import storage_credential
from shared.storage.integrations import Integration, IntegrationRepository
from shared.storage.leases import LeaseRepository
from shared.storage.logs import SyncLogRepository
from shared.storage.oauth import FlowRepository, TokenCacheRepository
from shared.storage.state import SyncStateRepository
from shared.storage.stats import StatsRepository
from shared.storage.tables import TableStore
from shared.storage.webhooks import WebhookDeliveryRepository

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        s = self.settings
        if s.tables_account_url:  # managed identity (DefaultAzureCredential)
            self.store = TableStore.from_account_url(
                s.tables_account_url, prefix=s.table_prefix, write_concurrency=s.write_concurrency
            )
        else:
            self.store = TableStore.from_connection_string(
                s.tables_connection_string, prefix=s.table_prefix, write_concurrency=s.write_concurrency
            )
        self.box = SecretBox(s.credentials_key, s.credentials_keys_previous)
        self.integrations = IntegrationRepository(self.store)
        self.logs = SyncLogRepository(self.store)
        self.states = SyncStateRepository(self.store)
        self.leases = LeaseRepository(self.store, self.clock, seconds=s.lease_seconds)
        self.stats = StatsRepository(self.store)
        self.deliveries = WebhookDeliveryRepository(self.store)
        self.runs = RunRepository(self.store)
        self.queue = RunQueue(
            s.queue_connection_string,
            s.sync_queue_name,
            account_url=s.queues_account_url,
            credential=storage_credential() if s.queues_account_url else None,
            sleep=self.clock.sleep,
        )
        self.oauth_flows = FlowRepository(self.store, self.box)
        self.token_caches = TokenCacheRepository(self.store, self.box)

    def client_secret(self, integration: Integration) -> str:
        if not integration.clientSecretEnc:
            raise BCAuthError("The integration has no client secret: set one with PATCH", step="authentication")
        secret = self.box.decrypt(integration.clientSecretEnc, context=integration.secret_context)
        rewrap(self.integrations, self.box, integration, "clientSecretEnc", secret)  # under an old key: rewrite now
        return secret

    def bc_client(self, integration: Integration) -> BCClient:
        """A client for the integration's company (the secret is decrypted only here, in memory);
        a delegated integration's tokens come from its stored sign-in instead."""
        if integration.authMode == "delegated":
            tokens = DelegatedTokenProvider(
                settings=self.settings, caches=self.token_caches, user_id=integration.userId,
                integration_id=integration.id, tenant_id=integration.tenantId,
            )
            # BC counts its limits per signed-in user: one budget per person who signed in.
            budget_key = credential_key(integration.tenantId, f"delegated:{integration.authorizedUser or integration.id}")
            return self._client(integration.tenantId, integration.environment, integration.baseUrl, integration.companyId, tokens, budget_key)
        return self.bc_client_for(
            tenant_id=integration.tenantId,
            environment=integration.environment,
            client_id=integration.clientId,
            client_secret=self.client_secret(integration),
            base_url=integration.baseUrl,
            company_id=integration.companyId,
        )

    def bc_client_for(
        self,
        *,
        tenant_id: str,
        environment: str,
        client_id: str,
        client_secret: str,
        base_url: str | None,
        company_id: str = "",
        cache_tokens: bool = True,
    ) -> BCClient:
        """A client for credentials given directly (company discovery before an integration exists)."""
        tokens = TokenProvider(
            authority_host=self.settings.authority_host, tenant_id=tenant_id, client_id=client_id, client_secret=client_secret,
            shared_cache=cache_tokens,
        )
        return self._client(tenant_id, environment, base_url, company_id, tokens, credential_key(tenant_id, client_id))

    def _client(
        self, tenant_id: str, environment: str, base_url: str | None, company_id: str, tokens: Tokens, budget_key: str
    ) -> BCClient:
        s = self.settings
        try:  # checked when saved; again here in case BC_ALLOWED_HOSTS was narrowed since
            check_base_url(base_url, s.bc_allowed_hosts)
        except ValidationError as error:
            raise BCError(error.message, step="configuration") from None
        return BCClient(
            root=service_root(api_base_url=s.bc_api_base_url, tenant_id=tenant_id, environment=environment, base_url=base_url),
            company_id=company_id,
            tokens=tokens,
            clock=self.clock,
            page_size=s.bc_page_size,
            max_retries=s.bc_max_retries,
            max_retry_seconds=s.bc_max_retry_seconds,
            timeout_seconds=s.bc_timeout_seconds,
            min_page_size=s.bc_min_page_size,
            max_response_bytes=s.bc_max_response_mb * 1024 * 1024,
            budget=RequestBudget(
                self.store,
                self.clock,
                budget_key,
                max_in_flight=s.bc_max_in_flight,
                per_5_minutes=s.bc_requests_per_5_minutes,
                slot_seconds=s.bc_timeout_seconds + 10,
            ),
        )


_lock = threading.Lock()
_current: App | None = None
_override: App | None = None


def get_app() -> App:
    """The App for the current settings (ConfigurationError when they are missing or bad)."""
    global _current
    if _override is not None:
        return _override
    settings = load_settings()
    with _lock:
        if _current is None or _current.settings != settings:
            _current = App(settings)
        return _current


def use_app(app: App | None) -> None:
    """Install an App with collaborators of the caller's choosing (a test's clock), or None."""
    global _override
    _override = app
