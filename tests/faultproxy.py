"""A TCP proxy in front of Azurite that drops chosen requests: a fault at the process boundary
(the network), not a mock of the project's storage."""
from __future__ import annotations

import socket
import threading
from typing import Any


class DroppingProxy:
    """Forwards to `target`; while `drop` > 0, a client chunk containing `marker` closes the
    connection without an answer (as a dropped connection or a crashed front end would)."""

    def __init__(self, target_host: str, target_port: int, marker: bytes = b"$batch") -> None:
        self.target = (target_host, target_port)
        self.marker = marker
        self.drop = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):  # forwarded chunks go on at once (no Nagle wait for a delayed ACK)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_client and self.marker in data and self._take():
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass

    def _take(self) -> bool:
        with self._lock:
            if self.drop > 0:
                self.drop -= 1
                self.dropped += 1
                return True
            return False

    def close(self, *_: Any) -> None:
        self._stop = True
        self._server.close()
