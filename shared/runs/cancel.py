"""Configuration changes win over a run in flight (issue 8, defect 5).

A PATCH that changes where an integration points (tenant, environment, company, baseUrl) and a
DELETE (disconnect) bump the integration's `configVersion`; a run records the version it started
with. After every page, and before any state save not preceded by that check, the run re-reads
the integration (one point read; TargetGuard) and stops with RunCancelled when the version moved
or the integration was disconnected or deleted, so it writes no watermark and no checkpoint for
the old target. State rows carry
the version they were written under, and a run only reads rows of its own version, so even a
save racing the PATCH's reset is never taken up by a run for the new target."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from shared.app import App
from shared.errors import ConflictError, Fatal
from shared.runs.model import Run
from shared.storage.state import TypeState


class RunCancelled(Fatal, ConflictError):
    """The integration now points elsewhere (or is disconnected): the run stops at once."""

    code = "run_cancelled"


def check_target(app: App, run: Run) -> None:
    """Raise RunCancelled unless the integration still is what the run started for."""
    current = app.integrations.get(run.userId, run.integrationId)
    if current is None:
        raise RunCancelled("The integration was deleted; the run stopped", code="not_found")
    if current.status == "disconnected":
        raise RunCancelled("The integration was disconnected; the run stopped", code="integration_disconnected")
    if current.configVersion != run.configVersion:
        raise RunCancelled("The integration was changed to point at another company or environment; the run stopped without saving progress for the old one")


class TargetGuard:
    """check_target for one pass. A state save needs a check made after the previous save: the
    page loop's keep-alive checks just before it saves a page's checkpoint, so that check
    serves the save and a page costs one read of the integration, not two."""

    def __init__(self, app: App, run: Run) -> None:
        self._app = app
        self._run = run
        self._fresh = False

    def check(self) -> None:
        check_target(self._app, self._run)
        self._fresh = True

    def before_save(self) -> None:
        if not self._fresh:
            check_target(self._app, self._run)
        self._fresh = False


class RunStates:
    """The SyncState repository as one run sees it: rows of its configuration version only,
    and no save once the integration moved on."""

    def __init__(self, app: App, run: Run, guard: TargetGuard) -> None:
        self._app = app
        self._run = run
        self._guard = guard

    def get(self, integration_id: str, key: str) -> TypeState:
        return self._app.states.get(integration_id, key, version=self._run.configVersion)

    def save(self, integration_id: str, key: str, state: TypeState) -> None:
        self._guard.before_save()
        self._app.states.save(integration_id, key, state, version=self._run.configVersion)


def guarded(guard: TargetGuard, renew: Callable[[], None]) -> Callable[[], None]:
    """The per-page keep_alive: renew the lease, then stop if the integration moved on."""

    def keep_alive() -> None:
        renew()
        guard.check()

    return keep_alive


class GuardedClient:
    """The run's BC client, whose paged reads re-check the target before handing over each page
    after the first: a page read for the old company is never written after the change."""

    def __init__(self, client: Any, app: App, run: Run) -> None:
        self._client = client
        self._app = app
        self._run = run

    def pages(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for count, page in enumerate(self._client.pages(*args, **kwargs)):
            if count:
                check_target(self._app, self._run)
            yield page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
