"""Notifications metered per integration and type (design §12).

Whoever knows a subscription's clientState can POST notifications; each one may start a delta
run, which would bypass MANUAL_SYNCS_PER_HOUR. BC itself notifies a subscription at most about
every 30 s (it collects changes for ~30 s first), so NOTIFICATIONS_PER_HOUR (default 120) per
integration and type never meters BC's own traffic. Past it, a notification is still answered
202 (BC deletes a subscription that answers 4xx other than 408/429, and realtime would stop) but
starts nothing: it is coalesced into the polling schedule, which reads every change since the
watermark anyway; a delete in it is left to the reconciliation pass (RECONCILE_INTERVAL_HOURS)."""
from __future__ import annotations

import logging
from typing import Any

from shared.app import App
from shared.errors import RateLimited
from shared.storage.ratelimits import RateLimiter

log = logging.getLogger(__name__)

METERED = "metered"


def metered(app: App, integration_id: str, data_type: str, outcome: dict[str, Any]) -> bool:
    """True (and the outcome says so) when this integration and type used up its hour."""
    try:
        RateLimiter(app.store).take("notification", f"{integration_id}:{data_type}", limit=app.settings.notifications_per_hour,
                                    now=app.clock.now(), what="notifications")
    except RateLimited:
        log.warning("realtime: notification for %s/%s metered (NOTIFICATIONS_PER_HOUR)", integration_id, data_type)
        outcome[data_type] = METERED
        return True
    return False
