"""The change feed a consumer can follow (design.md §13, issue 19): ordered by a per-partition
sequence taken under the partition's ETag, so a consumer is caught up (empty page) at once and
gets no change twice; writers with skewed clocks racing on the same partitions lose nothing;
rows written before sequences stay readable; retention prunes old rows and a cursor that points
before what is kept answers 410 `cursor_expired`."""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from devtools.bcsim import BCSimulator
from shared.api.cursors import seal
from shared.app import App
from shared.keys import record_partition, record_partitions, record_row_key
from shared.storage.changes import (
    CHANGE_END,
    CHANGE_PREFIX,
    ChangeLog,
    is_change_row,
    prune_changes,
    row_keys_of,
    sequenced_key,
    sequences_of,
    stamp,
    tracked,
)
from shared.storage.records import RecordWriter
from shared.storage.tables import TableStore
from tests.support import Api, FakeClock
from tests.test_read_api import read_feed


def _pages(api: Api, iid: str, data_type: str, cursor: str | None, top: int = 50) -> list[dict[str, Any]]:
    """The pages a consumer reads following the cursor to the first empty page."""
    pages: list[dict[str, Any]] = []
    for _ in range(100):
        reply = api.get(f"integrations/{iid}/changes/{data_type}", params={"top": top, **({"cursor": cursor} if cursor else {})})
        assert reply.status == 200, reply.body
        pages.append(reply.body)
        cursor = reply.body["cursor"]
        if not reply.data:
            return pages
    raise AssertionError("never reached an empty page")


