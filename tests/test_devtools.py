"""Tests for the dev-only tools: the Azurite launcher and the local function host."""
from __future__ import annotations

import json
import os
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from devtools import azurite
from devtools.azurite import AzuriteServer
from devtools.funchost import FunctionHost, Route


# --- AzuriteServer -------------------------------------------------------------------------


def test_azurite_serves_tables_and_stop_frees_the_process() -> None:
    from azure.data.tables import TableServiceClient

    server = AzuriteServer()
    with server:
        assert server.port and f":{server.port}/devstoreaccount1" in server.connection_string
        service = TableServiceClient.from_connection_string(server.connection_string)
        table = service.create_table("devtoolsprobe")
        table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "value": 42})
        assert table.get_entity("p", "r")["value"] == 42
        pid = server._proc.pid  # type: ignore[union-attr]
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_azurite_started_on_a_port_taken_meanwhile_starts_again_on_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """The free-port race: another process listens on the port between the check and node's
    listen. A TCP probe would take that listener for Azurite; the start must see node's
    EADDRINUSE and use another port."""
    import socket

    from azure.data.tables import TableServiceClient

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(8)
    taken = squatter.getsockname()[1]
    ports = iter([taken])
    real = azurite._free_port
    monkeypatch.setattr(azurite, "_free_port", lambda host: next(ports, None) or real(host))
    try:
        with AzuriteServer(queues=False) as server:
            assert server.port != taken and server.running
            table = TableServiceClient.from_connection_string(server.connection_string).create_table("raceprobe")
            table.upsert_entity({"PartitionKey": "p", "RowKey": "r"})
            assert table.get_entity("p", "r")["RowKey"] == "r"
    finally:
        squatter.close()


