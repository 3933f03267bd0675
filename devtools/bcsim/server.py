"""HTTP handler: Entra authority + BC API v2.0 routes + the /_sim control API, on one TLS port."""
from __future__ import annotations

import base64
import json
import re
import socket
import time
import uuid
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .faults import Fault, bc_error_body
from .limits import TooManyRequests
from .odata import MAX_PAGE, ODataError, count, parse_query, project, run
from .seed import fmt_dt
from .store import LINE_SETS, TEMPLATES, EntitySet

if TYPE_CHECKING:
    from .simulator import BCSimulator

API_RE = re.compile(r"^/v2\.0/(?:(?P<tenant>[^/]+)/)?(?P<env>[^/]+)/api/v2\.0/(?P<rest>.*)$")
SUBSCRIPTIONS_RE = re.compile(r"^subscriptions(?:\((?P<sid>[^)]*)\))?$")
REST_RE = re.compile(r"^companies(?:\((?P<cid>[^)]*)\)(?:/(?P<set>\w+)(?:\((?P<rid>[^)]*)\))?"
                     r"(?:/(?P<sub>\w+))?)?)?(?P<count>/\$count)?$")
OIDC_RE = re.compile(r"^/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration$")
TOKEN_RE = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")
AUTHORIZE_RE = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/authorize$")
KEYS_RE = re.compile(r"^/(?P<tenant>[^/]+)/discovery/v2\.0/keys$")
Reply = tuple[int, Any, str, dict[str, str]]
ODATA_JSON = "application/json; odata.metadata=minimal; odata.streaming=true"
DEMO_TENANT = "7b0f3c1e-4d2a-4f6b-9c8e-2a1d5e6f7a80"  # simulator.DEMO_TENANT_ID (no import circle)
NO_ENVIRONMENT = (b'<error xmlns="http://docs.oasis-open.org/odata/ns/metadata">\n    <code>NoEnvironment</code>\n'
                  b'    <message>Environment does not exist.</message>\n</error>')


