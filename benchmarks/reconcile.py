"""Reconcile speed and memory on a big company: real Azurite, the simulator over HTTPS in its own
process, ids in BC's SQL Server order. `python -m benchmarks.reconcile [--items 100000]
[--pipeline-ids 1000000]`.

End to end: the stored side is seeded in a child process (every BC item but `--missing`, plus
`--deleted` records BC does not have), so this process's peak RSS is the reconcile's own; the
run restores the missing ones and flags the deleted ones.

`--pipeline-ids N` also measures what grows with the number of ids, at sizes the end-to-end run
cannot reach on Azurite (it evaluates every range query by scanning the table): N BC-like
sequential ids hashed into runs, spilled to and loaded from the scratch table in Azurite,
merged, and N + `--deleted` stored keys checked against them; time per stage and peak memory
(tracemalloc and RSS). Prints figures; asserts only that the counts are exact."""
from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
import uuid

from devtools.azurite import AzuriteServer
from devtools.bcsim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT_ID


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _integration(app: object, company: str, integration_id: str) -> object:
    from shared.storage.integrations import Integration

    integration = Integration(
        id=integration_id, userId="bench-user", name="bench", tenantId=DEMO_TENANT_ID,
        companyId=company, clientId=DEMO_CLIENT_ID, entities=["products"], lastSyncedAt="2024-01-01T00:00:00Z",
    )
    integration.clientSecretEnc = app.box.encrypt(DEMO_CLIENT_SECRET, context=integration.secret_context)  # type: ignore[attr-defined]
    return integration


