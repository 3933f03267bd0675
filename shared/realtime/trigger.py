"""Queue a delta because BC said something changed, without ever losing the change.

A notification coalesces into the run already queued or running (design.md §7). That is enough
when the run is still queued and covers the type: it has not read anything yet, so it will see
the change. Otherwise (it is running, maybe past that type, or it syncs other types) the types
are recorded on the integration as `realtimeFollowUp`, in the same ETag-guarded write that checks
which run is active; `finish_run` takes them when it releases the claim and calls
`start_follow_up`. Either the note lands before the claim is released (and the finishing run
sees it) or after (and the note sees no active run and starts one itself).

A `collection` notification also owes its type a reconcile (deletes may hide in it). Only one
run is active at a time, so the types are noted as `realtimeReconcile` on the integration
(before the delta is queued); the run that releases the claim with no follow-up delta left
takes the note in that same write and starts the reconcile (`start_follow_up`). Notes for the
same type coalesce; a run of any trigger that finishes takes them, so the timer's next run does
if nothing else did.

The run is claimed and recorded by `start_run` (enqueue=False) and its first slice queued here
through a queue client that fails within ~1 s, because RunQueue's retries take 8-9 s against a
queue that is down (measured) and BC wants an answer within 5 s; a refusal abandons the
run exactly as dispatch does, and the notification is answered 503 so BC retries it."""
from __future__ import annotations

import logging
import threading
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import BinaryBase64EncodePolicy, LinearRetry, QueueClient

from shared.app import App
from shared.runs.dispatch import RunRequest, Started, abandon, start_run
from shared.runs.model import QUEUED
from shared.runs.queue import QueueUnavailable, SliceMessage
from shared.storage.credentials import storage_credential
from shared.storage.integrations import Integration
from shared.storage.transport import storage_transport

log = logging.getLogger(__name__)
TRIGGER = "notification"

#: BC wants an answer within 5 s; the SDK's default retries take over a minute against a queue
#: that is down. This client gives up within ~3 s, and the notification is answered 503 (BC retries).
_FAST: dict[tuple[str, str], QueueClient] = {}
_FAST_LOCK = threading.Lock()


def _fast_queue(app: App) -> QueueClient:
    """The runs queue as RunQueue reaches it (connection string, or account URL with the managed
    identity), with a retry policy that gives up within about a second."""
    settings = app.settings
    key = (settings.queues_account_url or settings.queue_connection_string, settings.sync_queue_name)
    with _FAST_LOCK:
        client = _FAST.get(key)
        if client is None:
            options: dict[str, Any] = {
                "message_encode_policy": BinaryBase64EncodePolicy(),
                "retry_policy": LinearRetry(backoff=0.2, random_jitter_range=0, retry_total=1),
                **storage_transport(connection_timeout=1, read_timeout=2),
            }
            if settings.queues_account_url:
                client = QueueClient(settings.queues_account_url, settings.sync_queue_name, credential=storage_credential(), **options)
            else:
                client = QueueClient.from_connection_string(settings.queue_connection_string, settings.sync_queue_name, **options)
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
            except AzureError:
                return client  # not cached: created next time
            _FAST[key] = client
        return client


def _start(app: App, integration: Integration, types: list[str], mode: str = "delta") -> Started:
    """start_run (claim + record) and the first slice queued through the fast client; a
    refusal abandons the run exactly as dispatch does (claim released, nothing half-queued)."""
    started = start_run(app, integration, RunRequest(mode=mode, entities=types, trigger=TRIGGER), enqueue=False)
    if started.created:
        run = started.run
        try:
            _fast_queue(app).send_message(SliceMessage(run.userId, run.integrationId, run.runId, run.seq).encode())
        except AzureError as error:
            failure = QueueUnavailable(f"The runs queue is unavailable ({type(error).__name__}); nothing was queued, try again")
            abandon(app, run, failure)
            raise failure from None
    return started


def queue_delta(app: App, integration: Integration, types: list[str]) -> str:
    """Queue (or coalesce into) a delta of these types. Returns "queued", "coalesced" or
    "follow_up". Raises QueueUnavailable (503) when the queue refuses: nothing is lost then,
    BC retries the notification."""
    types = [t for t in dict.fromkeys(types) if t in integration.entities]
    if not types:
        return "ignored"
    for _ in range(5):
        started = _start(app, integration, types)
        if started.created:
            return "queued"
        holder = started.run
        if holder.status == QUEUED and set(types) <= set(holder.entities):
            return "coalesced"
        noted: list[bool] = []

        def note(current: Integration) -> None:
            noted.clear()
            if current.activeRunId == holder.runId:
                current.realtimeFollowUp = sorted(set(current.realtimeFollowUp or []) | set(types))
                noted.append(True)

        updated = app.integrations.update(integration.userId, integration.id, note)
        if updated is None:
            return "ignored"
        if noted:
            return "follow_up"
        integration = updated  # the run ended meanwhile: try again, a new run will start
    log.warning("realtime: integration %s kept changing; the next poll picks the change up", integration.id)
    return "ignored"


def note_reconcile(app: App, integration: Integration, types: list[str]) -> str:
    """Note that these types owe a reconcile (a `collection` notification); the run that ends
    next with no delta left to follow starts it. Returns "noted" or "ignored"."""
    wanted = [t for t in dict.fromkeys(types) if t in integration.entities]
    if not wanted:
        return "ignored"

    def note(current: Integration) -> None:
        current.realtimeReconcile = sorted(set(current.realtimeReconcile or []) | set(wanted))

    return "noted" if app.integrations.update(integration.userId, integration.id, note) is not None else "ignored"


def start_follow_up(app: App, integration: Integration, types: list[str], *, reconcile: list[str] | None = None) -> None:
    """Called by finish_run with what it took when releasing the claim: the follow-up delta's
    types, or (when no delta is left) the types owed a reconcile."""
    try:
        if types:
            queue_delta(app, integration, types)
        elif reconcile:
            _start_reconcile(app, integration, reconcile)
    except Exception:  # noqa: BLE001 - the next poll (syncIntervalMinutes) still catches the change
        log.exception("realtime: could not start the follow-up run of integration %s", integration.id)


def _start_reconcile(app: App, integration: Integration, types: list[str]) -> None:
    wanted = [t for t in dict.fromkeys(types) if t in integration.entities]
    if not wanted:
        return
    try:
        started = _start(app, integration, wanted, mode="reconcile")
    except Exception:
        note_reconcile(app, integration, wanted)  # not lost: the next run that ends takes it again
        raise
    if not started.created:  # another run took the claim meanwhile: it takes the note when it ends
        note_reconcile(app, integration, wanted)