class QuietServer(ThreadingHTTPServer):
    """Daemon handler threads, no join on close, no tracebacks for clients that hang up."""

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections
    disable_nagle_algorithm = True  # headers and body are two writes: no ~40 ms delayed-ACK stall per answer
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    timeout = 30
    sim: BCSimulator

    def setup(self) -> None:
        super().setup()
        self.connection.do_handshake()  # in the worker thread, so a silent client can't block accept()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # ---- plumbing --------------------------------------------------------------------------
    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.raw_path, path = url.path, unquote(url.path)
        pairs = parse_qsl(url.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.status = 0
        # Recorded before the answer leaves (see _send): a client that got its answer always
        # finds its request in sim.requests. Recorded in the log it arrived in: a reset meanwhile
        # starts the next test's log, which must not get it.
        log = self.sim.requests
        self._record = None if path.startswith("/_sim/") else (lambda: self.sim._record(self.command, path, dict(pairs), headers, self.status, log))
        try:
            if path.startswith("/_sim/"):
                return self._control(path, body)
            asked = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", headers.get("prefer", ""))
            fault = self.sim.faults.take(unquote(self.path), is_api=path.startswith("/v2.0/"), page_size=int(asked[1]) if asked else None)
            if fault and fault.delay:
                time.sleep(fault.delay)
            if fault and fault.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif fault and not (fault.status == 200 and fault.body is None):
                self._send(fault.status, *fault.response())
            else:
                self._route(path, pairs, headers, body)
        except ODataError as e:
            extra = {"WWW-Authenticate": f'Bearer authorization_uri="{self.sim.base_url}/common/oauth2/authorize"'} \
                if e.status == 401 else {}
            if isinstance(e, TooManyRequests) and e.retry_after is not None:
                extra["Retry-After"] = f"{e.retry_after:g}"
            self._send(e.status, bc_error_body(e.code, e.message), "application/json; charset=utf-8", extra)
        except (ConnectionError, OSError):
            self.close_connection = True
        except Exception as e:  # a simulator bug should read like a BC 500, not hang the client
            self._send(500, bc_error_body("Internal_ServerError", f"Simulator error: {e!r}"), "application/json")
        finally:
            self._record_once()

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _dispatch

    def _record_once(self) -> None:
        record, self._record = self._record, None
        if record is not None:
            record()

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self._record_once()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, ctype: str = "application/json; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode(), ctype, headers)

    # ---- routes ----------------------------------------------------------------------------
    def _route(self, path: str, pairs: list[tuple[str, str]], headers: dict[str, str], body: bytes) -> None:
        if m := OIDC_RE.match(path):
            return self._openid(m["tenant"])
        if m := TOKEN_RE.match(path):
            form = dict(parse_qsl(body.decode("utf-8", "replace")))
            basic = None
            if headers.get("authorization", "").lower().startswith("basic "):
                user, _, pw = base64.b64decode(headers["authorization"][6:]).decode().partition(":")
                basic = (unquote(user), unquote(pw))
            status, obj = self.sim.directory.issue(m["tenant"], form, basic, self.sim.base_url)
            return self._json(status, obj, headers={"Cache-Control": "no-store, no-cache"})
        if m := AUTHORIZE_RE.match(path):
            return self._authorize(m["tenant"], dict(pairs))
        if m := KEYS_RE.match(path):
            return self._json(200, self.sim.directory.grants.jwks())
        if m := API_RE.match(path):
            return self._api(m, pairs, headers, body)
        raise ODataError(404, "BadRequest_NotFound", "No HTTP resource was found that matches the request URI "
                         f"'{self.sim.base_url}{path}'.")

    def _authorize(self, tenant: str, query: dict[str, str]) -> None:
        """The sign-in and consent pages, answered at once: a redirect back with a code (or an
        error), or an error page when the client or its redirect_uri cannot be trusted."""
        known = self.sim.directory.tenant(tenant) is not None
        status, location, problem = self.sim.directory.grants.authorize(self.sim.directory.resolve(tenant), query, known)
        if status == 302:
            return self._send(302, b"", "text/html; charset=utf-8", {"Location": location})
        page = f"<!doctype html><title>Sign in</title><h1>Sorry, but we're having trouble signing you in.</h1><p>{problem}</p>"
        self._send(status, page.encode(), "text/html; charset=utf-8")

    def _openid(self, tenant: str) -> None:
        if self.sim.directory.tenant(tenant) is None:
            from .auth import aad_error
            return self._json(*aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to "
                              "make sure you have the correct tenant ID and are signing into the correct cloud."))
        b = f"{self.sim.base_url}/{tenant}"
        self._json(200, {
            "token_endpoint": f"{b}/oauth2/v2.0/token", "authorization_endpoint": f"{b}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{b}/oauth2/v2.0/devicecode", "issuer": f"{b}/v2.0",
            "jwks_uri": f"{b}/discovery/v2.0/keys", "end_session_endpoint": f"{b}/oauth2/v2.0/logout",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_modes_supported": ["query", "fragment", "form_post"], "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"], "scopes_supported": ["openid", "profile", "email",
                                                                                     "offline_access"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "request_uri_parameter_supported": False, "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com", "msgraph_host": "graph.microsoft.com"})

    def _api(self, m: re.Match[str], pairs: list[tuple[str, str]], headers: dict[str, str], body: bytes = b"") -> None:
        sim = self.sim
        tok = sim.directory.check(headers.get("authorization"))
        tenant = sim.directory.resolve(m["tenant"] or (tok.tenant_id if tok else ""))
        if tok is None or tok.tenant_id != tenant:
            raise ODataError(401, "Authentication_InvalidCredentials", "The server has rejected the client credentials.")
        if tok.client_id in sim.directory.denied:
            raise ODataError(403, "Authorization_InsufficientPermissions", "Sorry, the current permissions prevented "
                             "the action. (TableData 2000000006 Company Read: System Application)")
        t = sim.directory.tenant(tenant)
        if t is None or m["env"].lower() not in t.environments:
            return self._send(404, NO_ENVIRONMENT, "application/xml")
        with sim.limits.admit(f"{tok.tenant_id}|{tok.client_id}|{tok.user_oid or ''}"):
            return self._api_admitted(m, tenant, pairs, headers, body)

    def _api_admitted(self, m: re.Match[str], tenant: str, pairs: list[tuple[str, str]], headers: dict[str, str],
                      body: bytes) -> None:
        sim = self.sim
        if s := SUBSCRIPTIONS_RE.match(m["rest"]):
            return self._subscriptions(tenant, m["env"].lower(), s["sid"], headers, body)
        if self.command != "GET":
            raise ODataError(405, "BadRequest_MethodNotAllowed",
                             f"'{self.command}' requests are not supported by the simulator (read-only BC).")
        r = REST_RE.match(m["rest"])
        if not r:
            seg = m["rest"].split("/")[-1].split("(")[0]
            raise ODataError(404, "BadRequest_ResourceNotFound", f"Resource not found for the segment '{seg}'.")
        api_root = sim.base_url + self.raw_path[: self.raw_path.find("/api/v2.0/") + len("/api/v2.0")]
        ctx = f"{api_root}/$metadata#companies"
        query = dict(pairs)
        if r["set"] is not None and (r["rid"] is None or r["sub"] is not None) and not r["count"]:
            slow = sim.slow.hold(_page_size(headers), self.raw_path)  # outside the data lock
            if slow is not None:
                return self._send(slow, *Fault(slow).response())
        with sim._lock:  # build copies under the lock, serialize after releasing it
            status, obj, ctype, extra = self._api_reply(r, tenant, ctx, pairs, query, headers)
        if isinstance(obj, bytes):
            return self._send(status, obj, ctype, extra)
        self._json(status, obj, ctype, extra)

    def _api_reply(self, r: re.Match[str], tenant: str, ctx: str, pairs: list[tuple[str, str]],
                   query: dict[str, str], headers: dict[str, str]) -> Reply:
        sim = self.sim
        if r["set"] is None:  # companies
            es = sim._company_set(tenant)
            if r["cid"] is None:
                return self._list(es, pairs, query, headers, ctx, bool(r["count"]))
            return self._single(es, r["cid"], query, f"{ctx}/$entity")
        store = sim._store_for(tenant, r["cid"])
        es = store.sets.get(r["set"])
        if es is None:
            raise ODataError(404, "BadRequest_ResourceNotFound", f"Resource not found for the segment '{r['set']}'.")
        ctx += f"({r['cid']})/{r['set']}"
        if r["rid"] is not None and r["sub"] is None:
            return self._single(es, r["rid"], query, f"{ctx}/$entity", store)
        if r["sub"] is not None:
            line_set = LINE_SETS.get(r["set"])
            if r["sub"] != line_set:
                raise ODataError(404, "BadRequest_ResourceNotFound", f"Resource not found for the segment '{r['sub']}'.")
            self._single(es, r["rid"] or "", {}, "")
            rid = (r["rid"] or "").strip("'").lower()
            lines = EntitySet(line_set, TEMPLATES[line_set], sim._guid_key)
            lines.types = store.sets[line_set].types
            lines.rows = {ln["id"]: ln for ln in store.lines(rid, line_set)}
            return self._list(lines, pairs, query, headers, f"{ctx}({r['rid']})/{line_set}", bool(r["count"]))
        expand = (LINE_SETS[r["set"]],) if r["set"] in LINE_SETS else ()
        return self._list(es, pairs, query, headers, ctx, bool(r["count"]), expand, store)

    def _single(self, es: EntitySet, rid: str, query: dict[str, str], ctx: str, store: Any = None) -> Reply:
        rec = es.rows.get(rid.strip("'").lower())
        if rec is None:
            if es.name == "companies":
                raise ODataError(404, "Internal_CompanyNotFound", f"Cannot process the request because the company "
                                 f"'{rid}' cannot be found.")
            raise ODataError(404, "Internal_RecordNotFound", f"The {es.type_name} does not exist. "
                             f"Identification fields and values: SystemId='{{{rid.upper()}}}'")
        q = parse_query(query, es, (LINE_SETS[es.name],) if es.name in LINE_SETS and store else ())
        out = project(rec, q.select)
        for line_set in q.expand:
            out[line_set] = [dict(ln) for ln in store.lines(rec["id"], line_set)]
        return 200, {"@odata.context": ctx, **out}, ODATA_JSON, _odata_headers()

    def _list(self, es: EntitySet, pairs: list[tuple[str, str]], query: dict[str, str], headers: dict[str, str],
              ctx: str, want_count: bool, expand: tuple[str, ...] = (), store: Any = None) -> Reply:
        q = parse_query(query, es, expand)
        if want_count:
            return 200, str(count(es, q)).encode(), "text/plain; charset=utf-8", _odata_headers()
        size, extra = _page_size(headers), _odata_headers()
        if "odata.maxpagesize" in headers.get("prefer", ""):
            extra["Preference-Applied"] = f"odata.maxpagesize={size}"
        page, top_left = run(es, q, size)
        value = [project(rec, q.select) for rec in page]
        for line_set in q.expand:  # only a header's own line set is expandable
            for out, rec in zip(value, page):
                out[line_set] = [dict(ln) for ln in store.lines(rec["id"], line_set)]
        body: dict[str, Any] = {"@odata.context": ctx + (f"({','.join(q.select)})" if q.select else ""),
                                "value": value}
        if top_left is not None and page:
            keep = [(k, str(top_left) if k == "$top" else v) for k, v in pairs if k not in ("$skiptoken", "aid")]
            qs = "".join(f"{quote(k, safe='$')}={quote(v, safe='')}&" for k, v in keep)
            body["@odata.nextLink"] = f"{self.sim.base_url}{self.raw_path}?{qs}aid=FIN&$skiptoken={page[-1]['id']}"
        return 200, body, ODATA_JSON, extra

    def _subscriptions(self, tenant: str, env: str, sid: str | None, headers: dict[str, str], body: bytes) -> None:
        """BC's webhook subscriptions (see webhooks.py); the handshake runs outside the data lock."""
        hub, method = self.sim.webhooks, self.command
        ctx = {"@odata.context": f"{self.sim.base_url}/v2.0/{tenant}/{env}/api/v2.0/$metadata#subscriptions"}
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            raise ODataError(400, "BadRequest", "The request body is not valid JSON.") from None
        if sid is None and method == "GET":
            return self._json(200, {**ctx, "value": [s.to_api() for s in hub.list(tenant, env)]}, ODATA_JSON)
        if sid is None and method == "POST":
            sub = hub.create(tenant, env, data)
            return self._json(201, {**ctx, **sub.to_api()}, ODATA_JSON, {"ETag": sub.etag})
        if sid is not None and method == "GET":
            sub = hub.get(tenant, env, sid)
            return self._json(200, {**ctx, **sub.to_api()}, ODATA_JSON, {"ETag": sub.etag})
        if sid is not None and method == "PATCH":
            sub = hub.renew(tenant, env, sid, headers.get("if-match"), data)
            return self._json(200, {**ctx, **sub.to_api()}, ODATA_JSON, {"ETag": sub.etag})
        if sid is not None and method == "DELETE":
            hub.delete(tenant, env, sid, headers.get("if-match"))
            return self._send(204, b"", "text/plain")
        raise ODataError(405, "BadRequest_MethodNotAllowed", f"'{method}' is not allowed on subscriptions.")

    # ---- control API (no auth, dev only) ---------------------------------------------------
    def _control(self, path: str, body: bytes) -> None:
        sim, parts = self.sim, path.strip("/").split("/")[1:]
        try:
            data = json.loads(body or b"{}")
            route, out = (self.command, parts[0] if parts else ""), None
            if route == ("GET", "health"):
                out = {"status": "ok", "now": fmt_dt(sim.now), "base_url": sim.base_url}
            elif route == ("POST", "faults"):
                f = (sim.faults.drop_connection(data.get("times", 1), data.get("path_contains"))
                     if data.pop("drop", False) else sim.faults.add(**data))
                out = {"added": asdict(f)}
            elif route == ("DELETE", "faults"):
                sim.faults.clear()
                out = {"cleared": True}
            elif route == ("POST", "revoke"):
                sim.revoke_tokens()
                out = {"revoked": True}
            elif route == ("POST", "oauth") and parts[1:] == ["expire"]:
                out = {"expired": sim.directory.grants.expire_refresh_tokens()}
            elif route == ("POST", "oauth") and parts[1:] == ["revoke"]:
                out = {"revoked": sim.directory.grants.revoke_refresh_tokens(data.get("upn"))}
            elif route == ("POST", "oauth") and parts[1:] == ["consent"]:
                sim.directory.grants.decline_all = bool(data.get("decline"))
                out = {"declineAll": sim.directory.grants.decline_all}
            elif route == ("POST", "id_order"):
                sim.set_id_order(str(data.get("order", "sql")))
                out = {"idOrder": sim.id_order}
            elif route == ("POST", "limits"):
                sim.limits.configure(**data)
                out = {"limits": {k: getattr(sim.limits, k) for k in ("per_window", "window_seconds", "concurrent",
                                                                      "queued", "retry_after", "enabled")}}
            elif route == ("POST", "slow"):
                sim.slow.configure(data.get("threshold"), float(data.get("seconds", 0)), data.get("status"),
                                   data.get("path_contains"))
                out = {"slow": {"threshold": sim.slow.threshold, "seconds": sim.slow.seconds, "status": sim.slow.status}}
            elif route == ("DELETE", "slow"):
                sim.slow.off()
                out = {"slow": None}
            elif route == ("POST", "webhooks") and parts[1:] == ["foreign"]:
                out = {"added": len(sim.webhooks.add_foreign(data.get("tenant", DEMO_TENANT), data.get(
                    "environment", "production"), int(data.get("count", 1))))}
            elif route == ("POST", "webhooks") and parts[1:] == ["environment_copy"]:
                out = {"dropped": sim.webhooks.copy_environment(data.get("tenant", DEMO_TENANT),
                                                               data.get("environment", "production"))}
            elif route == ("POST", "webhooks") and parts[1:] == ["options"]:
                hub = sim.webhooks
                for key in ("resource_form", "collection_threshold", "delay_seconds", "limit"):
                    if key in data:
                        if key == "resource_form" and data[key] not in ("subscribed", "no_slash", "slash", "absolute"):
                            raise ValueError(f"unknown resource_form {data[key]!r}")
                        setattr(hub, key, data[key])
                out = {k: getattr(hub, k) for k in ("resource_form", "collection_threshold", "delay_seconds", "limit")}
            elif route == ("POST", "advance"):
                sim.advance(float(data.get("seconds", 0)))
                out = {"now": fmt_dt(sim.now)}
            elif route == ("POST", "companies") and len(parts) == 5 and parts[4] == "stock":
                out = sim.company(parts[1]).post_stock(parts[3], float(data["quantity"]))
            elif route == ("POST", "companies") and len(parts) == 4 and parts[2] == "post":
                out = sim.company(parts[1]).post_sales_order(parts[3], data.get("quantities"))
            elif route == ("POST", "companies") and len(parts) == 3 and parts[2] in POSTINGS:
                out = _post_document(sim.company(parts[1]), parts[2], data)
            elif route == ("POST", "companies") and len(parts) == 4 and parts[2] == "lines":
                out = sim.company(parts[1]).edit_line_only(parts[3], **data)
            elif route == ("POST", "companies") and len(parts) == 4 and parts[2] == "uncommitted":
                at = data.pop("modified_at", None)
                out = sim.company(parts[1]).add(parts[3], data, modified_at=at, committed=False)
            elif route == ("POST", "companies") and len(parts) == 3 and parts[2] == "commit":
                out = {"committed": sim.company(parts[1]).commit()}
            elif route == ("POST", "companies") and len(parts) == 4:
                out = sim.company(parts[1]).update(parts[2], parts[3], modified_at=data.pop("modified_at", None), **data)
            if out is None:
                return self._json(404, {"error": f"unknown control route {self.command} {path}"})
            self._json(200, out)
        except (KeyError, TypeError, ValueError) as e:
            self._json(400, {"error": repr(e)})


