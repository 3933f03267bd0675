"""The README's first command: the service end to end on this machine, printed for a person.

Starts Azurite (in memory), the BC simulator (demo company CRONUS International Ltd.) and the
local Functions host (HTTP routes and the runs queue's trigger), then drives the real HTTP API:
create an integration, test connection, full sync, a second full sync, changes in "BC", a delta
sync, an asynchronous full sync with live progress, the runs, the sync logs and the change feed. Then
BC posts a sales order (its invoice arrives by delta, a reconcile flags the order "posted"),
deletes another and commits a vendor late (a reconcile restores it and proves each type
complete), and a line-only edit arrives by BC's change notification. Then a second integration
connected by delegated sign-in (authorize, the simulator's sign-in page followed the way a
browser follows redirects, the callback), its company picked from the list, and a sync."""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from devtools.azurite import AzuriteServer
from devtools.bcsim import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_COMPANY_ID,
    DEMO_ENVIRONMENT,
    DEMO_OAUTH_CLIENT_ID,
    DEMO_OAUTH_CLIENT_SECRET,
    DEMO_TENANT_ID,
    DEMO_US_COMPANY_ID,
    BCSimulator,
)
from devtools.funchost import FunctionHost
from devtools.screenshot import portal_screenshot

ROOT = Path(__file__).resolve().parent.parent
USER = "demo-user@contoso.com"
SCREENSHOT = ROOT / ".bench" / "portal.png"
ALL_TYPES = ["suppliers", "products", "customers", "salesOrders", "ledgerEntries",
             "salesInvoices", "salesCreditMemos", "purchaseInvoices", "accounts"]


def heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def show_counts(data: dict[str, Any]) -> None:
    print(f"  {'data type':<17}{'created':>9}{'updated':>9}{'unchanged':>11}{'errors':>8}  status")
    for key, c in data.items():
        extra = [f"{name} {c[name]}" for name in ("restored", "deleted", "undeleted") if c.get(name)]
        if c.get("linesWritten") or c.get("linesDeleted"):
            extra.append(f"lines written {c.get('linesWritten', 0)}, removed {c.get('linesDeleted', 0)}")
        if c.get("stockRefreshed"):
            extra.append(f"stock refreshed {c['stockRefreshed']}")
        note = f"  ({'; '.join(extra)})" if extra else ""
        print(f"  {key:<17}{c['created']:>9}{c['updated']:>9}{c.get('unchanged', 0):>11}{c['errors']:>8}  {c.get('status', '')}{note}")


class Client:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=f"{base_url}/api", headers={"X-MS-CLIENT-PRINCIPAL-ID": USER}, timeout=300)

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.http.request(method, path, json=body, params=params or None)
        payload = response.json()
        if not payload.get("success"):
            print(f"  ! {method} {path} -> HTTP {response.status_code}: {json.dumps(payload['error'])}")
            sys.exit(1)
        return payload["data"]


def watch_async_run(api: Client, iid: str) -> None:
    """Start a run in the background and draw its progress until it ends, as a person polling
    the Location header would."""
    response = api.http.post(f"/integrations/{iid}/dynamics/sync", json={"mode": "full"}, headers={"Prefer": "respond-async"})
    payload = response.json()
    if response.status_code != 202:
        print(f"  ! expected 202, got HTTP {response.status_code}: {json.dumps(payload)}")
        sys.exit(1)
    location = response.headers["Location"]
    print(f"  HTTP 202, Location: {location}, Retry-After: {response.headers['Retry-After']}s")
    last = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run = api.call("GET", location.removeprefix("/api"))
        progress = run["progress"]
        done = sum(1 for p in progress.values() if p["done"])
        reading = sum(1 for p in progress.values() if p["read"])
        line = (f"  {run['status']:<9} {sum(p['read'] for p in progress.values()):>5} records read,"
                f" {reading} of {len(progress)} types started, {done} done")
        if line != last:
            print(line)
            last = line
        if run["status"] in ("succeeded", "failed"):
            print(f"  finished in {run['slices']} slice(s): " + ", ".join(f"{k} read {p['read']}" for k, p in run["progress"].items()))
            return
        time.sleep(0.05)
    print("  ! the run did not finish within 2 minutes")
    sys.exit(1)


