"""Integration slots: MAX_INTEGRATIONS_PER_USER exact under concurrency.

Counting and then writing lets parallel creates all see room. Here each create also claims a
numbered slot row (PartitionKey = user, RowKey = slot number) with an insert that only one
request can win: slots are unique and below the limit, so parallel creates never exceed it.
Integrations made before slots existed are counted first and the claims start after them."""
from __future__ import annotations

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.keys import encode_key
from shared.storage.tables import TableStore

TABLE = "IntegrationSlots"


class SlotRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    def claim(self, user_id: str, integration_id: str, *, first: int, limit: int) -> str | None:
        """The RowKey of a free slot from `first` (the caller's current count) up to `limit`, now
        held for this integration; None when every slot is taken."""
        table = self._store.table(TABLE)
        for slot in range(max(0, first), limit):
            key = f"{slot:06d}"
            try:
                table.create_entity({"PartitionKey": encode_key(user_id), "RowKey": key, "integrationId": integration_id})
                return key
            except ResourceExistsError:
                continue  # another create holds it: try the next
        return None

    def release(self, user_id: str, key: str) -> None:
        """Give a slot back (the create that claimed it failed before saving the integration)."""
        try:
            self._store.table(TABLE).delete_entity(encode_key(user_id), key)
        except ResourceNotFoundError:
            pass
