"""A small local stand-in for Azure Functions Core Tools (dev only, never deployed).

Core Tools cannot be installed here, yet people want to curl the API and the demo wants real
HTTP, so this serves the folder-per-function layout (function.json + __init__.py:main) the way
the Functions host does: routes, methods, route constraints, authLevel and host.json routePrefix.
"""
from __future__ import annotations

import argparse
import asyncio
import hmac
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import azure.functions as func
from azure.functions.timer import TimerRequest

logger = logging.getLogger("devtools.funchost")

Reply = tuple[int, list[tuple[str, str]], bytes]
DEMO_IDENTITY_HEADER = "X-MS-CLIENT-PRINCIPAL-ID"

_PARAM = re.compile(r"\{([^{}]+)\}")
_NUMBER = r"-?\d+(?:\.\d+)?"
_CONSTRAINTS = {  # ASP.NET route constraints; unknown ones (minlength(3), ...) are not checked.
    "int": r"-?\d+", "long": r"-?\d+", "bool": r"(?:true|false)", "alpha": r"[A-Za-z]+",
    "double": _NUMBER, "float": _NUMBER, "decimal": _NUMBER,
    "guid": r"(?:[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}|[0-9A-Fa-f]{32})",
}


def _parse_param(spec: str) -> tuple[str, str, bool, str | None]:
    """`{*rest}`, `{id:int?}`, `{id=5}` -> (name, regex, optional, default)."""
    catch_all = spec.startswith("*")
    spec, _, default = spec.lstrip("*").partition("=")
    optional = spec.endswith("?") or catch_all or bool(default)
    name, *constraints = spec.rstrip("?").split(":")
    pattern = ".*" if catch_all else "[^/]+"
    for constraint in constraints:
        pattern = _CONSTRAINTS.get(constraint.split("(", 1)[0].lower(), pattern)
    return name, pattern, optional, default or None


@dataclass
class Route:
    """A compiled route template; `literals` ranks overlapping routes like ASP.NET does."""

    template: str
    pattern: re.Pattern[str]
    groups: dict[str, str] = field(default_factory=dict)  # regex group -> route param name
    defaults: dict[str, str] = field(default_factory=dict)
    literals: int = 0

    @classmethod
    def compile(cls, template: str) -> Route:
        route = cls(template, re.compile(""))
        regex = ""
        for segment in (s for s in template.split("/") if s):
            tokens = list(_PARAM.finditer(segment))
            if not tokens:
                regex += "/" + re.escape(segment)
                route.literals += 1
                continue
            part, pos = "", 0
            for token in tokens:
                name, pattern, optional, default = _parse_param(token.group(1))
                group = f"p{len(route.groups)}"
                route.groups[group] = name
                if default is not None:
                    route.defaults[name] = default
                part += f"{re.escape(segment[pos:token.start()])}(?P<{group}>{pattern})"
                pos = token.end()
            part += re.escape(segment[pos:])
            whole = len(tokens) == 1 and tokens[0].span() == (0, len(segment))
            regex += f"(?:/{part})?" if whole and optional else f"/{part}"
        route.pattern = re.compile(f"^{regex}/?$", re.IGNORECASE)
        return route

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if found is None:
            return None
        params = dict(self.defaults)
        params.update({self.groups[g]: unquote(v) for g, v in found.groupdict().items() if v is not None})
        return params


@dataclass
class FunctionSpec:
    """One function folder and the parts of function.json the host needs."""

    name: str
    folder: Path
    config: dict[str, Any]
    route: Route | None = None  # None: not an HTTP function (e.g. a timer)
    methods: frozenset[str] = frozenset()  # empty: any method
    auth_level: str = "function"