def make_changes(sim: BCSimulator) -> list[str]:
    """Edits a person would make in BC between two syncs; returns what was done."""
    company = sim.company()
    vendors = company.records("vendors")
    items = company.records("items")
    orders = company.records("salesOrders")
    sim.advance(60)
    for vendor in vendors[:3]:
        company.update("vendors", vendor["id"], phoneNumber="+1 425 555 0100")
    company.add("vendors", {"displayName": "Northwind Traders (new)"})
    for item in items[:2]:
        company.update("items", item["id"], unitPrice=float(item.get("unitPrice") or 0) + 1.25)
    stocked = items[10]
    company.post_stock(stocked["id"], 7)
    first_lines = company.lines(orders[0]["id"])
    company.add_order_line(orders[0]["id"], items[5]["id"], 2, 19.99)
    shrinking = next(o for o in orders[1:] if len(company.lines(o["id"])) > 1)
    second_lines = company.lines(shrinking["id"])
    company.remove_order_line(shrinking["id"], second_lines[-1]["id"])
    company.add("generalLedgerEntries", {"description": "Demo posting", "debitAmount": 125.5, "creditAmount": 0})
    company.add("generalLedgerEntries", {"description": "Demo posting", "debitAmount": 0, "creditAmount": 125.5})
    return [
        "3 vendors edited, 1 vendor added",
        "2 items repriced",
        f"stock posted: +7 of item {stocked['number']} (its lastModifiedDateTime does not change)",
        f"order {orders[0]['number']}: a line added ({len(first_lines)} -> {len(first_lines) + 1} lines)",
        f"order {shrinking['number']}: a line removed ({len(second_lines)} -> {len(second_lines) - 1} lines)",
        "2 general ledger entries posted",
    ]


def record(api: Client, iid: str, data_type: str, external_id: str) -> dict[str, Any] | None:
    """One stored record from the read API (None when it is not stored)."""
    response = api.http.get(f"/integrations/{iid}/records/{data_type}/{external_id}")
    if response.status_code == 404:
        return None
    payload = response.json()
    if not payload.get("success"):
        print(f"  ! GET records/{data_type}/{external_id} -> HTTP {response.status_code}: {json.dumps(payload['error'])}")
        sys.exit(1)
    return payload["data"]


def posting_and_reconcile(api: Client, sim: BCSimulator, iid: str) -> None:
    """BC posts an order (the order leaves salesOrders, an invoice appears), deletes another
    and commits a vendor late, stamped before the delta's look-back: the delta brings the
    invoice but misses the vendor; the reconcile restores it, flags both orders with their
    reason and proves every type complete."""
    company = sim.company()
    sim.advance(60)
    orders = [o for o in company.records("salesOrders") if company.lines(o["id"])]
    posted, deleted = orders[2], orders[3]
    invoice = company.post_sales_order(posted["id"])
    company.delete("salesOrders", deleted["id"])
    stamp = sim.now - timedelta(hours=1)
    late = company.add("vendors", {"displayName": "Late Commit Supplies"}, modified_at=stamp, committed=False)
    company.commit()

    heading("Posting and a late commit in Business Central")
    print(f"  - order {posted['number']} posted (shipped and invoiced): invoice {invoice['number']}, the order leaves salesOrders")
    print(f"  - order {deleted['number']} deleted")
    print(f"  - vendor {late['number']} \"{late['displayName']}\" committed now by a long transaction,"
          f" stamped an hour ago ({stamp:%H:%M:%S}Z, before the last delta's watermark minus its look-back)")

    heading('Delta sync (POST .../dynamics/sync {"mode": "delta"}): the invoice arrives')
    show_counts(api.call("POST", f"/integrations/{iid}/dynamics/sync", {"mode": "delta"}))
    stored_invoice = record(api, iid, "salesInvoices", invoice["id"])
    if stored_invoice is None:
        print(f"  ! invoice {invoice['number']} was not stored by the delta")
        sys.exit(1)
    print(f"  invoice {stored_invoice['number']}: orderExternalId {stored_invoice['orderExternalId']},"
          f" orderNumber {stored_invoice['orderNumber']}, {len(stored_invoice['lines'])} line(s),"
          f" total {stored_invoice.get('totalAmountIncludingTax')}")
    missed = record(api, iid, "suppliers", late["id"]) is None
    print(f"  vendor {late['number']} stored by the delta: {'no (its stamp is older than the look-back)' if missed else 'yes'}")

    heading('Reconcile (POST .../dynamics/sync {"mode": "reconcile"})')
    show_counts(api.call("POST", f"/integrations/{iid}/dynamics/sync", {"mode": "reconcile"}))
    for label, order in (("posted", posted), ("deleted", deleted)):
        view = record(api, iid, "salesOrders", order["id"]) or {}
        lines = view.get("lines", [])
        print(f"  order {order['number']} ({label} in BC): deletedInBC {view.get('deletedInBC')}, deletedReason"
              f" {view.get('deletedReason')!r}, invoiceExternalIds {view.get('invoiceExternalIds')},"
              f" {len(lines)} line(s) flagged {sorted({ln.get('deletedReason') for ln in lines}, key=str)}")
    restored = record(api, iid, "suppliers", late["id"])
    print(f"  vendor {late['number']} stored now: {'yes, name ' + repr(restored['name']) if restored else 'no'}")

    heading("Completeness (GET /api/integrations/{id}: completeness)")
    completeness = api.call("GET", f"/integrations/{iid}")["completeness"]
    for data_type in ALL_TYPES:
        c = completeness.get(data_type)
        if not c:
            print(f"  {data_type:<17}not verified")
            continue
        verdict = "verified complete" if c["storedCount"] == c["bcCount"] else "INCOMPLETE"
        print(f"  {data_type:<17}{verdict}: {c['storedCount']:,} of {c['bcCount']:,} at {c['verifiedAt']}"
              f"  (flagged deletedInBC: {c['deletedInBC']})")


