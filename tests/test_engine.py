"""The engine's parts alone (issue 17): the mode rules (window), the counters, the error tree,
declared behaviours, and the shape of shared/ (no import circle, nothing branching on a data
type's flags)."""
from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
from datetime import datetime, timedelta, timezone

import pytest

from shared.counters import MAX_ERROR_RECORDS, Counters
from shared.entities import ENTITY_TYPES, Lineage, Lines, StockFeed, lineages_into
from shared.errors import Configuration, Fatal, Retriable, ServiceError, SkipRecord
from shared.runs.model import Run, TypeProgress
from shared.storage.state import Checkpoint
from shared.sync.behaviours import IMPLEMENTATIONS
from shared.sync.window import Window, advance

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT / "shared"
T0 = datetime(2026, 12, 1, 10, tzinfo=timezone.utc)


def _modules() -> list[str]:
    return [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in SHARED.rglob("*.py")]


# -- window: the only place that branches on the mode ----------------------------------------------
def test_each_mode_has_its_state_key_bound_and_filter() -> None:
    since = Window("since", modified_since=T0)
    delta = Window("delta", lookback=timedelta(minutes=10))
    assert [Window(m).state_key("products") for m in ("full", "delta", "since", "reconcile")] == [
        "products", "products", "products.since", "products.reconcile"]
    assert Window("full").lower_bound("2026-12-01T10:00:00Z") is None
    assert delta.lower_bound("2026-12-01T10:00:00Z") == T0 - timedelta(minutes=10)
    assert delta.lower_bound(None) is None  # a first delta reads everything
    assert since.lower_bound("2026-11-01T00:00:00Z") == T0  # never the watermark
    assert since.filter("2026-12-01T10:00:00Z") == "lastModifiedDateTime ge 2026-12-01T10:00:00Z"
    assert delta.filter("2026-12-01T10:00:00Z") == "lastModifiedDateTime gt 2026-12-01T10:00:00Z"
    assert Window("reconcile").filter("2026-12-01T10:00:00Z") is None
    assert since.kept_watermark("w") is None and delta.kept_watermark("w") == "w"
    assert Window("full").moves_marks and delta.moves_marks and not since.moves_marks


def test_a_pass_resumes_only_what_covers_it_and_moves_the_watermark_only_when_complete() -> None:
    delta = Window("delta")
    wide = Checkpoint("run-1", None, "link", "s", None)
    narrow = Checkpoint("run-1", "2026-12-01T10:00:00Z", "link", "s", None)
    assert delta.resumable(wide, T0, "run-2") is wide  # a full pass's checkpoint covers a delta
    assert delta.resumable(narrow, T0 - timedelta(hours=1), "run-2") is None  # it began later
    assert Window("since", modified_since=T0).resumable(narrow, T0, "run-2") is None  # another run
    assert Window("since", modified_since=T0).resumable(narrow, T0, "run-1") is narrow
    assert Window("full").may_advance(None, None)
    assert not delta.may_advance("2026-12-01T09:00:00Z", T0)  # read less than since the watermark
    assert delta.may_advance("2026-12-01T10:00:00Z", T0 - timedelta(minutes=10))
    assert not Window("since", modified_since=T0).may_advance("2026-12-01T10:00:00Z", T0)


