"""Reconcile (delete detection) speed and memory on a big company: real Azurite, the simulator
over HTTPS in its own process. `python -m benchmarks.reconcile [--items 100000]`.

The stored side is seeded in a child process (every BC item plus `--deleted` records BC does
not have), so this process's peak RSS is the reconcile's own. Prints figures; asserts nothing
except that exactly the `--deleted` records were flagged."""
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


def seed(company: str, integration_id: str, deleted: int) -> None:
    """Child process: store a minimal record for every BC item id, and `deleted` more that BC lacks."""
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

    for page in client.pages("items", select=["id"], orderby="id"):
        failures = app.store.write("Products", [("upsert", row(r["id"])) for r in page.records])
        assert not failures, failures[:1]
    app.store.write("Products", [("upsert", row(str(uuid.uuid4()))) for _ in range(deleted)])
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000, help="items in the generated company")
    parser.add_argument("--deleted", type=int, default=1000, help="stored records BC no longer has")
    parser.add_argument("--page-size", type=int, default=1000, help="BC_PAGE_SIZE")
    args = parser.parse_args()

    started = time.perf_counter()
    sim = subprocess.Popen(
        [sys.executable, "-m", "devtools.bcsim", "--bulk-items", str(args.items)],
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
        child = multiprocessing.get_context("spawn").Process(target=seed, args=(company, integration_id, args.deleted))
        child.start()
        child.join()
        assert child.exitcode == 0, "seeding failed"
        print(f"stored {args.items + args.deleted} records (in a child process) in {time.perf_counter() - started:.1f}s")

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
        print(f"{'run':<12}{'seconds':>9}{'ids/s':>9}{'ids read':>10}{'flagged':>9}{'BC GETs':>9}{'RSS before MB':>15}{'peak RSS MB':>13}")
        print(f"{'reconcile':<12}{elapsed:>9.2f}{progress.read / elapsed:>9.0f}{progress.read:>10}{progress.deleted:>9}"
              f"{outcome.run.bcRequests:>9}{baseline:>15.0f}{rss_mb():>13.0f}")  # type: ignore[union-attr]
        assert outcome.run.status == "succeeded" and progress.deleted == args.deleted, outcome.run  # type: ignore[union-attr]
        sim.stdin.close()  # type: ignore[union-attr]
        sim.wait(timeout=10)


if __name__ == "__main__":
    main()
