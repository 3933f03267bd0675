"""Key rotation: secrets found under an older key are re-encrypted under CREDENTIALS_KEY.

Two paths reach every secret: on use (the app decrypts one and rewrites it at once) and
housekeeping (`reencrypt_integrations`, called by the timer, for integrations never used). Each
rewrite is an ETag-guarded update that only replaces the exact ciphertext it decrypted, so a
secret PATCHed in the meantime is never overwritten."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.crypto import SecretBox
from shared.storage.integrations import Integration, IntegrationRepository


class HoldsSecrets(Protocol):
    """What housekeeping needs of the App (shared.app calls `rewrap`, so the App is named by
    its shape here: no import circle)."""

    integrations: IntegrationRepository
    box: SecretBox

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
