"""Peak memory of a first full sync plus a second full sync over what it stored, at two sizes.

    python -m benchmarks.memory [--sizes 20000,200000] [--page-size 1000] [--runs 1|2] [--trace]

Each size runs in a fresh process (`--child N`) with its own simulator process and Azurite, so
its peak RSS (getrusage ru_maxrss) is the sync's alone; the bar (issue 7): the larger size within
1.3x of the smaller. `--trace` also runs tracemalloc in the children and prints what grew most
between the start of the first sync and the end of the second (it slows the run about 2x).
The 200,000 run is slow on Azurite, not in the sync: Azurite's in-memory store answers every
range query by filtering the whole table (only point reads use its index), so each page's
stored lookup costs in proportion to the table.
Prints figures; asserts nothing."""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

BAR = 1.3


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(items: int, trace: bool, page_size: int, runs: int = 2) -> None:
    from benchmarks.support import configure, new_integration, run_once, simulator
    from devtools.azurite import AzuriteServer
    from shared.app import App
    from shared.settings import load_settings

    with simulator(items) as sim, AzuriteServer() as azurite:
        configure(azurite, sim, BC_PAGE_SIZE=str(page_size))
        app = App(load_settings())
        integration = new_integration(app, sim.company_id, ["products"])
        if trace:
            import tracemalloc

            tracemalloc.start(10)
            base = tracemalloc.take_snapshot()
        baseline = rss_mb()
        first, first_s = run_once(app, integration, "full")
        after_first = rss_mb()
        second, second_s = run_once(app, integration, "full") if runs > 1 else (first, 0.0)
        result: dict[str, Any] = {
            "items": items, "baseline_mb": baseline, "after_first_mb": after_first, "peak_mb": rss_mb(),
            "first_s": first_s, "second_s": second_s,
            "created": first.progress["products"].created, "unchanged": second.progress["products"].unchanged if runs > 1 else 0,
            "errors": first.progress["products"].errors + (second.progress["products"].errors if runs > 1 else 0),
            "failures": [f"{run.status}: {run.error}" for run in (first, second) if run.status != "succeeded"],
        }
        if trace:
            current, peak = tracemalloc.get_traced_memory()
            top = tracemalloc.take_snapshot().compare_to(base, "lineno")[:12]
            result["traced_current_mb"], result["traced_peak_mb"] = current / 2**20, peak / 2**20
            result["top"] = [str(stat) for stat in top]
        print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000", help="comma-separated item counts (first = the reference)")
    parser.add_argument("--trace", action="store_true", help="tracemalloc top growth per size")
    parser.add_argument("--page-size", type=int, default=1000, help="BC_PAGE_SIZE (the same at every size)")
    parser.add_argument("--runs", type=int, choices=(1, 2), default=2, help="2: a first full sync and a second over what it stored; 1: the first only")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.trace, args.page_size, args.runs)

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'items':>8}{'first s':>9}{'second s':>10}{'created':>9}{'unchanged':>11}{'RSS before MB':>15}"
          f"{'after 1st MB':>14}{'peak MB':>9}{'wall s':>8}")
    results = []
    for items in sizes:
        started = time.perf_counter()
        command = [sys.executable, "-m", "benchmarks.memory", "--child", str(items), "--page-size", str(args.page_size), "--runs", str(args.runs)]
        command += ["--trace"] if args.trace else []
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        r["wall_s"] = time.perf_counter() - started
        results.append(r)
        print(f"{items:>8}{r['first_s']:>9.1f}{r['second_s']:>10.1f}{r['created']:>9}{r['unchanged']:>11}{r['baseline_mb']:>15.0f}"
              f"{r['after_first_mb']:>14.0f}{r['peak_mb']:>9.0f}{r['wall_s']:>8.0f}" + (f"  errors {r['errors']}" if r["errors"] else ""))
        for failure in r["failures"]:
            print(f"    a run did not succeed: {failure}")
        if args.trace:
            print(f"    tracemalloc: {r['traced_current_mb']:.1f} MB held at the end, {r['traced_peak_mb']:.1f} MB at the peak; top growth:")
            for line in r["top"]:
                print(f"      {line}")
    reference = results[0]
    for r in results[1:]:
        ratio = r["peak_mb"] / reference["peak_mb"]
        growth = (r["peak_mb"] - reference["peak_mb"]) * 2**20 / max(1, r["items"] - reference["items"])
        print(f"peak RSS {r['items']} vs {reference['items']} items: {r['peak_mb']:.0f} / {reference['peak_mb']:.0f} MB = {ratio:.2f}x "
              f"(bar {BAR}x: {'within' if ratio <= BAR else 'ABOVE'}); {growth:.0f} bytes per extra record")


if __name__ == "__main__":
    main()
