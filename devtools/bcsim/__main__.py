"""Run the simulator as its own process: `python -m devtools.bcsim [--bulk-items N] [--bulk-vendors N] [--id-order sql]`.

Prints one JSON line (base_url, ca_path, tenant, client, company ids) and serves until stdin
closes, so benchmarks keep the simulator's CPU out of the measured process, as real BC would be."""
from __future__ import annotations

import argparse
import json
import sys

from devtools.bcsim import DEMO_CLIENT_ID, DEMO_COMPANY_ID, DEMO_TENANT_ID, BCSimulator
from devtools.bcsim.guids import ID_ORDERS

EMPTY = {"vendors": 0, "items": 0, "customers": 0, "salesOrders": 0, "generalLedgerEntries": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk-items", type=int, default=0, help="also create 'Bench Co' with this many items")
    parser.add_argument("--bulk-vendors", type=int, default=0, help="and this many vendors")
    parser.add_argument("--id-order", choices=sorted(ID_ORDERS), default="sql", help="how GUIDs sort ($orderby=id, gt/lt, $skiptoken)")
    args = parser.parse_args()
    with BCSimulator(seed=1, id_order=args.id_order) as sim:
        company = DEMO_COMPANY_ID
        if args.bulk_items or args.bulk_vendors:
            company = sim.add_company(DEMO_TENANT_ID, "Bench Co", sizes=EMPTY)
            sim.seed_company_bulk(company, "items", args.bulk_items)
            sim.seed_company_bulk(company, "vendors", args.bulk_vendors)
        print(json.dumps({"base_url": sim.base_url, "ca_path": sim.ca_path, "tenant_id": DEMO_TENANT_ID,
                          "client_id": DEMO_CLIENT_ID, "company_id": company}), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
