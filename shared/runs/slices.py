"""One slice of one run: under the integration's lease, each unfinished data type's pass runs
until it ends or the slice budget is spent; progress is saved after every page; then either the
run is finished or its continuation is queued at once (design.md §7)."""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from shared.app import App
from shared.clock import parse_iso, to_iso
from shared.entities import ENTITY_TYPES
from shared.errors import BCError, ConflictError, Fatal, ServiceError
from shared.keys import KEY_LAYOUT
from shared.runs.cancel import GuardedClient, RunCancelled, RunStates, TargetGuard, guarded
from shared.runs.dispatch import disconnected_error, enqueue_next
from shared.runs.finish import finish_run
from shared.runs.model import FAILED, RUNNING, Run, TypeProgress
from shared.runs.queue import SliceMessage
from shared.realtime.byid import read_notified
from shared.storage.integrations import Integration
from shared.storage.leases import Lease, LeaseLost
from shared.counters import Counters
from shared.sync.completeness import record_completeness
from shared.sync.engine import PassOptions, Paused, TypeSync
from shared.sync.reconcile import ReconcilePass
from shared.sync.rekey import KeyMigration
from shared.sync.window import RECONCILE

log = logging.getLogger(__name__)
PROGRESS_EVERY_SECONDS = 1.0


class SliceOutcome:
    """What one slice did: `finished` (the run ended), `continued` (next slice queued), or
    `skipped` (stale or duplicate message, or another instance holds the lease)."""

    def __init__(self, state: str, run: Run | None) -> None:
        self.state = state
        self.run = run

    def __repr__(self) -> str:
        return f"SliceOutcome({self.state!r})"


def handle_message(app: App, message: SliceMessage, *, budget_seconds: float | None = None) -> SliceOutcome:
    """The queue worker's entry: a stale, duplicate or orphaned message is dropped (acknowledged);
    a message whose run is held by another instance is put back with a delay."""
    run = app.runs.get(message.integrationId, message.runId)
    if run is None or not run.active or message.seq != run.seq:
        log.info("dropping stale message for run %s (seq %d)", message.runId, message.seq)
        return SliceOutcome("skipped", run)
    integration = app.integrations.get(message.userId, message.integrationId)
    if integration is None:
        run = finish_run(app, run, None, fatal=ServiceError("The integration was deleted", code="not_found", status=404))
        return SliceOutcome("finished", run)
    return run_slice(app, integration, run, budget_seconds=budget_seconds or app.settings.slice_seconds, requeue_when_busy=True)


def run_slice(app: App, integration: Integration, run: Run, *, budget_seconds: float, requeue_when_busy: bool = False) -> SliceOutcome:
    """Run one slice of `run` (also called inline by a synchronous HTTP sync)."""
    if integration.status == "disconnected" or integration.activeRunId != run.runId or integration.configVersion != run.configVersion:
        reason = disconnected_error() if integration.status == "disconnected" else RunCancelled("The run was superseded or the integration now points elsewhere")
        run = finish_run(app, run, integration, fatal=reason)
        return SliceOutcome("finished", run)
    lease = app.leases.acquire(integration.id, run.runId)
    if lease is None:
        if requeue_when_busy:  # a duplicate delivery, or a crashed slice whose lease has not expired
            enqueue_next(app, run, delay_seconds=min(60, app.settings.lease_seconds))
        return SliceOutcome("skipped", run)
    try:
        return _run_locked(app, integration, run, lease, budget_seconds)
    finally:
        lease.release()


