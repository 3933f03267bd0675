"""What the benchmarks share: the simulator in its own process, Azurite, settings pointed at
both, integrations for the demo credential, runs driven through shared.runs, and a count of the
storage requests a process makes (dev only; benchmarks print figures and assert nothing)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

from devtools.azurite import AzuriteServer
from devtools.bcsim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT_ID

ENTITY_TYPES_FOR_BULK = ["products"]  # --bulk-items generates items (with stock entries)


@dataclass
class Simulator:
    """The simulator's process and what it printed (base_url, ca_path, company_id, ...)."""

    proc: subprocess.Popen[str]
    info: dict[str, Any]

    @property
    def company_id(self) -> str:
        return str(self.info["company_id"])

    def command(self, line: str) -> dict[str, Any]:
        """Ask a probed simulator (benchmarks.simprobe) `stats` or `reset`: one JSON line back."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())


@contextmanager
def simulator(bulk_items: int = 0, *, module: str = "devtools.bcsim", bulk_vendors: int = 0, id_order: str | None = None) -> Iterator[Simulator]:
    """`python -m devtools.bcsim --bulk-items N` in its own process, as BC would be: its CPU is
    not charged to the measured process. It serves until its stdin closes. `id_order` "sql"
    plays BC's order for GUIDs (SQL Server's uniqueidentifier order), "text" the other reading."""
    args = [sys.executable, "-m", module]
    if bulk_items:
        args += ["--bulk-items", str(bulk_items)]
    if bulk_vendors:
        args += ["--bulk-vendors", str(bulk_vendors)]
    if id_order:
        args += ["--id-order", id_order]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the simulator exited before printing its address")
        yield Simulator(proc, json.loads(line))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def configure(azurite: AzuriteServer, sim: Simulator, **extra: str) -> None:
    """Settings as the function app reads them, for this process (and its children)."""
    tag = uuid.uuid4().hex[:8]
    values = {
        "AzureWebJobsStorage": azurite.connection_string,
        "TABLES_CONNECTION_STRING": azurite.connection_string,
        "TABLE_PREFIX": "bench" + tag,
        "SYNC_QUEUE_NAME": "bench-runs-" + tag,
        "BC_API_BASE_URL": sim.info["base_url"],
        "AZURE_AUTHORITY_HOST": sim.info["base_url"],
        "CREDENTIALS_KEY": base64.b64encode(os.urandom(32)).decode(),
        "SSL_CERT_FILE": sim.info["ca_path"],
        "REQUESTS_CA_BUNDLE": sim.info["ca_path"],
        "BC_PAGE_SIZE": "1000",
        "SYNC_HTTP_BUDGET_SECONDS": "3600",
        "SYNC_SLICE_SECONDS": "3600",
    }
    values.update(extra)
    os.environ.update(values)


def new_integration(app: Any, company_id: str, entities: list[str], *, user: str = "bench-user", name: str = "bench") -> Any:
    """An integration of the simulator's demo credential, stored as the API would store it."""
    from shared.clock import to_iso
    from shared.storage.integrations import Integration

    integration = Integration(
        id=Integration.new_id(), userId=user, name=name, tenantId=DEMO_TENANT_ID, companyId=company_id,
        clientId=DEMO_CLIENT_ID, entities=list(entities), createdAt=to_iso(app.clock.now()),
    )
    integration.clientSecretEnc = app.box.encrypt(DEMO_CLIENT_SECRET, context=integration.secret_context)
    app.integrations.upsert(integration)
    return integration


def run_once(app: Any, integration: Any, mode: str, *, budget_seconds: float = 3600) -> tuple[Any, float]:
    """One whole run the way a synchronous HTTP sync does it: start_run(enqueue=False) and one
    run_slice with a budget no sync here reaches. Returns the finished run and its seconds."""
    from shared.runs.dispatch import RunRequest, start_run
    from shared.runs.slices import run_slice

    started = time.perf_counter()
    claimed = start_run(app, app.integrations.get(integration.userId, integration.id), RunRequest(mode=mode), enqueue=False)
    outcome = run_slice(app, claimed.integration, claimed.run, budget_seconds=budget_seconds)
    elapsed = time.perf_counter() - started
    if outcome.state != "finished":
        raise RuntimeError(f"the run did not finish in one slice ({outcome.state})")
    return outcome.run, elapsed


class StorageCounter:
    """Counts the storage requests this process makes, by service and method, by wrapping the
    azure-core transports' send (sync and aio) in the benchmark process only."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._ports: dict[int, str] = {}
        self._installed = False

    def watch(self, azurite: AzuriteServer) -> "StorageCounter":
        if azurite.port:
            self._ports[azurite.port] = "table"
        if azurite.queue_port:
            self._ports[azurite.queue_port] = "queue"
        if not self._installed:
            self._install()
        return self

    def _record(self, request: Any) -> None:
        url = urlsplit(request.url)
        service = self._ports.get(url.port or 0, "other")
        method = request.method
        if service == "table" and method == "POST" and "$batch" in url.path:
            method = "BATCH"
        with self._lock:
            self.counts[(service, method)] += 1

    def _install(self) -> None:
        from azure.core.pipeline.transport import AioHttpTransport, RequestsTransport

        counter = self
        plain_send = RequestsTransport.send
        aio_send = AioHttpTransport.send

        def send(self: Any, request: Any, **kwargs: Any) -> Any:
            counter._record(request)
            return plain_send(self, request, **kwargs)

        async def send_async(self: Any, request: Any, **kwargs: Any) -> Any:
            counter._record(request)
            return await aio_send(self, request, **kwargs)

        RequestsTransport.send = send  # type: ignore[method-assign]
        AioHttpTransport.send = send_async  # type: ignore[method-assign]
        self._installed = True

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter(self.counts)


def describe(counts: Counter[tuple[str, str]]) -> str:
    """`table GET 12, table PUT 3, queue POST 100` and the like."""
    return ", ".join(f"{service} {method} {n}" for (service, method), n in sorted(counts.items())) or "none"


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of a process so far, from /proc (this process when None).
    Less sensitive than wall time to what else runs on a shared machine."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def azurite_table_pid(azurite: AzuriteServer) -> int:
    """The node process serving Azurite's Table service."""
    assert azurite._proc is not None  # noqa: SLF001 - dev tool of our own
    return azurite._proc.pid  # noqa: SLF001


@dataclass
class Meter:
    """Wall seconds and CPU seconds (this process, Azurite's table service) of one phase."""

    wall: float = 0.0
    cpu: float = 0.0
    azurite_cpu: float = 0.0


@contextmanager
def metered(azurite_pid: int) -> Iterator[Meter]:
    meter = Meter()
    wall, cpu, node = time.perf_counter(), cpu_seconds(), cpu_seconds(azurite_pid)
    try:
        yield meter
    finally:
        meter.wall = time.perf_counter() - wall
        meter.cpu = cpu_seconds() - cpu
        meter.azurite_cpu = cpu_seconds(azurite_pid) - node
