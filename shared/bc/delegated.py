"""Delegated tokens: a person signed in once (shared/oauth.py); every run after that gets its access
tokens silently from the stored msal cache, and a rotated refresh token is written back at once.

Concurrency: two instances may refresh from the same stored refresh token. The write-back is
guarded by the cache row's ETag; on a conflict the later refresh wins (the other instance's is
adopted when it is newer). When Entra refuses a refresh token that another instance has already
rotated (strict issuers), the provider waits briefly for that instance's write and retries with
the newer token before it calls the sign-in lost."""
from __future__ import annotations

import json
import logging
import threading
import time

import msal
import requests

from shared.bc import msal_logging
from shared.errors import BCAuthError, BCUnavailable, ConfigurationError
from shared.settings import Settings
from shared.storage.oauth import CacheConflict, StoredCache, TokenCacheRepository

log = logging.getLogger(__name__)
msal_logging.install()

#: The BC resource with the delegated permissions the app registration has (user_impersonation,
#: Financials.ReadWrite.All); msal adds openid, profile and offline_access itself.
DELEGATED_SCOPES = ["https://api.businesscentral.dynamics.com/.default"]
_APP_REJECTED = {"invalid_client", "unauthorized_client"}


def sign_in_remedy(integration_id: str) -> str:
    return f"sign in again with POST /api/integrations/{integration_id}/dynamics/authorize"


def oauth_app(settings: Settings, tenant_id: str, cache: msal.TokenCache | None = None) -> msal.ConfidentialClientApplication:
    """msal's client for the platform's multi-tenant app, against the integration's tenant.
    Raises ConfigurationError when the app registration is not configured, BCUnavailable /
    BCAuthError when the authority cannot be reached or refuses the tenant."""
    missing = [name for name, value in (("OAUTH_CLIENT_ID", settings.oauth_client_id),
                                        ("OAUTH_CLIENT_SECRET", settings.oauth_client_secret),
                                        ("OAUTH_REDIRECT_URI", settings.oauth_redirect_uri)) if not value]
    if missing:
        raise ConfigurationError(f"{', '.join(missing)} not set: delegated sign-in needs the platform's app registration")
    try:
        return msal.ConfidentialClientApplication(
            settings.oauth_client_id,
            client_credential=settings.oauth_client_secret,
            authority=f"{settings.authority_host}/{tenant_id}",
            instance_discovery=False,  # a custom authority host must not call the public cloud
            token_cache=cache,
            timeout=30,
        )
    except requests.RequestException as error:
        raise BCUnavailable(f"Microsoft Entra ID is unreachable: {type(error).__name__}", step="authentication") from None
    except ValueError as error:  # the tenant's discovery document was refused (unknown tenant)
        raise BCAuthError(f"Microsoft Entra ID refused the tenant: {str(error)[:200]}", step="authentication") from None


def persistable(cache: msal.SerializableTokenCache) -> str:
    """The cache as stored: access tokens dropped (they are never stored), refresh token and
    account kept."""
    data = json.loads(cache.serialize())
    data["AccessToken"] = {}
    return json.dumps(data)


def entra_message(result: dict[str, object]) -> str:
    """Entra's error and the first sentence of its description, without trace ids."""
    description = str(result.get("error_description") or "").split("\r\n")[0].split(" Trace ID")[0][:300]
    return f"{result.get('error') or 'unknown_error'}: {description}" if description else str(result.get("error") or "unknown_error")