def _run_locked(app: App, integration: Integration, run: Run, lease: Lease, budget_seconds: float) -> SliceOutcome:
    clock = app.clock
    now = to_iso(clock.now())
    seq = run.seq

    def begin(current: Run) -> bool:
        if not current.active or current.seq != seq:
            return False
        current.status = RUNNING
        current.startedAt = current.startedAt or now
        current.slices += 1
        current.updatedAt = now
        return True

    run = app.runs.update(run.integrationId, run.runId, begin) or run
    if run.status != RUNNING or run.seq != seq:
        return SliceOutcome("skipped", run)

    deadline = clock.monotonic() + budget_seconds
    guarded = _LeaseGuard(lease)
    pending = run.pending_types()
    results: list[tuple[str, Counters, ServiceError | None, bool]] = []
    fatal: ServiceError | None = None
    client = None
    try:
        client = app.bc_client(integration)  # one client (one token) for the slice's types
    except ServiceError as error:
        fatal = error
    if client is not None:
        try:
            results, fatal = _sync_types(app, integration, run, pending, client, deadline, guarded)
        finally:
            client.close()
    requests = getattr(client, "requests_made", 0)
    for key, result, error, paused in results:
        progress = _merged(run.progress[key], result)
        if error is not None:
            progress.done, progress.status, progress.error = True, "FAILED", error.to_dict()
        elif not paused:
            progress.done, progress.status = True, ("PARTIAL" if progress.errors else "SUCCESS")
        run.progress[key] = progress
    if fatal is not None:
        for key in run.pending_types():  # types the fatal error kept from finishing
            progress = run.progress[key]
            progress.done, progress.status, progress.error = True, "FAILED", fatal.to_dict()

    finished = not run.pending_types()
    saved_at = to_iso(clock.now())

    def save(current: Run) -> None:
        current.progress = run.progress
        current.bcRequests += requests
        current.updatedAt = saved_at
        if not finished:
            current.seq = seq + 1

    run = app.runs.update(run.integrationId, run.runId, save) or run
    if finished:
        run = finish_run(app, run, integration, fatal=fatal)
        return SliceOutcome("finished", run)
    enqueue_next(app, run)
    return SliceOutcome("continued", run)


class LeaseLostError(Fatal, ConflictError):
    code = "sync_in_progress"


class RunFailure(Fatal, ServiceError):
    """A failure on our side (storage down, a secret that cannot be decrypted, a bug): it
    ends the run, whose other types cannot do better."""


def _sync_types(app: App, integration: Integration, run: Run, pending: list[str], client: Any, deadline: float, lease: "_LeaseGuard") -> tuple[list[tuple[str, Counters, ServiceError | None, bool]], ServiceError | None]:
    """The first type runs alone: a run-wide failure (credentials, company, outage) then stops
    the run before the others start. The rest run up to SYNC_PARALLEL_TYPES at once, sharing
    the BC client and its request budget."""
    results = [_sync_type(app, integration, run, pending[0], client, deadline, lease)] if pending else []
    fatal = _fatal(results[0][2]) if results else None
    rest = pending[1:]
    if fatal is None and rest:
        workers = max(1, min(len(rest), app.settings.parallel_types))
        if workers == 1:
            for key in rest:
                results.append(_sync_type(app, integration, run, key, client, deadline, lease))
                fatal = _fatal(results[-1][2])
                if fatal is not None:
                    break
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync-type") as pool:
                results.extend(pool.map(lambda key: _sync_type(app, integration, run, key, client, deadline, lease), rest))
            fatal = next((f for f in (_fatal(r[2]) for r in results) if f is not None), None)
    return results, fatal


def _fatal(error: ServiceError | None) -> ServiceError | None:
    if error is not None and getattr(error, "fatal_for_run", False):  # the Fatal group (shared/errors.py)
        return error
    return None


