"""Runs in Table Storage: PartitionKey = integration, RowKey = runId. Run ids start with an
inverted timestamp, so a partition lists newest first."""
from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Callable

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.runs.model import Run, TypeProgress
from shared.storage.logs import inverted_time_key
from shared.storage.tables import TableStore

TABLE = "SyncRuns"


def new_run_id(now: datetime) -> str:
    return f"run-{inverted_time_key(now)}-{uuid.uuid4().hex[:8]}"


class RunRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    def create(self, run: Run) -> None:
        self._store.table(TABLE).create_entity(run.to_entity())

    def get(self, integration_id: str, run_id: str) -> Run | None:
        if not run_id or len(run_id) > 100 or not run_id.isascii() or any(c in run_id for c in "/\\#?"):
            return None
        try:
            return Run.from_entity(self._store.table(TABLE).get_entity(integration_id, run_id))
        except ResourceNotFoundError:
            return None

    def update(self, integration_id: str, run_id: str, change: Callable[[Run], bool | None]) -> Run | None:
        """Read-modify-write under the ETag; `change` returning False leaves the run as it was."""
        client = self._store.table(TABLE)
        for _ in range(20):
            try:
                entity = client.get_entity(integration_id, run_id)
            except ResourceNotFoundError:
                return None
            run = Run.from_entity(entity)
            if change(run) is False:
                return run
            try:
                client.update_entity(run.to_entity(), mode="replace", etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
                return run
            except ResourceModifiedError:
                continue
        raise RuntimeError("run kept changing during update")

    def merge_progress(self, integration_id: str, run_id: str, key: str, progress: TypeProgress, at: str) -> None:
        """Live progress of one type: a merge of its own property only."""
        entity = {"PartitionKey": integration_id, "RowKey": run_id, f"p_{key}": json.dumps(progress.to_dict(), default=str), "updatedAt": at}
        self._store.table(TABLE).upsert_entity(entity, mode="merge")

    def list(self, integration_id: str, *, top: int, continuation_token: str | None) -> tuple[list[Run], str | None]:
        entities, token = self._store.query_page(
            TABLE, "PartitionKey eq @pk", parameters={"pk": integration_id}, top=top, continuation_token=continuation_token
        )
        return [Run.from_entity(e) for e in entities], token

    def delete_older_than(self, integration_id: str, cutoff: datetime) -> int:
        """Runs older than the cutoff (their RowKeys sort after the cutoff's inverted key)."""
        client = self._store.table(TABLE)
        old = list(
            client.query_entities(
                "PartitionKey eq @pk and RowKey gt @rk", parameters={"pk": integration_id, "rk": f"run-{inverted_time_key(cutoff)}"}, select=["PartitionKey", "RowKey"]
            )
        )
        self._store.write(TABLE, [("delete", {"PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]}) for e in old])
        return len(old)
