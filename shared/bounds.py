"""Bounds on what a request may carry, checked before any of it is parsed or stored.

Each bound turns an input that would otherwise cost memory, a deep recursion (a 500) or a
Table Storage refusal (a 500 later) into a clear 4xx now."""
from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from shared.errors import PayloadTooLarge, ValidationError

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
#: Table Storage: a string property holds at most 64 KiB (32 K UTF-16 code units).
MAX_PROPERTY_BYTES = 64 * 1024
#: Categories refused in names: control (Cc), format (Cf: bidi overrides, zero-width), surrogates,
#: private use, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_STRUCTURE = re.compile(rb'["\\\[\]{}]')


def check_body_size(body: bytes) -> None:
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The request body is {len(body)} bytes; at most {MAX_BODY_BYTES} (1 MiB) are accepted")


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when arrays/objects nest deeper than `limit` (brackets inside strings ignored).
    Scans only the structural bytes, so a 1 MiB body costs a few milliseconds."""
    depth, in_string, escaped = 0, False, False
    last = -2
    for match in _STRUCTURE.finditer(body):
        char, position = match.group(), match.start()
        if in_string:
            if char == b"\\":
                # a backslash escapes the next byte; consecutive ones pair up
                escaped = not escaped if position == last + 1 else True
            elif char == b'"':
                if not (escaped and position == last + 1):
                    in_string = False
                escaped = False
            else:
                escaped = False
            last = position
            continue
        if char == b'"':
            in_string, escaped = True, False
        elif char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif char in (b"]", b"}"):
            depth -= 1
        last = position
    return False


def parse_json(body: bytes) -> Any:
    """json.loads with the bounds: size (413), depth and unpaired surrogates (400 invalid_json)."""
    check_body_size(body)
    if json_depth_exceeds(body):
        raise ValidationError(f"The request body nests deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ValidationError(f"The request body is not valid JSON: {str(error)[:200]}", code="invalid_json") from None
    try:  # "\ud800" parses, but no storage or receiver can take it
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("The request body contains an unpaired UTF-16 surrogate (\\ud800-\\udfff)", code="invalid_json") from None
    return value


def check_name(value: str) -> str:
    """Names shown to people: no control, format (bidi, zero-width) or separator characters."""
    for char in value:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise ValueError(f"must not contain control or bidirectional formatting characters (found U+{ord(char):04X})")
    return value


def check_property_size(value: Any, field: str) -> None:
    """The JSON of `value` must fit one Table Storage string property."""
    size = len(json.dumps(value).encode("utf-16-le"))
    if size > MAX_PROPERTY_BYTES:
        raise ValueError(f"{field} is {size} bytes stored; at most {MAX_PROPERTY_BYTES} (one Table Storage property)")
