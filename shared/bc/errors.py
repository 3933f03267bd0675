"""The one place where a failed BC or Entra ID response becomes a typed BCError."""
from __future__ import annotations

import json
import re

import httpx

from shared.errors import BCAuthError, BCCompanyNotFound, BCError, BCForbidden, BCUnavailable

_CORRELATION = re.compile(r"CorrelationId:?\s*([0-9a-fA-F-]{36})")


def decode_error(response: httpx.Response, *, step: str = "read") -> BCError:
    """BC's envelope {"error": {"code", "message"}} -> BCError keeping BC's code and correlation
    id. HTML or XML bodies (gateways, unknown environments) are never echoed to callers."""
    status = response.status_code
    bc_code, bc_message = None, None
    try:
        body = json.loads(response.content)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            bc_code = str(error.get("code") or "") or None
            bc_message = str(error.get("message") or "") or None
    except (ValueError, UnicodeDecodeError):
        bc_code, bc_message = _xml_error(response.content)
    correlation = None
    if bc_message:
        match = _CORRELATION.search(bc_message)
        if match:
            correlation = match.group(1).lower()
        bc_message = _CORRELATION.sub("", bc_message).strip().rstrip(".").strip() or None
    correlation = correlation or response.headers.get("ms-correlation-x") or response.headers.get("request-id")
    detail = f": {bc_message[:300]}" if bc_message else ""
    kwargs = dict(bc_code=bc_code, correlation_id=correlation, http_status=status, step=step)

    if status == 401 or (bc_code or "").startswith("Authentication_"):
        return BCAuthError(f"Business Central rejected the credentials (HTTP {status}){detail}", **kwargs)
    if status == 403 or (bc_code or "").startswith("Authorization_"):
        return BCForbidden(
            f"Business Central denied access (HTTP {status}): the app registration needs API.ReadWrite.All "
            f"and permission sets in BC{detail}",
            **kwargs,
        )
    company_missing = step in ("company", "companies") or bc_code is None or "CompanyNotFound" in bc_code or bc_code == "NoEnvironment"
    if status == 404 and company_missing:
        # BC answers an unknown company with Internal_CompanyNotFound, an unknown environment
        # with an XML page: either way the whole run cannot succeed.
        return BCCompanyNotFound(f"Business Central has no such environment or company (HTTP 404){detail}", **kwargs)
    if status in (408, 429) or status >= 500:
        what = "throttled the requests" if status == 429 else f"is unavailable (HTTP {status})"
        return BCUnavailable(f"Business Central {what}{detail}", **kwargs)
    return BCError(f"Business Central answered HTTP {status}{detail}", **kwargs)


_XML_CODE = re.compile(rb"<(?:\w+:)?code>\s*([A-Za-z0-9_.]{1,100})\s*</(?:\w+:)?code>")
_XML_MESSAGE = re.compile(rb"<(?:\w+:)?message>([^<]{1,1000})</(?:\w+:)?message>")


def _xml_error(content: bytes) -> tuple[str | None, str | None]:
    """BC's OData XML error (an unknown environment answers one): its code and message, read with
    two bounded patterns rather than an XML parser (no entities, no depth: the body is untrusted)."""
    head = content[:16384]
    code, message = _XML_CODE.search(head), _XML_MESSAGE.search(head)
    text = message.group(1).decode("utf-8", "replace").strip() if message else None
    return (code.group(1).decode("ascii") if code else None), (text or None)
