"""BC answers are bounded (design §12): a gzip bomb or a deeply nested body from an allowed BC host
fails that request as bc_error; the instance stays unharmed (memory, no RecursionError)."""
from __future__ import annotations

import json
import resource
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from devtools.bcsim import BCSimulator
from tests.security_support import rebuild
from tests.support import Api, FakeClock


class HostileBC:
    """A loopback HTTPS host (trusted like the simulator) answering every request with `raw`
    bytes under the given status and headers: the BC host of an allowed on-premises baseUrl."""

    def __init__(self, tls_context: Any) -> None:
        self.raw, self.status, self.headers = b"{}", 200, {"Content-Type": "application/json"}
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                self.send_response(hostile.status)
                for key, value in hostile.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(hostile.raw)))
                self.end_headers()
                try:
                    self.wfile.write(hostile.raw)
                except OSError:
                    pass  # the client stopped reading at its limit

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile(sim: BCSimulator) -> Iterator[HostileBC]:
    server = HostileBC(sim.server_tls_context)
    yield server
    server.close()


def gzip_bomb(decoded_mib: int) -> bytes:
    """`decoded_mib` MiB of JSON-ish zeros in a gzip stream about a thousandth of that size.
    Each MiB is compressed once: after a full flush deflate starts afresh, so every MiB of zeros
    gives the same bytes (compressing all 768 MiB took ~5 s of CPU per test)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate; the gzip frame is written here
    head, zeros, tail = b'{"value": "', b"0" * (1024 * 1024), b'"}'
    first = packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    last = packer.compress(tail) + packer.flush()
    crc = zlib.crc32(head)
    for _ in range(decoded_mib):
        crc = zlib.crc32(zeros, crc)
    size = len(head) + decoded_mib * len(zeros) + len(tail)
    trailer = struct.pack("<II", zlib.crc32(tail, crc), size & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + first + block * decoded_mib + last + trailer


def _integration(api: Api, sim: BCSimulator, hostile: HostileBC, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
                 **env: str) -> str:
    sim_port = sim.base_url.rsplit(":", 1)[1]
    rebuild(monkeypatch, clock, BC_ALLOWED_HOSTS=f"127.0.0.1:{sim_port},127.0.0.1:{hostile.port}", BC_MAX_RETRIES="0", **env)
    return str(api.create_integration(sim, baseUrl=f"{hostile.url}/bc")["id"])


def test_a_gzip_bomb_fails_the_request_as_bc_error_without_filling_memory(
    api: Api, app: Any, sim: BCSimulator, hostile: HostileBC, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    iid = _integration(api, sim, hostile, clock, monkeypatch)
    hostile.raw = gzip_bomb(768)  # 768 MiB decoded, under 1 MiB on the wire
    assert len(hostile.raw) < 1024 * 1024
    hostile.headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    reply = api.post(f"integrations/{iid}/dynamics/test")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert reply.status == 502 and reply.error["code"] == "bc_error", reply.body
    assert "BC_MAX_RESPONSE_MB" in reply.error["message"]
    assert grown_mib < 200, f"memory grew by {grown_mib:.0f} MiB"  # 64 MiB limit, not 768
    # Under the limit the same kind of body is fine (the bound is the setting, not compression itself).
    hostile.raw = zlib.compress(json.dumps({"value": [], "id": "c", "displayName": "x"}).encode())
    hostile.headers = {"Content-Type": "application/json", "Content-Encoding": "deflate"}
    assert api.post(f"integrations/{iid}/dynamics/test").status != 500


def test_an_answer_over_the_limit_uncompressed_too(
    api: Api, app: Any, sim: BCSimulator, hostile: HostileBC, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    iid = _integration(api, sim, hostile, clock, monkeypatch, BC_MAX_RESPONSE_MB="1")
    hostile.raw = b'{"value": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    reply = api.post(f"integrations/{iid}/dynamics/test")
    assert reply.status == 502 and reply.error["code"] == "bc_error" and "BC_MAX_RESPONSE_MB" in reply.error["message"]


@pytest.mark.parametrize("status", [200, 400, 500])
def test_json_nested_deeper_than_64_is_bc_error_not_recursion(
    api: Api, app: Any, sim: BCSimulator, hostile: HostileBC, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
    status: int,
) -> None:
    iid = _integration(api, sim, hostile, clock, monkeypatch)
    hostile.status = status
    hostile.raw = b'{"error": ' + b"[" * 200000 + b"]" * 200000 + b"}"
    reply = api.post(f"integrations/{iid}/dynamics/test")
    assert reply.status == 502 and reply.error["code"] == "bc_error", reply.body
    assert "nested deeper than 64" in reply.error["message"]
    # the instance is fine: the simulator's own integration still connects
    assert api.post(f"integrations/{api.create_integration(sim)['id']}/dynamics/test").status == 200
