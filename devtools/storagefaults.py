"""A storage fault injector at the process boundary: an HTTP proxy in front of Azurite's Table
endpoint that refuses chosen requests (issue 8). Tests point TABLES_CONNECTION_STRING at it;
every request is forwarded unchanged except those whose method, path or body contain a chosen
text, which are answered with a Table Storage error. The project's own storage code is not
touched: this is a fake of the service, as the BC simulator is of BC."""
from __future__ import annotations

import http.client
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class Refusal:
    contains: tuple[str, ...]  # every one must appear
    status: int = 400
    code: str = "InvalidInput"
    times: int | None = None  # None: until cleared
    hits: int = 0


class StorageFaultProxy:
    """`with StorageFaultProxy(azurite.connection_string) as proxy:` then use
    `proxy.connection_string`; `proxy.refuse(table, key)` makes every write request that mentions
    both texts (in its decoded URL or body) fail with 400 until `proxy.clear()`."""

    def __init__(self, connection_string: str) -> None:
        match = re.search(r"TableEndpoint=(http://[^;]+)", connection_string)
        if not match:
            raise ValueError("the connection string has no http TableEndpoint")
        self._upstream = urlsplit(match.group(1))
        self._original = connection_string
        self._lock = threading.Lock()
        self._refusals: list[Refusal] = []
        self._server: ThreadingHTTPServer | None = None
        self.refused: list[str] = []  # first line of each refused request, for assertions

    # -- rules --------------------------------------------------------------------------------
    def refuse(self, *contains: str, status: int = 400, code: str = "InvalidInput", times: int | None = None) -> Refusal:
        """Refuse writes that mention every one of `contains` (e.g. a table name and a key)."""
        refusal = Refusal(tuple(contains), status, code, times)
        with self._lock:
            self._refusals.append(refusal)
        return refusal

    def clear(self) -> None:
        with self._lock:
            self._refusals.clear()

    def _match(self, method: str, target: str, body: bytes) -> Refusal | None:
        if method == "GET":
            return None  # reads always pass: the faults are about writes
        text = unquote(target) + "\n" + unquote(body.decode("utf-8", "replace"))
        with self._lock:
            for refusal in self._refusals:
                if all(part in text for part in refusal.contains):
                    refusal.hits += 1
                    if refusal.times is not None:
                        refusal.times -= 1
                        if refusal.times <= 0:
                            self._refusals.remove(refusal)
                    return refusal
        return None

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def connection_string(self) -> str:
        assert self._server is not None, "the proxy is not started"
        port = self._server.server_address[1]
        endpoint = f"http://127.0.0.1:{port}{self._upstream.path}"
        return re.sub(r"TableEndpoint=http://[^;]+", f"TableEndpoint={endpoint}", self._original)

    def __enter__(self) -> "StorageFaultProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no ~40 ms delayed-ACK stall per answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                refusal = proxy._match(self.command, self.path, body)
                if refusal is not None:
                    proxy.refused.append(f"{self.command} {unquote(self.path)}")
                    payload = json.dumps({"odata.error": {"code": refusal.code, "message": {"lang": "en-US", "value": "Refused by the storage fault proxy"}}}).encode()
                    self.send_response(refusal.status)
                    self.send_header("Content-Type", "application/json;odata=minimalmetadata")
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("x-ms-error-code", refusal.code)
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(proxy._upstream.hostname or "127.0.0.1", proxy._upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                reply = upstream.getresponse()
                content = reply.read()
                self.send_response(reply.status, reply.reason)
                for key, value in reply.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
                upstream.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_MERGE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="storage-faults", daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