def _change_rows(app: App, table: str, iid: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for partition in record_partitions(iid):
        rows += list(app.store.query(table, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                                     parameters={"pk": partition, "low": CHANGE_PREFIX, "high": CHANGE_END}))
    return rows


def test_three_rounds_of_edits_each_followed_to_the_empty_page_at_once(api: Api, sim: BCSimulator, app: App, clock: FakeClock) -> None:
    integration = api.create_integration(sim, entities=["suppliers"])
    iid = integration["id"]
    assert api.sync(iid).status == 200
    vendors = [v["id"] for v in sim.company().records("vendors")]
    first = _pages(api, iid, "suppliers", None, top=20)
    assert sorted(c["externalId"] for p in first for c in p["data"]) == sorted(vendors)
    assert first[-1]["hasMore"] is False and all(p["hasMore"] for p in first[:-2])
    cursor = first[-1]["cursor"]

    rounds = [vendors[0:3], vendors[2:7], vendors[10:11]]  # round 2 edits a record of round 1 again
    for number, edited in enumerate(rounds, start=1):
        sim.advance(5)
        clock.advance(5)  # no waiting period: just the writes' own moment
        for vendor in edited:
            sim.company().update("vendors", vendor, displayName=f"Round {number} {vendor[:8]}")
        assert api.sync(iid, {"mode": "delta"}).data["suppliers"]["updated"] == len(edited)
        pages = _pages(api, iid, "suppliers", cursor)
        # Exactly this round's changes, with their latest content, on the first page; the next
        # page (same request count every round) is empty and says so.
        assert len(pages) == 2 and pages[0]["hasMore"] is False and pages[1]["data"] == []
        assert {c["externalId"]: c["record"]["name"] for c in pages[0]["data"]} == {v: f"Round {number} {v[:8]}" for v in edited}
        assert pages[1]["cursor"] == pages[0]["cursor"]  # nothing new: the cursor stays
        cursor = pages[-1]["cursor"]
    assert _pages(api, iid, "suppliers", cursor)[0]["data"] == []


def test_two_writers_with_skewed_clocks_racing_on_the_same_partitions_lose_and_repeat_nothing(api: Api, sim: BCSimulator, app: App, clock: FakeClock) -> None:
    """Two instances (each its own TableStore and sequence cache, clocks 90 s apart) write the
    same integration's 16 partitions at the same time while a consumer follows the feed."""
    integration = api.create_integration(sim, entities=["suppliers"])
    iid = integration["id"]

    def record(key: str, writer: str) -> dict[str, Any]:
        row_key = record_row_key(key)
        return {"PartitionKey": record_partition(iid, row_key), "RowKey": row_key, "externalId": key, "name": writer,
                "integrationId": iid, "userId": "user-1", "externalSystem": "dynamics_bc", "syncStatus": "synced"}

    stores = [TableStore.from_connection_string(app.settings.tables_connection_string, prefix=app.settings.table_prefix) for _ in range(2)]
    clocks = [FakeClock(clock.now() + timedelta(seconds=45)), FakeClock(clock.now() - timedelta(seconds=45))]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            start.wait()
            for batch in range(6):
                writer = RecordWriter(tracked(stores[number], clocks[number]), "Suppliers")
                for index in range(40):
                    writer.upsert(record(f"w{number}-{batch:02d}-{index:03d}", f"writer {number}"))
                assert writer.flush() == []
                clocks[number].advance(1)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    delivered: list[str] = []
    cursor: str | None = None
    while any(thread.is_alive() for thread in threads):  # the consumer reads while they write
        changes, cursor = read_feed(api, iid, "suppliers", cursor, top=30)
        delivered += [c["externalId"] for c in changes]
    for thread in threads:
        thread.join()
    assert not errors, errors
    changes, cursor = read_feed(api, iid, "suppliers", cursor, top=30)
    delivered += [c["externalId"] for c in changes]

    expected = [f"w{n}-{b:02d}-{i:03d}" for n in range(2) for b in range(6) for i in range(40)]
    assert sorted(delivered) == sorted(expected)  # every change, none twice
    conflicts = sum(sequences_of(store).conflicts for store in stores)
    assert conflicts > 0  # they really raced for the same numbers, and the losers retried
    for partition in record_partitions(iid):  # numbers 1..n without gaps, one per committed transaction
        numbers = [int(str(r["RowKey"])[len(CHANGE_PREFIX) + 1 :]) for r in _change_rows(app, "Suppliers", iid) if r["PartitionKey"] == partition]
        assert numbers == list(range(1, len(numbers) + 1))


def test_a_writer_with_a_stale_sequence_loses_the_race_and_retries(app: App, clock: FakeClock) -> None:
    """Deterministic version of the race: writer A knows number 1, writer B commits number 2,
    A's next transaction fails on the sequence row (412), re-reads it and commits number 3."""
    partition = record_partition("int-race", "x")
    a, b = ChangeLog(clock), ChangeLog(clock)
    assert app.store.write("Race", [("upsert", {"PartitionKey": partition, "RowKey": "a1"})], attach=a) == []
    assert app.store.write("Race", [("upsert", {"PartitionKey": partition, "RowKey": "b1"})], attach=b) == []
    assert app.store.write("Race", [("upsert", {"PartitionKey": partition, "RowKey": "a2"})], attach=a) == []
    assert (a.sequences.conflicts, b.sequences.conflicts) == (1, 0)
    assert (a.sequences.reads, b.sequences.reads) == (2, 1)
    rows = {str(r["RowKey"]): r for r in app.store.query("Race", "PartitionKey eq @pk", parameters={"pk": partition})}
    assert [rows[k]["changeKey"] for k in ("a1", "b1", "a2")] == [sequenced_key(1), sequenced_key(2), sequenced_key(3)]
    assert rows["~s"]["value"] == 3


def test_rows_written_before_sequences_stay_readable_and_come_first(api: Api, sim: BCSimulator, app: App, clock: FakeClock) -> None:
    """Today's `~c|<stamp>|<random>` rows (and records pointing at them) read before the
    numbered ones; a record changed again under a number is delivered once, at its latest."""
    integration = api.create_integration(sim, entities=["suppliers"])
    iid = integration["id"]

    def record(key: str, name: str) -> dict[str, Any]:
        return {"PartitionKey": record_partition(iid, key), "RowKey": key, "externalId": key, "name": name}

    legacy: list[tuple[str, dict[str, Any]]] = []
    old_keys = ["old-a", "old-b", "old-c"]
    for offset, key in enumerate(old_keys):  # as the clock-ordered feed wrote them
        change_key = f"{CHANGE_PREFIX}{stamp(clock.now() - timedelta(hours=1, seconds=-offset))}|0000abcd"
        legacy += [("upsert", {**record(key, "old"), "changeKey": change_key}),
                   ("upsert", {"PartitionKey": record_partition(iid, key), "RowKey": change_key, "k0": key})]
    assert app.store.write("Suppliers", legacy) == []
    before, cursor = read_feed(api, iid, "suppliers")
    assert sorted(c["externalId"] for c in before) == old_keys

    writer = RecordWriter(tracked(app.store, clock), "Suppliers")
    writer.upsert(record("old-b", "renamed"))
    writer.upsert(record("new-d", "new"))
    assert writer.flush() == []
    after, cursor = read_feed(api, iid, "suppliers", cursor)
    assert sorted((c["externalId"], c["record"]["name"]) for c in after) == [("new-d", "new"), ("old-b", "renamed")]
    everything, _ = read_feed(api, iid, "suppliers")  # from the beginning: old rows first, each record once
    assert sorted(c["externalId"] for c in everything) == sorted([*old_keys, "new-d"])
    assert [c["externalId"] for c in everything][:2] == ["old-a", "old-c"]  # old-b moved to its latest change

    old_cursor = seal(app.settings, "changes", iid, "suppliers", {"s": [None] * 16, "a": None})  # the clock-ordered feed's
    reply = api.get(f"integrations/{iid}/changes/suppliers", params={"cursor": old_cursor})
    assert reply.status == 410 and reply.error["code"] == "cursor_expired" and "without a cursor" in reply.error["message"]


def test_retention_prunes_old_rows_and_a_cursor_before_what_is_kept_answers_410(api: Api, sim: BCSimulator, app: App, clock: FakeClock) -> None:
    from shared.runs.housekeeping import housekeeping

    integration = api.create_integration(sim, entities=["suppliers"])
    iid = integration["id"]
    assert api.sync(iid).status == 200
    vendors = [v["id"] for v in sim.company().records("vendors")]
    stale = api.get(f"integrations/{iid}/changes/suppliers", params={"top": 5}).body["cursor"]  # read 5 of 45, then left
    _, caught_up = read_feed(api, iid, "suppliers")
    rows_before = len(_change_rows(app, "Suppliers", iid))

    clock.advance(8 * 86400)  # past CHANGE_FEED_RETENTION_DAYS (7)
    sim.advance(8 * 86400)
    sim.company().update("vendors", vendors[0], displayName="A week later")
    assert api.sync(iid, {"mode": "delta"}).data["suppliers"]["updated"] == 1
    summary = housekeeping(app)
    # Every partition keeps its newest row; the rest of the first sync's rows are gone.
    kept = _change_rows(app, "Suppliers", iid)
    assert summary["changesPruned"] == rows_before + 1 - len(kept) > 0
    assert len(kept) == len({r["PartitionKey"] for r in kept})

    expired = api.get(f"integrations/{iid}/changes/suppliers", params={"cursor": stale})
    assert expired.status == 410 and expired.error["code"] == "cursor_expired"
    assert "without a cursor" in expired.error["message"] and "records API" in expired.error["message"]
    # A consumer that had read everything is not affected: its cursor just goes on.
    changes, _ = read_feed(api, iid, "suppliers", caught_up)
    assert [(c["externalId"], c["record"]["name"]) for c in changes] == [(vendors[0], "A week later")]
    # Recovery: without a cursor, from what is kept (the records API has the rest).
    fresh, _ = read_feed(api, iid, "suppliers")
    assert vendors[0] in {c["externalId"] for c in fresh}
    assert sorted(c["externalId"] for c in fresh) == sorted({key for row in kept for key in row_keys_of(row)})


def test_pruning_respects_its_budget_and_goes_on_later(app: App, clock: FakeClock) -> None:
    partitions = record_partitions("int-prune")
    log = ChangeLog(clock)
    for i in range(30):
        assert app.store.write("Prune", [("upsert", {"PartitionKey": partitions[i % 3], "RowKey": f"r{i:02d}"})], attach=log) == []
    cutoff = clock.now() + timedelta(seconds=1)
    first = prune_changes(app.store, ["Prune"], partitions, cutoff, max_rows=5)
    assert (first.removed, first.complete) == (5, False)
    rest = prune_changes(app.store, ["Prune"], partitions, cutoff)
    assert (rest.removed, rest.complete) == (30 - 5 - 3, True)  # each partition keeps its newest row
    left = [r for r in app.store.query("Prune", "PartitionKey ne @none", parameters={"none": ""}) if is_change_row(str(r["RowKey"]))]
    assert sorted(str(r["RowKey"]) for r in left if r["RowKey"] != "~s") == [sequenced_key(10)] * 3
    out_of_time = prune_changes(app.store, ["Prune"], partitions, cutoff, deadline=clock.monotonic(), monotonic=clock.monotonic)
    assert (out_of_time.removed, out_of_time.complete, out_of_time.partitions) == (0, False, 0)
