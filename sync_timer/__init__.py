"""Every 5 minutes: delta sync of each integration that is due, webhook retries, log retention."""
import logging

import azure.functions as func

from shared.api.timer import run_scheduled
from shared.app import get_app
from shared.errors import ConfigurationError

log = logging.getLogger(__name__)


def main(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.info("timer is past due; running now")
    try:
        app = get_app()
    except ConfigurationError as error:
        log.error("configuration error: %s", error.message)
        return
    run_scheduled(app)
