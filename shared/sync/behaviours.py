"""Declared behaviours -> the objects that carry them out (one table; a new behaviour is a
declaration in shared/entities.py, a class here, and one row)."""
from __future__ import annotations

from typing import Any, Callable

from shared.entities import EntityType, Lineage, Lines, StockFeed
from shared.sync.behaviour import Behaviour, PassContext
from shared.sync.lineage import DocumentLineage
from shared.sync.lines import DocumentLines
from shared.sync.stock import StockRefresh

IMPLEMENTATIONS: dict[type, Callable[[Any, PassContext], Behaviour]] = {
    Lines: DocumentLines,
    StockFeed: StockRefresh,
    Lineage: DocumentLineage,
}


def build(entity: EntityType, ctx: PassContext) -> list[Behaviour]:
    return [IMPLEMENTATIONS[type(declared)](declared, ctx) for declared in entity.behaviours]
