"""BCSimulator: the object tests and the demo hold; owns the clock, the data, the server thread."""
from __future__ import annotations

import os
import random
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .auth import Directory
from .certs import Certs, make_certs
from .faults import FaultPlan
from .guids import guid_key_for
from .limits import RateLimits, SlowPages
from .odata import ODataError
from .seed import SEED_BASE, fmt_dt
from .server import QuietServer, make_server
from .webhooks import WebhookHub
from .store import DEMO_SIZES, SEEDED, SMALL_SIZES, TEMPLATES, CompanyStore, EntitySet

DEMO_TENANT_ID = "7b0f3c1e-4d2a-4f6b-9c8e-2a1d5e6f7a80"
DEMO_TENANT_DOMAIN = "cronus.example"  # the demo tenant's verified domain: tenantId may be either
DEMO_CLIENT_ID = "3f9a2c71-8b4e-4d05-a6c2-9e1b7d3f5a24"
DEMO_CLIENT_SECRET = "-".join(["sim", "client", "secret"])  # fake on purpose; never a real credential
DEMO_ENVIRONMENT = "production"
DEMO_COMPANY_ID = "9b3c8e4a-52f1-ef11-9344-000d3a2f8c17"
DEMO_COMPANY_NAME = "CRONUS International Ltd."
DEMO_US_COMPANY_ID = "9b3c8e4b-52f1-ef11-9344-000d3a2f8c17"
DEMO_US_COMPANY_NAME = "CRONUS USA, Inc."
#: The platform's own multi-tenant app registration (delegated sign-in) and the people who sign in.
DEMO_OAUTH_CLIENT_ID = "5c1e7a90-2b3d-4e8f-9a6b-0d4c3e2f1a57"
DEMO_OAUTH_CLIENT_SECRET = "-".join(["sim", "oauth", "secret"])  # fake on purpose
DEMO_USER = "admin@cronus.example"
DEMO_DECLINING_USER = "decline@cronus.example"  # login_hint for a person who cancels the consent

#: A seeded company's snapshot by what decides its data (seed, tenant, id, sizes, id order): the
#: seeding is deterministic, so a reset (once per test) restores it in ~10 ms instead of ~60 ms.
_SEEDED: dict[tuple[Any, ...], bytes] = {}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int  # 0 = connection dropped by a fault


