"""Run statistics in hourly buckets, so "last 24 hours / 7 days" reads at most 168 rows."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.storage.tables import TableStore

TABLE = "SyncStats"


def _bucket(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H")


class StatsRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    def record(self, integration_id: str, at: datetime, *, failed: bool, records: dict[str, int]) -> None:
        client = self._store.table(TABLE)
        key = _bucket(at)
        for _ in range(10):
            try:
                entity = client.get_entity(integration_id, key)
                etag = entity.metadata["etag"]
            except ResourceNotFoundError:
                entity, etag = {"PartitionKey": integration_id, "RowKey": key, "runs": 0, "failures": 0, "records": "{}"}, None
            totals = Counter(json.loads(entity.get("records") or "{}"))
            totals.update(records)
            entity.update(runs=entity["runs"] + 1, failures=entity["failures"] + int(failed), records=json.dumps(totals))
            try:
                if etag is None:
                    client.create_entity(entity)
                else:
                    client.update_entity(entity, mode="replace", etag=etag, match_condition=MatchConditions.IfNotModified)
                return
            except (ResourceExistsError, ResourceModifiedError):
                continue

    def summary(self, integration_id: str, now: datetime) -> dict[str, Any]:
        rows = list(
            self._store.query(
                TABLE,
                "PartitionKey eq @pk and RowKey ge @low",
                parameters={"pk": integration_id, "low": _bucket(now - timedelta(days=7))},
            )
        )
        day = _bucket(now - timedelta(hours=24))
        return {"last24h": _sum(r for r in rows if r["RowKey"] > day), "last7d": _sum(rows), "hourly": _hourly(rows)}


def _sum(rows: Any) -> dict[str, Any]:
    runs = failures = 0
    records: Counter[str] = Counter()
    for row in rows:
        runs += row["runs"]
        failures += row["failures"]
        records.update(json.loads(row.get("records") or "{}"))
    return {"runs": runs, "failures": failures, "records": dict(records)}


def _hourly(rows: Any) -> list[dict[str, Any]]:
    """The hours that had runs, oldest first, for the monitoring page's history chart."""
    series = []
    for row in sorted(rows, key=lambda r: r["RowKey"]):
        key = row["RowKey"]
        records = json.loads(row.get("records") or "{}")
        series.append({
            "hour": f"{key[0:4]}-{key[4:6]}-{key[6:8]}T{key[8:10]}:00:00Z",
            "runs": row["runs"],
            "failures": row["failures"],
            "records": sum(records.values()),
        })
    return series