class DelegatedTokenProvider:
    """Same interface as TokenProvider (`token`, `invalidate`, `forget`), so BCClient uses either."""

    #: How long a refused refresh waits for a concurrent instance's rotated token to appear.
    settle_seconds = 1.0

    def __init__(self, *, settings: Settings, caches: TokenCacheRepository, user_id: str, integration_id: str, tenant_id: str) -> None:
        self._settings = settings
        self._caches = caches
        self._user_id = user_id
        self._integration_id = integration_id
        self._tenant_id = tenant_id
        self._lock = threading.Lock()
        self._cache: msal.SerializableTokenCache | None = None
        self._app: msal.ConfidentialClientApplication | None = None
        self._stored: StoredCache | None = None
        self._force = False

    # -- interface ---------------------------------------------------------------------------
    def token(self) -> str:
        with self._lock:
            if self._app is None:
                self._load()
            deadline = time.monotonic() + self.settle_seconds
            while True:
                result = self._silent()
                if "access_token" in result:
                    self._save()
                    return str(result["access_token"])
                if result.get("error") == "invalid_grant" and self._adopt_newer(deadline):
                    continue  # another instance rotated the refresh token: use its newer one
                raise self._failure(result)

    def invalidate(self) -> None:
        """BC said 401: the next token comes from a refresh, not from memory."""
        self._force = True

    def forget(self) -> None:
        with self._lock:
            self._app = self._cache = self._stored = None

    def load(self) -> None:
        """Read the stored sign-in now (token() does it on first use); BCAuthError without one."""
        with self._lock:
            self._load()

    # -- internals ----------------------------------------------------------------------------
    def _remedy(self) -> str:
        return sign_in_remedy(self._integration_id)

    def _not_signed_in(self) -> BCAuthError:
        return BCAuthError(
            f"The integration has no Microsoft sign-in (never completed, or erased). To fix it, {self._remedy()}",
            remedy=self._remedy(), step="authentication",
        )

    def _load(self) -> None:
        stored = self._caches.get(self._user_id, self._integration_id)
        if stored is None:
            raise self._not_signed_in()
        cache = msal.SerializableTokenCache()
        cache.deserialize(stored.cache)
        self._app = oauth_app(self._settings, self._tenant_id, cache)
        self._cache, self._stored = cache, stored

    def _silent(self) -> dict[str, object]:
        assert self._app is not None
        accounts = self._app.get_accounts()
        if not accounts:
            return {"error": "no_account"}
        try:
            result = self._app.acquire_token_silent_with_error(DELEGATED_SCOPES, account=accounts[0], force_refresh=self._force)
        except requests.RequestException as error:
            raise BCUnavailable(f"Microsoft Entra ID is unreachable: {type(error).__name__}", step="authentication") from None
        self._force = False
        return result or {"error": "no_refresh_token"}

    def _adopt_newer(self, deadline: float) -> bool:
        """Wait (briefly) for a cache newer than the one just refused; adopt it if it comes."""
        assert self._cache is not None and self._stored is not None
        while True:
            stored = self._caches.get(self._user_id, self._integration_id)
            if stored is None:
                return False  # erased meanwhile (disconnected): nothing to retry with
            if stored.etag != self._stored.etag:
                self._cache.deserialize(stored.cache)
                self._stored = stored
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _save(self) -> None:
        """Write a changed cache (a rotated refresh token) back now, under the ETag it was read with."""
        assert self._cache is not None and self._stored is not None
        if not self._cache.has_state_changed:
            return
        data = persistable(self._cache)
        refreshed_ns = time.time_ns()
        for _ in range(10):
            try:
                etag = self._caches.put(self._user_id, self._integration_id, data, refreshed_ns=refreshed_ns, etag=self._stored.etag)
                self._stored = StoredCache(data, etag, refreshed_ns)
                return
            except CacheConflict:
                theirs = self._caches.get(self._user_id, self._integration_id)
                if theirs is None:
                    return  # erased meanwhile: never bring tokens back to a disconnected integration
                if theirs.refreshed_ns >= refreshed_ns:
                    self._cache.deserialize(theirs.cache)  # theirs is the newer refresh: keep it
                    self._stored = theirs
                    return
                self._stored = theirs  # ours is newer: write it over theirs
        log.warning("token cache of integration %s kept changing; the rotated token was not stored", self._integration_id)

    def _failure(self, result: dict[str, object]) -> Exception:
        error = str(result.get("error") or "")
        if error in ("no_account", "no_refresh_token"):
            return self._not_signed_in()
        correlation = result.get("correlation_id")
        if error == "invalid_grant":
            return BCAuthError(
                f"Microsoft Entra ID no longer accepts the sign-in (expired or revoked: {entra_message(result)}). "
                f"To fix it, {self._remedy()}",
                remedy=self._remedy(), correlation_id=str(correlation) if correlation else None, step="authentication",
            )
        if error in _APP_REJECTED:
            return BCAuthError(
                f"Microsoft Entra ID rejected the platform's app registration ({entra_message(result)}): "
                "check OAUTH_CLIENT_ID and OAUTH_CLIENT_SECRET",
                remedy="an operator must fix OAUTH_CLIENT_ID / OAUTH_CLIENT_SECRET",
                correlation_id=str(correlation) if correlation else None, step="authentication",
            )
        return BCUnavailable(f"Microsoft Entra ID failed ({entra_message(result)})", step="authentication")