def _sync_type(app: App, integration: Integration, run: Run, key: str, client: Any, deadline: float, lease: "_LeaseGuard") -> tuple[str, Counters, ServiceError | None, bool]:
    base = run.progress[key]
    guard = TargetGuard(app, run)
    common: dict[str, Any] = dict(
        entity=ENTITY_TYPES[key],
        client=GuardedClient(client, app, run),  # each page after the first re-checks the target
        store=app.store,
        states=RunStates(app, run, guard),  # no state saved once the integration points elsewhere
        clock=app.clock,
        integration_id=integration.id,
        run_id=run.runId,
    )
    sync: Any
    if run.mode == RECONCILE:  # ids; restores what storage lacks, flags what BC no longer has (shared/sync/reconcile.py)
        sync = ReconcilePass(**common, user_id=integration.userId, custom_fields=(integration.fieldMappings or {}).get(key),
                             on_complete=lambda data_type, data: record_completeness(app, integration, run.configVersion, data_type, data, client.get_company))
    else:
        sync = TypeSync(**common, user_id=integration.userId, custom_fields=(integration.fieldMappings or {}).get(key))
    options = PassOptions(
        mode=run.mode,
        modified_since=parse_iso(run.modifiedSince) if run.modifiedSince else None,
        lookback=timedelta(minutes=app.settings.lookback_minutes),
        deadline=deadline,
        keep_alive=guarded(guard, lease.renew),
        on_page=_ProgressWriter(app, run, key, base).write,
    )
    try:
        # Records still under their legacy keys move first (shared/sync/rekey.py): the pass's
        # range lookups only see the current layout. An integration created under it has none.
        if integration.keyLayout != KEY_LAYOUT and not KeyMigration(**{k: common[k] for k in ("entity", "store", "states", "clock", "integration_id")}).run(deadline=deadline, keep_alive=options.keep_alive):
            raise Paused(f"{key}: time budget reached while moving records to their current keys")
        if isinstance(sync, TypeSync):  # records a notification named, read by id first (issue 16)
            read_notified(sync, options)
        return key, sync.run(options), None, False
    except Paused:
        return key, sync.result, None, True
    except RunCancelled as error:
        log.info("run %s of integration %s cancelled: %s", run.runId, integration.id, error.message)
        return key, sync.result, error, False
    except BCError as error:
        log.warning("sync of %s for integration %s failed: %s", key, integration.id, error.message)
        return key, sync.result, error, False
    except LeaseLost as error:
        return key, sync.result, LeaseLostError(str(error)), False
    except ServiceError as error:  # a secret that cannot be decrypted and the like
        return key, sync.result, RunFailure(error.message, code=error.code, status=error.status), False
    except Exception as error:  # storage down, a bug: this type fails, the run reports it
        log.exception("sync of %s for integration %s failed unexpectedly", key, integration.id)
        return key, sync.result, RunFailure(f"Internal error while syncing {key} ({type(error).__name__})"), False


def _merged(base: TypeProgress, result: Counters) -> TypeProgress:
    """The type's progress over all slices: the earlier slices' counts plus this one's."""
    return base.merged(result)


class _ProgressWriter:
    """Writes one type's live progress (a merge of its own property, so types running in
    parallel never overwrite each other), at most once a second."""

    def __init__(self, app: App, run: Run, key: str, base: TypeProgress) -> None:
        self._app, self._run, self._key, self._base = app, run, key, base
        self._last = 0.0

    def write(self, result: Counters) -> None:
        now = self._app.clock.monotonic()
        if now - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = now
        progress = _merged(self._base, result)
        try:
            self._app.runs.merge_progress(self._run.integrationId, self._run.runId, self._key, progress, to_iso(self._app.clock.now()))
        except Exception:  # noqa: BLE001 - progress is informative; the slice goes on
            log.warning("could not save progress of run %s", self._run.runId)


class _LeaseGuard:
    """Renews the lease from several type threads, one at a time (the lease's ETag changes
    with each renewal, so two at once would make one of them think the lease was lost)."""

    def __init__(self, lease: Lease) -> None:
        self._lease = lease
        self._lock = threading.Lock()

    def renew(self) -> None:
        with self._lock:
            self._lease.renew()


__all__ = ["SliceOutcome", "handle_message", "run_slice", "FAILED"]
