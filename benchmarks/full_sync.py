"""Full-sync speed and memory on a generated company: real Azurite, the simulator over HTTPS.

Prints figures; asserts nothing. The write ceiling to compare with (design.md §5, this machine):
~2,800 entities/s for batched transactions synchronously, ~3,600/s async with 8 in flight."""
from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import subprocess
import sys
import time
import uuid

from devtools.azurite import AzuriteServer
from devtools.bcsim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT_ID
from shared.app import App
from shared.settings import load_settings
from shared.storage.integrations import Integration
from shared.sync.runner import SyncRequest, SyncRunner


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20000, help="items in the generated company")
    parser.add_argument("--page-size", type=int, default=1000, help="BC_PAGE_SIZE")
    args = parser.parse_args()

    started = time.perf_counter()
    # The simulator runs in its own process, as BC would: its CPU is not charged to the sync.
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
                "TABLES_CONNECTION_STRING": azurite.connection_string,
                "TABLE_PREFIX": "bench" + uuid.uuid4().hex[:8],
                "BC_API_BASE_URL": info["base_url"],
                "AZURE_AUTHORITY_HOST": info["base_url"],
                "CREDENTIALS_KEY": base64.b64encode(os.urandom(32)).decode(),
                "SSL_CERT_FILE": info["ca_path"],
                "REQUESTS_CA_BUNDLE": info["ca_path"],
                "BC_PAGE_SIZE": str(args.page_size),
                "SYNC_HTTP_BUDGET_SECONDS": "3600",
            }
        )
        app = App(load_settings())
        integration = Integration(
            id=Integration.new_id(), userId="bench-user", name="bench", tenantId=DEMO_TENANT_ID,
            companyId=company, clientId=DEMO_CLIENT_ID, entities=["products"],
        )
        integration.clientSecretEnc = app.box.encrypt(DEMO_CLIENT_SECRET, context=integration.secret_context)
        app.integrations.upsert(integration)
        runner = SyncRunner(app)
        print(f"{'run':<26}{'seconds':>9}{'records/s':>11}{'created':>9}{'updated':>9}{'unchanged':>11}{'BC GETs':>9}{'peak RSS MB':>13}")
        for label, request in (
            ("full (empty platform)", SyncRequest(mode="full")),
            ("full again (no change)", SyncRequest(mode="full")),
            ("delta (no change)", SyncRequest(mode="delta")),
        ):
            started = time.perf_counter()
            outcome = runner.sync(integration, request, budget_seconds=3600)
            elapsed = time.perf_counter() - started
            counts = outcome.types["products"].result
            total = counts.created + counts.updated + counts.unchanged
            gets = outcome.bc_requests
            print(f"{label:<26}{elapsed:>9.2f}{total / elapsed:>11.0f}{counts.created:>9}{counts.updated:>9}{counts.unchanged:>11}{gets:>9}{rss_mb():>13.0f}")
        sim.stdin.close()  # type: ignore[union-attr]
        sim.wait(timeout=10)
        print("ceiling for writes on this machine (design.md): ~2,800/s sync batches, ~3,600/s async x8")


if __name__ == "__main__":
    main()
