"""One timer tick over many integrations of which few are due: its time and storage requests.

    python -m benchmarks.dispatcher [--integrations 10000] [--due 100] [--users 1000]

The integrations are written in bulk with the shapes IntegrationRepository writes (the entity
and its SyncSchedule row, shared.storage.schedule.schedule_key); `--due` of them are due now,
the rest later. Then one tick (shared.api.timer.run_scheduled: dispatch + housekeeping), with
every storage request of this process counted at the azure-core transport. A second tick over
ten times fewer integrations shows whether the cost follows the total or the due. Prints
figures; asserts nothing. Needs no BC: dispatching only queues runs."""
from __future__ import annotations

import argparse
import base64
import os
import time
import uuid
from datetime import timedelta
from typing import Any

from benchmarks.support import StorageCounter, describe
from devtools.azurite import AzuriteServer
from devtools.bcsim import DEMO_CLIENT_ID, DEMO_COMPANY_ID, DEMO_TENANT_ID


def write_integrations(app: Any, total: int, due: int, users: int) -> None:
    from shared.clock import to_iso
    from shared.storage.integrations import TABLE, Integration
    from shared.storage.schedule import PARTITION, TABLE as SCHEDULE, schedule_key

    now = app.clock.now()
    secret = app.box.encrypt("not-a-secret", context="bench")  # never decrypted: no run starts here
    rows: list[tuple[str, dict[str, Any]]] = []
    index: list[tuple[str, dict[str, Any]]] = []
    for i in range(total):
        when = now - timedelta(minutes=1 + i % 30) if i < due else now + timedelta(minutes=5 + i % 600)
        integration = Integration(
            id=str(uuid.uuid4()), userId=f"user-{i % users:05d}", name=f"Company {i}", tenantId=DEMO_TENANT_ID,
            companyId=DEMO_COMPANY_ID, clientId=DEMO_CLIENT_ID, entities=["suppliers", "products"], syncIntervalMinutes=60,
            status="success", lastSyncedAt=to_iso(now - timedelta(hours=1)), nextSyncAt=to_iso(when),
            createdAt=to_iso(now - timedelta(days=3)), updatedAt=to_iso(now - timedelta(hours=1)), clientSecretEnc=secret,
        )
        rows.append(("upsert", integration.to_entity()))
        key = schedule_key(integration)
        assert key is not None
        index.append(("upsert", {"PartitionKey": PARTITION, "RowKey": key, "userId": integration.userId, "integrationId": integration.id}))
    failures = app.store.write(TABLE, rows) + app.store.write(SCHEDULE, index)
    if failures:
        raise RuntimeError(f"{len(failures)} integrations could not be written")


def one_tick(app: Any, counter: StorageCounter) -> dict[str, Any]:
    """run_scheduled with its two halves timed and counted apart."""
    import shared.api.timer as timer

    parts: dict[str, Any] = {}

    def measured(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = counter.snapshot()
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[name] = (time.perf_counter() - started, counter.snapshot() - before)
        return wrapper

    originals = timer.dispatch_due, timer.housekeeping
    timer.dispatch_due, timer.housekeeping = measured("dispatch", originals[0]), measured("housekeeping", originals[1])
    try:
        counter.reset()
        started = time.perf_counter()
        summary = timer.run_scheduled(app)
        elapsed = time.perf_counter() - started
    finally:
        timer.dispatch_due, timer.housekeeping = originals
    return {"seconds": elapsed, "requests": counter.snapshot(), "parts": parts, "summary": summary}


def report(label: str, result: dict[str, Any], due: int) -> None:
    requests = result["requests"]
    reads = sum(n for (service, method), n in requests.items() if service == "table" and method == "GET")
    total = sum(requests.values())
    summary = result["summary"]
    print(f"{label}: {result['seconds']:.2f}s, {total} storage requests ({reads} table reads), "
          f"queued {len(summary.get('queued', []))}, failed {len(summary.get('failed', []))}, stale {summary.get('stale', 0)}")
    print(f"    all: {describe(requests)}")
    for name, (seconds, counts) in result["parts"].items():
        print(f"    {name}: {seconds:.2f}s, {sum(counts.values())} requests ({describe(counts)})")
    print(f"    per due integration (dispatch): {sum(result['parts']['dispatch'][1].values()) / max(1, due):.1f} requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--integrations", type=int, default=10000)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--users", type=int, default=1000, help="owners the integrations are spread over")
    args = parser.parse_args()

    from shared.app import App
    from shared.settings import load_settings

    counter = StorageCounter()
    with AzuriteServer() as azurite:
        counter.watch(azurite)
        results = []
        for total in (args.integrations, max(args.due, args.integrations // 10)):
            tag = uuid.uuid4().hex[:8]
            os.environ.update({
                "AzureWebJobsStorage": azurite.connection_string, "TABLES_CONNECTION_STRING": azurite.connection_string,
                "TABLE_PREFIX": "disp" + tag, "SYNC_QUEUE_NAME": "disp-" + tag,
                "CREDENTIALS_KEY": base64.b64encode(os.urandom(32)).decode(),
            })
            app = App(load_settings())
            started = time.perf_counter()
            write_integrations(app, total, args.due, args.users)
            print(f"wrote {total} integrations ({args.due} due) and their schedule rows in {time.perf_counter() - started:.1f}s")
            app.queue._ensure()  # noqa: SLF001 - the queue exists before the tick, as in Azure
            result = one_tick(app, counter)
            report(f"tick over {total} integrations, {args.due} due", result, args.due)
            results.append((total, result))
        (big, r_big), (small, r_small) = results
        print(f"requests of a tick: {sum(r_big['requests'].values())} over {big} vs {sum(r_small['requests'].values())} over {small} integrations "
              f"(same {args.due} due); time {r_big['seconds']:.2f}s vs {r_small['seconds']:.2f}s")


if __name__ == "__main__":
    main()
