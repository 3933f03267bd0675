"""BC's value types: how each raw JSON value of BC becomes a platform value (pure functions).

Every converter accepts BC's raw JSON value: enum values arrive XML-escaped (`_x0020_` is a
blank), empty lookups are the zero GUID, empty dates are 0001-01-01, and money arrives as a
JSON number that the client already parsed into Decimal and we store as exact text.

The catalog is three modules in one direction, so there is no import circle:
`shared.bcvalues` (value types) <- `shared.entities` (data type declarations) <-
`shared.mapping` (a BC record -> a platform record)."""
from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

from shared.clock import parse_iso, to_iso

ZERO_GUID = "00000000-0000-0000-0000-000000000000"
_XML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def decode_bc_text(value: Any) -> Any:
    """`_x0020_` -> ' ', `Non_x002D_Inventory` -> 'Non-Inventory'; blanks become ''."""
    if isinstance(value, str):
        return _XML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value).strip()
    return value


def _text(value: Any) -> str | None:
    value = decode_bc_text(value)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise ValueError("expected text, got a structure")
    return str(value)


def _required_text(value: Any) -> str:
    text = _text(value)
    if not text:
        raise ValueError("required")
    return text


def _money(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("expected a number") from None
    if not number.is_finite():
        raise ValueError("expected a finite number")
    return number


def _quantity(value: Any) -> float | None:
    number = _money(value)
    return None if number is None else float(number)


def _date(value: Any) -> str | None:
    if value in (None, "", "0001-01-01"):
        return None
    return date.fromisoformat(str(value)[:10]).isoformat()


def _datetime(value: Any) -> str | None:
    if value in (None, "") or str(value).startswith("0001-01-01"):
        return None
    return to_iso(parse_iso(str(value)))


def _guid(value: Any) -> str | None:
    if value in (None, "", ZERO_GUID):
        return None
    return str(value).lower()


def _boolean(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    if isinstance(value, (int, Decimal)) and value in (0, 1):
        return bool(value)
    raise ValueError("expected true or false")


def _integer(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    number = Decimal(str(value))
    if number != number.to_integral_value():
        raise ValueError("expected a whole number")
    return int(number)


_money_text = PlainSerializer(lambda v: None if v is None else format(v, "f"), return_type=str | None)

Text = Annotated[str | None, BeforeValidator(_text)]
RequiredText = Annotated[str, BeforeValidator(_required_text)]
Money = Annotated[Decimal | None, BeforeValidator(_money), _money_text]
Quantity = Annotated[float | None, BeforeValidator(_quantity)]
BCDate = Annotated[str | None, BeforeValidator(_date)]
BCDateTime = Annotated[str | None, BeforeValidator(_datetime)]
Guid = Annotated[str | None, BeforeValidator(_guid)]
Flag = Annotated[bool | None, BeforeValidator(_boolean)]
Integer = Annotated[int | None, BeforeValidator(_integer)]
RequiredInteger = Annotated[int, BeforeValidator(_integer)]

#: Converters for user-defined field mappings, by the `type` named in fieldMappings.
MAPPING_CONVERTERS = {
    "text": _text,
    "number": _quantity,
    "decimal": lambda v: None if (d := _money(v)) is None else format(d, "f"),
    "date": _date,
    "boolean": _boolean,
}


def convert_mapped(kind: str, value: Any) -> Any:
    """A user-defined field mapping's value (raises ValueError, TypeError or InvalidOperation)."""
    return MAPPING_CONVERTERS[kind](value)
