"""The simulator's delegated Entra ID, spoken to directly (no msal): what our client relies on."""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from devtools.bcsim import (DEMO_COMPANY_ID, DEMO_DECLINING_USER, DEMO_ENVIRONMENT, DEMO_OAUTH_CLIENT_ID,
                            DEMO_OAUTH_CLIENT_SECRET, DEMO_TENANT_ID, DEMO_USER, BCSimulator)

REDIRECT = "https://platform.example.test/api/oauth/callback"
SCOPE = "https://api.businesscentral.dynamics.com/.default offline_access openid profile"


@pytest.fixture(scope="module")
def sim() -> Iterator[BCSimulator]:
    with BCSimulator(seed=42) as s:
        s.register_oauth_app([REDIRECT])
        yield s


@pytest.fixture
def http(sim: BCSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{sim.base_url}/{DEMO_TENANT_ID}", verify=ssl.create_default_context(cafile=sim.ca_path),
                      timeout=10, follow_redirects=False) as client:
        yield client


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(40)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(http: httpx.Client, challenge: str, **overrides: str) -> httpx.Response:
    params = {"client_id": DEMO_OAUTH_CLIENT_ID, "response_type": "code", "redirect_uri": REDIRECT, "scope": SCOPE,
              "state": "s-1", "nonce": "n-1", "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(overrides)
    return http.get("/oauth2/v2.0/authorize", params={k: v for k, v in params.items() if v})


def query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def redeem(http: httpx.Client, code: str, verifier: str, redirect_uri: str = REDIRECT) -> httpx.Response:
    return http.post("/oauth2/v2.0/token", data={
        "grant_type": "authorization_code", "client_id": DEMO_OAUTH_CLIENT_ID, "client_secret": DEMO_OAUTH_CLIENT_SECRET,
        "code": code, "code_verifier": verifier, "redirect_uri": redirect_uri, "scope": SCOPE})


def refresh(http: httpx.Client, token: str) -> httpx.Response:
    return http.post("/oauth2/v2.0/token", data={
        "grant_type": "refresh_token", "client_id": DEMO_OAUTH_CLIENT_ID, "client_secret": DEMO_OAUTH_CLIENT_SECRET,
        "refresh_token": token, "scope": SCOPE})


def claims(jwt: str) -> dict[str, Any]:
    body = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_code_grant_with_pkce_signed_id_token_and_bc_access(sim: BCSimulator, http: httpx.Client) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    verifier, challenge = pkce()
    answer = query(authorize(http, challenge))
    assert answer["state"] == "s-1" and answer["code"]
    tokens = redeem(http, answer["code"], verifier).json()
    id_claims = claims(tokens["id_token"])
    assert id_claims["nonce"] == "n-1" and id_claims["aud"] == DEMO_OAUTH_CLIENT_ID and id_claims["tid"] == DEMO_TENANT_ID
    assert id_claims["iss"] == f"{sim.base_url}/{DEMO_TENANT_ID}/v2.0" and id_claims["preferred_username"] == DEMO_USER
    key = http.get("/discovery/v2.0/keys").json()["keys"][0]
    n, e = (int.from_bytes(base64.urlsafe_b64decode(key[k] + "=" * (-len(key[k]) % 4)), "big") for k in ("n", "e"))
    head, body, signature = tokens["id_token"].split(".")
    rsa.RSAPublicNumbers(e, n).public_key().verify(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
                                                  f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    companies = http.get(f"{sim.base_url}/v2.0/{DEMO_TENANT_ID}/{DEMO_ENVIRONMENT}/api/v2.0/companies({DEMO_COMPANY_ID})",
                         headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert companies.status_code == 200
    assert redeem(http, answer["code"], verifier).json()["error_codes"] == [54005]  # single use


def test_code_grant_checks_verifier_and_redirect_uri(http: httpx.Client) -> None:
    verifier, challenge = pkce()
    first = query(authorize(http, challenge))
    assert redeem(http, first["code"], "wrong-" + verifier).json()["error_codes"] == [501481]
    second = query(authorize(http, challenge))
    assert redeem(http, second["code"], verifier, "https://evil.example/cb").json()["error_codes"] == [50148]


def test_authorize_errors(http: httpx.Client) -> None:
    _, challenge = pkce()
    page = authorize(http, challenge, redirect_uri="https://evil.example/cb")
    assert page.status_code == 400 and "AADSTS50011" in page.text and "Location" not in page.headers
    assert authorize(http, challenge, client_id="00000000-0000-0000-0000-000000000000").status_code == 400
    assert query(authorize(http, "", code_challenge_method=""))["error"] == "invalid_request"
    declined = query(authorize(http, challenge, login_hint=DEMO_DECLINING_USER))
    assert declined["error"] == "access_denied" and "code" not in declined and declined["state"] == "s-1"


def test_refresh_rotates_and_controls_expire_or_revoke(sim: BCSimulator, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    first = redeem(http, query(authorize(http, challenge))["code"], verifier).json()["refresh_token"]
    second = refresh(http, first).json()["refresh_token"]
    assert second != first and refresh(http, first).json()["error"] == "invalid_grant"  # rotated out
    third = refresh(http, second).json()["refresh_token"]
    sim.expire_refresh_tokens()
    assert refresh(http, third).json()["error_codes"] == [70008]
    fourth = redeem(http, query(authorize(http, challenge))["code"], verifier).json()["refresh_token"]
    sim.revoke_refresh_tokens(DEMO_USER)
    assert refresh(http, fourth).json()["error_codes"] == [50173]
