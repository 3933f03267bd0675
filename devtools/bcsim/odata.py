"""The OData subset BC clients use: $filter, $select, $expand, $orderby, $top/$skip, server paging.

The $filter grammar is deliberately small (comparisons joined by and/or/not with parentheses) but
type-checked like BC's OData stack, and datetimes compare as instants, never as text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from .seed import parse_dt
from .store import EntitySet

Predicate = Callable[[dict[str, Any]], bool]
MAX_PAGE = 20000
OPS = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual",
       "lt": "LessThan", "le": "LessThanOrEqual"}
KNOWN_OPTIONS = {"$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$skiptoken", "$count"}
_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^']|'')*')
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])
  | (?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})(?![\w:])
  | (?P<num>-?\d+(?:\.\d+)?)(?![\w.])
  | (?P<name>[A-Za-z_]\w*)
  | (?P<paren>[(),])
)""", re.X)
_LITERAL_TYPES = {"str": "Edm.String", "guid": "Edm.Guid", "dt": "Edm.DateTimeOffset", "date": "Edm.Date"}
_COMPATIBLE = {"Edm.Int32": {"Edm.Int32", "Edm.Decimal"}, "Edm.Decimal": {"Edm.Int32", "Edm.Decimal"}}


class ODataError(Exception):
    """An error BC would answer with its JSON envelope."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(message: str, code: str = "BadRequest") -> ODataError:
    return ODataError(400, code, message)


def no_property(name: str, es: EntitySet) -> ODataError:
    return bad_request(f"Could not find a property named '{name}' on type 'Microsoft.NAV.{es.type_name}'.")


class _FilterParser:
    def __init__(self, text: str, es: EntitySet) -> None:
        self.text, self.es, self.toks, pos = text, es, [], 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise self.syntax(pos)
            kind = m.lastgroup or ""
            self.toks.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0

    def syntax(self, pos: int | None = None) -> ODataError:
        if pos is None:
            pos = self.toks[self.i][2] if self.i < len(self.toks) else len(self.text)
        return bad_request(f"Syntax error at position {pos} in '{self.text}'.")

    def peek(self, *values: str) -> bool:
        return self.i < len(self.toks) and self.toks[self.i][1].lower() in values

    def take(self) -> tuple[str, str, int]:
        if self.i >= len(self.toks):
            raise self.syntax()
        self.i += 1
        return self.toks[self.i - 1]

    def parse(self) -> Predicate:
        pred = self.or_()
        if self.i != len(self.toks):
            raise self.syntax()
        return pred

    def or_(self) -> Predicate:
        parts = [self.and_()]
        while self.peek("or"):
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def and_(self) -> Predicate:
        parts = [self.unary()]
        while self.peek("and"):
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def unary(self) -> Predicate:
        if self.peek("not"):
            self.take()
            inner = self.unary()
            return lambda r: not inner(r)
        if self.peek("("):
            self.take()
            pred = self.or_()
            if not self.peek(")"):
                raise self.syntax()
            self.take()
            return pred
        return self.comparison()

    def comparison(self) -> Predicate:
        kind, name, pos = self.take()
        if kind != "name":
            raise self.syntax(pos)
        if self.peek("("):
            raise bad_request(f"The function '{name}' is not supported by the simulator ($filter at {pos}).")
        if name not in self.es.types:
            raise no_property(name, self.es)
        _, op, op_pos = self.take()
        if op.lower() not in OPS:
            raise self.syntax(op_pos)
        lit_kind, raw, lit_pos = self.take()
        ftype = self.es.types[name]
        value: Any
        if lit_kind == "name" and raw in ("true", "false", "null"):
            ltype, value = ("Edm.Boolean", raw == "true") if raw != "null" else (ftype, None)
        elif lit_kind == "num":
            ltype, value = ("Edm.Decimal" if "." in raw else "Edm.Int32"), float(raw)
        elif lit_kind in _LITERAL_TYPES:
            ltype = _LITERAL_TYPES[lit_kind]
            value = raw[1:-1].replace("''", "'") if lit_kind == "str" else raw
        else:
            raise self.syntax(lit_pos)
        if ltype != ftype and ltype not in _COMPATIBLE.get(ftype, ()):
            raise bad_request("A binary operator with incompatible types was detected. Found operand types "
                              f"'{ftype}' and '{ltype}' for operator kind '{OPS[op.lower()]}'.")
        conv = _converter(ftype, self.es.guid_key)
        return _compare(name, op.lower(), conv, conv(value))


def _converter(ftype: str, guid_key: Callable[[str], str]) -> Callable[[Any], Any]:
    if ftype == "Edm.DateTimeOffset":
        return lambda v: parse_dt(str(v)) if v is not None else None
    if ftype == "Edm.Guid":  # gt/lt compare as the database does (SQL Server order by default)
        return lambda v: guid_key(str(v)) if v is not None else None
    return lambda v: v


def _compare(name: str, op: str, conv: Callable[[Any], Any], lit: Any) -> Predicate:
    def pred(rec: dict[str, Any]) -> bool:
        v = conv(rec.get(name))
        if op in ("eq", "ne"):
            return (v == lit) == (op == "eq")
        try:
            return v is not None and lit is not None and {
                "gt": v > lit, "ge": v >= lit, "lt": v < lit, "le": v <= lit}[op]
        except TypeError:  # e.g. a test stored a number in a text field
            return False
    return pred


@dataclass
class Query:
    filter: Predicate | None = None
    select: list[str] | None = None
    expand: tuple[str, ...] = ()
    orderby: tuple[str, bool] | None = None
    top: int | None = None
    skip: int = 0
    skiptoken: str | None = None


def _int_option(params: dict[str, str], name: str) -> int | None:
    if name not in params:
        return None
    if not params[name].strip().isdigit():
        raise bad_request(f"Invalid value '{params[name]}' for {name} query option found.")
    return int(params[name])


def parse_query(params: dict[str, str], es: EntitySet, expandable: tuple[str, ...] = ()) -> Query:
    """Validate and compile the query options of one request against an entity set."""
    for key in params:
        if key.startswith("$") and key not in KNOWN_OPTIONS:
            raise bad_request(f"The query parameter '{key}' is not supported.")
    q = Query(top=_int_option(params, "$top"), skip=_int_option(params, "$skip") or 0,
              skiptoken=params.get("$skiptoken") or None)
    if params.get("$filter", "").strip():
        q.filter = _FilterParser(params["$filter"], es).parse()
    if params.get("$select", "").strip():
        q.select = [s.strip() for s in params["$select"].split(",") if s.strip()]
        for name in q.select:
            if name not in es.types:
                raise no_property(name, es)
    if params.get("$expand", "").strip():
        q.expand = tuple(s.strip() for s in params["$expand"].split(","))
        for name in q.expand:
            if name not in expandable:
                raise no_property(name, es)
    if params.get("$orderby", "").strip():
        parts = params["$orderby"].split()
        if len(parts) > 2 or "," in params["$orderby"] or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
            raise bad_request(f"The simulator supports one $orderby property, got '{params['$orderby']}'.")
        if parts[0] not in es.types:
            raise no_property(parts[0], es)
        q.orderby = (parts[0], len(parts) == 2 and parts[1] == "desc")
    return q


def run(es: EntitySet, q: Query, page_size: int) -> tuple[list[dict[str, Any]], int | None]:
    """One page of rows (live dicts: copy before releasing the lock) and, if more rows match,
    the `$top` left for the next page (0 = no $top), else None."""
    field, desc = q.orderby or (es.pk, False)
    try:
        rows = es.scan(field, desc, q.skiptoken)
    except KeyError:
        raise bad_request(f"The skip token '{q.skiptoken}' is not valid.", "BadRequest_InvalidToken") from None
    limit = min(page_size, q.top) if q.top is not None else page_size
    page: list[dict[str, Any]] = []
    skip = 0 if q.skiptoken else q.skip
    for rec in rows:
        if q.filter and not q.filter(rec):
            continue
        if skip:
            skip -= 1
            continue
        if len(page) == limit:  # one more match exists: there is a next page
            left = 0 if q.top is None else q.top - limit
            return page, (left if q.top is None or left > 0 else None)
        page.append(rec)
    return page, None


def count(es: EntitySet, q: Query) -> int:
    return sum(1 for r in es.rows.values() if q.filter is None or q.filter(r))


def project(rec: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """Copy a row for output; `$select` keeps @odata.etag and the property order of the entity."""
    if select is None:
        return dict(rec)
    keep = set(select) | {"@odata.etag"}
    return {k: v for k, v in rec.items() if k in keep}
