"""Many small integrations synced through the runs queue by parallel workers.

    python -m benchmarks.queue_workers [--integrations 200] [--workers 8]

200 users each connect the simulator's small company (CRONUS USA, the demo credential) with
entities ["suppliers"]. The local Functions host (devtools.funchost, queue triggers served from
Azurite's queue as the real host does) works the queue with the listener's batch size set to
`--workers`. Each integration gets one `POST .../dynamics/sync` with `Prefer: respond-async`
over HTTP (from `--clients` callers at once); the wall time runs from the first request to the last run's finishedAt. The
simulator runs in its own process with a probe that counts BC requests and the most in flight
at once (benchmarks.simprobe). Every integration shares one BC credential, so its budget
(BC_MAX_IN_FLIGHT, BC_REQUESTS_PER_5_MINUTES) holds them all. Prints figures; asserts nothing."""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.support import StorageCounter, configure, describe, new_integration, simulator
from devtools.azurite import AzuriteServer
from devtools.bcsim import DEMO_US_COMPANY_ID

ROOT = Path(__file__).resolve().parent.parent


def request_async_sync(base_url: str, integration: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{base_url}/api/integrations/{integration.id}/dynamics/sync", data=b"{}", method="POST",
        headers={"X-MS-CLIENT-PRINCIPAL-ID": integration.userId, "Prefer": "respond-async", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--integrations", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8, help="queue listener batch size (messages worked at once)")
    parser.add_argument("--clients", type=int, default=8, help="callers sending the async requests at once")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    import devtools.queuehost as queuehost
    from devtools.funchost import FunctionHost
    from shared.app import App
    from shared.clock import parse_iso
    from shared.settings import load_settings

    with simulator(module="benchmarks.simprobe") as sim, AzuriteServer() as azurite:
        configure(azurite, sim)
        app = App(load_settings())
        integrations = [new_integration(app, DEMO_US_COMPANY_ID, ["suppliers"], user=f"bench-user-{i:03d}", name=f"Company {i}")
                        for i in range(args.integrations)]
        print(f"{len(integrations)} integrations of one credential, entities [suppliers], company CRONUS USA; "
              f"BC_MAX_IN_FLIGHT {app.settings.bc_max_in_flight}, BC_REQUESTS_PER_5_MINUTES {app.settings.bc_requests_per_5_minutes}")

        from_host_json = queuehost.QueueOptions.from_host_json  # host.json says 4; this run asks for --workers
        queuehost.QueueOptions.from_host_json = classmethod(  # type: ignore[method-assign]
            lambda cls, root: dataclasses.replace(from_host_json(root), batch_size=args.workers))
        host = FunctionHost(ROOT, queues=True).start()
        try:
            worker = next(listener for listener in host.listeners if listener.function == "sync_worker")
            print(f"local host at {host.base_url}, sync_worker batch size {worker._options.batch_size}")  # noqa: SLF001
            sim.command("reset")
            counter = StorageCounter().watch(azurite)  # this process: the host's HTTP functions and workers
            t0 = datetime.now(timezone.utc)
            started = time.perf_counter()
            statuses: Counter[int] = Counter()
            run_ids = {}
            with ThreadPoolExecutor(max_workers=args.clients) as callers:
                answers = list(callers.map(lambda i: request_async_sync(host.base_url, i), integrations))
            for integration, (status, body) in zip(integrations, answers):
                statuses[status] += 1
                if status == 202:
                    run_ids[integration.id] = body["data"]["runId"]
            posted = time.perf_counter() - started
            print(f"{len(integrations)} async requests from {args.clients} callers answered in {posted:.1f}s: {dict(statuses)}")

            runs: list[Any] = []
            storage: Counter[tuple[str, str]] = Counter()
            deadline = time.perf_counter() + args.timeout
            while time.perf_counter() < deadline:
                time.sleep(1.0)
                if worker.idle and worker._client.get_queue_properties().approximate_message_count == 0:  # noqa: SLF001
                    storage = counter.snapshot()  # before this check's own reads of the runs
                    runs = [app.runs.get(i.id, run_ids[i.id]) for i in integrations if i.id in run_ids]
                    if all(r is not None and not r.active for r in runs):
                        break
            probe = sim.command("stats")
        finally:
            host.stop()

        finished = [r for r in runs if r is not None and r.finishedAt]
        if not finished:
            print("no run finished")
            return
        last = max(parse_iso(r.finishedAt) for r in finished)
        wall = (last - t0).total_seconds()
        outcome = Counter(r.status for r in runs if r is not None)
        bc = sum(r.bcRequests for r in finished)
        slices = sum(r.slices for r in finished)
        print(f"runs: {dict(outcome)}, {slices} slices; wall time from the first request to the last finished run: {wall:.1f}s "
              f"({len(finished) / wall:.1f} runs/s)")
        print(f"BC requests (runs' bcRequests): {bc}, {bc / wall:.1f} per second for the one credential")
        print(f"storage requests of the host (requests, listeners' polling, workers; and this script's one queue check a second): {sum(storage.values())}, "
              f"{sum(storage.values()) / max(1, len(finished)):.0f} per run ({describe(storage)})")
        active = (probe["last_at"] or 0) - (probe["first_at"] or 0)
        print(f"simulator side: {probe['api_requests']} BC API requests ({probe['api_requests'] / wall:.1f}/s over the wall time, "
              f"{probe['api_requests'] / max(active, 1e-9):.1f}/s between the first and the last), "
              f"at most {probe['max_in_flight']} in flight at once, {probe['token_requests']} token requests")


if __name__ == "__main__":
    main()
