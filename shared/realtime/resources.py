"""What a notification's `resource` names, in every form BC sends it (design.md §10).

BC's documented sample sends a record's resource without a leading slash
(`api/v2.0/companies(...)/items(...)`) and a collection's with one; hosted BC may also send the
absolute URL (`https://host/v2.0/{tenant}/{env}/api/v2.0/companies(...)/vendors(...)`). The
company and record keys may be bare GUIDs, quoted (`'...'`), braced (`{...}`), upper case or
percent-encoded. All of them are parsed into one shape and compared part by part, so a form we
did not expect is never answered 401 (BC answers a 401 by deleting the subscription)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_PATH = re.compile(
    r"^(?:https?://[^/?#]+(?:/[^?#]*?)?)?/?"  # absolute: scheme, host and any service path before /api/
    r"api/(?P<api>[^?#()]+?)/companies\((?P<company>[^()]*)\)"
    r"/(?P<set>[A-Za-z][A-Za-z0-9_]*)(?:\((?P<key>[^()]*)\))?"
    r"(?P<tail>[?#].*)?$",
    re.IGNORECASE | re.DOTALL,
)
MAX_RESOURCE_CHARS = 2048


@dataclass(frozen=True)
class Resource:
    """An API path, a company, an entity set and (for one record) its key, normalised."""

    api: str  # e.g. "v2.0" (lower case)
    company: str  # the company key, unquoted, lower case
    entity_set: str  # as BC spells it
    key: str | None  # the record's key, unquoted, lower case; None for the whole set

    def same_set(self, other: "Resource") -> bool:
        """The same API, company and entity set (case-insensitive: BC's segments are, in effect)."""
        return (self.api, self.company, self.entity_set.lower()) == (other.api, other.company, other.entity_set.lower())

    @property
    def record_id(self) -> str | None:
        """The record's GUID when the key is one (BC's SystemId), else None."""
        return self.key if self.key and _GUID.match(self.key) else None


def _unwrap(key: str) -> str:
    """`'abc'`, `{ABC}`, `%27abc%27`, `id='abc'`, ` abc ` -> `abc` (lower case)."""
    text = key.strip()
    if "=" in text and not text.startswith("'"):
        text = text.split("=", 1)[1].strip()  # a named key: id=...
    if len(text) >= 2 and text[0] == text[-1] == "'":
        text = text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == "{" and text[-1] == "}":
        text = text[1:-1]
    return text.strip().lower()


def parse(resource: object) -> Resource | None:
    """The resource's parts, or None when it is not a company entity set (or its record)."""
    if not isinstance(resource, str) or not 0 < len(resource) <= MAX_RESOURCE_CHARS:
        return None
    text = resource.strip()
    path, sep, tail = text.partition("?")
    match = _PATH.match(unquote(path))  # the query (a collection's $filter) is not ours to parse
    if match is None:
        return None
    return Resource(
        api=match["api"].strip("/").lower(),
        company=_unwrap(match["company"]),
        entity_set=match["set"],
        key=_unwrap(match["key"]) if match["key"] is not None else None,
    )