def seed(company: str, integration_id: str, deleted: int, missing: int) -> None:
    """Child process: store a minimal record for every BC item id but `missing` of them, and
    `deleted` more that BC lacks."""
    from shared.app import App
    from shared.keys import record_partition, record_row_key
    from shared.settings import load_settings

    app = App(load_settings())
    integration = _integration(app, company, integration_id)
    client = app.bc_client(integration)  # type: ignore[arg-type]

    def row(external_id: str) -> dict[str, str]:
        key = record_row_key(external_id)
        return {"PartitionKey": record_partition(integration_id, key), "RowKey": key, "externalId": external_id,
                "integrationId": integration_id, "userId": "bench-user", "syncStatus": "synced"}

    skipped = 0
    for page in client.pages("items", select=["id"], orderby="id"):
        ids = [r["id"] for r in page.records]
        if skipped < missing:
            take = min(missing - skipped, len(ids) // 2)
            ids, skipped = ids[take:], skipped + take
        failures = app.store.write("Products", [("upsert", row(i)) for i in ids])
        assert not failures, failures[:1]
    app.store.write("Products", [("upsert", row(str(uuid.uuid4()))) for _ in range(deleted)])
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000, help="items in the generated company")
    parser.add_argument("--deleted", type=int, default=1000, help="stored records BC no longer has")
    parser.add_argument("--missing", type=int, default=100, help="BC items not stored (restored by the reconcile)")
    parser.add_argument("--page-size", type=int, default=1000, help="BC_PAGE_SIZE")
    parser.add_argument("--pipeline-ids", type=int, default=0, help="also measure the id pipeline alone at this many ids")
    args = parser.parse_args()

    started = time.perf_counter()
    sim = subprocess.Popen(
        [sys.executable, "-m", "devtools.bcsim", "--bulk-items", str(args.items), "--id-order", "sql"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    with AzuriteServer() as azurite:
        info = json.loads(sim.stdout.readline())  # type: ignore[union-attr]
        company = info["company_id"]
        print(f"generated {args.items} items in a simulator process in {time.perf_counter() - started:.1f}s")
        os.environ.update(
            {
                "AzureWebJobsStorage": azurite.connection_string,
                "TABLES_CONNECTION_STRING": azurite.connection_string,
                "TABLE_PREFIX": "bench" + uuid.uuid4().hex[:8],
                "SYNC_QUEUE_NAME": "bench-" + uuid.uuid4().hex[:8],
                "BC_API_BASE_URL": info["base_url"],
                "AZURE_AUTHORITY_HOST": info["base_url"],
                "CREDENTIALS_KEY": base64.b64encode(os.urandom(32)).decode(),
                "SSL_CERT_FILE": info["ca_path"],
                "REQUESTS_CA_BUNDLE": info["ca_path"],
                "BC_PAGE_SIZE": str(args.page_size),
                "BC_REQUESTS_PER_5_MINUTES": "1000000",
            }
        )
        integration_id = str(uuid.uuid4())
        started = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(target=seed, args=(company, integration_id, args.deleted, args.missing))
        child.start()
        child.join()
        assert child.exitcode == 0, "seeding failed"
        print(f"stored {args.items - args.missing + args.deleted} records (in a child process) in {time.perf_counter() - started:.1f}s")

        from shared.app import App
        from shared.runs.dispatch import RunRequest, start_run
        from shared.runs.slices import run_slice
        from shared.settings import load_settings

        app = App(load_settings())
        integration = _integration(app, company, integration_id)
        app.integrations.upsert(integration)  # type: ignore[arg-type]
        baseline = rss_mb()
        started_run = start_run(app, integration, RunRequest(mode="reconcile"), enqueue=False)  # type: ignore[arg-type]
        began = time.perf_counter()
        outcome = run_slice(app, started_run.integration, started_run.run, budget_seconds=3600)
        elapsed = time.perf_counter() - began
        progress = outcome.run.progress["products"]  # type: ignore[union-attr]
        print(f"{'run':<12}{'seconds':>9}{'ids/s':>9}{'ids read':>10}{'flagged':>9}{'restored':>9}{'BC GETs':>9}{'RSS before MB':>15}{'peak RSS MB':>13}")
        print(f"{'reconcile':<12}{elapsed:>9.2f}{progress.read / elapsed:>9.0f}{progress.read:>10}{progress.deleted:>9}{progress.restored:>9}"
              f"{outcome.run.bcRequests:>9}{baseline:>15.0f}{rss_mb():>13.0f}")  # type: ignore[union-attr]
        from shared.storage.records import LOOKUP_STATS

        print(f"stored-record lookups: {LOOKUP_STATS.per_page():.1f} storage queries per BC page of ids")
        completeness = (app.integrations.get("bench-user", integration_id).completeness or {})["products"]  # type: ignore[union-attr]
        print(f"completeness: {completeness}")
        assert outcome.run.status == "succeeded" and progress.deleted == args.deleted, outcome.run  # type: ignore[union-attr]
        assert progress.restored == args.missing and completeness["storedCount"] == completeness["bcCount"] == args.items
        if args.pipeline_ids:
            pipeline(app, args.pipeline_ids, args.deleted)
        sim.stdin.close()  # type: ignore[union-attr]
        sim.wait(timeout=10)


def pipeline(app: object, count: int, deleted: int) -> None:
    """The reconcile's id structures at `count` ids, through its own functions and Azurite."""
    import random
    import tracemalloc
    from array import array

    from shared.entities import ENTITY_TYPES
    from shared.keys import record_row_key
    from shared.sync import reconcile

    rng = random.Random(5)
    tail = f"{rng.getrandbits(16) | 0x8000:04x}-{rng.getrandbits(48):012x}"
    start = rng.getrandbits(56) << 8

    def bc_id(n: int) -> str:  # sequential as BC hands them out: the first byte changes fastest
        b = (start + n).to_bytes(8, "little").hex()
        return f"{b[0:8]}-{b[8:12]}-{b[12:16]}-{tail}"

    class Sink:
        keep_alive = staticmethod(lambda: None)

    pass_ = reconcile.ReconcilePass.__new__(reconcile.ReconcilePass)  # only its id machinery is used
    pass_.store, pass_.run_id = app.store, "bench"  # type: ignore[attr-defined]
    pass_.scratch_partition = f"bench|{uuid.uuid4().hex[:8]}"
    pass_.entity = ENTITY_TYPES["products"]
    progress = reconcile.Progress()
    began = time.perf_counter()
    run = array("Q")
    for n in range(count):
        run.append(reconcile.id_hash(record_row_key(bc_id(n))))
        if len(run) >= reconcile.CHECKPOINT_IDS:
            pass_._spill(run, progress)
            run = array("Q")
    pass_._spill(run, progress)
    hashed = time.perf_counter()
    merged = pass_._load_runs(progress)
    loaded = time.perf_counter()
    present = sum(reconcile._contains(merged, reconcile.id_hash(record_row_key(bc_id(n)))) for n in range(count))
    absent = sum(not reconcile._contains(merged, reconcile.id_hash(record_row_key(str(uuid.uuid4())))) for _ in range(deleted))
    checked = time.perf_counter()
    del merged
    tracemalloc.start()  # the peak structure again, traced (tracing slows the timed run, so apart)
    merged = pass_._load_runs(progress)
    sum(reconcile._contains(merged, reconcile.id_hash(record_row_key(bc_id(n)))) for n in range(0, count, 97))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    pass_._clear_scratch()
    print(f"id pipeline, {count:,} ids in {progress.runs} runs: hash + sort + spill {hashed - began:.1f}s, load + merge {loaded - hashed:.1f}s, "
          f"{count + deleted:,} stored keys checked {checked - loaded:.1f}s; merged array {merged.itemsize * len(merged) / 1e6:.1f} MB, "
          f"tracemalloc peak of load + merge + checks {peak / 1e6:.1f} MB ({peak / count:.1f} bytes per id), peak RSS {rss_mb():.0f} MB; "
          f"BC requests for the ids at pages of 1,000: {-(-count // 1000):,}")
    assert present == count and absent == deleted


if __name__ == "__main__":
    main()
