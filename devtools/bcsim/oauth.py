"""Entra ID's delegated side: users, a multi-tenant app, the authorize endpoint (auto-consent for the
demo user, or a declined consent), the authorization_code grant (PKCE S256, redirect_uri, single-use
codes), the refresh_token grant with rotation, signed id tokens, and controls to expire or revoke.

Refresh tokens rotate strictly by default: once used, the old one is dead (stricter than Entra, where
it lives on until it expires), so a client that forgets to store the new one fails its next run.
`rotation_grace_seconds` lets the old one be redeemed for a while, the way lenient issuers behave."""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

BC_RESOURCE = "https://api.businesscentral.dynamics.com"
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
CODE_LIFETIME = 600
REFRESH_LIFETIME = 90 * 86400
TOKEN_LIFETIME = 3599


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass
class User:
    oid: str
    tenant_id: str
    upn: str
    name: str
    declines: bool = False  # this person says "Cancel" on the consent page


@dataclass
class OAuthApp:
    client_id: str
    secret: str
    redirect_uris: set[str]


@dataclass
class Code:
    tenant_id: str
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    scopes: list[str]
    user: User
    expires_at: float


@dataclass
class Refresh:
    tenant_id: str
    client_id: str
    user: User
    scopes: list[str]
    expires_at: float
    family: str
    used_at: float | None = None
    revoked: bool = False