def test_azurite_missing_install_says_to_bootstrap(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setattr(azurite, "TABLE_MAIN", tmp_path / "missing" / "main.js")
    with pytest.raises(RuntimeError, match="scripts/bootstrap.sh"):
        AzuriteServer().start()


def test_azurite_early_exit_reports_log_tail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = tmp_path / "main.js"
    script.write_text("console.error('cannot start'); process.exit(3)")
    monkeypatch.setattr(azurite, "TABLE_MAIN", script)
    with pytest.raises(RuntimeError, match="(?s)exited with code 3.*cannot start"):
        AzuriteServer().start()


# --- FunctionHost ------------------------------------------------------------------------------


def make_function(root: Path, name: str, code: str, bindings: list[dict[str, Any]] | None = None,
                  **config: Any) -> None:
    """Write a function folder; `bindings` defaults to an anonymous HTTP trigger."""
    folder = root / name
    folder.mkdir()
    if bindings is None:
        bindings = [{"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous"},
                    {"type": "http", "direction": "out", "name": "$return"}]
    (folder / "function.json").write_text(json.dumps({"bindings": bindings, **config}))
    (folder / config.get("scriptFile", "__init__.py")).write_text(textwrap.dedent(code))


def http(route: str, methods: list[str] | None = None, auth: str = "anonymous") -> list[dict[str, Any]]:
    trigger: dict[str, Any] = {"type": "httpTrigger", "direction": "in", "name": "req",
                               "authLevel": auth, "route": route}
    if methods is not None:
        trigger["methods"] = methods
    return [trigger, {"type": "http", "direction": "out", "name": "$return"}]


ECHO = """
import json
import azure.functions as func

def main(req: func.HttpRequest) -> func.HttpResponse:
    payload = {"function": __name__, "method": req.method, "route": dict(req.route_params),
               "query": dict(req.params), "body": req.get_body().decode()}
    return func.HttpResponse(json.dumps(payload), status_code=200, mimetype="application/json")
"""


@pytest.fixture
def names() -> Iterator[Any]:
    """Unique folder names so imported function packages never collide in sys.modules."""
    suffix = uuid.uuid4().hex[:8]
    yield lambda base: f"{base}_{suffix}"


def test_get_route_param_and_query(tmp_path: Path, names: Any) -> None:
    make_function(tmp_path, names("get_item"), ECHO, http("integrations/{id}", ["GET"]))
    with FunctionHost(tmp_path) as host:
        resp = httpx.get(f"{host.base_url}/api/integrations/abc%20d?top=5&top=6")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    data = resp.json()
    assert data["route"] == {"id": "abc d"}
    assert data["query"] == {"top": "5"}
    assert data["method"] == "GET"


def test_post_json_body_is_echoed_by_async_main(tmp_path: Path, names: Any) -> None:
    code = """
    import azure.functions as func

    async def main(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.get_body(), status_code=201, mimetype="application/json",
                                 headers={"X-Echo": "yes"})
    """
    make_function(tmp_path, names("post_item"), code, http("integrations", ["POST"]))
    with FunctionHost(tmp_path) as host:
        resp = httpx.post(f"{host.base_url}/api/integrations", json={"name": "BC", "n": [1, 2]})
    assert resp.status_code == 201
    assert resp.json() == {"name": "BC", "n": [1, 2]}
    assert resp.headers["x-echo"] == "yes"


def test_optional_param_and_more_literal_route_wins(tmp_path: Path, names: Any) -> None:
    make_function(tmp_path, names("opt"), ECHO, http("integrations/{id?}", ["GET"]))
    make_function(tmp_path, names("sync"), ECHO, http("integrations/{id}/dynamics/sync", ["POST"]))
    make_function(tmp_path, names("status"), ECHO, http("integrations/status", ["GET"]))
    with FunctionHost(tmp_path) as host, httpx.Client(base_url=host.base_url) as client:
        assert client.get("/api/integrations").json()["route"] == {}
        assert client.get("/api/integrations/7").json()["route"] == {"id": "7"}
        assert client.get("/api/integrations/status").json()["function"] == names("status")
        sync = client.post("/api/integrations/7/dynamics/sync").json()
        assert (sync["function"], sync["route"]) == (names("sync"), {"id": "7"})


def test_route_constraints_and_catch_all() -> None:
    guid = Route.compile("api/items/{id:guid}")
    assert guid.match("/api/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301") is not None
    assert guid.match("/api/items/nope") is None
    top = Route.compile("api/list/{top:int?}")
    assert top.match("/api/list/10") == {"top": "10"} and top.match("/api/list") == {}
    assert top.match("/api/list/x") is None
    rest = Route.compile("api/files/{*rest}")
    assert rest.match("/api/files/a/b/c.txt") == {"rest": "a/b/c.txt"}


def test_method_mismatch_is_405_and_unknown_path_is_404(tmp_path: Path, names: Any) -> None:
    make_function(tmp_path, names("only_get"), ECHO, http("things", ["GET"]))
    with FunctionHost(tmp_path) as host, httpx.Client(base_url=host.base_url) as client:
        wrong = client.delete("/api/things")
        missing = client.get("/api/nothing/here")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert wrong.json()["success"] is False
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert "No function matches" in missing.json()["error"]["message"]


def test_exception_is_500_without_traceback(tmp_path: Path, names: Any,
                                            caplog: pytest.LogCaptureFixture) -> None:
    code = """
    def main(req):
        raise RuntimeError("secret detail")
    """
    make_function(tmp_path, names("boom"), code, http("boom"))
    with FunctionHost(tmp_path) as host:
        resp = httpx.get(f"{host.base_url}/api/boom")
    assert resp.status_code == 500
    assert resp.json() == {"success": False, "error": {"code": "internal_error", "message": "Internal error"}}
    assert "secret detail" not in resp.text and "Traceback" not in resp.text
    assert "secret detail" in caplog.text


def test_function_key_is_enforced_only_when_set(tmp_path: Path, names: Any) -> None:
    make_function(tmp_path, names("secured"), ECHO, http("secured", auth="function"))
    make_function(tmp_path, names("open"), ECHO, http("open", auth="anonymous"))
    with FunctionHost(tmp_path, function_key="k3y") as host, httpx.Client(base_url=host.base_url) as c:
        denied = c.get("/api/secured")
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
        assert c.get("/api/secured", params={"code": "wrong"}).status_code == 401
        assert c.get("/api/secured", params={"code": "k3y"}).status_code == 200
        assert c.get("/api/secured", headers={"x-functions-key": "k3y"}).status_code == 200
        assert c.get("/api/open").status_code == 200
    with FunctionHost(tmp_path) as host:
        assert httpx.get(f"{host.base_url}/api/secured").status_code == 200


def test_route_prefix_from_host_json(tmp_path: Path, names: Any) -> None:
    host_json = {"version": "2.0", "extensions": {"http": {"routePrefix": "v1"}}}
    (tmp_path / "host.json").write_text(json.dumps(host_json))
    make_function(tmp_path, names("prefixed"), ECHO, http("ping"))
    with FunctionHost(tmp_path) as host:
        assert httpx.get(f"{host.base_url}/v1/ping").status_code == 200
        assert httpx.get(f"{host.base_url}/api/ping").status_code == 404


def test_script_file_and_entry_point(tmp_path: Path, names: Any) -> None:
    code = """
    import azure.functions as func

    def handler(req):
        return func.HttpResponse("custom entry")
    """
    make_function(tmp_path, names("custom"), code, http("custom"),
                  scriptFile="handler.py", entryPoint="handler")
    with FunctionHost(tmp_path) as host:
        resp = httpx.get(f"{host.base_url}/api/custom")
    assert resp.text == "custom entry"
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"


def test_run_timer(tmp_path: Path, names: Any) -> None:
    code = """
    import azure.functions as func

    def main(mytimer: func.TimerRequest) -> None:
        global seen
        seen = mytimer.past_due
    """
    name = names("nightly")
    make_function(tmp_path, name, code, [{"type": "timerTrigger", "direction": "in", "name": "mytimer",
                                         "schedule": "0 0 2 * * *"}])
    host = FunctionHost(tmp_path)
    assert host.functions[name].route is None
    host.run_timer(name)
    assert sys.modules[name].seen is False
    with host:  # timers are not served over HTTP
        assert httpx.get(f"{host.base_url}/api/{name}").status_code == 404