def line_edit_by_notification(api: Client, sim: BCSimulator, iid: str, host_url: str) -> None:
    """Realtime: BC edits only a line's description (the order's timestamp stays, so no delta
    sees it), tells the subscription the order was updated, and the run that notification
    queues reads the order by id."""
    os.environ["PUBLIC_BASE_URL"] = host_url  # where BC sends notifications (plain http: loopback only)
    sim.webhooks.delay_seconds = 0.5  # BC batches for 30 s; the demo does not wait that long
    heading('Realtime (PATCH .../integrations/{id} {"realtime": true})')
    current = api.call("PATCH", f"/integrations/{iid}", {"realtime": True})
    subs = current["realtime"]["subscriptions"]
    print("  subscriptions: " + ", ".join(f"{k} {v['status']}" for k, v in subs.items()))
    print(f"  notificationUrl {host_url}/api/bc/notifications (BC's validation handshake answered for each)")

    company = sim.company()
    order = next(o for o in company.records("salesOrders") if company.lines(o["id"]))
    line = company.lines(order["id"])[0]
    before = next(ln for ln in (record(api, iid, "salesOrders", order["id"]) or {}).get("lines", []) if ln["externalId"] == line["id"])
    text = "Gift wrapped (edited on the line only)"
    company.edit_line_only(line["id"], description=text)
    print(f"  order {order['number']}, line {line['sequence']}: description {before['description']!r} -> {text!r} in BC")
    unchanged = company.get("salesOrders", order["id"])["lastModifiedDateTime"] == order["lastModifiedDateTime"]
    print(f"  the order's lastModifiedDateTime {'stays' if unchanged else 'MOVED from'} {order['lastModifiedDateTime']}:"
          " no delta can see the edit; BC notifies the order's subscription 'updated'")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = [r for r in api.call("GET", f"/integrations/{iid}/sync-runs", top=5) if r["trigger"] == "notification"]
        if runs and runs[0]["status"] in ("succeeded", "failed"):
            run = runs[0]
            print(f"  notification delivered; run {run['runId']} ({run['trigger']}, {run['mode']}) {run['status']}:"
                  f" salesOrders updated {run['counts'].get('salesOrders', {}).get('updated')}")
            break
        time.sleep(0.1)
    else:
        print("  ! no notification run finished within 2 minutes")
        sys.exit(1)
    after = next(ln for ln in (record(api, iid, "salesOrders", order["id"]) or {}).get("lines", []) if ln["externalId"] == line["id"])
    print(f"  stored line now (GET .../records/salesOrders/{{id}}): description {after['description']!r}")
    if after["description"] != text:
        print("  ! the stored line did not change")
        sys.exit(1)


