"""Client-credentials tokens from Microsoft Entra ID through msal, cached in memory only."""
from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Protocol

import httpx
import msal
import msal.exceptions
import requests

from shared.errors import BCAuthError, BCUnavailable
from shared.outbound import MsalHttpClient

log = logging.getLogger(__name__)

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
ENTRA_TOTAL_SECONDS = 30.0
_AUTH_ERRORS = {"invalid_client", "unauthorized_client", "invalid_tenant", "invalid_request", "invalid_grant"}


class Tokens(Protocol):
    """What BCClient needs from a token source: app credentials (below) or a delegated sign-in
    (shared/bc/delegated.py)."""

    def token(self) -> str: ...

    def invalidate(self) -> None: ...

    def forget(self) -> None: ...


class TokenProvider:
    """One msal app per (authority, tenant, client, secret): msal caches the token and renews it
    before it expires; `invalidate` drops it so a 401 from BC gets exactly one fresh token."""

    _apps: "OrderedDict[str, msal.ConfidentialClientApplication]" = OrderedDict()
    _apps_lock = threading.Lock()
    _MAX_APPS = 256

    def __init__(self, *, authority_host: str, tenant_id: str, client_id: str, client_secret: str, shared_cache: bool = True) -> None:
        """`shared_cache=False` (company discovery with credentials anyone can send): a private
        msal app, so guesses never take, or evict, a slot of the process-wide cache."""
        self._shared = shared_cache
        self._private: msal.ConfidentialClientApplication | None = None
        self._authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._client_id = client_id
        self._secret = client_secret
        digest = hashlib.sha256(f"{self._authority}|{client_id}|{client_secret}".encode()).hexdigest()
        self._cache_key = digest

    def _new_app(self) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            self._client_id,
            client_credential=self._secret,
            authority=self._authority,
            instance_discovery=False,  # a custom authority host must not call the public cloud
            http_client=MsalHttpClient(ENTRA_TOTAL_SECONDS),  # each call to Entra ID bounded in total
        )

    def _app(self) -> msal.ConfidentialClientApplication:
        if not self._shared:
            if self._private is None:
                self._private = self._new_app()
            return self._private
        with self._apps_lock:
            app = self._apps.get(self._cache_key)
            if app is None:
                app = self._new_app()
                self._apps[self._cache_key] = app
                while len(self._apps) > self._MAX_APPS:
                    self._apps.popitem(last=False)
            else:
                self._apps.move_to_end(self._cache_key)
            return app

    def token(self) -> str:
        try:
            result = self._app().acquire_token_for_client(scopes=[BC_SCOPE])
        except (requests.RequestException, httpx.HTTPError) as error:
            self._forget_app()
            raise BCUnavailable(f"Microsoft Entra ID is unreachable: {type(error).__name__}", step="authentication") from None
        except msal.exceptions.MsalServiceError as error:
            # Entra ID answered 5xx (or another non-OAuth failure): an outage, not bad credentials.
            self._forget_app()
            raise BCUnavailable(f"Microsoft Entra ID failed: {str(error)[:200]}", step="authentication") from None
        except ValueError as error:
            # msal raises ValueError when the tenant's discovery document is refused (unknown tenant).
            self._forget_app()
            raise BCAuthError(f"Microsoft Entra ID refused the tenant: {str(error)[:200]}", step="authentication") from None
        if "access_token" in result:
            return str(result["access_token"])
        error = str(result.get("error") or "unknown_error")
        description = str(result.get("error_description") or "").split("\r\n")[0].split(" Trace ID")[0][:300]
        correlation = result.get("correlation_id")
        if error in _AUTH_ERRORS:
            self._forget_app()  # rejected credentials keep no slot in the cache
            raise BCAuthError(
                f"Microsoft Entra ID rejected the app credentials ({error}): {description}",
                correlation_id=correlation,
                step="authentication",
            )
        raise BCUnavailable(f"Microsoft Entra ID failed ({error}): {description}", correlation_id=correlation, step="authentication")

    def invalidate(self) -> None:
        """Forget the cached token (BC said 401): the next call asks Entra ID again."""
        if not self._shared:
            if self._private is not None:
                self._private.remove_tokens_for_client()
            return
        with self._apps_lock:
            app = self._apps.get(self._cache_key)
        if app is not None:
            app.remove_tokens_for_client()

    def forget(self) -> None:
        """Drop the app and its tokens from memory (the integration was disconnected)."""
        self.invalidate()
        self._forget_app()

    def _forget_app(self) -> None:
        if not self._shared:
            self._private = None
            return
        with self._apps_lock:
            self._apps.pop(self._cache_key, None)
