"""Secrets at rest: AES-256-GCM under CREDENTIALS_KEY, bound to the record they belong to."""
from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import ConfigurationError

_VERSION = "v1"


def parse_key(encoded: str | None) -> bytes:
    """Decode CREDENTIALS_KEY (32 random bytes, base64) or say exactly what is wrong."""
    if not encoded:
        raise ConfigurationError("CREDENTIALS_KEY is not set: it must be 32 random bytes in base64")
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("CREDENTIALS_KEY is not valid base64: it must be 32 random bytes in base64") from None
    if len(key) != 32:
        raise ConfigurationError(f"CREDENTIALS_KEY decodes to {len(key)} bytes: it must be exactly 32")
    return key


class SecretBox:
    """Encrypts short secrets; the associated data ties a ciphertext to one integration."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return f"{_VERSION}:" + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, token: str, *, context: str) -> str:
        version, _, body = token.partition(":")
        if version != _VERSION:
            raise ConfigurationError("a stored secret has an unknown format")
        raw = base64.b64decode(body)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode("utf-8")).decode("utf-8")
        except InvalidTag:
            raise ConfigurationError(
                "a stored secret cannot be decrypted: CREDENTIALS_KEY changed since it was saved"
            ) from None
