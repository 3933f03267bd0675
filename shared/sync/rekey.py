"""Records stored under the legacy RowKey (the percent-encoded id) move to the current key (the
id's SQL Server sort key, shared/keys.py), so stored rows sort as BC sorts ids (issue 16).

Why a migration rather than reading both layouts: the engine's page lookup is a range query
in the current layout; a record still under its legacy key would look new to it and be stored a
second time. So a type's records are moved before any pass of that type reads BC (run from the
run's slice, shared/runs/slices.py), and the pass waits until its type is done.

- Resumable and bounded: partitions are scanned in order, a server page at a time; after each
  page the position (partition, last RowKey) is saved under `<type>.keys`, and at the slice's
  deadline the migration pauses like a pass. When every partition is done without a failure
  the state says so (its checkpoint's next_link = LAYOUT; the row has no watermark, which is
  always a timestamp) and later runs cost one point read.
- No duplicates, nothing lost: a record keeps its partition (shared/keys.py: the partition is
  computed from the id's legacy text) and moves in one transaction, "create the row under the
  new key" + "delete the legacy row", so at any moment it exists exactly once. Only an id that
  is an upper-case GUID (BC never sends one) changes partition: it is created first, then the
  legacy row deleted (a crash in between leaves a row the next slice removes).
- Every property moves as it is, `changeKey` included and no change row written: the change
  feed reports nothing new, and its older rows, which name the legacy key, are resolved to the
  current key when read (shared/storage/platform.py), so a consumer that had not read that
  change yet still gets the record, once.
- A sales order's lines move before the order (their keys start with the order's key); while
  an order is between the two, the read API reads its lines under both keys.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableTransactionError

from shared.clock import Clock, to_iso
from shared.entities import EntityType
from shared.errors import RecordError
from shared.keys import KEY_LAYOUT, child_row_key, children_range, current_row_key, record_partition, record_partitions, record_row_key
from shared.storage.changes import RECORDS_END, is_change_row
from shared.storage.state import Checkpoint, TypeState
from shared.storage.tables import TableStore

log = logging.getLogger(__name__)

KEYS_SUFFIX = ".keys"  # state key of a type's migration
LAYOUT = KEY_LAYOUT  # the state's checkpoint.next_link once every record of the type has the current key
PAGE = 500  # rows scanned per server page (then the position is saved)
MOVES_PER_TRANSACTION = 50  # create + delete pairs: 100 operations, Table Storage's limit


@dataclass
class MigrationResult:
    moved: int = 0
    lines_moved: int = 0
    failed: int = 0


class KeyMigration:
    """Moves one type's records (and their lines) of one integration to the current RowKeys."""

    def __init__(self, *, entity: EntityType, store: TableStore, states: Any, clock: Clock, integration_id: str) -> None:
        self.entity = entity
        self.store = store
        self.states = states
        self.clock = clock
        self.integration_id = integration_id
        self.key = entity.key + KEYS_SUFFIX
        self.result = MigrationResult()

    def done(self) -> bool:
        return _is_done(self.states.get(self.integration_id, self.key))

    def run(self, *, deadline: float | None = None, keep_alive: Callable[[], None] = lambda: None) -> bool:
        """Move what is left; True when the type is done, False when the deadline came first."""
        state = self.states.get(self.integration_id, self.key)
        if _is_done(state):
            return True
        checkpoint = state.checkpoint
        start = int(checkpoint.next_link) if checkpoint else 0
        after = checkpoint.max_seen if checkpoint else None
        failed_before = int(checkpoint.lower_bound or 0) if checkpoint else 0
        started_at = checkpoint.started_at if checkpoint else to_iso(self.clock.now())
        partitions = record_partitions(self.integration_id)
        for index in range(start, len(partitions)):
            for last, moved in self._scan(partitions[index], after):
                after = last
                out_of_time = deadline is not None and self.clock.monotonic() >= deadline
                if moved or out_of_time:  # an integration with nothing to move costs no state writes
                    keep_alive()
                    self._save(Checkpoint("", str(failed_before + self.result.failed), str(index), started_at, after))
                if out_of_time:
                    return False
            after = None
        if failed_before + self.result.failed:
            # Rows that could not move stay legacy: scan again from the start next time.
            log.warning("%s: %d records of integration %s kept their legacy key; retried next run", self.entity.key, failed_before + self.result.failed, self.integration_id)
            self._save(None)
            return True
        self._save(Checkpoint("", None, LAYOUT, started_at, None))
        return True

    def _save(self, checkpoint: Checkpoint | None) -> None:
        self.states.save(self.integration_id, self.key, TypeState(None, checkpoint))

    def _scan(self, partition: str, after: str | None) -> Iterator[tuple[str, int]]:
        """Move the partition's legacy rows page by page; yields each page's last RowKey and how
        many rows it moved."""
        clauses = "PartitionKey eq @pk and RowKey lt @end" + (" and RowKey gt @after" if after else "")
        parameters = {"pk": partition, "end": RECORDS_END, **({"after": after} if after else {})}
        pages = self.store.table(self.entity.table).query_entities(clauses, parameters=parameters, results_per_page=PAGE).by_page()
        for page in pages:
            rows = list(page)
            if not rows:
                continue
            legacy = [(row, new) for row in rows if (new := self._new_key(row)) is not None]
            for start in range(0, len(legacy), MOVES_PER_TRANSACTION):
                self._move(legacy[start : start + MOVES_PER_TRANSACTION])
            yield str(rows[-1]["RowKey"]), len(legacy)

    def _new_key(self, row: dict[str, Any]) -> str | None:
        """The current key of a legacy row, or None when the row needs no move."""
        key = str(row["RowKey"])
        if is_change_row(key) or "|" in key:
            return None
        external_id = row.get("externalId")
        if not isinstance(external_id, str):
            return None
        try:
            new = record_row_key(external_id)
        except RecordError:
            return None
        return None if new == key else new

    def _move(self, pairs: list[tuple[dict[str, Any], str]]) -> None:
        if self.entity.lines is not None:
            for row, new in pairs:
                self._move_lines(row, new)
        self._move_rows(self.entity.table, [(row, self._target(row, new)) for row, new in pairs])
        self.result.moved += len(pairs)

    def _target(self, row: dict[str, Any], new_key: str, partition_key: str | None = None) -> dict[str, Any]:
        partition = partition_key or record_partition(self.integration_id, new_key)
        return {**dict(row), "PartitionKey": partition, "RowKey": new_key}

    def _move_lines(self, parent: dict[str, Any], new_parent_key: str) -> None:
        assert self.entity.lines is not None
        low, high = children_range(str(parent["RowKey"]))
        lines = list(self.store.query(self.entity.lines.type.table, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                                      parameters={"pk": parent["PartitionKey"], "low": low, "high": high}))
        partition = record_partition(self.integration_id, new_parent_key)
        moves = []
        for line in lines:
            own = current_row_key(str(line["RowKey"]).split("|", 1)[1])
            if own is None:
                continue
            moves.append((line, self._target(line, child_row_key(new_parent_key, own), partition)))
        for start in range(0, len(moves), MOVES_PER_TRANSACTION):
            self._move_rows(self.entity.lines.type.table, moves[start : start + MOVES_PER_TRANSACTION])
        self.result.lines_moved += len(moves)

    def _move_rows(self, table: str, moves: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Create each row under its new key and delete the legacy row, in one transaction when
        they share a partition; a refused transaction is redone row by row (a row already
        under its new key then only loses its legacy copy)."""
        client = self.store.table(table)
        same = [m for m in moves if m[0]["PartitionKey"] == m[1]["PartitionKey"]]
        if same:
            try:
                client.submit_transaction([op for old, new in same for op in (("create", new), ("delete", _keys(old)))])
                same = []
            except (TableTransactionError, HttpResponseError):
                pass  # one by one below
        for old, new in same + [m for m in moves if m[0]["PartitionKey"] != m[1]["PartitionKey"]]:
            self._move_one(client, old, new)

    def _move_one(self, client: Any, old: dict[str, Any], new: dict[str, Any]) -> None:
        try:
            if old["PartitionKey"] == new["PartitionKey"]:
                try:
                    client.submit_transaction([("create", new), ("delete", _keys(old))])
                    return
                except TableTransactionError:
                    pass  # the new row exists already (or the legacy one is gone): below
            try:
                client.create_entity(new)
            except ResourceExistsError:
                pass  # moved before (a crash between the two steps): the current row wins
            try:
                client.delete_entity(old["PartitionKey"], old["RowKey"])
            except ResourceNotFoundError:
                pass
        except HttpResponseError as error:
            self.result.failed += 1
            log.warning("could not move %s/%s to its current key: %s", old["PartitionKey"], old["RowKey"], getattr(error, "error_code", type(error).__name__))


def _is_done(state: TypeState) -> bool:
    return state.checkpoint is not None and state.checkpoint.next_link == LAYOUT


def _keys(entity: dict[str, Any]) -> dict[str, Any]:
    return {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"]}
