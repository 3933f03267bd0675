"""The exception tree, grouped by what a caller does with each error (singer-sdk's grouping).

Every exception raised in `shared/` sits under one of five groups. The first four are marker
bases (what to do); ServiceError adds the HTTP answer ({code, message} with `status`).

    Fatal              the run stops: the rest of it cannot succeed either (`fatal_for_run`)
    ├── BCAuthError          502 bc_auth_failed: wrong, expired or revoked credentials
    ├── BCForbidden          502 bc_forbidden: the app lacks permission in BC
    ├── BCCompanyNotFound    502 bc_company_not_found: unknown environment or company
    ├── BCUnavailable        502 bc_unavailable: unreachable, 5xx, still throttled after retries
    │   └── BCTimeout            502 bc_timeout (bc.client): a page timed out at the smallest size (that type only)
    ├── LeaseLost            (storage.leases) another instance took the integration's lease
    ├── LeaseLostError       409 sync_in_progress (runs.slices): the same, as a type's error
    ├── RunCancelled         409 run_cancelled (runs.cancel): the integration points elsewhere
    └── RunFailure           500 (runs.slices): our side failed (storage, a bug)
    Retriable          try again later: the next slice, the host's queue retry, the caller
    ├── Paused               (sync.pages) the time budget ran out; the checkpoint continues it
    ├── RateLimited          429 rate_limited, with `retry_after` (the Retry-After header)
    ├── QueueUnavailable     503 (runs.queue) the run queue could not be reached
    └── CacheConflict        (storage.oauth) a token cache written meanwhile: read it again
    SkipRecord         count it, log it with its data, skip it; the rest goes on
    ├── RecordError          one BC record cannot be mapped or stored
    └── WriteFailure         (storage.tables) one entity Table Storage refused
    Configuration      a person must change a setting, a URL or a credential
    ├── ConfigurationError   500 configuration_error: a setting is missing or malformed
    └── UnsafeDestination    (destinations) a webhook URL the rules refuse
    ServiceError       answered to the HTTP caller as is; the request (or one type) fails
    ├── ValidationError      400 validation_error / invalid_json
    ├── Unauthenticated      401 unauthenticated
    ├── QuotaExceeded        403 quota_exceeded (MAX_INTEGRATIONS_PER_USER)
    ├── NotFound             404 not_found (also someone else's integration)
    ├── PayloadTooLarge      413 payload_too_large
    ├── CursorExpired        410 cursor_expired (api.records): the feed pruned what the cursor points at
    │   └── ChangesPruned        (storage.changes) the same, found while reading change rows
    ├── ConflictError        409 sync_in_progress / integration_disconnected
    │   └── RunActive            (runs.dispatch) a run is already active
    └── BCError              502 bc_error: Business Central answered an error for one request
        └── SubscriptionNotFound (bc.subscriptions) BC no longer has the webhook subscription

The BC errors under Fatal are BCErrors too (`except BCError` still catches them);
`shared/bc/errors.py` is the one place a BC response becomes one of them.
"""
from __future__ import annotations

from typing import Any


class Fatal(Exception):
    """Marker: the run stops; nothing after this error in the same run can succeed."""

    fatal_for_run = True


class Retriable(Exception):
    """Marker: nothing is lost; the same work succeeds when tried again later."""


class SkipRecord(Exception):
    """Marker: one record (or entity) is counted, logged and skipped; the rest goes on."""


class Configuration(Exception):
    """Marker: a person must change a setting, a URL or a credential before it can work."""


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


class ConfigurationError(Configuration, ServiceError):
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


class RateLimited(Retriable, ServiceError):
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


class BCAuthError(Fatal, BCError):
    code = "bc_auth_failed"
    #: What the person must do, when the message already says it (a delegated sign-in that
    #: expired: "sign in again"); None = the app-credentials advice applies.
    remedy: str | None = None

    def __init__(self, message: str, *, remedy: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.remedy = remedy


class BCForbidden(Fatal, BCError):
    code = "bc_forbidden"


class BCCompanyNotFound(Fatal, BCError):
    code = "bc_company_not_found"


class BCUnavailable(Fatal, BCError):
    code = "bc_unavailable"


class RecordError(SkipRecord):
    """One BC record cannot be mapped or stored: counted, logged with its data, skipped."""

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}


class CursorExpired(ServiceError):
    """A change-feed cursor points before what retention kept: read again without a cursor."""

    status = 410
    code = "cursor_expired"