POSTINGS = ("salesInvoices", "salesCreditMemos", "purchaseInvoices")


def _post_document(store: Any, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """POST /_sim/companies/{cid}/{salesInvoices|salesCreditMemos|purchaseInvoices} with
    {"customerId"|"vendorId", "lines": [{"itemId", "quantity"}], "invoiceId"?, "fromOrder"?}."""
    lines = [(str(ln["itemId"]), float(ln["quantity"])) for ln in data["lines"]]
    if kind == "salesInvoices":
        return store.create_sales_invoice(data["customerId"], lines)
    if kind == "salesCreditMemos":
        return store.post_sales_credit_memo(data["customerId"], lines, data.get("invoiceId"))
    return store.post_purchase_invoice(data["vendorId"], lines, from_order=bool(data.get("fromOrder", True)))


def _page_size(headers: dict[str, str]) -> int:
    """The page size a list request gets: its `Prefer: odata.maxpagesize`, else the server's."""
    if pm := re.search(r"odata\.maxpagesize\s*=\s*(\d+)", headers.get("prefer", "")):
        return max(1, min(int(pm[1]), MAX_PAGE))
    return MAX_PAGE


def _odata_headers() -> dict[str, str]:
    return {"OData-Version": "4.0", "request-id": str(uuid.uuid4()), "ms-correlation-x": str(uuid.uuid4())}


def make_server(sim: BCSimulator) -> QuietServer:
    """Bind 127.0.0.1 on an ephemeral port with a handler class bound to this simulator."""
    handler = type("BoundHandler", (Handler,), {"sim": sim})
    return QuietServer(("127.0.0.1", 0), handler)
