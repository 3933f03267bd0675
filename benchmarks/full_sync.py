"""Full-sync throughput against the Azurite write ceiling measured in the same run.

    python -m benchmarks.full_sync [--items 10000] [--vendors 10000] [--order sql|text] [--profile]

The ceiling (design.md §5): raw transactions of 100 entities of ~10 properties through the
azure-data-tables SDK's aio `submit_transaction`, 8 in flight, spread over as many partitions as
an integration's records, for as many entities as the company has records: what the storage
takes, independent of this project's code. The project's own writer (TableStore.write, which
builds the transactions itself) is measured on the same entities and printed beside it. Then three runs of
suppliers + products through shared.runs (start_run + one run_slice, as a synchronous HTTP
sync): full on an empty platform, full again (nothing changed), and a delta after 100 items
changed in BC. `--order sql` (the default) has the simulator return ids as BC does (SQL
Server's uniqueidentifier order), `--order text` the other reading. Prints figures, including
the storage queries the stored-record lookups cost per BC page; asserts nothing."""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import ssl
import time
import urllib.request
import uuid
from typing import Any

from benchmarks.support import Meter, azurite_table_pid, configure, metered, new_integration, run_once, simulator
from devtools.azurite import AzuriteServer

CEILING_TABLE = "BenchCeiling"
CEILING_CALL = 10_000  # entities per TableStore.write call (100 transactions)
CHANGED_FOR_DELTA = 100