@dataclass
class Grants:
    """Delegated grants, kept next to the client-credentials Directory (which owns access tokens)."""

    clock: Callable[[], datetime]
    issue_access: Callable[[str, str, str], str]  # (tenant, client, user oid) -> access token
    users: dict[str, User] = field(default_factory=dict)  # by upn (lower case)
    apps: dict[str, OAuthApp] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    refresh_tokens: dict[str, Refresh] = field(default_factory=dict)
    decline_all: bool = False
    rotation_grace_seconds: float = 0.0
    refreshes: int = 0  # refresh_token grants answered with tokens
    verifiers: list[str] = field(default_factory=list)  # PKCE verifiers redeemed (tests look for leaks)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _signing_key: rsa.RSAPrivateKey | None = None  # made on first use: most simulators never sign
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def _now(self) -> float:
        return self.clock().timestamp()

    # ---- set-up ------------------------------------------------------------------------------
    def add_user(self, tenant_id: str, upn: str, name: str | None = None, *, declines: bool = False) -> User:
        user = User(str(uuid.uuid5(uuid.NAMESPACE_URL, f"user:{tenant_id}:{upn}")), tenant_id.lower(), upn, name or upn, declines)
        self.users[upn.lower()] = user
        return user

    def register(self, client_id: str, secret: str, redirect_uris: list[str]) -> None:
        self.apps[client_id.lower()] = OAuthApp(client_id.lower(), secret, set(redirect_uris))

    # ---- controls ----------------------------------------------------------------------------
    def expire_refresh_tokens(self) -> int:
        """Every refresh token is past its lifetime (AADSTS70008 on the next use)."""
        with self._lock:
            for rt in self.refresh_tokens.values():
                rt.expires_at = min(rt.expires_at, self._now() - 1)
            return len(self.refresh_tokens)

    def revoke_refresh_tokens(self, upn: str | None = None) -> int:
        """The user (or an admin) revoked the sessions or the consent (AADSTS50173)."""
        with self._lock:
            hit = [rt for rt in self.refresh_tokens.values() if upn is None or rt.user.upn.lower() == upn.lower()]
            for rt in hit:
                rt.revoked = True
            return len(hit)

    def live_refresh_tokens(self) -> list[str]:
        now = self._now()
        with self._lock:
            return [t for t, rt in self.refresh_tokens.items() if self._usable(rt, now)]

    def _usable(self, rt: Refresh, now: float) -> bool:
        if rt.revoked or rt.expires_at <= now:
            return False
        return rt.used_at is None or now - rt.used_at < self.rotation_grace_seconds

    # ---- authorize endpoint -----------------------------------------------------------------
    def authorize(self, tenant_id: str, query: dict[str, str], tenant_known: bool) -> tuple[int, str, str]:
        """(status, Location or "", error text for a page). Errors about the client or the
        redirect_uri are shown as a page (never redirected to an unverified address)."""
        client = self.apps.get(query.get("client_id", "").lower())
        if not tenant_known:
            return 400, "", f"AADSTS90002: Tenant '{tenant_id}' not found."
        if client is None:
            return 400, "", f"AADSTS700016: Application with identifier '{query.get('client_id', '')}' was not found."
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            return 400, "", f"AADSTS50011: The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application."
        state = query.get("state")

        def back(**params: str) -> tuple[int, str, str]:
            if state is not None:
                params["state"] = state
            return 302, f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(params)}", ""

        if query.get("response_type") != "code":
            return back(error="unsupported_response_type", error_description="AADSTS70005: response_type must be 'code'.")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return back(error="invalid_request", error_description="AADSTS9002325: Proof Key for Code Exchange (S256) is required.")
        scopes = query.get("scope", "").split()
        if not any(s.startswith(BC_RESOURCE + "/") for s in scopes):
            return back(error="invalid_scope", error_description=f"AADSTS70011: The scope must name {BC_RESOURCE}.")
        hint = (query.get("login_hint") or "").lower()
        user = self.users.get(hint) or next((u for u in self.users.values() if u.tenant_id == tenant_id.lower()), None)
        if user is None:
            return back(error="access_denied", error_description="AADSTS50020: No user of this tenant signed in.")
        if self.decline_all or user.declines:
            return back(error="access_denied", error_description="AADSTS65004: User declined to consent to access the app.")
        code = "0.A" + secrets.token_urlsafe(48)
        with self._lock:
            self.codes[code] = Code(tenant_id.lower(), client.client_id, redirect_uri, query["code_challenge"],
                                    query.get("nonce"), scopes, user, self._now() + CODE_LIFETIME)
        return back(code=code, session_state=str(uuid.uuid4()))

    # ---- token endpoint ---------------------------------------------------------------------
    def token(self, tenant_id: str, form: dict[str, str], basic: tuple[str, str] | None, issuer: str) -> tuple[int, dict[str, Any]]:
        from .auth import aad_error

        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        client = self.apps.get(client_id.lower())
        if client is None:
            return aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not found.")
        if not secret or not secrets.compare_digest(secret, client.secret):
            return aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        now = self._now()
        if form.get("grant_type") == "authorization_code":
            with self._lock:
                code = self.codes.pop(form.get("code", ""), None)  # single use: gone whatever follows
            if code is None:
                return aad_error(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed or is not valid.")
            if code.expires_at <= now:
                return aad_error(400, "invalid_grant", 70008, "The provided authorization code or refresh token has expired.")
            if code.client_id != client.client_id or code.tenant_id != tenant_id.lower():
                return aad_error(400, "invalid_grant", 70000, "The provided authorization code was issued to another client or tenant.")
            if form.get("redirect_uri") != code.redirect_uri:
                return aad_error(400, "invalid_grant", 50148, "The redirect_uri does not match the one of the authorization request.")
            verifier = form.get("code_verifier", "")
            self.verifiers.append(verifier)
            if not verifier or b64url(hashlib.sha256(verifier.encode("ascii")).digest()) != code.challenge:
                return aad_error(400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request.")
            return 200, self._tokens(code.tenant_id, client.client_id, code.user, code.scopes, code.nonce, issuer, str(uuid.uuid4()))
        if form.get("grant_type") == "refresh_token":
            with self._lock:
                rt = self.refresh_tokens.get(form.get("refresh_token", ""))
                if rt is None or rt.client_id != client.client_id or rt.tenant_id != tenant_id.lower():
                    return aad_error(400, "invalid_grant", 9002313, "Invalid request. The refresh token is malformed or not valid.")
                if rt.revoked:
                    return aad_error(400, "invalid_grant", 50173, "The provided grant has expired due to it being revoked, a fresh auth token is needed.")
                if rt.expires_at <= now:
                    return aad_error(400, "invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity.")
                if not self._usable(rt, now):
                    return aad_error(400, "invalid_grant", 70008, "The refresh token was already redeemed (rotated).")
                rt.used_at = now
                self.refreshes += 1
            scopes = [s for s in form.get("scope", "").split() if s not in OIDC_SCOPES] or rt.scopes
            return 200, self._tokens(rt.tenant_id, rt.client_id, rt.user, scopes, None, issuer, rt.family)
        return aad_error(400, "unsupported_grant_type", 70003, f"Unsupported grant type '{form.get('grant_type', '')}'.")

    def _tokens(self, tenant_id: str, client_id: str, user: User, scopes: list[str], nonce: str | None,
                issuer: str, family: str) -> dict[str, Any]:
        now = self._now()
        refresh = "1.A" + secrets.token_urlsafe(64)
        with self._lock:
            self.refresh_tokens[refresh] = Refresh(tenant_id, client_id, user, scopes, now + REFRESH_LIFETIME, family)
        resource_scopes = [s for s in scopes if s not in OIDC_SCOPES]
        claims = {"aud": client_id, "iss": f"{issuer}/{tenant_id}/v2.0", "iat": int(now), "nbf": int(now),
                  "exp": int(now) + TOKEN_LIFETIME, "name": user.name, "oid": user.oid, "preferred_username": user.upn,
                  "sub": b64url(hashlib.sha256(f"{user.oid}:{client_id}".encode()).digest()), "tid": tenant_id,
                  "ver": "2.0"}
        if nonce is not None:
            claims["nonce"] = nonce
        return {"token_type": "Bearer", "scope": " ".join(resource_scopes), "expires_in": TOKEN_LIFETIME,
                "ext_expires_in": TOKEN_LIFETIME, "access_token": self.issue_access(tenant_id, client_id, user.oid),
                "refresh_token": refresh, "id_token": self.sign(claims),
                "client_info": b64url(json.dumps({"uid": user.oid, "utid": tenant_id}).encode())}

    # ---- signing ----------------------------------------------------------------------------
    @property
    def _key(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._signing_key is None:
                self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return self._signing_key

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()

        def enc(value: int) -> str:
            return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self.kid, "alg": "RS256", "n": enc(numbers.n), "e": enc(numbers.e)}]}
