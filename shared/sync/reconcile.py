"""Reconcile (design.md §11): proves a type complete and heals it. It never deletes anything.

Correct whatever order BC returns ids in (SQL Server's, text, any): nothing is flagged before
every id BC has was read, and nothing depends on the order except speed.

1. Ids. BC's ids are read with `$select=id&$orderby=id`, page by page. Each page is looked up in
   storage (StoredLookup: a range query per partition, since RowKeys sort as BC sorts ids);
   ids BC has that are not stored (a delta missed them: a late commit, a lost write, an outage)
   are read by id, with the same `$select`/`$expand` as a pass, and stored through the engine's
   write stage (`TypeSync.process`): counted as `restored`. Stored records BC has but that an
   earlier reconcile flagged are read and rewritten the same way (flag gone): `undeleted`.
   Every id also goes, as a 64-bit hash of its RowKey (8 bytes), into a run kept in an
   `array('Q')`; at each checkpoint (every CHECKPOINT_IDS ids, and at the deadline) the run is
   sorted and spilled to the scratch table with BC's nextLink, so a paused reconcile resumes
   from there in a later slice.
2. Sweep. The runs are merged into one sorted array (8 bytes per BC id, 16 while merging) and
   every stored record of the type is streamed, partition by partition (projected: key and
   flag): one whose hash BC did not name gets `deletedInBC: true` and `deletedAt`, written
   through the change log (`tracked`), so the change feed reports it. The position (partition,
   last key) is saved after each server page; at the deadline the sweep pauses there.
   A hash collision can only hide a deletion (p ~ 1e-8 at a million ids), never flag a
   record BC has.
3. Completeness. `bcCount` (ids BC returned), `storedCount` (stored, not flagged, BC has it),
   `deletedInBC` (stored and flagged) and `verifiedAt` go to `on_complete` (the run stores them
   on the integration); after a reconcile without failures storedCount == bcCount.

Flags carry why the record left (shared/sync/flags.py `add_reasons`, before they are written):
`deletedReason` "posted" when a synced document names it (a posted sales order), else "deleted";
a flagged document's lines are flagged with it."""
from __future__ import annotations

import hashlib
import heapq
import json
import logging
import sys
from array import array
from bisect import bisect_left
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

from shared.bc.client import BCClient
from shared.clock import Clock, to_iso
from shared.entities import EntityType
from shared.errors import RecordError
from shared.keys import encode_key, record_partition, record_partitions, record_row_key
from shared.storage.changes import RECORDS_END, is_change_row, tracked
from shared.storage.records import RecordWriter, StoredLookup
from shared.storage.state import Checkpoint, TypeState
from shared.storage.tables import TableStore
from shared.sync.flags import add_reasons
from shared.sync.engine import MAX_ERROR_RECORDS, PassOptions, Paused, TypeResult, TypeSync, _storage_message
from shared.sync.prefetch import prefetch

log = logging.getLogger(__name__)

RECONCILE_SUFFIX = ".reconcile"
SCRATCH_TABLE = "ReconcileScratch"  # sorted runs of BC id hashes of reconciles in progress
CHECKPOINT_IDS = 20_000  # BC ids between checkpoints (each spills one sorted run)
HASHES_PER_ROW = 8000  # 64,000 bytes: Table Storage's limit for one binary property is 64 KiB
SWEEP_PAGE = 1000  # stored rows per server page in the sweep (the position is saved after each)
FLUSH_EVERY = 500  # flags written in batches


def id_hash(row_key: str) -> int:
    """8 bytes standing for a RowKey in the set of BC's ids."""
    return int.from_bytes(hashlib.blake2b(row_key.encode("utf-8"), digest_size=8).digest(), "big")


@dataclass
class FlagContext:
    """What a flag hook may need: where the flagged records live and who flags them."""

    entity: EntityType
    store: TableStore
    clock: Clock
    integration_id: str




@dataclass
class ReconcileResult(TypeResult):
    deleted: int = 0  # newly flagged deletedInBC
    restored: int = 0  # BC had them, storage did not: read by id and stored
    undeleted: int = 0  # flagged by an earlier reconcile, BC has them again: flag removed
    completeness: dict[str, Any] | None = None


