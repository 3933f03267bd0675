"""The monitoring page's static files, served by the function app itself (no build step).

The page holds no data: it calls the same JSON API as the platform, with the caller's identity
(App Service Authentication) and the function key the operator opened it with (`?code=`). So the
files can be anonymous, while every call they make is authenticated and scoped to the caller."""
from __future__ import annotations

from pathlib import Path

import azure.functions as func

ASSETS = Path(__file__).resolve().parent.parent / "portal"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Only our own files and calls: no inline script, no third-party origin, not framed elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def asset(path: str) -> Path | None:
    """The file for a request path, or None: only plain names of files in ASSETS (no traversal)."""
    name = path.strip("/") or "index.html"
    if "/" in name or "\\" in name or name.startswith(".") or Path(name).suffix not in TYPES:
        return None
    candidate = ASSETS / name
    return candidate if candidate.is_file() else None


def serve(path: str) -> func.HttpResponse:
    found = asset(path)
    if found is None:
        return func.HttpResponse("Not found", status_code=404, mimetype="text/plain", headers=dict(SECURITY_HEADERS))
    return func.HttpResponse(found.read_bytes(), status_code=200, mimetype=TYPES[found.suffix], charset="utf-8",
                             headers=dict(SECURITY_HEADERS))