def test_the_watermark_is_capped_at_the_start_kept_below_a_failure_and_never_moves_back() -> None:
    assert advance(None, "2026-12-01T12:00:00Z", "2026-12-01T11:00:00Z") == "2026-12-01T11:00:00Z"
    assert advance(None, "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z", "2026-12-01T09:00:00Z") == "2026-12-01T08:59:59.999Z"
    assert advance("2026-12-01T10:30:00Z", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z") == "2026-12-01T10:30:00Z"
    assert advance("2026-12-01T10:30:00Z", None, "2026-12-01T11:00:00Z") == "2026-12-01T10:30:00Z"


# -- one counters type --------------------------------------------------------------------------------
def test_counters_sum_slices_keep_the_first_failures_and_store_under_the_outside_names() -> None:
    first = Counters(read=3, created=2, lines_written=4)
    for n in range(MAX_ERROR_RECORDS - 1):
        first.fail(f"id-{n}", "bad", {"n": n})
    second = Counters(read=5, updated=1, stock_refreshed=2, deleted=1, resumed=True)
    second.fail("late-1", "bad", {})
    second.fail("late-2", "bad", {})
    first.add(second)
    assert (first.read, first.created, first.updated, first.errors) == (8, 2, 1, MAX_ERROR_RECORDS + 1)
    assert len(first.error_records) == MAX_ERROR_RECORDS and first.error_records[-1]["externalId"] == "late-1"
    assert first.extras() == {"linesWritten": 4, "linesDeleted": 0, "stockRefreshed": 2, "deleted": 1}
    assert first.log_metadata()["errorCount"] == MAX_ERROR_RECORDS + 1 and first.log_metadata()["errorsOmitted"] == 1
    stored = first.to_dict()
    assert {"linesWritten", "stockRefreshed", "errorRecords"} <= set(stored) and "lines_written" not in stored
    assert Counters.from_dict(stored) == first


def test_run_progress_is_the_counters_and_reads_runs_stored_before() -> None:
    """A run stored by the previous version (camelCase progress JSON) still reads."""
    old = '{"read": 4, "created": 1, "updated": 0, "unchanged": 3, "errors": 0, "done": true, "status": "SUCCESS", ' \
          '"linesWritten": 2, "linesDeleted": 0, "stockRefreshed": 0, "deleted": 0, "restored": 0, "resumed": false, ' \
          '"error": null, "errorRecords": []}'
    run = Run.from_entity({"PartitionKey": "i", "RowKey": "r", "trigger": "manual", "mode": "full", "userId": "u",
                           "entities": '["salesOrders"]', "p_salesOrders": old})
    progress = run.progress["salesOrders"]
    assert isinstance(progress, Counters) and progress.lines_written == 2 and progress.done
    assert progress.counts() == {"created": 1, "updated": 0, "errors": 0, "unchanged": 3, "status": "SUCCESS",
                                 "linesWritten": 2, "linesDeleted": 0}
    again = Run.from_entity(run.to_entity()).progress["salesOrders"]
    assert again == progress
    total = TypeProgress(created=1).merged(Counters(created=2, updated=1))
    assert (total.created, total.updated) == (3, 1)


# -- the error tree -----------------------------------------------------------------------------------
def test_every_exception_in_shared_sits_in_one_group_of_the_tree() -> None:
    groups = (Fatal, Retriable, SkipRecord, Configuration, ServiceError)
    outside = []
    for name in _modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name and obj not in groups:
                if not issubclass(obj, groups):
                    outside.append(f"{name}.{attr}")
                elif attr not in (ROOT / "shared/errors.py").read_text():
                    outside.append(f"{name}.{attr} (not drawn in shared/errors.py)")
    assert outside == []


def test_fatal_errors_say_so_and_the_others_do_not() -> None:
    from shared.errors import BCAuthError, BCError, BCUnavailable, RecordError
    from shared.runs.cancel import RunCancelled
    from shared.storage.leases import LeaseLost

    assert BCAuthError("x").fatal_for_run and BCUnavailable("x").fatal_for_run and RunCancelled("x").fatal_for_run
    assert isinstance(LeaseLost("x"), Fatal) and not BCError("x").fatal_for_run
    assert isinstance(BCAuthError("x"), BCError) and isinstance(RecordError("x"), SkipRecord)


# -- declarations and behaviours ----------------------------------------------------------------------
def test_every_declared_behaviour_has_an_implementation_and_the_new_types_are_declared() -> None:
    declared = {type(b) for e in ENTITY_TYPES.values() for b in e.behaviours}
    assert declared == {Lines, StockFeed, Lineage} and declared <= set(IMPLEMENTATIONS)
    assert {"salesInvoices", "salesCreditMemos", "purchaseInvoices", "accounts"} <= set(ENTITY_TYPES)
    assert [e.key for e, _ in lineages_into("salesOrders")] == ["salesInvoices"]
    assert ENTITY_TYPES["purchaseInvoices"].lines is not None and ENTITY_TYPES["accounts"].lines is None


@pytest.mark.parametrize("flag", ["stock_feed", "child"])
def test_no_module_branches_on_a_data_types_flags(flag: str) -> None:
    """A data type's special handling is a declared behaviour, never `if entity.<flag>`."""
    users = []
    for path in SHARED.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == flag:
                users.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert users == []


def test_shared_has_no_import_circle() -> None:
    """Every import counts (lazy and TYPE_CHECKING ones too): a circle is two modules that
    cannot be understood, tested or loaded one without the other."""
    names = set(_modules())
    graph: dict[str, set[str]] = {}
    for path in SHARED.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            found = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for target in found:
                while target and target not in names:
                    target = target.rpartition(".")[0]
                if target and target != name and not (SHARED / target.replace("shared.", "", 1).replace(".", "/") / "__init__.py").exists():
                    targets.add(target)
        graph[name] = targets

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            for nxt in graph.get(current, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    circles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a))
    assert circles == []
