"""Start Azurite's Table and Queue services for tests and the demo (dev only, never deployed)."""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TABLE_MAIN = REPO_ROOT / "node_modules" / "azurite" / "dist" / "src" / "table" / "main.js"
QUEUE_MAIN = REPO_ROOT / "node_modules" / "azurite" / "dist" / "src" / "queue" / "main.js"
# The well-known Azurite development account key (public, documented by Microsoft).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BOOTSTRAP_HINT = "run scripts/bootstrap.sh to install Node.js dependencies (Azurite)"

_live: set[AzuriteServer] = set()


def node_binary() -> str | None:
    """The Node 22 scripts/bootstrap.sh put in .tools/node when the node on PATH is older (Azurite
    3.37 asks for 22), else the node on PATH."""
    for candidate in sorted(REPO_ROOT.glob(".tools/node/node_modules/node-linux-*/bin/node")):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("node")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class AzuriteServer:
    """In-memory Azurite Table and Queue services on free ports (the Functions host's queue
    triggers read Storage Queues); node runs directly (not via npx) in its own session so
    stop() can kill the whole process group."""

    def __init__(self, host: str = "127.0.0.1", timeout: float = 60.0, *, queues: bool = True,
                 oauth_cert: tuple[str, str] | None = None) -> None:
        """`oauth_cert` = (certificate PEM, key PEM): serve HTTPS and accept bearer tokens
        (`--oauth basic`: issuer, audience and lifetime checked, signature not), the way a
        managed identity reaches storage."""
        self.host = host
        self.timeout = timeout
        self.oauth_cert = oauth_cert
        self.port: int | None = None
        self.queue_port: int | None = None
        self.connection_string = ""
        self.account_url = ""
        self._queues = queues
        self._proc: subprocess.Popen[bytes] | None = None
        self._queue: AzuriteServer | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> AzuriteServer:
        """Start the Table service and (unless queues=False) the Queue service side by side, and
        wait until each says it listens."""
        if self.running:
            return self
        queue: AzuriteServer | None = None
        try:
            self._spawn(getattr(self, "_main", TABLE_MAIN))
            if self._queues:
                if not QUEUE_MAIN.is_file():
                    raise RuntimeError(f"Azurite's queue service is not installed ({QUEUE_MAIN} is missing): {BOOTSTRAP_HINT}")
                queue = self._queue = AzuriteServer(self.host, self.timeout, queues=False)
                queue._main = QUEUE_MAIN  # type: ignore[attr-defined]
                queue._spawn(QUEUE_MAIN)  # both node processes start at once: startup is most of the wait
            self._wait_ready()
            if queue is not None:
                queue._wait_ready()
                self.queue_port = queue.port
        except BaseException:
            self.stop()
            raise
        scheme = "https" if self.oauth_cert else "http"
        self.account_url = f"{scheme}://{self.host}:{self.port}/devstoreaccount1"
        self.connection_string = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={ACCOUNT_KEY};TableEndpoint=http://{self.host}:{self.port}/devstoreaccount1;"
        )
        if self.queue_port:
            self.connection_string += f"QueueEndpoint=http://{self.host}:{self.queue_port}/devstoreaccount1;"
        return self

    def _spawn(self, main: Path) -> None:
        """Launch node on a port free a moment ago (a port taken in between is retried by _wait_ready)."""
        node = node_binary()
        if node is None:
            raise RuntimeError(f"Azurite needs Node.js, but 'node' is not on PATH: {BOOTSTRAP_HINT}")
        if not main.is_file():
            raise RuntimeError(f"Azurite is not installed ({main} is missing): {BOOTSTRAP_HINT}")
        self._main = main  # type: ignore[attr-defined]
        self.port = _free_port(self.host)
        if self._log is not None:
            self._log.close()
        self._log = tempfile.TemporaryFile()
        service = "queue" if main == QUEUE_MAIN else "table"
        args = [node, str(main), f"--{service}Host", self.host, f"--{service}Port", str(self.port),
                "--inMemoryPersistence", "--disableTelemetry", "--silent"]
        if self.oauth_cert:
            args += ["--oauth", "basic", "--cert", self.oauth_cert[0], "--key", self.oauth_cert[1]]
        if service == "queue":
            # azure-storage-queue speaks a newer API version than Azurite 3.37 knows; the calls
            # the service makes (create, send, receive, delete, update) are unchanged.
            args.append("--skipApiVersionCheck")
        self._proc = subprocess.Popen(
            args, cwd=tempfile.gettempdir(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        _live.add(self)

    def _wait_ready(self, attempts: int = 5) -> None:
        """Wait for Azurite's own "successfully started/listens" line: a TCP connect could
        reach another process that took the port between _free_port and node's listen (parallel
        test workers, other Azurites). When that happens node exits with EADDRINUSE: start again
        on another port."""
        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._says_listening():
                return
            if self._proc.poll() is not None:
                if "EADDRINUSE" in self._log_text() and attempts > 1:
                    attempts -= 1
                    self._spawn(self._main)  # type: ignore[attr-defined]
                    deadline = time.monotonic() + self.timeout
                    continue
                raise RuntimeError(
                    f"Azurite exited with code {self._proc.returncode} before listening; if node or "
                    f"Azurite is missing, {BOOTSTRAP_HINT}.\n{self._log_tail()}"
                )
            time.sleep(0.05)
        raise RuntimeError(
            f"Azurite did not listen on {self.host}:{self.port} within {self.timeout:.0f}s."
            f"\n{self._log_tail()}"
        )

    def _says_listening(self) -> bool:
        """Table: "successfully started on 127.0.0.1:port"; Queue: "successfully listens on http://127.0.0.1:port"."""
        address = f"{self.host}:{self.port}"
        return any(("successfully started on" in line or "successfully listens on" in line) and line.rstrip().endswith(address)
                   for line in self._log_text().splitlines())

    def _log_text(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def _log_tail(self, lines: int = 20) -> str:
        if self._log is None:
            return ""
        text = self._log_text().splitlines()
        return "Azurite log tail:\n" + "\n".join(text[-lines:]) if text else "(Azurite log is empty)"

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        proc, self._proc = self._proc, None
        _live.discard(self)
        queue, self._queue = self._queue, None
        if queue is not None:
            queue.stop()
        if proc is not None:
            for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> AzuriteServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    """Safety net: a crashed test run must not leave node running."""
    for server in list(_live):
        server.stop()
