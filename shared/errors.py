"""The exception tree, grouped by what a caller does with each error.

    ServiceError                 -> answered to the HTTP caller as {code, message} with `status`
    ├── ConfigurationError       500 configuration_error: a setting is missing or malformed
    ├── ValidationError          400 validation_error / invalid_json
    ├── Unauthenticated          401 unauthenticated
    ├── QuotaExceeded            403 quota_exceeded (MAX_INTEGRATIONS_PER_USER)
    ├── NotFound                 404 not_found (also someone else's integration)
    ├── ConflictError            409 sync_in_progress / integration_disconnected
    ├── PayloadTooLarge          413 payload_too_large
    ├── RateLimited              429 rate_limited, with `retry_after` (the Retry-After header)
    └── BCError                  502 bc_error: Business Central or Entra ID failed
        ├── BCAuthError          bc_auth_failed: wrong, expired or revoked credentials
        ├── BCForbidden          bc_forbidden: the app lacks permission in BC
        ├── BCCompanyNotFound    bc_company_not_found: unknown environment or company
        └── BCUnavailable        bc_unavailable: unreachable, 5xx, still throttled after retries
    RecordError                  one record is skipped, counted and logged; the sync goes on
"""
from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error with a stable snake_case code and the HTTP status that carries it."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class ConfigurationError(ServiceError):
    status = 500
    code = "configuration_error"


class ValidationError(ServiceError):
    status = 400
    code = "validation_error"


class Unauthenticated(ServiceError):
    status = 401
    code = "unauthenticated"


class QuotaExceeded(ServiceError):
    status = 403
    code = "quota_exceeded"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class RateLimited(ServiceError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class ConflictError(ServiceError):
    status = 409
    code = "conflict"


class BCError(ServiceError):
    """Business Central (or Entra ID) failed; keeps BC's own code and correlation id."""

    status = 502
    code = "bc_error"
    #: True when the rest of a run cannot succeed either (credentials, company, outage).
    fatal_for_run = False

    def __init__(
        self,
        message: str,
        *,
        bc_code: str | None = None,
        correlation_id: str | None = None,
        http_status: int | None = None,
        step: str | None = None,
    ) -> None:
        details = []
        if bc_code:
            details.append(f"BC code {bc_code}")
        if correlation_id:
            details.append(f"correlation id {correlation_id}")
        full = f"{message} ({', '.join(details)})" if details else message
        super().__init__(full)
        self.bc_code = bc_code
        self.correlation_id = correlation_id
        self.http_status = http_status
        self.step = step

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if self.step:
            data["step"] = self.step
        return data


class BCAuthError(BCError):
    code = "bc_auth_failed"
    fatal_for_run = True
    #: What the person must do, when the message already says it (a delegated sign-in that
    #: expired: "sign in again"); None = the app-credentials advice applies.
    remedy: str | None = None

    def __init__(self, message: str, *, remedy: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.remedy = remedy


class BCForbidden(BCError):
    code = "bc_forbidden"
    fatal_for_run = True


class BCCompanyNotFound(BCError):
    code = "bc_company_not_found"
    fatal_for_run = True


class BCUnavailable(BCError):
    code = "bc_unavailable"
    fatal_for_run = True


class RecordError(Exception):
    """One BC record cannot be mapped or stored: counted, logged with its data, skipped."""

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}
