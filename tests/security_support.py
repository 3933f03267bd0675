"""Helpers for the security tests: a second HTTPS listener that records whatever reaches it."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shared.app import App, use_app
from shared.settings import load_settings


class Trap:
    """An HTTPS server on loopback, trusted like the simulator (same CA), standing in for a host
    an attacker controls: every request that arrives is kept with its headers."""

    def __init__(self, tls_context: Any, *, status: int = 200, body: Any = None) -> None:
        self.hits: list[tuple[str, str, dict[str, str]]] = []
        self.status = status
        self.body = body if body is not None else {"id": "x", "displayName": "Trap", "value": []}
        trap = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                trap.hits.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                raw = json.dumps(trap.body).encode()
                self.send_response(trap.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _any  # noqa: N815 - stdlib names

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"

    def tokens_seen(self) -> list[str]:
        return [h.get("authorization", "") for _, _, h in self.hits if h.get("authorization")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def rebuild(monkeypatch: pytest.MonkeyPatch, clock: Any, **env: str | None) -> App:
    """Change settings mid-test (what an operator does) and install the App built from them."""
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    app = App(load_settings(), clock=clock)
    use_app(app)
    return app


class Trickle:
    """An HTTPS host that answers one byte at a time, each just inside any per-read timeout:
    only a bound on the request's total time ends such a request."""

    def __init__(self, tls_context: Any, *, interval: float = 0.2, lasts: float = 8.0) -> None:
        import socket
        import time

        self.connections = 0
        self._stop = threading.Event()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"

        def serve(conn: Any) -> None:
            try:
                tls = tls_context.wrap_socket(conn, server_side=True)
                tls.settimeout(5)
                tls.recv(65536)
                tls.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                ends = time.monotonic() + lasts
                while time.monotonic() < ends and not self._stop.is_set():
                    tls.sendall(b"a")
                    time.sleep(interval)
                tls.close()
            except OSError:
                pass

        def accept() -> None:
            while not self._stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                self.connections += 1
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

        self._thread = threading.Thread(target=accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
