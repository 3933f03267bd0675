"""Delegated sign-in at rest: pending authorization-code flows and each integration's msal token cache.

Both are stored only encrypted (SecretBox, bound to their record). A flow is keyed by a hash of its
state, never the state itself, and is taken (deleted, ETag-guarded) exactly once. A token cache has
its own row, so its ETag changes only when the tokens do: concurrent refreshes can compare-and-swap
it without racing every other write to the integration."""
from __future__ import annotations

import hashlib
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


@dataclass(frozen=True)
class PendingFlow:
    key: str
    user_id: str
    integration_id: str
    expires_at: datetime
    flow: dict[str, Any]  # msal's auth-code flow: state, nonce, PKCE verifier, redirect_uri


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

    def add(self, *, user_id: str, integration_id: str, flow: dict[str, Any], expires_at: datetime) -> str:
        key = state_key(flow["state"])
        sealed = self._box.encrypt(json.dumps(flow), context=self._context(key, user_id, integration_id))
        self._store.table(FLOWS).create_entity(
            {"PartitionKey": _FLOW_PARTITION, "RowKey": key, "userId": user_id, "integrationId": integration_id,
             "expiresAt": to_iso(expires_at), "flowEnc": sealed}
        )
        return key

    def take(self, state: str, now: datetime) -> PendingFlow | None:
        """The flow for this state, removed so it can never be used again; None when unknown,
        already taken (by a replay racing this one too) or expired."""
        if not state or len(state) > 512:
            return None
        client = self._store.table(FLOWS)
        key = state_key(state)
        try:
            entity = client.get_entity(_FLOW_PARTITION, key)
            client.delete_entity(_FLOW_PARTITION, key, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            return None
        expires_at = parse_iso(entity["expiresAt"])
        if expires_at <= now:
            return None
        user_id, integration_id = entity["userId"], entity["integrationId"]
        flow = json.loads(self._box.decrypt(entity["flowEnc"], context=self._context(key, user_id, integration_id)))
        return PendingFlow(key, user_id, integration_id, expires_at, flow)

    def prune(self, now: datetime, *, limit: int = 200) -> int:
        """Delete flows that expired unused (a person who never came back from the sign-in)."""
        client = self._store.table(FLOWS)
        gone = 0
        expired = client.query_entities(
            "PartitionKey eq @pk and expiresAt lt @now", parameters={"pk": _FLOW_PARTITION, "now": to_iso(now)},
            select=["PartitionKey", "RowKey"], results_per_page=limit,
        )
        for entity in expired:
            try:
                client.delete_entity(_FLOW_PARTITION, entity["RowKey"])
            except ResourceNotFoundError:
                pass
            gone += 1
            if gone >= limit:
                break
        return gone


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
