"""Change feed cost: requests and time to read 1,000 changes out of 200,000 stored records.

Writes the records straight through TableStore.write in the shape the engine writes them
(products, 16 partitions, pages of 1,000, each transaction with its change row and its
partition's sequence row), then 1,000 changed records, then reads the feed after the first load
through the real HTTP function, following the cursor to the first empty page. Also times the
same writes with and without change rows (the write-side cost). Prints figures; asserts
nothing. Azurite in memory; nothing else is needed."""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import requests

from devtools.azurite import AzuriteServer
from shared.storage.changes import SEQUENCE_KEY, ChangeLog, Sequences, stamp
from shared.storage.tables import TableStore
from shared.keys import record_partition

USER = "bench-user"
_totals = {"requests": 0}
_lock = threading.Lock()
_send = requests.Session.send


def _counting_send(self: requests.Session, request: Any, **kwargs: Any) -> Any:
    with _lock:
        _totals["requests"] += 1
    return _send(self, request, **kwargs)


class FixedClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        self.at += timedelta(microseconds=1)
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def product(index: int, integration_id: str, synced_at: str, version: int = 0) -> dict[str, Any]:
    row_key = str(uuid.UUID(int=index + 1))
    return {
        "PartitionKey": record_partition(integration_id, row_key), "RowKey": row_key,
        "number": f"B{index:07d}", "name": f"Bench item {index} v{version}", "type": "Inventory", "itemCategoryCode": "BENCH",
        "blocked": False, "inventory": float(index % 50), "unitPrice": "12.50", "unitCost": "7.25", "baseUnitOfMeasureCode": "PCS",
        "sourceModifiedAt": synced_at, "externalId": row_key, "externalSystem": "dynamics_bc", "userId": USER,
        "integrationId": integration_id, "syncStatus": "synced", "lastSyncedAt": synced_at, "contentHash": uuid.uuid4().hex,
    }


def write(store: TableStore, table: str, integration_id: str, indexes: list[int], clock: FixedClock | None, version: int = 0,
          sequences: Sequences | None = None) -> float:
    """Pages of 1,000 as the engine writes them; returns the seconds taken."""
    started = time.perf_counter()
    attach = ChangeLog(clock, sequences) if clock else None
    synced_at = stamp(datetime.now(timezone.utc))
    for at in range(0, len(indexes), 1000):
        ops = [("upsert", product(i, integration_id, synced_at, version)) for i in indexes[at : at + 1000]]
        failures = store.write(table, ops, attach=attach)
        assert not failures, failures[:1]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--changes", type=int, default=1_000)
    parser.add_argument("--write-sample", type=int, default=20_000, help="records timed with and without change rows")
    args = parser.parse_args()

    with AzuriteServer() as azurite:
        os.environ.update({
            "AzureWebJobsStorage": azurite.connection_string, "TABLES_CONNECTION_STRING": azurite.connection_string,
            "TABLE_PREFIX": "cf" + uuid.uuid4().hex[:8], "CREDENTIALS_KEY": base64.b64encode(os.urandom(32)).decode(),
        })
        from devtools.funchost import FunctionHost
        from shared.api.cursors import seal
        from shared.app import get_app
        from shared.storage.integrations import Integration
        from tests.support import ROOT

        app = get_app()
        store = app.store
        integration = Integration(id=Integration.new_id(), userId=USER, name="bench", tenantId="t", companyId="c", clientId="x", entities=["products"])
        app.integrations.upsert(integration)

        if args.write_sample:
            print("write side (the same pages, with and without a change row per transaction):")
        for label, clock in (("without change rows", None), ("with change rows", FixedClock(datetime.now(timezone.utc)))):
            if not args.write_sample:
                break
            sample_id = Integration.new_id()
            seconds = write(store, "ProductsSample", sample_id, list(range(args.write_sample)), clock)
            print(f"  {label:<22}{args.write_sample:>8} records {seconds:>7.2f}s {args.write_sample / seconds:>7.0f} records/s")

        loaded_at = datetime.now(timezone.utc) - timedelta(hours=2)
        sequences = Sequences()
        seconds = write(store, "Products", integration.id, list(range(args.records)), FixedClock(loaded_at), sequences=sequences)
        print(f"loaded {args.records} records (+ change rows) in {seconds:.1f}s; sequence rows read {sequences.reads}, races lost {sequences.conflicts}")
        # The cursor a reader holds after reading the first load (made directly instead of
        # reading 200,000 changes first): every partition at the number after the load's last.
        from shared.keys import record_partitions

        after_load = [[f"s{int(store.table('Products').get_entity(pk, SEQUENCE_KEY)['value']) + 1:012d}", 0]
                      for pk in record_partitions(integration.id)]
        cursor = seal(app.settings, "changes", integration.id, "products", {"v": 2, "p": after_load})
        changed = random.Random(7).sample(range(args.records), args.changes)
        seconds = write(store, "Products", integration.id, changed, FixedClock(loaded_at + timedelta(minutes=30)), version=1, sequences=sequences)
        print(f"changed {args.changes} of them in {seconds:.1f}s")
        host = FunctionHost(ROOT)
        requests.Session.send = _counting_send  # type: ignore[method-assign]

        def read(cursor: str | None, top: int) -> tuple[int, str, bool, float, int]:
            _totals["requests"] = 0
            url = f"http://localhost/api/integrations/{integration.id}/changes/products?top={top}" + (f"&cursor={cursor}" if cursor else "")
            started = time.perf_counter()
            status, _, content = host.handle("GET", url, {"X-MS-CLIENT-PRINCIPAL-ID": USER}, b"")
            elapsed = time.perf_counter() - started
            body = json.loads(content)
            assert status == 200, body
            return len(body["data"]), body["cursor"], body["hasMore"], elapsed, _totals["requests"]

        print(f"\nreading the feed ({args.records} records stored, {args.changes} changed after the cursor):")
        print(f"  {'read':<44}{'changes':>8}{'requests':>10}{'seconds':>9}")
        total_changes = total_requests = 0
        total_seconds = 0.0
        following: str = cursor
        while True:  # to the first empty page: that is "caught up"
            count, following, more, elapsed, made = read(following, 1000)
            total_changes += count
            total_requests += made
            total_seconds += elapsed
            print(f"  {'page of top=1000 after the first load':<44}{count:>8}{made:>10}{elapsed:>9.2f}   hasMore={more}")
            if not count:
                break
        print(f"  {'total':<44}{total_changes:>8}{total_requests:>10}{total_seconds:>9.2f}")
        count, _, more, elapsed, made = read(None, 1000)
        print(f"  {'first page from the beginning (top=1000)':<44}{count:>8}{made:>10}{elapsed:>9.2f}   hasMore={more}")
        requests.Session.send = _send  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
