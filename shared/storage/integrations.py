"""Integrations: one platform user connected to one BC company. PartitionKey = the owner, so a
caller can only ever address its own (someone else's id is simply not found)."""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.keys import encode_key
from shared.storage.schedule import ScheduleIndex, schedule_key
from shared.storage.tables import TableStore

TABLE = "Integrations"
_JSON_FIELDS = ("entities", "fieldMappings", "lastError", "lastRun", "realtimeFollowUp", "realtimeReconcile", "completeness")


@dataclass
class Integration:
    id: str
    userId: str
    name: str
    tenantId: str
    companyId: str
    clientId: str
    environment: str = "production"
    entities: list[str] = field(default_factory=list)
    syncIntervalMinutes: int = 60
    baseUrl: str | None = None
    fieldMappings: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    webhookUrl: str | None = None
    status: str = "never_synced"
    lastSyncedAt: str | None = None
    lastError: dict[str, Any] | None = None
    lastRun: dict[str, Any] | None = None
    nextSyncAt: str | None = None
    activeRunId: str | None = None  # the queued or running run; a second sync answers 409
    configVersion: int = 0  # bumped when the integration points elsewhere or disconnects (runs stop)
    lastReconcileAt: str | None = None  # when the last reconcile run finished (the timer's cue)
    createdAt: str | None = None
    updatedAt: str | None = None
    clientSecretEnc: str | None = None
    webhookSecretEnc: str | None = None
    authMode: str = "app"  # "app" (client credentials) | "delegated" (a person signed in)
    authorizedAt: str | None = None  # delegated: when the person last completed the sign-in
    authorizedUser: str | None = None  # delegated: who signed in (their user name)
    oauthFlow: str | None = None  # delegated: hash of the state of the one sign-in that may complete
    realtime: bool = False  # BC webhooks on (design.md §10); subscriptions live in shared/storage/subscriptions.py
    realtimeFollowUp: list[str] | None = None  # types notified while a run was past them: the next delta's
    realtimeReconcile: list[str] | None = None  # types a `collection` notification owes a reconcile (after the deltas)
    companyName: str | None = None  # the company's display name, as the last test or sync read it
    #: per type, what the last complete reconcile proved (shared/sync/completeness.py)
    completeness: dict[str, dict[str, Any]] | None = None
    #: the record-key layout it was created under (shared/keys.py KEY_LAYOUT); None: created
    #: before issue 16, so its records may still need moving (shared/sync/rekey.py)
    keyLayout: str | None = None

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    @property
    def secret_context(self) -> str:
        """Associated data for AES-GCM: a ciphertext only opens for the record it was made for."""
        return f"integration:{self.userId}:{self.id}"

    def to_api(self) -> dict[str, Any]:
        """What callers see: never a secret or a token, only whether one is set."""
        data = asdict(self)
        for private in ("clientSecretEnc", "webhookSecretEnc", "userId", "lastRun", "oauthFlow", "realtimeFollowUp", "realtimeReconcile", "keyLayout"):
            data.pop(private)
        data["realtime"] = {"enabled": self.realtime, "subscriptions": {}}  # the API view fills in the subscriptions
        data["hasClientSecret"] = self.clientSecretEnc is not None
        data["hasWebhookSecret"] = self.webhookSecretEnc is not None
        data["lastRun"] = self.lastRun
        return data

    def to_entity(self) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": encode_key(self.userId), "RowKey": self.id}
        for key, value in asdict(self).items():
            if key == "id" or value is None:
                continue
            entity[key] = json.dumps(value) if key in _JSON_FIELDS else value
        return entity

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> "Integration":
        values: dict[str, Any] = {"id": entity["RowKey"]}
        for name in cls.__dataclass_fields__:
            if name in entity and name != "id":
                raw = entity[name]
                values[name] = json.loads(raw) if name in _JSON_FIELDS and isinstance(raw, str) else raw
        return cls(**values)


class IntegrationRepository:
    """Integrations, with the schedule index kept in step on every write."""

    def __init__(self, store: TableStore) -> None:
        self._store = store
        self.schedule = ScheduleIndex(store)

    def get(self, user_id: str, integration_id: str) -> Integration | None:
        if not integration_id or len(integration_id) > 100:
            return None
        try:
            entity = self._store.table(TABLE).get_entity(encode_key(user_id), encode_key(integration_id))
        except ResourceNotFoundError:
            return None
        return Integration.from_entity(entity)

    def upsert(self, integration: Integration) -> None:
        self._store.table(TABLE).upsert_entity(integration.to_entity(), mode="replace")
        self.schedule.move(None, integration)

    def update(self, user_id: str, integration_id: str, change: Callable[[Integration], None]) -> Integration | None:
        """Read-modify-write guarded by the ETag, retried when someone else wrote in between."""
        client = self._store.table(TABLE)
        for _ in range(10):
            try:
                entity = client.get_entity(encode_key(user_id), encode_key(integration_id))
            except ResourceNotFoundError:
                return None
            integration = Integration.from_entity(entity)
            old_key = schedule_key(integration)
            change(integration)
            try:
                client.update_entity(
                    integration.to_entity(),
                    mode="replace",
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                continue
            self.schedule.move(old_key, integration)
            return integration
        raise RuntimeError("integration kept changing during update")

    def list_for_user(self, user_id: str, *, top: int, continuation_token: str | None) -> tuple[list[Integration], str | None]:
        entities, token = self._store.query_page(
            TABLE,
            "PartitionKey eq @pk",
            parameters={"pk": encode_key(user_id)},
            top=top,
            continuation_token=continuation_token,
        )
        return [Integration.from_entity(e) for e in entities], token

    def list_page_all(self, *, top: int, continuation_token: str | None) -> tuple[list[Integration], str | None]:
        """One page over every user's integrations (housekeeping walks them a batch per tick)."""
        entities, token = self._store.query_page(TABLE, "PartitionKey ne @none", parameters={"none": ""}, top=top, continuation_token=continuation_token)
        return [Integration.from_entity(e) for e in entities], token

    def list_all(self, *, include_disconnected: bool = False) -> Iterator[Integration]:
        """Every connected integration of every user (the timer's view); disconnected ones too
        when asked (their logs still age out)."""
        if include_disconnected:
            entities = self._store.query(TABLE, "PartitionKey ne @none", parameters={"none": ""})
        else:
            entities = self._store.query(TABLE, "status ne @status", parameters={"status": "disconnected"})
        for entity in entities:
            yield Integration.from_entity(entity)
