"""Opaque, signed tokens: every list's continuationToken and the change feed's cursor (design.md
§3, §12). A token is compressed JSON plus an HMAC under a key derived from CREDENTIALS_KEY
(previous keys still verify), bound to its list, integration (or caller) and data type, so a
corrupted, forged, transplanted or absurdly nested token answers 400 `validation_error` instead
of reading from a made-up position; nothing in it is parsed before its MAC checks out."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import zlib
from typing import Any

from shared.errors import ValidationError
from shared.settings import Settings

MAX_TOKEN_CHARS = 8192
MAX_PAYLOAD_BYTES = 65536
_PURPOSE = b"bc-sync read-api token v1"


def _mac_keys(settings: Settings) -> list[bytes]:
    keys = [settings.credentials_key, *getattr(settings, "credentials_keys_previous", ())]
    return [hmac.new(key, _PURPOSE, hashlib.sha256).digest() for key in keys]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(settings: Settings, kind: str, integration_id: str, data_type: str, payload: Any) -> str:
    body = zlib.compress(json.dumps({"k": kind, "i": integration_id, "t": data_type, "p": payload}, separators=(",", ":")).encode("utf-8"))
    mac = hmac.new(_mac_keys(settings)[0], body, hashlib.sha256).digest()[:16]
    return f"{_b64(body)}.{_b64(mac)}"


def open_token(settings: Settings, token: str, *, field: str, kind: str, integration_id: str, data_type: str) -> Any:
    """The payload of a token this service issued for this kind, integration and data type."""
    unreadable = ValidationError(f"{field}: not a {field} this service issued (corrupted or forged)")
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise unreadable
    body_text, mac_text = token.split(".")
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (binascii.Error, ValueError):
        raise unreadable from None
    if not any(hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest()[:16], mac) for key in _mac_keys(settings)):
        raise unreadable
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(body, MAX_PAYLOAD_BYTES)
        value = json.loads(raw)
    except (zlib.error, ValueError, UnicodeDecodeError):
        raise unreadable from None
    if not isinstance(value, dict):
        raise unreadable
    if value.get("k") != kind:
        raise ValidationError(f"{field}: issued for another list; start again without a {field}")
    if value.get("i") != integration_id or value.get("t") != data_type:
        raise ValidationError(f"{field}: issued for another integration or data type; start again without a {field}")
    return value.get("p")


def seal_page(settings: Settings, kind: str, scope: str, inner: str | None) -> str | None:
    """A list's next-page token: the storage continuation `inner` (None on the last page)
    sealed for list `kind` and `scope` (the integration, or the caller for their own list)."""
    return None if inner is None else seal(settings, kind, scope, "", inner)


def open_page(settings: Settings, token: str | None, *, kind: str, scope: str) -> str | None:
    """The storage continuation inside a token `seal_page` issued for this list and scope."""
    if not token:
        return None
    inner = open_token(settings, token, field="continuationToken", kind=kind, integration_id=scope, data_type="")
    if not isinstance(inner, str):
        raise ValidationError("continuationToken: not a continuationToken this service issued (corrupted or forged)")
    return inner
