"""GET /api/integrations/{id}/records/{dataType}[/{externalId}] and
GET /api/integrations/{id}/changes/{dataType}?cursor=... (design.md §13)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import azure.functions as func

from shared.api.cursors import open_token, seal
from shared.api.integrations import load
from shared.entities import ENTITY_TYPES, EntityType
from shared.errors import NotFound, RecordError, ValidationError
from shared.http import Request, ok, respond
from shared.keys import RECORD_PARTITIONS, legacy_row_key, record_partitions, record_row_key
from shared.storage.changes import CHANGE_PREFIX, ChangeScanner, Position, stamp
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
        legacy = legacy_row_key(external_id)
        if found is None and legacy != row_key:  # not moved to its current key yet (shared/sync/rekey.py)
            found = store.get(legacy)
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


def changes(request: Request) -> func.HttpResponse:
    """Changes after the cursor, oldest first. The cursor holds two positions per partition:
    `settled`, which only moves over changes older than the settle window (so a late commit,
    from another instance's clock or a slow write, is read later instead of skipped), and
    `ahead`, which pages through newer ones within one sweep; a sweep that reaches the end
    starts again from `settled` (those newer changes come again: at least once)."""
    app = request.app
    integration = load(request)
    entity = _entity(request)
    top = request.top()
    cursor = request.params.get("cursor")
    settled: list[Position | None] = [None] * RECORD_PARTITIONS
    ahead: list[Position | None] | None = None
    if cursor:
        payload = open_token(app.settings, cursor, field="cursor", kind="changes", integration_id=integration.id, data_type=entity.key)
        settled, ahead = _cursor_payload(payload)

    settled_before = stamp(app.clock.now() - timedelta(seconds=app.settings.change_feed_settle_seconds))
    start = list(ahead if ahead is not None else settled)
    batch = ChangeScanner(app.store, entity.table).scan(record_partitions(integration.id), start, top)
    stored = PlatformRecords(app.store, integration.id, entity).fetch([c.record_key for c in batch.candidates])

    delivered: dict[str, dict[str, Any]] = {}
    reached = list(start)
    settling = ahead is None  # only a read from `settled` may move it
    for candidate in batch.candidates:
        reached[candidate.partition] = Position(candidate.row_key, candidate.index + 1)
        if settling and candidate.stamp <= settled_before:
            settled[candidate.partition] = reached[candidate.partition]
        else:
            settling = False  # from here on, changes are newer than the settle window
        record = stored.get(candidate.record_key)
        if record is None or (record.change_key and record.change_key > candidate.row_key):
            continue  # gone, or changed again later: it is delivered at its latest change
        delivered.pop(candidate.record_key, None)
        delivered[candidate.record_key] = {"externalId": record.view.get("externalId"), "changedAt": candidate.stamp, "record": record.view}

    following = reached if batch.more and not settling else None
    body = {
        "success": True,
        "data": list(delivered.values()),
        "cursor": seal(app.settings, "changes", integration.id, entity.key, {"s": _positions_payload(settled), "a": _positions_payload(following)}),
        "hasMore": batch.more,
    }
    return respond(200, body)


def _positions_payload(positions: list[Position | None] | None) -> list[Any] | None:
    if positions is None:
        return None
    return [None if p is None else [p.row_key[len(CHANGE_PREFIX) :], p.consumed] for p in positions]


def _cursor_payload(payload: Any) -> tuple[list[Position | None], list[Position | None] | None]:
    if not isinstance(payload, dict) or set(payload) != {"s", "a"}:
        raise ValidationError("cursor: not a cursor this service issued (corrupted or forged)")
    settled = _positions(payload["s"])
    return settled, (None if payload["a"] is None else _positions(payload["a"]))


def _positions(payload: Any) -> list[Position | None]:
    bad = ValidationError("cursor: not a cursor this service issued (corrupted or forged)")
    if not isinstance(payload, list) or len(payload) != RECORD_PARTITIONS:
        raise bad
    positions: list[Position | None] = []
    for item in payload:
        if item is None:
            positions.append(None)
            continue
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], int)):
            raise bad
        if item[1] < 0 or len(item[0]) > MAX_ROW_KEY:
            raise bad
        positions.append(Position(CHANGE_PREFIX + item[0], item[1]))
    return positions

