"""GET /api/integrations/{id}/records/{dataType}[/{externalId}] and
GET /api/integrations/{id}/changes/{dataType}?cursor=... (design.md §13)."""
from __future__ import annotations

from typing import Any

import azure.functions as func

from shared.api.cursors import open_token, seal
from shared.api.integrations import load
from shared.entities import ENTITY_TYPES, EntityType
from shared.errors import NotFound, RecordError, ServiceError, ValidationError
from shared.http import Request, ok, respond
from shared.keys import RECORD_PARTITIONS, record_partitions, record_row_key
from shared.storage.changes import CHANGE_PREFIX, ChangeScanner, ChangesPruned, Position
from shared.storage.platform import ListPosition, PlatformRecords

MAX_ROW_KEY = 2048


def _entity(request: Request) -> EntityType:
    key = request.route.get("dataType") or ""
    entity = ENTITY_TYPES.get(key)
    if entity is None:
        raise ValidationError(f"dataType: must be one of {', '.join(ENTITY_TYPES)}, got {key[:50]!r}")
    return entity


def records(request: Request) -> func.HttpResponse:
    integration = load(request)
    entity = _entity(request)
    store = PlatformRecords(request.app.store, integration.id, entity)
    external_id = request.route.get("externalId")
    if external_id:
        try:
            row_key = record_row_key(external_id)
        except RecordError:
            raise NotFound("No record with this externalId") from None
        found = store.get(row_key)
        if found is None:
            raise NotFound("No record with this externalId")
        return ok(found.view)

    settings = request.app.settings
    top = request.top()
    position = ListPosition()
    token = request.params.get("continuationToken")
    if token:
        payload = open_token(settings, token, field="continuationToken", kind="records", integration_id=integration.id, data_type=entity.key)
        position = _list_position(payload)
    items, following = store.page(top, position)
    next_token = None
    if following is not None:
        next_token = seal(settings, "records", integration.id, entity.key, [following.partition, following.token])
    return ok(items, continuation_token=next_token)


def _list_position(payload: Any) -> ListPosition:
    bad = ValidationError("continuationToken: not a continuationToken this service issued (corrupted or forged)")
    if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[0], int)):
        raise bad
    index, token = payload
    if not 0 <= index < RECORD_PARTITIONS or not (token is None or (isinstance(token, dict) and all(isinstance(v, (str, type(None))) for v in token.values()))):
        raise bad
    return ListPosition(index, token)


class CursorExpired(ServiceError):
    status = 410
    code = "cursor_expired"


#: How long one page may keep looking past changes superseded by later ones before answering.
SEARCH_SECONDS = 10.0


def changes(request: Request) -> func.HttpResponse:
    """Changes after the cursor, oldest first. The cursor holds, per partition, the next change
    row to read and how many of its records are behind it; it moves past everything a page
    read, because rows are numbered per partition under the partition's ETag (see
    shared/storage/changes.py): nothing can commit behind it later. A record listed again by
    a later row is skipped here and delivered there, with its latest content, so an empty page
    means: caught up (`hasMore` false)."""
    app = request.app
    integration = load(request)
    entity = _entity(request)
    top = request.top()
    cursor = request.params.get("cursor")
    start: list[Position | None] = [None] * RECORD_PARTITIONS
    if cursor:
        payload = open_token(app.settings, cursor, field="cursor", kind="changes", integration_id=integration.id, data_type=entity.key)
        start = list(_cursor_positions(payload))
    try:
        reader = ChangeScanner(app.store, entity.table).open(record_partitions(integration.id), start, top)
    except ChangesPruned:
        raise CursorExpired(
            f"cursor: it points at changes older than the {app.settings.change_feed_retention_days} days kept; read again "
            "without a cursor (or page the records API) and follow the new cursor"
        ) from None
    records = PlatformRecords(app.store, integration.id, entity)
    delivered: dict[str, dict[str, Any]] = {}
    started = app.clock.monotonic()
    while not delivered:
        batch = reader.take(top)
        if not batch:
            break
        stored = records.fetch([c.record_key for c in batch])
        for candidate in batch:
            record = stored.get(candidate.record_key)
            if record is None or (record.change_key and record.change_key > candidate.row_key):
                continue  # gone, or changed again later: it is delivered at its latest change
            delivered.pop(candidate.record_key, None)
            delivered[candidate.record_key] = {"externalId": record.view.get("externalId"), "changedAt": candidate.stamp, "record": record.view}
        if app.clock.monotonic() - started > SEARCH_SECONDS:
            break
    body = {
        "success": True,
        "data": list(delivered.values()),
        "cursor": seal(app.settings, "changes", integration.id, entity.key, {"v": 2, "p": _positions_payload(reader.positions())}),
        "hasMore": reader.more,
    }
    return respond(200, body)


def _positions_payload(positions: list[Position]) -> list[Any]:
    return [[p.row_key[len(CHANGE_PREFIX) :], p.consumed] for p in positions]


def _cursor_positions(payload: Any) -> list[Position]:
    if isinstance(payload, dict) and set(payload) == {"s", "a"}:  # a cursor of the clock-ordered feed
        raise CursorExpired("cursor: issued by an earlier version of the change feed; read again without a cursor and follow the new one")
    bad = ValidationError("cursor: not a cursor this service issued (corrupted or forged)")
    if not (isinstance(payload, dict) and payload.get("v") == 2 and isinstance(payload.get("p"), list)):
        raise bad
    items = payload["p"]
    if len(items) != RECORD_PARTITIONS:
        raise bad
    positions: list[Position] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], int)):
            raise bad
        if item[1] < 0 or len(item[0]) > MAX_ROW_KEY:
            raise bad
        positions.append(Position(CHANGE_PREFIX + item[0], item[1]))
    return positions
