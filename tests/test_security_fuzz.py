"""Issue 9, fuzzing: schemathesis against the local host, driven by the OpenAPI document.

Every operation, every documented status; no 500 at all, 502 only as the documented BC failure,
every response matching its schema. The number of generated cases is printed."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devtools.bcsim import BCSimulator
from devtools.funchost import FunctionHost
from devtools.openapi import render
from shared.app import App
from shared.openapi import build
from tests.security_support import rebuild
from tests.support import ROOT, Api, FakeClock

ST = Path(sys.executable).with_name("st")
CONFIG = """
[checks.not_a_server_error]
# 502 is the contract's answer when Business Central or Entra ID fails; any other 5xx is a bug.
expected-statuses = ["2XX", "3XX", "4XX", "502"]

[parameters]
"path.id" = "{integration_id}"
"""


def test_the_checked_in_openapi_yaml_is_current() -> None:
    assert (ROOT / "openapi.yaml").read_text(encoding="utf-8") == render(), "run: python -m devtools.openapi"
    assert yaml.safe_load(render()) == json.loads(json.dumps(build()))


def test_the_document_is_served_and_covers_every_http_function(api: Api) -> None:
    status, _, content = api.host.handle("GET", "http://localhost/api/openapi.json", {}, b"")
    assert status == 200
    served = json.loads(content)
    assert served["openapi"] == "3.1.0" and served == json.loads(json.dumps(build()))
    documented = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops if m != "parameters"}
    for spec in api.host.functions.values():
        if spec.route is None or spec.name == "openapi_http":
            continue
        route = "/" + spec.route.template.strip("/").removeprefix("api/")
        route = re.sub(r"\{\*(\w+)\}$", r"{\1?}", route)  # a catch-all is an optional last parameter
        optional = re.search(r"/\{(\w+)\?\}$", route)
        forms = [route] if not optional else [route[: optional.start()], route.replace("?}", "}")]
        for method in spec.methods:  # each method in one form at least (POST has no id, PATCH needs one)
            assert any((method, form) in documented for form in forms), (spec.name, method, forms)
        for form in forms:  # and each form (with and without the optional last parameter)
            assert any((method, form) in documented for method in spec.methods), (spec.name, form)


@pytest.mark.long
@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error_and_every_response_matches(
    api: Api, app: App, sim: BCSimulator, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded to stay fast: a few examples per operation (every operation still in each phase) and
    a manual-sync quota of 2, so generated sync requests mostly meet the 429 (documented) instead
    of each running a full sync."""
    rebuild(monkeypatch, clock, MANUAL_SYNCS_PER_HOUR="2", DISCOVERIES_PER_HOUR="2")
    integration = api.as_user("fuzz-user").create_integration(sim, entities=["suppliers"])
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(integration_id=integration["id"]), encoding="utf-8")
    with FunctionHost(ROOT) as host:
        command = [
            str(ST), "--config-file", str(config), "--no-color", "run", f"{host.base_url}/api/openapi.json",
            "--url", f"{host.base_url}/api", "-H", "X-MS-CLIENT-PRINCIPAL-ID: fuzz-user",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
                        "response_headers_conformance",
            "--phases", "examples,coverage,fuzzing", "--max-examples", "8", "--seed", "20240615",
            "--workers", "1", "--generation-database", "none", "--request-timeout", "60",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=850, cwd=tmp_path)
    output = done.stdout + done.stderr
    print(output)
    assert done.returncode == 0, output[-6000:]
    generated = re.search(r"(\d+)\s+generated", output)
    assert generated and int(generated.group(1)) > 100, output[-3000:]
    print(f"schemathesis: {generated.group(1)} generated test cases")