def delegated(api: Client, sim: BCSimulator, host_url: str) -> str:
    """Sign in with Microsoft: the platform's app registration, a person's consent, silent refresh."""
    redirect_uri = f"{host_url}/api/oauth/callback"
    os.environ.update({"OAUTH_CLIENT_ID": DEMO_OAUTH_CLIENT_ID, "OAUTH_CLIENT_SECRET": DEMO_OAUTH_CLIENT_SECRET,
                       "OAUTH_REDIRECT_URI": redirect_uri})
    sim.register_oauth_app([redirect_uri])

    heading('Create a delegated integration ({"authMode": "delegated"}, no client secret)')
    created = api.call("POST", "/integrations", {"name": "CRONUS USA (signed in)", "authMode": "delegated",
                                                 "tenantId": DEMO_TENANT_ID, "environment": DEMO_ENVIRONMENT})
    iid = created["id"]
    print(f"  id {iid}, status {created['status']}")

    heading("Sign in (POST .../dynamics/authorize, then the browser's round trip)")
    reply = api.http.post(f"/integrations/{iid}/dynamics/authorize")
    started = reply.json()["data"]
    # The sign-in is bound to this browser: authorize set a cookie that only the callback gets back
    # (Secure, so a browser sends it over https or to localhost; this one is told to send it).
    binding = reply.headers["set-cookie"].split(";")[0]
    print(f"  authorizationUrl {started['authorizationUrl'].split('?')[0]}?... (expires {started['expiresAt']})")
    print(f"  binding cookie {binding.split('=')[0]}=... (HttpOnly; Secure; SameSite=Lax; Path=/api/oauth/callback)")
    with httpx.Client(verify=sim.ca_path, timeout=30) as browser:
        consent = browser.get(started["authorizationUrl"])  # the simulator consents for its demo user
        print(f"  Entra ID answered {consent.status_code}, redirecting to {consent.headers['Location'].split('?')[0]}")
        page = browser.get(consent.headers["Location"], headers={"Cookie": binding})  # the browser lands on our callback
    print(f"  callback answered {page.status_code}: {page.text.split('<h1>')[1].split('</h1>')[0]}")
    current = api.call("GET", f"/integrations/{iid}")
    print(f"  status {current['status']}, signed in as {current['authorizedUser']}")

    heading("Pick a company (GET .../dynamics/companies, PATCH companyId)")
    for company in api.call("GET", f"/integrations/{iid}/dynamics/companies"):
        print(f"  {company['id']}  {company['displayName']}")
    api.call("PATCH", f"/integrations/{iid}", {"companyId": DEMO_US_COMPANY_ID})
    tested = api.call("POST", f"/integrations/{iid}/dynamics/test")  # the page then names the company
    print(f"  test connection: connected to {tested['company']}")

    heading("Sync it (the access token comes silently from the stored refresh token)")
    show_counts(api.call("POST", f"/integrations/{iid}/dynamics/sync"))
    refreshes = sim.directory.grants.refreshes
    print(f"  refresh_token grants so far: {refreshes} (each one rotated the refresh token, stored encrypted at once)")
    return iid


