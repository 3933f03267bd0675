"""Table Storage entity-group transactions ($batch) written and read directly.

Why not `TableClient.submit_transaction`: measured on a full sync, the SDK spent most of the
process's CPU on each transaction's plumbing rather than on the data: every operation becomes
an HttpRequest serialised through http.client, and every response part is parsed by the
`email` package. Here the multipart body is built as text (the same wire format the SDK sends,
documented in "Performing entity group transactions") and sent through the client's own
pipeline (authentication, retries, headers), and the response parts are split by hand.

    body, boundary = encode_batch(base_url, table, operations, api_version)
    results = decode_batch(status, headers, text)   # [{"etag": ...}] per operation, or raises

Operations are the ("upsert" | "merge" | "update" | "update-if" | "create" | "delete",
entity[, etag]) tuples of shared/storage/tables.py. Values: str, bool, int, float and None take
the fast path; anything else (datetime, bytes, UUID, EntityProperty tuples, enums) is encoded by
the SDK's own converter, so the stored types are the SDK's."""
from __future__ import annotations

import json
import math
import random
import uuid
from email.utils import formatdate
from typing import Any, Mapping
from urllib.parse import quote

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableTransactionError
from azure.data.tables._serialize import _add_entity_properties  # the SDK's converter (slow path)

INT32 = 2**31
_random = random.Random()  # uuid4 reads os.urandom per call: measurably slow on a loaded machine
_dumps = json.JSONEncoder(ensure_ascii=True, check_circular=False, allow_nan=False).encode


def encode_entity(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The entity's JSON with OData type annotations where JSON alone would lose the type
    (64-bit ints, doubles); strings need none. None values are left out (as the SDK does)."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        kind = type(value)
        if kind is str or kind is bool:
            out[name] = value
        elif value is None:
            continue
        elif kind is int and -INT32 <= value < INT32:
            out[name] = value
        elif kind is float and math.isfinite(value):
            out[name] = value
            out[name + "@odata.type"] = "Edm.Double"
        else:
            out.update(_add_entity_properties({name: value}))
    return out


def _key(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("PartitionKey or RowKey must be of type string.")
    return quote(value.replace("'", "''"), safe="")


def encode_batch(base_url: str, table: str, operations: list[tuple[Any, ...]], api_version: str) -> tuple[bytes, str]:
    """The multipart body of one transaction and its batch boundary. `base_url` is the account's
    table endpoint (`https://account.table.core.windows.net`, Azurite: `http://host:port/account`)."""
    batch = f"batch_{uuid.UUID(int=_random.getrandbits(128))}"  # boundaries: unique in the body, not secret
    changeset = f"changeset_{uuid.UUID(int=_random.getrandbits(128))}"
    date = formatdate(usegmt=True)
    common = f"x-ms-version: {api_version}\r\nDataServiceVersion: 3.0\r\n"
    dated = f"x-ms-date: {date}\r\nDate: {date}\r\n"
    parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
    for index, operation in enumerate(operations):
        op, entity = operation[0], operation[1]
        address = f"{base_url}/{table}(PartitionKey='{_key(entity['PartitionKey'])}',RowKey='{_key(entity['RowKey'])}')"
        head = f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {index}\r\n\r\n"
        if op == "delete":
            parts.append(f"{head}DELETE {address} HTTP/1.1\r\n{common}Accept: application/json;odata=minimalmetadata\r\nIf-Match: *\r\n{dated}\r\n\r\n")
            continue
        body = _dumps(encode_entity(entity))
        if op == "create":
            line, accept, match = f"POST {base_url}/{table}", "application/json;odata=minimalmetadata", ""
        elif op == "upsert":
            line, accept, match = f"PUT {address}", "application/json", ""
        elif op == "merge":
            line, accept, match = f"PATCH {address}", "application/json", ""
        elif op == "update":  # merge into an existing entity only
            line, accept, match = f"PATCH {address}", "application/json", "If-Match: *\r\n"
        elif op == "update-if":
            line, accept, match = f"PATCH {address}", "application/json", f"If-Match: {operation[2]}\r\n"
        else:
            raise ValueError(f"unknown table operation {op!r}")
        parts.append(
            f"{head}{line} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{common}Accept: {accept}\r\n{match}{dated}\r\n{body}\r\n"
        )
    parts.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n")
    return "".join(parts).encode("ascii"), batch


def decode_batch(status: int, headers: Mapping[str, str], text: str) -> list[dict[str, Any]]:
    """Each operation's metadata (`etag`), or TableTransactionError for the refused operation
    (its `error_code` and `index`), or HttpResponseError when the whole request was refused."""
    if status != 202:
        raise storage_error(status, headers, text)
    text = text.replace("\r\n", "\n")
    boundary = _boundary(text)
    results: list[dict[str, Any]] = []
    for part in text.split(f"--{boundary}")[1:]:
        if part.startswith("--"):
            break
        _, _, http = part.partition("\n\n")  # past the part's own headers
        head, _, body = http.partition("\n\n")
        lines = head.strip("\n").split("\n")
        code = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if not 200 <= code < 300:
            raise _error(TableTransactionError, code, fields.get("x-ms-error-code"), body.strip())
        results.append({"etag": fields.get("etag")})
    return results


def _boundary(text: str) -> str:
    """The changeset response's boundary (the first part of the batch response names it)."""
    marker = "boundary="
    start = text.find(marker)
    if start < 0:
        raise HttpResponseError(message="Table Storage sent a batch response without a changeset")
    end = text.find("\n", start)
    return text[start + len(marker) : end].strip().strip('"')


# The SDK's choice of error by the service's error code (azure/data/tables/_error.py), then by
# status for an answer without a code it knows.
_BY_CODE: dict[str, type[HttpResponseError]] = {
    **dict.fromkeys(("ConditionNotMet", "UpdateConditionNotSatisfied"), ResourceModifiedError),
    **dict.fromkeys(("InvalidAuthenticationInfo", "AuthenticationFailed"), ClientAuthenticationError),
    **dict.fromkeys(("ResourceNotFound", "TableNotFound", "EntityNotFound"), ResourceNotFoundError),
    **dict.fromkeys(("ResourceAlreadyExists", "TableAlreadyExists", "AccountAlreadyExists", "EntityAlreadyExists"), ResourceExistsError),
}
_BY_STATUS: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError, 412: ResourceModifiedError,
}


def storage_error(status: int, headers: Mapping[str, str], body: str) -> HttpResponseError:
    """The azure.core error the SDK raises for a refused request: its type from the service's
    error code, its message "<message>\nErrorCode:<code>", with `status_code` and `error_code`."""
    code = headers.get("x-ms-error-code") or _parse(body)[0]
    kind = _BY_CODE.get(code or "") or _BY_STATUS.get(status, HttpResponseError)
    return _error(kind, status, code, body)


def _parse(body: str) -> tuple[str | None, str]:
    try:
        error = json.loads(body)["odata.error"]
        return error.get("code"), error.get("message", {}).get("value", body)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, body


def _error(kind: type[HttpResponseError], status: int, code: str | None, body: str) -> HttpResponseError:
    parsed_code, message = _parse(body)
    code = code or parsed_code
    refused = kind(message=f"{message}\nErrorCode:{code}")
    refused.status_code = status
    refused.error_code = code  # type: ignore[attr-defined]
    if isinstance(refused, TableTransactionError):
        head = message.split(":", 1)[0]
        refused.index = int(head) if head.isdigit() else 0
    return refused
