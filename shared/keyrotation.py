"""Key rotation: secrets found under an older key are re-encrypted under CREDENTIALS_KEY.

Two paths reach every secret: on use (the app decrypts one and rewrites it at once) and
housekeeping, for secrets never used: client and webhook secrets on integrations and the msal
token caches (refresh tokens) of delegated integrations. Each rewrite is an ETag-guarded update
that only replaces the exact ciphertext it decrypted, so a secret PATCHed (or a token refreshed)
in the meantime is never overwritten.

Housekeeping does not walk every integration each tick: a ledger row records which key the
stored secrets were last brought under. Only when CREDENTIALS_KEY changes (a new key id) does
one pass over the integrations and the token caches start, a bounded page per tick with its
cursor saved; when it completes, the ledger says so and later ticks do nothing until the next
rotation. Anything written in between is under the current key already."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import unquote
from typing import Any, Protocol

from azure.core.exceptions import ResourceNotFoundError

from shared.crypto import SecretBox
from shared.storage.integrations import Integration, IntegrationRepository
from shared.storage.oauth import TOKENS, CacheConflict


class HoldsSecrets(Protocol):
    """What housekeeping needs of the App (shared.app calls `rewrap`, so the App is named by
    its shape here: no import circle)."""

    integrations: IntegrationRepository
    box: SecretBox
    store: Any  # the TableStore (the rotation ledger and the token caches' table)
    token_caches: Any  # shared.storage.oauth's cache repository

log = logging.getLogger(__name__)

#: (attribute on Integration, suffix of its AES-GCM context)
SECRET_FIELDS = (("clientSecretEnc", ""), ("webhookSecretEnc", ":webhook"))


def context_for(integration: Integration, attribute: str) -> str:
    return integration.secret_context + dict(SECRET_FIELDS)[attribute]


def rewrap(repo: IntegrationRepository, box: SecretBox, integration: Integration, attribute: str, plaintext: str) -> bool:
    """Rewrite one secret under the current key if it is under an older one; True if rewritten.
    Never raises: a failed rewrite leaves the old (still readable) ciphertext in place."""
    sealed = getattr(integration, attribute)
    if not sealed or box.is_current(sealed):
        return False
    fresh = box.encrypt(plaintext, context=context_for(integration, attribute))
    done: list[bool] = []

    def change(current: Integration) -> None:
        done.clear()
        if getattr(current, attribute) == sealed:  # only the ciphertext we opened
            setattr(current, attribute, fresh)
            done.append(True)

    try:
        repo.update(integration.userId, integration.id, change)
    except Exception:  # noqa: BLE001 - the old key still opens it; housekeeping tries again
        log.warning("could not re-encrypt %s of integration %s", attribute, integration.id, exc_info=True)
        return False
    if done:
        setattr(integration, attribute, fresh)
    return bool(done)


@dataclass
class RotationSummary:
    examined: int = 0
    reencrypted: int = 0
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"examined": self.examined, "reencrypted": self.reencrypted, "failed": len(self.failed)}


def reencrypt_integrations(app: HoldsSecrets, limit: int = 500) -> RotationSummary:
    """Re-encrypt up to `limit` secrets still under an older key (a bound on one tick's work). One record failing (a secret
    no configured key opens, a storage error) is counted and skipped, never raised."""
    summary = RotationSummary()
    try:
        integrations = app.integrations.list_all(include_disconnected=True)
        for integration in integrations:
            if summary.reencrypted >= limit:
                break
            summary.examined += 1
            for attribute, _ in SECRET_FIELDS:
                sealed = getattr(integration, attribute)
                if not sealed or app.box.is_current(sealed) or summary.reencrypted >= limit:
                    continue
                try:
                    plaintext = app.box.decrypt(sealed, context=context_for(integration, attribute))
                    if rewrap(app.integrations, app.box, integration, attribute, plaintext):
                        summary.reencrypted += 1
                except Exception as error:  # noqa: BLE001 - one record never stops the rest
                    log.warning("key rotation: %s of integration %s: %s", attribute, integration.id, getattr(error, "message", type(error).__name__))
                    summary.failed.append(integration.id)
    except Exception:  # noqa: BLE001 - listing failed: next tick tries again
        log.exception("key rotation: could not list integrations")
    if summary.reencrypted or summary.failed:
        log.info("key rotation: %s", summary.to_dict())
    return summary


LEDGER_TABLE = "SyncHousekeeping"
_LEDGER = ("cursor", "keyrotation")
PAGE = 100


def rotation_step(app: HoldsSecrets, *, pages: int = 2) -> dict[str, Any]:
    """Housekeeping's key rotation: idle unless a pass for the current key is unfinished; then up
    to `pages` pages of integrations, then of token caches, with the cursor saved after each."""
    table = app.store.table(LEDGER_TABLE)
    try:
        ledger = dict(table.get_entity(*_LEDGER))
    except ResourceNotFoundError:
        ledger = {}
    current = app.box.current_id
    if ledger.get("keyId") != current:  # a new key (or the first run): start a pass
        ledger = {"keyId": current, "phase": "integrations", "token": ""}
    summary: dict[str, Any] = {"phase": ledger["phase"], "reencrypted": 0, "failed": 0}
    for _ in range(pages):
        if ledger["phase"] == "done":
            break
        token = ledger.get("token") or None
        if ledger["phase"] == "integrations":
            items, token = app.integrations.list_page_all(top=PAGE, continuation_token=token)
            for integration in items:
                done, failed = _integration_secrets(app, integration)
                summary["reencrypted"] += done
                summary["failed"] += failed
            if not token:
                ledger["phase"] = "tokens"
        else:
            rows, token = app.store.query_page(TOKENS, "PartitionKey ne @none", parameters={"none": ""},
                                               top=PAGE, continuation_token=token)
            for row in rows:
                done, failed = _token_cache(app, row)
                summary["reencrypted"] += done
                summary["failed"] += failed
            if not token:
                ledger["phase"] = "done"
        ledger["token"] = token or ""
        table.upsert_entity({"PartitionKey": _LEDGER[0], "RowKey": _LEDGER[1], **{k: ledger[k] for k in ("keyId", "phase", "token")}})
    if summary["reencrypted"] or summary["failed"]:
        log.info("key rotation: %s", summary)
    return summary


def _integration_secrets(app: HoldsSecrets, integration: Integration) -> tuple[int, int]:
    done = failed = 0
    for attribute, _ in SECRET_FIELDS:
        sealed = getattr(integration, attribute)
        if not sealed or app.box.is_current(sealed):
            continue
        try:
            plaintext = app.box.decrypt(sealed, context=context_for(integration, attribute))
            done += rewrap(app.integrations, app.box, integration, attribute, plaintext)
        except Exception as error:  # noqa: BLE001 - one record never stops the rest
            log.warning("key rotation: %s of integration %s: %s", attribute, integration.id, getattr(error, "message", type(error).__name__))
            failed += 1
    return done, failed


def _token_cache(app: HoldsSecrets, row: Any) -> tuple[int, int]:
    """A delegated integration's refresh-token cache, re-encrypted under its own ETag (a refresh
    racing this one wins: its cache is under the current key already)."""
    if app.box.is_current(str(row.get("cacheEnc") or "")):
        return 0, 0
    user_id, integration_id = unquote(row["PartitionKey"]), unquote(row["RowKey"])  # keys.encode_key reversed
    try:
        stored = app.token_caches.get(user_id, integration_id)
        if stored is None:
            return 0, 0
        app.token_caches.put(user_id, integration_id, stored.cache, refreshed_ns=stored.refreshed_ns, etag=stored.etag)
        return 1, 0
    except CacheConflict:
        return 0, 0  # refreshed meanwhile: written under the current key
    except Exception as error:  # noqa: BLE001 - one record never stops the rest
        log.warning("key rotation: token cache of integration %s: %s", integration_id, getattr(error, "message", type(error).__name__))
        return 0, 1
