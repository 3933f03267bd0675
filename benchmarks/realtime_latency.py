"""Realtime latency: from BC's notification arriving at the function app to the record stored.

Real Azurite, the simulator over HTTPS with a short batching delay, the function folders served
over HTTP by devtools/funchost.py with the runs queue worker (queues=True), exactly the path of
production: simulator -> bc_notifications -> runs queue -> sync_worker -> Table Storage.
Prints the median and worst over N changes; asserts nothing. Aim: under 10 s."""
from __future__ import annotations

import argparse
import base64
import os
import statistics
import threading
import time
import uuid

import httpx

from devtools.azurite import AzuriteServer
from devtools.bcsim import DEMO_COMPANY_ID, BCSimulator
from devtools.funchost import FunctionHost
from tests.support import ROOT, integration_body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--delay", type=float, default=1.0, help="the simulator's batching delay (BC: ~30 s)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between two changes in BC")
    args = parser.parse_args()

    with AzuriteServer() as azurite, BCSimulator(seed=7) as sim:
        sim.seed_company_bulk(DEMO_COMPANY_ID, "vendors", max(0, args.changes - 45))  # the demo has 45
        tag = uuid.uuid4().hex[:10]
        os.environ.update({
            "AzureWebJobsStorage": azurite.connection_string, "TABLES_CONNECTION_STRING": azurite.connection_string,
            "TABLE_PREFIX": "rt" + tag, "SYNC_QUEUE_NAME": "rt-" + tag, "BC_API_BASE_URL": sim.base_url,
            "AZURE_AUTHORITY_HOST": sim.base_url, "SSL_CERT_FILE": sim.ca_path, "REQUESTS_CA_BUNDLE": sim.ca_path,
            "CREDENTIALS_KEY": base64.b64encode(os.urandom(32)).decode(),
        })
        host = FunctionHost(ROOT, queues=True).start()
        os.environ["PUBLIC_BASE_URL"] = host.base_url  # http to loopback: tests only, BC needs https
        sim.webhooks.delay_seconds = args.delay
        api = httpx.Client(base_url=host.base_url + "/api", headers={"X-MS-CLIENT-PRINCIPAL-ID": "bench"}, timeout=120)
        created = api.post("/integrations", json=integration_body(entities=["suppliers"], realtime=True)).json()["data"]
        assert created["realtime"]["subscriptions"]["suppliers"]["status"] == "active", created["realtime"]
        assert api.post(f"/integrations/{created['id']}/dynamics/sync").status_code == 200
        from shared.app import get_app

        app = get_app()
        vendors = sim.company().records("vendors")[: args.changes]  # one change per record: each is observable
        expected = {v["id"]: f"Realtime change {n}" for n, v in enumerate(vendors)}
        changed_at: dict[str, float] = {}
        stored_at: dict[str, float] = {}
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                for row in app.store.query("Suppliers", "integrationId eq @id", parameters={"id": created["id"]}, select=["externalId", "name"]):
                    key = row["externalId"]
                    if key in changed_at and key not in stored_at and row.get("name") == expected[key]:
                        stored_at[key] = time.time()
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.time()
        for vendor in vendors:
            changed_at[vendor["id"]] = time.time()
            sim.company().update("vendors", vendor["id"], displayName=expected[vendor["id"]])
            time.sleep(args.interval)
        deadline = time.time() + 120
        while time.time() < deadline and len(stored_at) < len(vendors):
            time.sleep(0.1)
        done.set()
        sim.webhooks.wait_idle(30)
        deliveries = sorted(sim.webhooks.deliveries, key=lambda d: d.sent)
        latencies, end_to_end = [], []
        for key, at in changed_at.items():
            stored = stored_at.get(key)
            arrival = next((d.sent for d in deliveries if d.sent >= at), None)  # the batch that carried it
            if stored is None or arrival is None:
                print(f"change of {key}: not stored within the deadline")
                continue
            latencies.append(max(0.0, stored - arrival))
            end_to_end.append(stored - at)
        runs = app.runs.list(created["id"], top=1000, continuation_token=None)[0]
        print(f"{args.changes} changes over {time.time() - started:.1f}s, batching delay {args.delay}s; "
              f"{len(deliveries)} notifications ({[d.status for d in deliveries].count(202)} answered 202), "
              f"{sum(1 for r in runs if r.trigger == 'notification')} notification runs")
        if latencies:
            print(f"notification arrival -> record stored: median {statistics.median(latencies):.2f}s, "
                  f"worst {max(latencies):.2f}s over {len(latencies)} changes")
            print(f"change in BC -> record stored (includes the batching delay): median {statistics.median(end_to_end):.2f}s, "
                  f"worst {max(end_to_end):.2f}s")
        host.stop()


if __name__ == "__main__":
    main()