def run(serve: bool) -> None:
    with AzuriteServer() as azurite, BCSimulator(seed=42) as sim:
        os.environ.update(
            {
                "TABLES_CONNECTION_STRING": azurite.connection_string,
                "AzureWebJobsStorage": azurite.connection_string,
                "TABLE_PREFIX": "",
                "BC_API_BASE_URL": sim.base_url,
                "AZURE_AUTHORITY_HOST": sim.base_url,
                "CREDENTIALS_KEY": os.environ.get("CREDENTIALS_KEY") or base64.b64encode(os.urandom(32)).decode(),
                "SSL_CERT_FILE": sim.ca_path,
                "REQUESTS_CA_BUNDLE": sim.ca_path,
                "SYNC_QUEUE_NAME": "sync-runs",
                "BC_PAGE_SIZE": "100",  # small pages, so the asynchronous run's progress moves visibly
            }
        )
        with FunctionHost(ROOT, queues=True, demo_principal=USER) as host:  # the page (dev only) acts as USER
            print(f"Azurite (in memory): {azurite.connection_string.split('TableEndpoint=')[1]}")
            print(f"BC simulator + Entra ID: {sim.base_url}   Functions host: {host.base_url}/api")
            api = Client(host.base_url)

            heading("Create an integration (POST /api/integrations)")
            integration = api.call(
                "POST",
                "/integrations",
                {
                    "name": "CRONUS demo",
                    "tenantId": DEMO_TENANT_ID,
                    "environment": DEMO_ENVIRONMENT,
                    "companyId": DEMO_COMPANY_ID,
                    "clientId": DEMO_CLIENT_ID,
                    "clientSecret": DEMO_CLIENT_SECRET,
                    "entities": ALL_TYPES,
                    "syncIntervalMinutes": 15,
                },
            )
            iid = integration["id"]
            print(f"  id {iid}, status {integration['status']}, entities {', '.join(integration['entities'])}")
            print(f"  (the response carries no secret: hasClientSecret={integration['hasClientSecret']})")

            heading("Test connection (POST .../dynamics/test)")
            test = api.call("POST", f"/integrations/{iid}/dynamics/test")
            print(f"  connected: {test['connected']}, company: {test['company']}")
            print(f"  vendorCount {test['vendorCount']}, itemCount {test['itemCount']}")
            print("  counts " + ", ".join(f"{key} {n}" for key, n in test["counts"].items()))

            heading("Full sync (POST .../dynamics/sync, no body)")
            show_counts(api.call("POST", f"/integrations/{iid}/dynamics/sync"))

            heading("Second full sync: nothing changed in BC")
            show_counts(api.call("POST", f"/integrations/{iid}/dynamics/sync"))

            heading("Changes in Business Central")
            for line in make_changes(sim):
                print(f"  - {line}")

            heading('Delta sync (POST .../dynamics/sync {"mode": "delta"})')
            show_counts(api.call("POST", f"/integrations/{iid}/dynamics/sync", {"mode": "delta"}))

            heading("Asynchronous full sync (POST .../dynamics/sync with Prefer: respond-async)")
            watch_async_run(api, iid)

            heading("Runs (GET .../sync-runs), newest first")
            for entry in api.call("GET", f"/integrations/{iid}/sync-runs", top=5):
                total = sum(c["created"] + c["updated"] + c.get("unchanged", 0) for c in entry["counts"].values())
                print(f"  {entry['runId']}  {entry['trigger']:<7}{entry['mode']:<6}{entry['status']:<10} slices {entry['slices']}, records {total}, BC requests {entry['bcRequests']}")

            heading("Sync logs (GET .../sync-logs?top=10), newest first")
            logs = api.call("GET", f"/integrations/{iid}/sync-logs", top=10)
            for entry in logs:
                m = entry["metadata"]
                print(
                    f"  {entry['createdAt']}  {entry['entityType']:<13}{entry['status']:<8}"
                    f" affected {entry['recordsAffected']:>4}  (created {m['created']}, updated {m['updated']},"
                    f" unchanged {m.get('unchanged', 0)}, errors {m.get('errorCount', 0)}, {m['mode']})"
                )

            heading("The integration now (GET /api/integrations/{id})")
            current = api.call("GET", f"/integrations/{iid}")
            print(f"  status {current['status']}, lastSyncedAt {current['lastSyncedAt']}, nextSyncAt {current['nextSyncAt']}")
            print(f"  last 24h: {current['statistics']['last24h']}")

            show_delta_changes(api, iid)  # the change feed (issue 13): before later runs change more
            posting_and_reconcile(api, sim, iid)
            line_edit_by_notification(api, sim, iid, host.base_url)

            delegated(api, sim, host.base_url)
            heading("The monitoring page (GET /api/portal), in headless Chromium")
            print(f"  pressed Sync now and View error log; screenshot: {portal_screenshot(f'{host.base_url}/api/portal', SCREENSHOT)}")

            if serve:
                heading("Serving: try it with curl (Ctrl+C stops)")
                print(f"  open {host.base_url}/api/portal in a browser (requests without identity act as {USER})")
                print(f"  curl -s -H 'X-MS-CLIENT-PRINCIPAL-ID: {USER}' {host.base_url}/api/integrations/{iid}/sync-logs?top=3")
                print(f"  curl -s -X POST -H 'X-MS-CLIENT-PRINCIPAL-ID: {USER}' {host.base_url}/api/integrations/{iid}/dynamics/sync")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
    print("\nDone: Azurite, the simulator and the host are stopped.")


def show_delta_changes(api: "Client", iid: str, shown: int = 3) -> None:
    """The change feed read from the beginning, each record once at its latest change, so the
    changes stamped after the delta run started are the delta's (the runs since, the
    asynchronous full sync, changed nothing); shown before the posting steps change more."""
    from shared.clock import parse_iso

    heading("Change feed (GET .../changes/{dataType}): what the delta sync changed")
    runs = api.call("GET", f"/integrations/{iid}/sync-runs", top=20)
    delta = next(run for run in runs if run["mode"] == "delta")  # newest first
    started = parse_iso(delta["startedAt"])
    for data_type in ALL_TYPES:
        changes: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"top": 1000, **({"cursor": cursor} if cursor else {})}
            page = api.http.get(f"/integrations/{iid}/changes/{data_type}", params=params).json()
            changes += page["data"]
            cursor = page["cursor"]
            if not page["hasMore"]:
                break
        recent = [c for c in changes if parse_iso(c["changedAt"]) >= started]
        print(f"  {data_type:<17}{len(changes):>5} records in the feed, {len(recent)} changed by the delta sync")
        for change in recent[:shown]:
            record = change["record"]
            label = record.get("name") or record.get("number") or record.get("description") or ""
            flags = " deletedInBC" if record.get("deletedInBC") else ""
            print(f"      {change['changedAt']}  {change['externalId']}  {label}  [{record.get('syncStatus')}{flags}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="keep the host running afterwards for curl")
    run(parser.parse_args().serve)


if __name__ == "__main__":
    main()