@dataclass
class Progress:
    """A reconcile's position across slices (the checkpoint's `max_seen`, as JSON)."""

    phase: str = "ids"  # "ids" | "sweep"
    runs: int = 0  # sorted runs spilled to the scratch table
    bcCount: int = 0
    partition: int = 0  # sweep: partitions done
    after: str | None = None  # sweep: last RowKey swept in the current partition
    storedCount: int = 0
    deletedInBC: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "Progress | None":
        try:
            values = json.loads(text or "")
            return cls(**values) if isinstance(values, dict) else None
        except (ValueError, TypeError):
            return None  # a checkpoint of the earlier reconcile: start again


class ReconcilePass:
    def __init__(
        self,
        *,
        entity: EntityType,
        client: BCClient,
        store: TableStore,
        states: Any,
        clock: Clock,
        integration_id: str,
        run_id: str,
        user_id: str = "",
        custom_fields: list[dict[str, str]] | None = None,
        on_complete: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.entity = entity
        self.client = client
        self.store = store
        self.states = states
        self.clock = clock
        self.integration_id = integration_id
        self.run_id = run_id
        self.key = entity.key + RECONCILE_SUFFIX
        self.result = ReconcileResult()
        self.on_complete = on_complete
        # The engine's write stage stores what BC has and storage lacks (same mapping, hashes,
        # lines, change rows as any pass).
        self.writer = TypeSync(
            entity=entity, client=client, store=store, states=states, clock=clock, user_id=user_id,
            integration_id=integration_id, run_id=run_id, custom_fields=custom_fields,
        )
        self.custom = custom_fields or []
        self.lookup = StoredLookup(store, entity.table, self.partition_of)
        self.scratch_partition = f"{encode_key(integration_id)}|{entity.key}"

    def partition_of(self, row_key: str) -> str:
        return record_partition(self.integration_id, row_key)

    # -- the pass -------------------------------------------------------------------------------
    def run(self, options: PassOptions) -> ReconcileResult:
        state = self.states.get(self.integration_id, self.key)
        checkpoint = state.checkpoint if state.checkpoint and state.checkpoint.run_id == self.run_id else None
        progress = Progress.parse(checkpoint.max_seen) if checkpoint else None
        if progress is None:
            checkpoint = None
            self._clear_scratch()  # runs of an earlier reconcile that never finished
            progress = Progress()
        started_at = checkpoint.started_at if checkpoint else to_iso(self.clock.now())
        self.result.resumed = checkpoint is not None
        if progress.phase == "ids":
            self._read_ids(options, state, progress, checkpoint.next_link if checkpoint else None, started_at)
            progress.phase = "sweep"
            self._save(state, "", started_at, progress)
        self._sweep(options, state, progress, started_at)
        completeness = {"bcCount": progress.bcCount, "storedCount": progress.storedCount, "deletedInBC": progress.deletedInBC, "verifiedAt": to_iso(self.clock.now())}
        self.result.completeness = completeness
        if self.on_complete is not None:
            self.on_complete(self.entity.key, completeness)
        self.states.save(self.integration_id, self.key, TypeState(started_at, None))  # watermark = last complete reconcile
        self._clear_scratch()
        return self.result

    def _save(self, state: TypeState, next_link: str, started_at: str, progress: Progress) -> None:
        checkpoint = Checkpoint(self.run_id, None, next_link, started_at, json.dumps(asdict(progress)))
        self.states.save(self.integration_id, self.key, TypeState(state.watermark, checkpoint))

    # -- 1. ids ---------------------------------------------------------------------------------
    def _read_ids(self, options: PassOptions, state: TypeState, progress: Progress, start_url: str | None, started_at: str) -> None:
        pages = self.client.pages(self.entity.entity_set, select=["id"], orderby="id", start_url=start_url)
        run = array("Q")
        for page in prefetch(pages):
            keys = self._keys(page.records)
            self._heal(keys)
            run.extend(id_hash(key) for key in keys)
            progress.bcCount += len(keys)
            out_of_time = options.deadline is not None and self.clock.monotonic() >= options.deadline
            options.keep_alive()  # before a checkpoint: a run whose integration moved on saves none
            if page.next_link and (out_of_time or len(run) >= CHECKPOINT_IDS):
                self._spill(run, progress)
                run = array("Q")
                self._save(state, page.next_link, started_at, progress)
            options.on_page(self.result)
            if page.next_link and out_of_time:
                raise Paused(f"{self.entity.key}: time budget reached, the reconcile continues from its checkpoint")
        self._spill(run, progress)

    def _keys(self, records: list[dict[str, Any]]) -> dict[str, str]:
        """RowKey -> BC id of a page (ids no record could be stored under are left out)."""
        keys: dict[str, str] = {}
        for raw in records:
            self.result.read += 1
            external_id = raw.get("id")
            if not isinstance(external_id, str):
                continue
            try:
                keys[record_row_key(external_id)] = external_id
            except RecordError:
                continue
        return keys

    def _heal(self, keys: dict[str, str]) -> None:
        """Store what BC has and storage lacks, and unflag what BC has again (both read by id)."""
        if not keys:
            return
        existing = self.lookup.lookup(list(keys))
        missing = [external_id for key, external_id in keys.items() if key not in existing]
        flagged = [external_id for key, external_id in keys.items() if key in existing and existing[key].deleted_in_bc]
        if not missing and not flagged:
            return
        records = [r for r in (self._read_one(external_id) for external_id in missing + flagged) if r is not None]
        self.writer.result = written = TypeResult()  # this page's writes alone
        self.writer.process(records, self.lookup)
        self.result.restored += written.created
        self.result.undeleted += written.updated
        self.result.errors += written.errors
        room = max(0, MAX_ERROR_RECORDS - len(self.result.error_records))
        self.result.error_records.extend(written.error_records[:room])
        if written.created or written.updated:
            log.info("%s: reconcile restored %d and unflagged %d records of integration %s", self.entity.key, written.created, written.updated, self.integration_id)

    def _read_one(self, external_id: str) -> dict[str, Any] | None:
        """GET {entitySet}({id}) with the pass's $select/$expand; None if BC no longer has it."""
        return self.client.get_record(self.entity.entity_set, external_id, select=self.writer.select, expand=self.writer.expand)

    # -- scratch runs ---------------------------------------------------------------------------
    def _spill(self, run: array, progress: Progress) -> None:
        """The run, sorted, as rows of HASHES_PER_ROW hashes (little-endian), under index `runs`."""
        if not run:
            return
        ordered = array("Q", sorted(run))
        if sys.byteorder != "little":
            ordered.byteswap()
        data = ordered.tobytes()
        step = HASHES_PER_ROW * 8
        chunks = [data[i : i + step] for i in range(0, len(data), step)]
        ops = []
        for index, chunk in enumerate(chunks):
            entity: dict[str, Any] = {"PartitionKey": self.scratch_partition, "RowKey": f"{self.run_id}|{progress.runs:06d}|{index:04d}", "h": chunk}
            if index == 0:
                entity["chunks"] = len(chunks)
            ops.append(("upsert", entity))
        failures = self.store.write(SCRATCH_TABLE, ops)
        if failures:
            raise failures[0].error
        progress.runs += 1

    def _load_runs(self, progress: Progress) -> array:
        """Every spilled run of this reconcile, merged into one sorted array. Rows come a few at
        a time (each holds 64 KB of hashes), so the peak is the runs plus the merged array."""
        pager = self.store.table(SCRATCH_TABLE).query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            parameters={"pk": self.scratch_partition, "low": f"{self.run_id}|", "high": f"{self.run_id}}}"},
            results_per_page=4,
        )
        runs: dict[int, array] = {}
        expected: dict[int, int] = {}
        seen: dict[int, int] = {}
        for row in pager:  # RowKey order: run by run, chunk by chunk
            _, run_text, chunk_text = str(row["RowKey"]).split("|")
            index, chunk = int(run_text), int(chunk_text)
            if index >= progress.runs:
                continue  # spilled by a slice that died before its checkpoint: its ids are read again
            if chunk == 0:
                expected[index] = int(row.get("chunks") or 1)
            if chunk >= expected.get(index, 0) or seen.get(index, 0) != chunk:
                continue  # a leftover chunk of an earlier, longer spill of the same run
            values = runs.setdefault(index, array("Q"))
            values.frombytes(_bytes(row["h"]))
            seen[index] = chunk + 1
        arrays = list(runs.values())
        runs.clear()
        if sys.byteorder != "little":
            for values in arrays:
                values.byteswap()
        if len(arrays) <= 1:
            return arrays[0] if arrays else array("Q")
        merged = array("Q")
        merged.extend(heapq.merge(*arrays))
        return merged

    def _clear_scratch(self) -> None:
        rows = self.store.query(SCRATCH_TABLE, "PartitionKey eq @pk", parameters={"pk": self.scratch_partition}, select=["PartitionKey", "RowKey"])
        self.store.write(SCRATCH_TABLE, [("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]}) for r in rows])

    # -- 2. sweep -------------------------------------------------------------------------------
    def _sweep(self, options: PassOptions, state: TypeState, progress: Progress, started_at: str) -> None:
        bc_ids = self._load_runs(progress)
        partitions = record_partitions(self.integration_id)
        now = to_iso(self.clock.now())
        while progress.partition < len(partitions):
            partition = partitions[progress.partition]
            for last in self._sweep_partition(partition, progress, bc_ids, now):
                progress.after = last
                options.keep_alive()
                self._save(state, "", started_at, progress)
                options.on_page(self.result)
                if options.deadline is not None and self.clock.monotonic() >= options.deadline:
                    raise Paused(f"{self.entity.key}: time budget reached, the reconcile continues from its checkpoint")
            progress.partition += 1
            progress.after = None
            self._save(state, "", started_at, progress)

    def _sweep_partition(self, partition: str, progress: Progress, bc_ids: array, now: str) -> Iterator[str]:
        """Flag the partition's stored rows BC did not name, a server page at a time (yields the
        page's last key once its flags are written)."""
        clauses, parameters = ["PartitionKey eq @pk", "RowKey lt @end"], {"pk": partition, "end": RECORDS_END}
        if progress.after is not None:
            clauses.append("RowKey gt @after")
            parameters["after"] = progress.after
        pages = self.store.table(self.entity.table).query_entities(
            " and ".join(clauses), parameters=parameters, select=["RowKey", "externalId", "deletedInBC"], results_per_page=SWEEP_PAGE
        ).by_page()
        for page in pages:
            flags: list[dict[str, Any]] = []
            last = None
            for row in page:
                key = last = str(row["RowKey"])
                if "|" in key or is_change_row(key):
                    continue
                present = _contains(bc_ids, id_hash(key))
                if row.get("deletedInBC"):
                    progress.deletedInBC += 1
                elif present:
                    progress.storedCount += 1
                else:
                    flags.append({"PartitionKey": partition, "RowKey": key, "externalId": row.get("externalId"), "deletedInBC": True, "deletedAt": now})
            if flags:
                self._flag(flags, progress)
            if last is not None:
                yield last

    def _flag(self, flags: list[dict[str, Any]], progress: Progress) -> None:
        add_reasons(FlagContext(self.entity, self.store, self.clock, self.integration_id), flags)
        writer = RecordWriter(tracked(self.store, self.clock), self.entity.table)  # flags reach the change feed
        for start in range(0, len(flags), FLUSH_EVERY):
            for flag in flags[start : start + FLUSH_EVERY]:
                writer.merge({k: v for k, v in flag.items() if k != "externalId"})
            refused = {str(f.entity["RowKey"]): f for f in writer.flush()}
            for flag in flags[start : start + FLUSH_EVERY]:
                failure = refused.get(flag["RowKey"])
                if failure is None:
                    self.result.deleted += 1
                    progress.deletedInBC += 1
                else:
                    progress.storedCount += 1  # still stored and unflagged: completeness shows the gap
                    self.result.fail(flag.get("externalId"), _storage_message(failure.error), {})


def _contains(values: array, value: int) -> bool:
    index = bisect_left(values, value)
    return index < len(values) and values[index] == value


def _bytes(value: Any) -> bytes:
    raw = getattr(value, "value", value)
    return bytes(raw) if not isinstance(raw, str) else raw.encode("latin-1")
