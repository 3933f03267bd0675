"""The Entra ID side: tenants, app registrations, client-credentials tokens, BC permissions."""
from __future__ import annotations

import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from .oauth import Grants

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
TOKEN_LIFETIME = 3599


@dataclass
class Tenant:
    id: str
    environments: set[str] = field(default_factory=lambda: {"production"})


@dataclass
class Token:
    tenant_id: str
    client_id: str
    expires_at: float
    user_oid: str | None = None  # set for delegated (signed-in user) tokens


class Directory:
    """Who may get a token, and which tokens are still good (expiry follows the simulated clock)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.tenants: dict[str, Tenant] = {}
        self.apps: dict[tuple[str, str], str] = {}
        self.tokens: dict[str, Token] = {}
        self.denied: set[str] = set()
        self.domains: dict[str, str] = {}  # verified domain -> tenant id (tenantId may be either)
        self.grants = Grants(clock, self._issue_delegated)

    def _issue_delegated(self, tenant_id: str, client_id: str, user_oid: str) -> str:
        """An access token for a signed-in user: BC accepts it like an app's."""
        token = secrets.token_urlsafe(48)
        with self._lock:
            self.tokens[token] = Token(tenant_id.lower(), client_id.lower(), self._clock().timestamp() + TOKEN_LIFETIME, user_oid)
        return token

    def resolve(self, tenant_id: str) -> str:
        """A tenant id from a tenant id or one of its domains (as Entra ID accepts both)."""
        key = tenant_id.lower()
        return self.domains.get(key, key)

    def tenant(self, tenant_id: str, create: bool = False) -> Tenant | None:
        key = self.resolve(tenant_id)
        if create and key not in self.tenants:
            self.tenants[key] = Tenant(key)
        return self.tenants.get(key)

    def register_app(self, tenant_id: str, client_id: str, client_secret: str) -> None:
        with self._lock:
            self.tenant(tenant_id, create=True)
            self.apps[(tenant_id.lower(), client_id.lower())] = client_secret

    def set_client_secret(self, tenant_id: str, client_id: str, new_secret: str) -> None:
        with self._lock:
            if (tenant_id.lower(), client_id.lower()) not in self.apps:
                raise KeyError(client_id)
            self.apps[(tenant_id.lower(), client_id.lower())] = new_secret

    def set_permissions(self, client_id: str, allowed: bool) -> None:
        with self._lock:
            (self.denied.discard if allowed else self.denied.add)(client_id.lower())

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def issue(self, tenant_id: str, form: dict[str, str], basic: tuple[str, str] | None,
              issuer: str = "") -> tuple[int, dict[str, Any]]:
        """Token endpoint: (HTTP status, JSON body) with Entra's error codes. Client credentials
        here; the delegated grants (authorization_code, refresh_token) in `self.grants`."""
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if self.tenant(tenant_id) is None:
            return aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant_id}' not found. Check to make sure "
                             "you have the correct tenant ID and are signing into the correct cloud.")
        if form.get("grant_type") in ("authorization_code", "refresh_token"):
            return self.grants.token(self.resolve(tenant_id), form, basic, issuer)
        if form.get("grant_type") != "client_credentials":
            return aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type "
                             f"'{form.get('grant_type', '')}'. The simulator only supports client_credentials.")
        key = (self.resolve(tenant_id), client_id.lower())
        if key not in self.apps:
            return aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was "
                             f"not found in the directory '{tenant_id}'. This can happen if the application has not "
                             "been installed by the administrator of the tenant or consented to by any user in the "
                             "tenant. You may have sent your authentication request to the wrong tenant.")
        if not secret or not secrets.compare_digest(secret, self.apps[key]):
            return aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret "
                             "being sent in the request is the client secret value, not the client secret ID, for a "
                             f"secret added to app '{client_id}'.")
        scopes = form.get("scope", "").split()
        if scopes != [BC_SCOPE]:
            return aad_error(400, "invalid_scope", 1002012, f"The provided value for scope "
                             f"{form.get('scope', '')} is not valid. Client credential flows must have a scope value "
                             f"with /.default suffixed to the resource identifier (application ID URI). "
                             f"This simulator only serves {BC_SCOPE}.")
        token = secrets.token_urlsafe(48)
        with self._lock:
            self.tokens[token] = Token(key[0], key[1], self._clock().timestamp() + TOKEN_LIFETIME)
        return 200, {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME, "ext_expires_in": TOKEN_LIFETIME,
                     "access_token": token}

    def check(self, authorization: str | None) -> Token | None:
        """The token behind an Authorization header if it is known and unexpired."""
        scheme, _, value = (authorization or "").partition(" ")
        with self._lock:
            tok = self.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        return tok if tok and tok.expires_at > self._clock().timestamp() else None


def aad_error(status: int, error: str, code: int, description: str) -> tuple[int, dict[str, Any]]:
    """Entra's error JSON (trace/correlation ids repeated in the description, as the real one does)."""
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    ts = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}",
        "error_codes": [code], "timestamp": ts, "trace_id": trace, "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}"}