def ceiling_entities(count: int, partitions: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` upserts of 10 properties each (7 strings, a number, a float, a flag)."""
    run = uuid.uuid4().hex[:8]
    ops = []
    for i in range(count):
        ops.append(("upsert", {
            "PartitionKey": f"{run}|{i % partitions:02d}", "RowKey": f"{i:010d}",
            "number": f"ITEM-{i:07d}", "name": f"Bench item number {i}", "type": "Inventory",
            "category": "CHAIR", "unit": "PCS", "gtin": f"{7350000000000 + i}", "externalId": str(uuid.uuid4()),
            "unitPrice": 12.5 + i % 100, "inventory": i % 50, "blocked": False,
        }))
    return ops


def measure_ceiling(app: Any, count: int, partitions: int) -> float:
    ops = ceiling_entities(count, partitions)
    app.store.table(CEILING_TABLE)  # created before the clock starts
    started = time.perf_counter()
    failures = 0
    for start in range(0, len(ops), CEILING_CALL):
        failures += len(app.store.write(CEILING_TABLE, ops[start : start + CEILING_CALL]))
    elapsed = time.perf_counter() - started
    if failures:
        print(f"  ceiling: {failures} entities refused")
    return count / elapsed


def measure_sdk_ceiling(connection_string: str, table: str, count: int, partitions: int, concurrency: int = 8) -> float:
    """The storage ceiling through the SDK alone (transactions of 100, `concurrency` in flight)."""
    import asyncio
    from collections import defaultdict

    from azure.data.tables.aio import TableServiceClient

    by_partition: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, entity in ceiling_entities(count, partitions):
        by_partition[entity["PartitionKey"]].append(entity)
    chunks = [rows[i : i + 100] for rows in by_partition.values() for i in range(0, len(rows), 100)]

    async def write() -> None:
        async with TableServiceClient.from_connection_string(connection_string) as service:
            client = service.get_table_client(table)
            slots = asyncio.Semaphore(concurrency)

            async def send(chunk: list[dict[str, Any]]) -> None:
                async with slots:
                    await client.submit_transaction([("upsert", entity, {"mode": "replace"}) for entity in chunk])

            await asyncio.gather(*(send(chunk) for chunk in chunks))

    started = time.perf_counter()
    asyncio.run(write())
    return count / (time.perf_counter() - started)


def measure_records_ceiling(app: Any, table: str, count: int, node: int) -> tuple[float, Meter]:
    """The same ceiling with the stored records themselves (their ~20 properties), rewritten
    into a fresh table: what the records' extra properties cost the writer."""
    rows = app.store.query(table, "PartitionKey ne @none", parameters={"none": ""}, page_size=1000)
    ops = [("upsert", dict(row)) for _, row in zip(range(count), rows)]
    copy = f"{CEILING_TABLE}Records"
    app.store.table(copy)
    with metered(node) as meter:
        for start in range(0, len(ops), CEILING_CALL):
            app.store.write(copy, ops[start : start + CEILING_CALL])
    return len(ops) / meter.wall, meter


class StageTimes:
    """Where a pass's time goes, by wrapping the stages in this process only: the map runs on
    the sync thread (while the previous page is written), the stored lookup beside it, the
    write on the pass's write-behind thread, and `wait` is the sync thread waiting for a write
    to be durable."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"map": 0.0, "lookup": 0.0, "write": 0.0, "wait": 0.0}

    def install(self) -> "StageTimes":
        import shared.sync.stages as engine
        from shared.storage.records import StoredLookup
        from shared.sync import behind
        from shared.sync.stages import WriteStage

        def timed(stage: str, fn: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.seconds[stage] += time.perf_counter() - started
            return wrapper

        engine.map_record = timed("map", engine.map_record)  # type: ignore[attr-defined]
        StoredLookup.lookup = timed("lookup", StoredLookup.lookup)  # type: ignore[method-assign]
        WriteStage.run = timed("write", WriteStage.run)  # type: ignore[method-assign]
        behind._Staged.wait = timed("wait", behind._Staged.wait)  # type: ignore[method-assign]  # noqa: SLF001
        return self

    def take(self) -> dict[str, float]:
        taken, self.seconds = self.seconds, {k: 0.0 for k in self.seconds}
        return taken


def property_count(app: Any, table: str, sample: int = 2000) -> float:
    """Average properties per stored entity (PartitionKey and RowKey included)."""
    rows = app.store.query(table, "PartitionKey ne @none", parameters={"none": ""}, page_size=1000)
    total = seen = 0
    for row in rows:
        total += len(row)
        seen += 1
        if seen >= sample:
            break
    return total / max(1, seen)


def change_items(app: Any, sim: Any, count: int) -> int:
    """Change `count` items in BC through the simulator's control API (their price)."""
    rows = app.store.query("Products", "PartitionKey ne @none and RowKey lt @end", parameters={"none": "", "end": "~c|"},  # records, not change rows
                           select=["externalId"], page_size=count)
    context = ssl.create_default_context(cafile=sim.info["ca_path"])
    changed = 0
    for row in rows:
        url = f"{sim.info['base_url']}/_sim/companies/{sim.company_id}/items/{row['externalId']}"
        body = json.dumps({"unitPrice": 99.5 + changed}).encode()
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=30) as reply:
            reply.read()
        changed += 1
        if changed >= count:
            break
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10000, help="items in the generated company")
    parser.add_argument("--vendors", type=int, default=10000, help="vendors in the generated company")
    parser.add_argument("--order", choices=["sql", "text"], default="sql", help="how the simulator orders GUIDs ($orderby=id)")
    parser.add_argument("--page-size", type=int, default=1000, help="BC_PAGE_SIZE")
    parser.add_argument("--profile", action="store_true", help="cProfile the first full sync and print the top functions")
    args = parser.parse_args()

    from shared.app import App
    from shared.keys import RECORD_PARTITIONS
    from shared.settings import load_settings
    from shared.storage.records import LOOKUP_STATS

    started = time.perf_counter()
    records = args.items + args.vendors
    with simulator(args.items, bulk_vendors=args.vendors, id_order=args.order) as sim, AzuriteServer() as azurite:
        print(f"generated {args.items} items and {args.vendors} vendors in a simulator process (ids in {args.order} order); "
              f"Azurite up in {time.perf_counter() - started:.1f}s")
        configure(azurite, sim, BC_PAGE_SIZE=str(args.page_size))
        app = App(load_settings())
        node = azurite_table_pid(azurite)
        integration = new_integration(app, sim.company_id, ["suppliers", "products"])
        stages = StageTimes().install()

        sdk_table = app.store.table(CEILING_TABLE + "Sdk").table_name  # created (with the prefix) before the clock starts

        def ceiling() -> tuple[float, Meter]:
            with metered(node) as meter:
                rate = measure_sdk_ceiling(azurite.connection_string, sdk_table, records, RECORD_PARTITIONS)
            return rate, meter

        print(f"storage ceiling: {records} entities of 10 properties, transactions of 100 over {RECORD_PARTITIONS} partitions, "
              f"8 in flight through the azure-data-tables SDK (aio submit_transaction); measured before and after the first full sync")
        print(f"{'phase':<28}{'seconds':>8}{'per s':>8}{'created':>9}{'updated':>9}{'unchanged':>10}{'BC GETs':>8}"
              f"{'CPU s':>7}{'Azurite CPU ms/1k':>19}")

        def row(label: str, meter: Meter, count: int, extra: str) -> None:
            print(f"{label:<28}{meter.wall:>8.2f}{count / meter.wall:>8.0f}{extra}{meter.cpu:>7.1f}"
                  f"{meter.azurite_cpu * 1e6 / max(1, count):>19.0f}")

        blank = f"{'':>9}{'':>9}{'':>10}{'':>8}"
        before, before_meter = ceiling()
        row("ceiling (before)", before_meter, records, blank)
        rates: dict[str, float] = {}
        meters: dict[str, Meter] = {}
        profile_text = ""
        for label, mode in (("full (empty platform)", "full"), ("full again (no change)", "full"), (f"delta ({CHANGED_FOR_DELTA} changed)", "delta")):
            if mode == "delta":
                change_items(app, sim, CHANGED_FOR_DELTA)
            profiler = cProfile.Profile() if args.profile and not rates else None
            LOOKUP_STATS.reset()
            with metered(node) as meter:
                if profiler:
                    profiler.enable()
                run, _ = run_once(app, integration, mode)
                if profiler:
                    profiler.disable()
            spent = stages.take()
            kinds = [run.progress[key] for key in ("suppliers", "products")]
            created, updated, unchanged = (sum(getattr(p, name) for p in kinds) for name in ("created", "updated", "unchanged"))
            errors = sum(p.errors for p in kinds)
            total = created + updated + unchanged
            rates[label] = total / meter.wall
            meters[label] = meter
            row(label, meter, total, f"{created:>9}{updated:>9}{unchanged:>10}{run.bcRequests:>8}")
            if errors or run.status != "succeeded":
                print(f"    {run.status}: {errors} errors {run.error or ''}")
            print(f"    stored-record lookups: {LOOKUP_STATS.pages} BC pages, {LOOKUP_STATS.range_queries} range queries + "
                  f"{LOOKUP_STATS.point_reads} point reads = {LOOKUP_STATS.per_page():.1f} storage queries per BC page")
            print(f"    sync thread: map {spent['map']:.1f}s (the stored lookup, {spent['lookup']:.1f}s, runs meanwhile), waiting for writes {spent['wait']:.1f}s; "
                  f"write-behind thread: writing {spent['write']:.1f}s of {meter.wall:.1f}s; CPU {meter.cpu * 1000 / max(1, total):.3f} ms per record")
            if profiler:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
                profile_text = out.getvalue()
            if label.startswith("full (empty"):
                after, after_meter = ceiling()
                row("ceiling (after)", after_meter, records, blank)
        with metered(node) as own_meter:
            own_writer = measure_ceiling(app, records, RECORD_PARTITIONS)
        row("this project's writer, raw", own_meter, records, blank)
        records_ceiling, meter = measure_records_ceiling(app, "Products", args.items, node)
        row("ceiling, stored products", meter, args.items, blank)
        first = rates["full (empty platform)"]
        mean = (before + after) / 2
        print(f"first full sync {first:,.0f} records/s; ceiling {before:,.0f} before, {after:,.0f} after (mean {mean:,.0f}) entities/s: "
              f"ratio {first / mean:.2f}")
        print(f"re-sync with nothing changed: {rates['full again (no change)']:,.0f} records/s")
        print(f"this project's writer on the ceiling's entities: {own_writer:,.0f} entities/s, {own_writer / mean:.2f} of the SDK ceiling")
        sync_cpu = meters["full (empty platform)"]
        ceiling_cpu = [before_meter, after_meter]
        own_ceiling = sum(m.cpu for m in ceiling_cpu) / (2 * records)
        own_sync = sync_cpu.cpu / records
        print(f"CPU ms per entity, this process (process CPU time / entities): ceiling {own_ceiling * 1000:.3f}, "
              f"first full sync {own_sync * 1000:.3f}; Azurite: ceiling {sum(m.azurite_cpu for m in ceiling_cpu) * 1000 / (2 * records):.3f}, "
              f"first full sync {sync_cpu.azurite_cpu * 1000 / records:.3f}")
        per_entity = sum(m.cpu + m.azurite_cpu for m in ceiling_cpu) / (2 * records)
        per_record = (sync_cpu.cpu + sync_cpu.azurite_cpu) / records
        print(f"CPU per entity (this process + Azurite): ceiling {per_entity * 1000:.2f} ms, first full sync {per_record * 1000:.2f} ms: "
              f"ratio {per_entity / per_record:.2f} (what the throughput ratio tends to when the machine is CPU-bound)")
        print(f"the stored products rewritten raw: {records_ceiling:,.0f} entities/s, {records_ceiling / mean:.2f} of the 10-property ceiling")
        print(f"properties per entity (PartitionKey, RowKey included): stored products {property_count(app, 'Products'):.1f}, "
              f"ceiling entities {property_count(app, CEILING_TABLE):.1f}")
        if profile_text:
            print(profile_text)


if __name__ == "__main__":
    main()
