"""Secrets at rest: AES-256-GCM under CREDENTIALS_KEY, bound to the record they belong to.

A ciphertext names the key that made it (`v2:<key id>:<nonce+sealed>`, the key id being the first
8 hex digits of the key's SHA-256), so keys can rotate: the current key encrypts, the current and
the previous ones (CREDENTIALS_KEYS_PREVIOUS) decrypt. Ciphertexts made before key ids existed
(`v1:<nonce+sealed>`) are tried under every key."""
from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import ConfigurationError

_LEGACY = "v1"
_VERSION = "v2"


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


def key_id(key: bytes) -> str:
    """A short public name for a key (not a secret: a hash prefix, useless to an attacker)."""
    return hashlib.sha256(key).hexdigest()[:8]


class SecretBox:
    """Encrypts short secrets; the associated data ties a ciphertext to one integration."""

    def __init__(self, key: bytes, previous: tuple[bytes, ...] = ()) -> None:
        self.current_id = key_id(key)
        self._aead = AESGCM(key)
        self._keys: dict[str, AESGCM] = {self.current_id: self._aead}
        for old in previous:
            self._keys.setdefault(key_id(old), AESGCM(old))

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return f"{_VERSION}:{self.current_id}:" + base64.b64encode(nonce + sealed).decode("ascii")

    def is_current(self, token: str) -> bool:
        """True when the ciphertext is under the current key (nothing to re-encrypt)."""
        return token.startswith(f"{_VERSION}:{self.current_id}:")

    def decrypt(self, token: str, *, context: str) -> str:
        version, _, rest = token.partition(":")
        if version == _VERSION:
            kid, _, body = rest.partition(":")
            candidates = [self._keys[kid]] if kid in self._keys else []
            if not candidates:
                raise ConfigurationError(
                    f"a stored secret was encrypted under key {kid}, which is neither CREDENTIALS_KEY nor in CREDENTIALS_KEYS_PREVIOUS"
                )
        elif version == _LEGACY:
            body, candidates = rest, list(self._keys.values())
        else:
            raise ConfigurationError("a stored secret has an unknown format")
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError("a stored secret is corrupt") from None
        for aead in candidates:
            try:
                return aead.decrypt(raw[:12], raw[12:], context.encode("utf-8")).decode("utf-8")
            except (InvalidTag, ValueError):
                continue
        raise ConfigurationError("a stored secret cannot be decrypted: CREDENTIALS_KEY changed since it was saved")
