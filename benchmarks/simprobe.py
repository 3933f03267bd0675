"""The simulator's own process (`python -m devtools.bcsim`) with a probe on its request handler:
BC API requests in flight (the most seen at once), their count, and token requests. The probe
only counts; the simulator answers exactly as without it.

    python -m benchmarks.simprobe [--bulk-items N]

Prints the simulator's JSON line, then answers each `stats` line on stdin with one JSON line;
serves until stdin closes."""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from devtools.bcsim import DEMO_CLIENT_ID, DEMO_COMPANY_ID, DEMO_TENANT_ID, BCSimulator
from devtools.bcsim.__main__ import EMPTY
from devtools.bcsim.server import Handler


class Probe:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.api_requests = 0
        self.token_requests = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def install(self) -> None:
        original = Handler._dispatch
        probe = self

        def dispatch(handler: Any) -> None:
            api = handler.path.startswith("/v2.0/")
            if api:
                probe.enter()
            elif "/oauth2/" in handler.path:
                with probe._lock:
                    probe.token_requests += 1
            try:
                original(handler)
            finally:
                if api:
                    probe.leave()

        for verb in ("do_GET", "do_POST", "do_PATCH", "do_PUT", "do_DELETE"):
            setattr(Handler, verb, dispatch)

    def enter(self) -> None:
        with self._lock:
            now = time.time()
            self.first_at = self.first_at or now
            self.in_flight += 1
            self.api_requests += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.last_at = time.time()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"api_requests": self.api_requests, "max_in_flight": self.max_in_flight, "token_requests": self.token_requests,
                    "first_at": self.first_at, "last_at": self.last_at}

    def reset(self) -> None:
        with self._lock:
            self.max_in_flight = self.in_flight
            self.api_requests = self.token_requests = 0
            self.first_at = self.last_at = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk-items", type=int, default=0)
    args = parser.parse_args()
    probe = Probe()
    probe.install()
    with BCSimulator(seed=1) as sim:
        company = DEMO_COMPANY_ID
        if args.bulk_items:
            company = sim.add_company(DEMO_TENANT_ID, "Bench Co", sizes=EMPTY)
            sim.seed_company_bulk(company, "items", args.bulk_items)
        print(json.dumps({"base_url": sim.base_url, "ca_path": sim.ca_path, "tenant_id": DEMO_TENANT_ID,
                          "client_id": DEMO_CLIENT_ID, "company_id": company}), flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps(probe.stats()), flush=True)
            elif line.strip() == "reset":
                probe.reset()
                print(json.dumps({"reset": True}), flush=True)


if __name__ == "__main__":
    main()