class BCSimulator:
    """Entra ID authority + BC API v2.0 over HTTPS on 127.0.0.1, with deterministic demo data."""

    def __new__(cls, *args: Any, **kwargs: Any) -> BCSimulator:
        """Keeps the constructor's arguments, so reset() rebuilds exactly what they built."""
        instance = super().__new__(cls)
        instance._constructed_with = (args, kwargs)
        return instance

    def __init__(self, seed: int = 42, *, id_order: str | None = None) -> None:
        """`id_order`: how GUIDs sort and compare (`$orderby=id`, `gt`/`lt`, `$skiptoken`): "sql"
        (SQL Server uniqueidentifier order, as BC does; the default) or "text" (the other reading).
        The BCSIM_ID_ORDER environment variable sets the default, to run a whole suite either way."""
        self.seed = seed
        id_order = id_order or os.environ.get("BCSIM_ID_ORDER") or "sql"
        self.id_order = id_order
        self._guid_key = guid_key_for(id_order)
        self._lock = threading.RLock()
        self._wall0, self._mono0, self._offset = datetime.now(timezone.utc), time.monotonic(), timedelta()
        self.faults = FaultPlan()
        #: BC's request limits per credential (sliding 5-minute window, 5 at once + 95 queued)
        self.limits = RateLimits(lambda: self.now.timestamp())
        #: heavy pages that take long (off until configured)
        self.slow = SlowPages()
        self.directory = Directory(lambda: self.now)
        self.requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._stores: dict[str, CompanyStore] = {}
        self._companies: dict[str, EntitySet] = {}
        self._server: QuietServer | None = None
        self._thread: threading.Thread | None = None
        self._certs: Certs | None = None
        self.webhooks = WebhookHub(self)
        self.register_app(DEMO_TENANT_ID, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
        self.directory.domains[DEMO_TENANT_DOMAIN] = DEMO_TENANT_ID
        self.directory.grants.add_user(DEMO_TENANT_ID, DEMO_USER, "Cronus Admin")
        self.directory.grants.add_user(DEMO_TENANT_ID, DEMO_DECLINING_USER, "Cautious User", declines=True)
        self.add_company(DEMO_TENANT_ID, DEMO_COMPANY_NAME, sizes=DEMO_SIZES, company_id=DEMO_COMPANY_ID)
        self.add_company(DEMO_TENANT_ID, DEMO_US_COMPANY_NAME, sizes=SMALL_SIZES, company_id=DEMO_US_COMPANY_ID)

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> BCSimulator:
        if self._server is None:
            self._certs = make_certs()
            self._server = make_server(self)
            self._server.socket = self._certs.server_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False)
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="bcsim", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self.slow.off()  # let held requests finish so the server can shut down
        for fault in self.faults.pending():
            if fault.hold is not None:
                fault.hold.set()
        self.webhooks.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread:
                self._thread.join(5)
            if self._certs:
                self._certs.tmpdir.cleanup()
            self._server = self._thread = self._certs = None

    def reset(self) -> None:
        """Back to the state the constructor built: the seed data, no faults (held requests let
        go), no subscriptions or pending notifications, the directory's apps, grants and tokens,
        an empty request log, the clock unshifted. The running server, its port and its CA stay,
        so one simulator serves a whole test session. The state is rebuilt by the constructor
        itself, so whatever it seeds, reset restores."""
        self.faults.clear()
        self.webhooks.close()
        self.webhooks._http.close()
        live = self._server, self._thread, self._certs
        args, kwargs = self._constructed_with
        self.__init__(*args, **kwargs)  # type: ignore[misc]
        self._server, self._thread, self._certs = live

    def __enter__(self) -> BCSimulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("BCSimulator is not started")
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def ca_path(self) -> str:
        if self._certs is None:
            raise RuntimeError("BCSimulator is not started")
        return self._certs.ca_path

    @property
    def server_tls_context(self) -> ssl.SSLContext:
        """The simulator's server-side TLS context (a 127.0.0.1 leaf of its CA): lets a test run a
        second HTTPS listener the service's clients would trust, to see whether anything arrives."""
        if self._certs is None:
            raise RuntimeError("BCSimulator is not started")
        return self._certs.server_context

    # ---- clock -------------------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        """Simulated UTC now: wall clock at construction + monotonic elapsed + set_now/advance shifts."""
        return self._wall0 + timedelta(seconds=time.monotonic() - self._mono0) + self._offset

    def set_now(self, when: datetime) -> None:
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        with self._lock:
            self._offset += when - self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)

    # ---- requests log ------------------------------------------------------------------------
    def _record(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], status: int,
                log: list[RecordedRequest] | None = None) -> None:
        """Appends to `log`: the request log as it was when the request arrived. A request that
        was still being answered (held, delayed, slow) when reset() started a new log belongs
        to the earlier log, not to the next test's."""
        with self._requests_lock:
            (self.requests if log is None else log).append(RecordedRequest(method, path, query, headers, status))

    def clear_requests(self) -> None:
        with self._requests_lock:
            self.requests.clear()

    # ---- tenants, apps, companies ----------------------------------------------------------------
    def register_app(self, tenant_id: str, client_id: str, client_secret: str) -> None:
        self.directory.register_app(tenant_id, client_id, client_secret)

    def set_client_secret(self, tenant_id: str, client_id: str, new_secret: str) -> None:
        self.directory.set_client_secret(tenant_id, client_id, new_secret)

    def set_permissions(self, client_id: str, allowed: bool) -> None:
        self.directory.set_permissions(client_id, allowed)

    def revoke_tokens(self) -> None:
        self.directory.revoke_tokens()

    # ---- delegated sign-in ---------------------------------------------------------------------
    def register_oauth_app(self, redirect_uris: list[str], client_id: str = DEMO_OAUTH_CLIENT_ID,
                           client_secret: str = DEMO_OAUTH_CLIENT_SECRET) -> None:
        """The platform's multi-tenant app, with the redirect URIs it may use."""
        self.directory.grants.register(client_id, client_secret, redirect_uris)

    def decline_consent(self, decline: bool = True) -> None:
        """Everyone cancels the consent page from now on (or no longer)."""
        self.directory.grants.decline_all = decline

    def expire_refresh_tokens(self) -> int:
        return self.directory.grants.expire_refresh_tokens()

    def revoke_refresh_tokens(self, upn: str | None = None) -> int:
        return self.directory.grants.revoke_refresh_tokens(upn)

    def add_environment(self, tenant_id: str, name: str) -> None:
        with self._lock:
            tenant = self.directory.tenant(tenant_id, create=True)
            assert tenant is not None
            tenant.environments.add(name.lower())

    def add_company(self, tenant_id: str, name: str, display_name: str | None = None,
                    sizes: dict[str, int] | None = None, *, company_id: str | None = None) -> str:
        """Create and seed a company (default sizes: the small CRONUS USA set); returns its id."""
        rng = random.Random(f"{self.seed}:company:{name}:{len(self._stores)}")
        cid = (company_id or str(uuid.UUID(int=rng.getrandbits(128), version=4))).lower()
        created = fmt_dt(SEED_BASE - timedelta(days=rng.randint(30, 400), seconds=rng.random() * 86400))
        admin = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        with self._lock:
            self.directory.tenant(tenant_id, create=True)
            tenant = tenant_id.lower()
            if tenant not in self._companies:
                self._companies[tenant] = EntitySet("companies", TEMPLATES["companies"], self._guid_key)
            self._companies[tenant].put({
                "id": cid, "systemVersion": "25.5.31452.0", "timestamp": rng.randint(2000, 90000), "name": name,
                "displayName": display_name or name, "businessProfileId": "", "systemCreatedAt": created,
                "systemCreatedBy": admin, "systemModifiedAt": created, "systemModifiedBy": admin})
            store = self._stores[cid] = CompanyStore(cid, tenant, self.seed, self._lock, lambda: self.now,
                                                     self._guid_key)
            store.on_change = lambda entity_set, rid, change, cid=cid: self.webhooks.changed(cid, entity_set, rid, change)
            counts = SMALL_SIZES if sizes is None else sizes
            seeded = (self.seed, tenant, cid, tuple(sorted(counts.items())), self.id_order)
            if seeded in _SEEDED:
                store.restore(_SEEDED[seeded])
            else:
                for entity_set in SEEDED:
                    store.bulk(entity_set, counts.get(entity_set, 0))
                _SEEDED[seeded] = store.snapshot()
        return cid

    def set_id_order(self, id_order: str) -> None:
        """Switch how GUIDs sort and compare ("sql" or "text") for every company, from now on."""
        key = guid_key_for(id_order)
        with self._lock:
            self.id_order, self._guid_key = id_order, key
            for es in [*self._companies.values(), *(s for st in self._stores.values() for s in st.sets.values())]:
                es.set_guid_order(key)

    def reset_controls(self) -> None:
        """Back to BC's defaults for every behaviour control (not the data): limits and their
        window, slow pages, faults, webhook options. A session-scoped simulator's reset calls it."""
        self.limits.configure(per_window=6000, window_seconds=300.0, concurrent=5, queued=95, retry_after=None,
                              enabled=True)
        self.limits.reset()
        self.slow.off()
        self.faults.clear()
        hub = self.webhooks
        hub.resource_form, hub.collection_threshold, hub.limit, hub.delay_seconds = "subscribed", 1000, 200, 30.0
        self.set_id_order(os.environ.get("BCSIM_ID_ORDER") or "sql")

    def company(self, company_id: str = DEMO_COMPANY_ID) -> CompanyStore:
        return self._stores[company_id.lower()]

    def seed_company_bulk(self, company_id: str, entity_set: str, count: int) -> None:
        self.company(company_id).bulk(entity_set, count)

    def add_extension_field(self, company_id: str, entity_set: str, field_name: str, value_fn_or_default: Any) -> None:
        self.company(company_id).add_extension_field(entity_set, field_name, value_fn_or_default)

    # ---- used by the server --------------------------------------------------------------------
    def _company_set(self, tenant_id: str) -> EntitySet:
        return self._companies.get(tenant_id.lower()) or EntitySet("companies", TEMPLATES["companies"], self._guid_key)

    def _store_for(self, tenant_id: str, company_id: str | None) -> CompanyStore:
        store = self._stores.get((company_id or "").strip("'").lower())
        if store is None or store.tenant_id != tenant_id.lower():
            raise ODataError(404, "Internal_CompanyNotFound",
                             f"Cannot process the request because the company '{company_id}' cannot be found.")
        return store
