"""What the queue functions do with a message. A message that cannot be read is logged and
dropped (retrying cannot fix it); a slice that raises is retried by the host and, after
`maxDequeueCount` attempts (host.json), lands in the poison queue, whose function fails the
run and shows the integration in `error`. The last attempt fails the run itself too, so the
status is right even where no poison function runs."""
from __future__ import annotations

import logging

from shared.app import get_app
from shared.errors import ServiceError
from shared.runs.finish import finish_run
from shared.runs.queue import SliceMessage
from shared.runs.slices import SliceOutcome, handle_message

log = logging.getLogger(__name__)


def process(body: bytes, *, dequeue_count: int = 1) -> SliceOutcome | None:
    try:
        message = SliceMessage.decode(body)
    except ValueError as error:
        log.error("dropping a message that is not a run message: %s", error)
        return None
    app = get_app()
    try:
        return handle_message(app, message)
    except Exception as error:
        if dequeue_count >= app.settings.max_dequeue_count:
            _fail(message, f"The run failed {dequeue_count} times ({type(error).__name__}) and was stopped")
        raise


def poisoned(body: bytes) -> None:
    try:
        message = SliceMessage.decode(body)
    except ValueError:
        log.error("poison queue: a message that is not a run message was dropped")
        return
    _fail(message, "The run kept failing and was moved to the poison queue")


def _fail(message: SliceMessage, text: str) -> None:
    app = get_app()
    run = app.runs.get(message.integrationId, message.runId)
    if run is None or not run.active:
        return
    integration = app.integrations.get(message.userId, message.integrationId)
    finish_run(app, run, integration, fatal=ServiceError(text, code="run_failed"))
