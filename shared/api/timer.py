"""The timer tick (design.md §7): dispatch the due integrations to the runs queue, then a
bounded round of housekeeping. It never runs a sync itself."""
from __future__ import annotations

import logging
from typing import Any

from shared.app import App
from shared.runs.housekeeping import housekeeping
from shared.runs.schedule import dispatch_due

log = logging.getLogger(__name__)


def run_scheduled(app: App) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    try:
        summary.update(dispatch_due(app))
    except Exception:  # noqa: BLE001 - housekeeping still runs
        log.exception("timer: dispatch failed")
    summary.update(housekeeping(app))
    log.info("timer: %s", {k: (len(v) if isinstance(v, list) else v) for k, v in summary.items()})
    return summary
