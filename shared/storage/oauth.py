"""Delegated sign-in at rest: pending authorization-code flows and each integration's msal token cache.

Both are stored only encrypted (SecretBox, bound to their record). A flow is keyed by a hash of its
state, never the state itself, and is taken (deleted, ETag-guarded) exactly once. A token cache has
its own row, so its ETag changes only when the tokens do: concurrent refreshes can compare-and-swap
it without racing every other write to the integration."""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.clock import parse_iso, to_iso
from shared.errors import Retriable
from shared.crypto import SecretBox
from shared.keys import encode_key
from shared.storage.tables import TableStore

FLOWS = "OAuthFlows"
TOKENS = "OAuthTokens"
_FLOW_PARTITION = "flow"


class CacheConflict(Retriable):
    """Another instance wrote the token cache since it was read."""


def state_key(state: str) -> str:
    """The RowKey of a flow: the state's SHA-256, so storage never holds the state itself."""
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def binding_hash(binding: str) -> str:
    """What is stored of a sign-in's binding cookie (the cookie itself only the browser holds)."""
    return hashlib.sha256(("oauth-binding:" + binding).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PendingFlow:
    key: str
    user_id: str
    integration_id: str
    expires_at: datetime
    flow: dict[str, Any]  # msal's auth-code flow: state, nonce, PKCE verifier, redirect_uri
    binding_hash: str = ""  # SHA-256 of the binding cookie set by authorize (RFC 9700 §4.7.1)
    etag: str = ""

    def bound_to(self, *, cookie: str | None, principal: str | None) -> bool:
        """True when the callback comes from the browser (cookie) or the person (identity header)
        that started this sign-in."""
        if cookie and self.binding_hash and hmac.compare_digest(binding_hash(cookie), self.binding_hash):
            return True
        return bool(principal) and hmac.compare_digest(str(principal).encode(), self.user_id.encode())


@dataclass(frozen=True)
class StoredCache:
    cache: str  # msal's serialized SerializableTokenCache (refresh token, account)
    etag: str
    refreshed_ns: int  # when the refresh that produced it happened (orders concurrent writers)


class FlowRepository:
    def __init__(self, store: TableStore, box: SecretBox) -> None:
        self._store, self._box = store, box

    @staticmethod
    def _context(key: str, user_id: str, integration_id: str) -> str:
        return f"oauth-flow:{key}:{user_id}:{integration_id}"

    def add(self, *, user_id: str, integration_id: str, flow: dict[str, Any], expires_at: datetime,
            binding: str = "") -> str:
        key = state_key(flow["state"])
        sealed = self._box.encrypt(json.dumps(flow), context=self._context(key, user_id, integration_id))
        self._store.table(FLOWS).create_entity(
            {"PartitionKey": _FLOW_PARTITION, "RowKey": key, "userId": user_id, "integrationId": integration_id,
             "expiresAt": to_iso(expires_at), "flowEnc": sealed, "bindingHash": binding_hash(binding) if binding else ""}
        )
        return key

    def find(self, state: str, now: datetime) -> PendingFlow | None:
        """The live flow for this state, left in place (a callback from the wrong browser must not
        burn its owner's state); None when unknown, already taken or expired."""
        if not state or len(state) > 512:
            return None
        key = state_key(state)
        try:
            entity = self._store.table(FLOWS).get_entity(_FLOW_PARTITION, key)
        except ResourceNotFoundError:
            return None
        expires_at = parse_iso(entity["expiresAt"])
        if expires_at <= now:
            try:  # expired: nobody can use it any more
                self._store.table(FLOWS).delete_entity(_FLOW_PARTITION, key)
            except ResourceNotFoundError:
                pass
            return None
        user_id, integration_id = entity["userId"], entity["integrationId"]
        flow = json.loads(self._box.decrypt(entity["flowEnc"], context=self._context(key, user_id, integration_id)))
        return PendingFlow(key, user_id, integration_id, expires_at, flow, str(entity.get("bindingHash") or ""),
                           entity.metadata["etag"])

    def spend(self, pending: PendingFlow) -> bool:
        """Remove the flow so it can never be used again; False when a replay racing this one took it."""
        try:
            self._store.table(FLOWS).delete_entity(_FLOW_PARTITION, pending.key, etag=pending.etag,
                                                   match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            return False
        return True

    def take(self, state: str, now: datetime) -> PendingFlow | None:
        """find + spend: the flow for this state, removed; None when unknown, taken or expired."""
        pending = self.find(state, now)
        return pending if pending is not None and self.spend(pending) else None

    def prune(self, now: datetime, *, limit: int = 200) -> int:
        """Delete flows that expired unused (a person who never came back from the sign-in)."""
        expired = self._store.query(FLOWS, "PartitionKey eq @pk and expiresAt lt @now", parameters={"pk": _FLOW_PARTITION, "now": to_iso(now)},
                                    select=["RowKey"], page_size=limit)
        keys = [row["RowKey"] for row in itertools.islice(expired, limit)]
        self._store.write(FLOWS, [("delete", {"PartitionKey": _FLOW_PARTITION, "RowKey": key}) for key in keys])  # a flow spent meanwhile fails alone
        return len(keys)


class TokenCacheRepository:
    """One row per integration: the encrypted msal cache, replaced only under its ETag."""

    def __init__(self, store: TableStore, box: SecretBox) -> None:
        self._store, self._box = store, box

    @staticmethod
    def _context(user_id: str, integration_id: str) -> str:
        return f"integration:{user_id}:{integration_id}:oauth-cache"

    def get(self, user_id: str, integration_id: str) -> StoredCache | None:
        try:
            entity = self._store.table(TOKENS).get_entity(encode_key(user_id), encode_key(integration_id))
        except ResourceNotFoundError:
            return None
        cache = self._box.decrypt(entity["cacheEnc"], context=self._context(user_id, integration_id))
        return StoredCache(cache, entity.metadata["etag"], int(entity.get("refreshedNs") or "0"))

    def put(self, user_id: str, integration_id: str, cache: str, *, refreshed_ns: int, etag: str | None) -> str:
        """Write the cache; with `etag`, only over exactly that version (else CacheConflict).
        Without one it replaces whatever is there (a fresh sign-in always wins)."""
        client = self._store.table(TOKENS)
        entity = {
            "PartitionKey": encode_key(user_id), "RowKey": encode_key(integration_id),
            "cacheEnc": self._box.encrypt(cache, context=self._context(user_id, integration_id)),
            "refreshedNs": str(refreshed_ns),  # text: an Int64 would need an explicit EDM type
        }
        try:
            if etag is None:
                meta = client.upsert_entity(entity, mode="replace")
            else:
                meta = client.update_entity(entity, mode="replace", etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError, ResourceExistsError) as error:
            raise CacheConflict(str(error)) from None
        return str(meta["etag"])

    def delete(self, user_id: str, integration_id: str) -> None:
        """Erase the tokens (disconnect, moved to another tenant); deleting nothing succeeds."""
        try:
            self._store.table(TOKENS).delete_entity(encode_key(user_id), encode_key(integration_id))
        except ResourceNotFoundError:
            pass
