"""BC answers read within bounds (design §12): decoded size and JSON depth.

A hostile or broken BC host (an allowed on-premises `baseUrl`) must not exhaust the instance: a
gzip bomb is decoded here chunk by chunk with a cap on each step's output, so memory never holds
more than the limit; a body nested deeper than 64 levels is refused before any parser recurses into
it. Both fail that one request as `bc_error`. It works as an httpx transport, so the client's one
request path needs no change beyond using it: the answer it hands on is already decoded (no
Content-Encoding left for httpx to undo)."""
from __future__ import annotations

import zlib
from typing import Any

import httpx

from shared.bounds import json_depth_exceeds
from shared.errors import BCError
from shared.outbound import bounded_client, ssl_context

MAX_BC_JSON_DEPTH = 64
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_RAW_CHUNK = 64 * 1024
#: Only encodings decoded here with a cap are offered to BC (never br or zstd).
ACCEPT_ENCODING = "gzip, deflate"


class _Decoder:
    """One Content-Encoding undone with bounded output per step (zlib's max_length)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._first = True
        if encoding in ("gzip", "x-gzip"):
            self._zlib: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS)
        elif encoding in ("", "identity"):
            self._zlib = None
        else:
            raise BCError(f"Business Central answered with an unsupported Content-Encoding {encoding[:40]!r}")

    def feed(self, data: bytes, room: int) -> tuple[bytes, bytes]:
        """(output of at most `room` bytes, input not yet consumed)."""
        if self._zlib is None:
            return data[:room], data[room:]
        try:
            out = self._zlib.decompress(data, room)
        except zlib.error:
            if not (self._first and self.encoding == "deflate"):
                raise BCError("Business Central answered with a corrupt compressed body") from None
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send it
            out = self._zlib.decompress(data, room)
        self._first = False
        return out, self._zlib.unconsumed_tail

    def flush(self) -> bytes:
        return self._zlib.flush() if self._zlib is not None else b""


def read_decoded(raw_chunks: Any, encoding: str, max_bytes: int) -> bytes:
    """The decoded body, or BCError as soon as it passes `max_bytes`."""
    decoder = _Decoder(encoding.strip().lower())
    body = bytearray()
    too_large = BCError(
        f"Business Central answered with a body over {max_bytes // (1024 * 1024) or max_bytes} "
        f"{'MB' if max_bytes >= 1024 * 1024 else 'bytes'} decoded (BC_MAX_RESPONSE_MB); the request failed"
    )
    for chunk in raw_chunks:
        pending = bytes(chunk)
        while pending:
            out, rest = decoder.feed(pending, max_bytes + 1 - len(body))
            body += out
            if len(body) > max_bytes:
                raise too_large
            if rest == pending and not out:
                break  # nothing consumed and nothing produced: wait for more input
            pending = rest
    try:
        body += decoder.flush()
    except zlib.error:
        raise BCError("Business Central answered with a corrupt compressed body") from None
    if len(body) > max_bytes:
        raise too_large
    return bytes(body)


class BoundedTransport(httpx.BaseTransport):
    """Wraps the total-deadline transport: each answer comes back fully read, decoded and checked."""

    def __init__(self, inner: httpx.BaseTransport, max_bytes: int) -> None:
        self._inner, self._max_bytes = inner, max_bytes

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = ACCEPT_ENCODING
        response = self._inner.handle_request(request)
        try:
            encoding = response.headers.get("Content-Encoding", "")
            if "," in encoding:
                raise BCError("Business Central answered with several Content-Encodings; only one is accepted")
            body = read_decoded(response.stream, encoding, self._max_bytes)  # type: ignore[arg-type]
        finally:
            response.close()
        if json_depth_exceeds(body, MAX_BC_JSON_DEPTH):
            raise BCError(f"Business Central answered with JSON nested deeper than {MAX_BC_JSON_DEPTH} levels; the request failed")
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
        return httpx.Response(response.status_code, headers=headers, content=body, extensions=response.extensions)

    def close(self) -> None:
        self._inner.close()


def bc_http_client(*, timeout: "httpx.Timeout | float", max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> httpx.Client:
    """The BC client's httpx.Client: total deadline, no redirects, bounded answers."""
    return bounded_client(verify=ssl_context(), timeout=timeout, wrap=lambda inner: BoundedTransport(inner, max_bytes))
