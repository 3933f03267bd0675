"""What a reconcile proved, kept on the integration (design.md §11): per type `bcCount`,
`storedCount` (stored and not flagged), `deletedInBC` and `verifiedAt`; the monitoring page
shows it with the company's name."""
from __future__ import annotations

import logging
from typing import Any, Callable

from shared.app import App
from shared.errors import BCError
from shared.storage.integrations import Integration

log = logging.getLogger(__name__)


def company_display_name(company: dict[str, Any]) -> str | None:
    name = company.get("displayName") or company.get("name")
    return str(name)[:250] if name else None


def record_completeness(
    app: App,
    integration: Integration,
    config_version: int,
    data_type: str,
    data: dict[str, Any],
    read_company: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Store one type's completeness (only while the integration still points where the run
    read: a run for an old target says nothing about the new one); learn the company's display
    name on the way when it is not known yet (one BC request, best effort)."""
    name = None
    if read_company is not None and not integration.companyName:
        try:
            name = company_display_name(read_company())
        except BCError as error:
            log.info("company name of integration %s not read: %s", integration.id, error.code)

    def change(current: Integration) -> None:
        if current.configVersion != config_version:
            return
        current.completeness = {**(current.completeness or {}), data_type: data}
        if name and not current.companyName:
            current.companyName = name

    updated = app.integrations.update(integration.userId, integration.id, change)
    if updated is not None and updated.companyName:
        integration.companyName = updated.companyName


def remember_company_name(app: App, integration: Integration, company: dict[str, Any]) -> None:
    """A test connection read the company: keep its display name for the page."""
    name = company_display_name(company)
    if not name or name == integration.companyName:
        return

    def change(current: Integration) -> None:
        if current.companyId == integration.companyId:
            current.companyName = name

    app.integrations.update(integration.userId, integration.id, change)