def discover(app_root: Path) -> dict[str, FunctionSpec]:
    """Every subfolder with a function.json, keyed by folder name (the function name)."""
    prefix = "api"
    host_json = app_root / "host.json"
    if host_json.is_file():
        host = json.loads(host_json.read_text(encoding="utf-8-sig"))
        prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", prefix)
    specs: dict[str, FunctionSpec] = {}
    for config_path in sorted(app_root.glob("*/function.json")):
        folder = config_path.parent
        try:
            config = json.loads(config_path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as exc:
            logger.warning("Skipping %s: %s", config_path, exc)
            continue
        if config.get("disabled"):
            continue
        spec = FunctionSpec(folder.name, folder, config)
        for binding in config.get("bindings", []):
            if binding.get("type") == "httpTrigger":
                route = binding.get("route") or folder.name
                spec.route = Route.compile(f"{prefix.strip('/')}/{route.strip('/')}")
                spec.methods = frozenset(m.upper() for m in binding.get("methods") or [])
                spec.auth_level = str(binding.get("authLevel", "function")).lower()
        specs[spec.name] = spec
    return specs


def _specificity(spec: FunctionSpec) -> tuple[int, int]:
    """More literal segments win, then fewer parameters (so `{*rest}` loses)."""
    assert spec.route is not None
    return spec.route.literals, -len(spec.route.groups)


def _invoke(entry: Callable[..., Any], arg: Any) -> Any:
    """Call a sync or `async def` entry point."""
    result = entry(arg)
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def _error(status: int, code: str, message: str, extra: list[tuple[str, str]] | None = None) -> Reply:
    body = json.dumps({"success": False, "error": {"code": code, "message": message}}).encode()
    return status, [("Content-Type", "application/json; charset=utf-8"), *(extra or [])], body


def _reply(resp: Any) -> Reply:
    """Turn main's return value into status/headers/body, as the Python worker does."""
    if isinstance(resp, (str, bytes)):
        resp = func.HttpResponse(resp)
    if not isinstance(resp, func.HttpResponse):
        raise TypeError(f"main returned {type(resp).__name__}, expected azure.functions.HttpResponse")
    skip = ("content-length", "content-type", "set-cookie")
    headers = [(k, v) for k, v in resp.headers.items() if k.lower() not in skip]
    # The Python worker hands Set-Cookie to the host as parsed cookies (http.cookies.SimpleCookie),
    # and the host writes them again: do the same, so a cookie the worker would mangle fails here too.
    for raw in resp.headers.get_all("Set-Cookie"):
        headers += [("Set-Cookie", morsel.OutputString()) for morsel in SimpleCookie(raw).values()]
    content_type = resp.headers.get("content-type") or (
        f"{resp.mimetype}; charset={resp.charset}" if resp.mimetype.startswith("text/") else resp.mimetype
    )
    return resp.status_code, [("Content-Type", content_type), *headers], resp.get_body()


class FunctionHost:
    """Serves the HTTP-triggered functions under `app_root` on a background thread."""

    def __init__(self, app_root: Path, host: str = "127.0.0.1", port: int = 0, *,
                 function_key: str | None = None, queues: bool = False,
                 demo_principal: str | None = None) -> None:
        self.app_root = Path(app_root).resolve()
        # Dev only: stands in for App Service Authentication, which sets this header in Azure.
        self.demo_principal = demo_principal
        self.host, self.port = host, port
        self.function_key = function_key
        self.functions = discover(self.app_root)
        self.serve_queues = queues
        self.listeners: list[Any] = []
        self._entries: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _bind(self) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.function_host = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._server = server
        return server

    def start(self) -> FunctionHost:
        if self._server is None:
            server = self._bind()
            # 50 ms: stop() waits for the serving loop's next poll, and tests start and stop many hosts
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="funchost", daemon=True)
            self._thread.start()
            if self.serve_queues:
                self.start_queues()
        return self

    def start_queues(self) -> None:
        """Serve the queue-triggered folders from the queues in AzureWebJobsStorage."""
        from devtools.queuehost import QueueListener, QueueOptions, queue_bindings

        options = QueueOptions.from_host_json(self.app_root)
        for spec in self.functions.values():
            for binding in queue_bindings(spec.config):
                entry = self.entry_point(spec.name)
                listener = QueueListener(spec.name, binding, lambda msg, entry=entry: _invoke(entry, msg), options)
                self.listeners.append(listener.start())
                logger.info("%s: queue %s", spec.name, listener.queue_name)

    def stop_queues(self) -> None:
        listeners, self.listeners = self.listeners, []
        for listener in listeners:
            listener.stop()

    def serve_forever(self) -> None:
        """Foreground mode for the CLI; Ctrl+C stops it."""
        server = self._bind()
        if self.serve_queues:
            self.start_queues()
        for spec in self.functions.values():
            if spec.route is None:
                logger.info("%s: not HTTP (timers: FunctionHost.run_timer)", spec.name)
            else:
                methods = ",".join(sorted(spec.methods)) or "ANY"
                logger.info("%s: [%s] %s/%s", spec.name, methods, self.base_url, spec.route.template)
        logger.info("Listening on %s (Ctrl+C to stop)", self.base_url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            self._server = None

    def stop(self) -> None:
        self.stop_queues()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FunctionHost:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def entry_point(self, name: str) -> Callable[..., Any]:
        """Import the function's scriptFile (as a package module when under app_root) once."""
        with self._lock:
            if name not in self._entries:
                spec = self.functions[name]
                script = (spec.folder / spec.config.get("scriptFile", "__init__.py")).resolve()
                module = self._import(name, script)
                self._entries[name] = getattr(module, spec.config.get("entryPoint", "main"))
            return self._entries[name]

    def _import(self, name: str, script: Path) -> ModuleType:
        if str(self.app_root) not in sys.path:
            sys.path.insert(0, str(self.app_root))
        if script.is_relative_to(self.app_root):
            parts = list(script.with_suffix("").relative_to(self.app_root).parts)
            return importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        loader_spec = importlib.util.spec_from_file_location(f"_funchost_{name}", script)
        if loader_spec is None or loader_spec.loader is None:
            raise ImportError(f"Cannot load {script}")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
        return module

    def run_timer(self, folder_name: str) -> Any:
        """Run a timer-triggered function once, as if its schedule fired on time."""
        return _invoke(self.entry_point(folder_name), TimerRequest(past_due=False))

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        """Route one request to a function; errors become JSON, tracebacks go to the log only."""
        parts = urlsplit(url)
        path = parts.path
        matches = [(spec, params) for spec in self.functions.values() if spec.route
                   for params in [spec.route.match(path)] if params is not None]
        if not matches:
            return _error(404, "not_found", f"No function matches {method} {path}")
        allowed = [(s, p) for s, p in matches if not s.methods or method in s.methods]
        if not allowed:
            allow = ", ".join(sorted({m for s, _ in matches for m in s.methods}))
            message = f"{method} is not allowed for {path}"
            return _error(405, "method_not_allowed", message, [("Allow", allow)])
        spec, route_params = max(allowed, key=lambda m: _specificity(m[0]))
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if not self._authorized(spec, query, headers):
            return _error(401, "unauthorized", "A valid function key is required (?code= or x-functions-key)")
        if self.demo_principal and not any(k.lower() == DEMO_IDENTITY_HEADER.lower() for k in headers):
            headers = {**headers, DEMO_IDENTITY_HEADER: self.demo_principal}
        req = func.HttpRequest(method=method, url=url, headers=headers, params=query,
                               route_params=route_params, body=body)
        try:
            return _reply(_invoke(self.entry_point(spec.name), req))
        except Exception:
            logger.exception("Function %s failed on %s %s", spec.name, method, path)
            return _error(500, "internal_error", "Internal error")

    def _authorized(self, spec: FunctionSpec, query: dict[str, str], headers: dict[str, str]) -> bool:
        if self.function_key is None or spec.auth_level not in ("function", "admin"):
            return True
        lowered = {k.lower(): v for k, v in headers.items()}
        given = query.get("code") or lowered.get("x-functions-key") or ""
        return hmac.compare_digest(given.encode(), self.function_key.encode())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body go out as two writes; with Nagle on, the body waits for
    # the client's delayed ACK (~40 ms a request on Linux keep-alive connections).
    disable_nagle_algorithm = True
    server_version = "devtools-funchost"

    def _handle(self) -> None:
        started = time.perf_counter()
        host: FunctionHost = self.server.function_host  # type: ignore[attr-defined]
        body = self._read_body()
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        url = f"http://{self.headers.get('Host') or f'{host.host}:{host.port}'}{self.path}"
        status, reply_headers, payload = host.handle(self.command, url, headers, body)
        self.send_response(status)
        for key, value in reply_headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        elapsed = (time.perf_counter() - started) * 1000
        logger.info("%s %s -> %d (%.1f ms)", self.command, urlsplit(self.path).path, status, elapsed)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_TRACE = do_QUERY = _handle

    def _read_body(self) -> bytes:
        """Read the whole body (Content-Length or chunked) so keep-alive stays in sync."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's own access log; _handle logs one line per request."""


def _load_local_settings(app_root: Path) -> None:
    """Like Core Tools: local.settings.json Values become env vars unless already set."""
    settings = app_root / "local.settings.json"
    if settings.is_file():
        for key, value in json.loads(settings.read_text(encoding="utf-8-sig")).get("Values", {}).items():
            os.environ.setdefault(key, str(value))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the function folders over HTTP (dev only).")
    parser.add_argument("--root", type=Path, default=Path("."), help="function app root (default: .)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--function-key", default=None, help="enforce authLevel function/admin with this key")
    parser.add_argument("--no-queues", action="store_true", help="do not serve the queue triggers")
    parser.add_argument("--demo-principal", default=None, metavar="USER",
                        help="dev only: send requests without an identity header as USER (App Service Authentication's stand-in)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _load_local_settings(args.root)
    host = FunctionHost(args.root, args.host, args.port, function_key=args.function_key, queues=not args.no_queues,
                        demo_principal=args.demo_principal)
    if args.demo_principal:
        logger.warning("Dev only: requests without %s act as %s", DEMO_IDENTITY_HEADER, args.demo_principal)
    host.serve_forever()


if __name__ == "__main__":
    main()
