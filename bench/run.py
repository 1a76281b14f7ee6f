"""`make bench`: run every benchmark and write BENCHMARKS.md (`--smoke`: a tiny run, under a minute).

Sections run cheapest first, the compile-scale ones last with what is left of the time budget;
a section that fails or finds no time is written as such, never left out. Nothing here asserts
a target: the report says which are met.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback

from bench import datapath, install, ovn, remap, report
from bench.util import ROOT, machine, run_worker

BUDGET = 28 * 60  # seconds for the whole run; `make bench` must finish within 30 minutes

FULL = {
    "install_runs": 3, "iperf_runs": 3, "iperf_seconds": 5, "remap_runs": 5,
    "ovn_size": "10k", "ovn_runs": 3, "ovn_changes": 4,
    "growth": [(1_000, 20), (10_000, 200), (100_000, 2_000)],
    # (the median of three at every size: a single 100k run varied by 10%)
    "scale": [("1k", 3, 600), ("10k", 3, 240), ("100k", 3, 120)],
    "incremental": [("10k", 3, 3, 240), ("100k", 3, 3, 300)],
}
SMOKE = {
    "install_runs": 1, "iperf_runs": 1, "iperf_seconds": 1, "remap_runs": 1,
    "ovn_size": "smoke", "ovn_runs": 1, "ovn_changes": 2,
    "growth": [(40, 4), (80, 8)],
    "scale": [("smoke", 2, 60)],
    "incremental": [("smoke", 2, 1, 60)],
}


class Run:
    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.p = SMOKE if smoke else FULL
        self.started = time.monotonic()
        self.results = {}

    def left(self) -> float:
        return BUDGET - (time.monotonic() - self.started)

    def section(self, name: str, fn):
        t = time.monotonic()
        try:
            self.results[name] = fn()
        except Exception as e:  # a benchmark that breaks is reported, and the others still run
            traceback.print_exc()
            self.results[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"bench: {name} done in {time.monotonic() - t:.0f} s ({self.left():.0f} s left)", flush=True)

    def worker(self, job: str, timeout: float, **args) -> dict:
        if timeout < 10:
            return {"error": "skipped: out of the time budget"}
        return run_worker("bench.compile", job, timeout, **args)

    def ovn(self):
        why = ovn.ensure_installed(may_install=not self.smoke)
        if why:
            return {"error": why}
        return ovn.section(self.p["ovn_size"], self.p["ovn_runs"], self.p["ovn_changes"])

    def growth(self):
        net_size, rack = (20, 2) if self.smoke else (100, 10)
        return [self.worker("host_growth", min(300, self.left()), interfaces=n, hosts=h, net_size=net_size, rack=rack)
                for n, h in self.p["growth"]]

    def incremental(self):
        # Before compile scale, which can fit any time left; these cannot stop half way.
        return {size: self.worker("incremental", self.left() - 240, size=size, runs=runs, others=others, budget=budget)
                for size, runs, others, budget in self.p["incremental"]}

    def scale(self):
        out = {}
        for size, runs, budget in self.p["scale"]:
            # What is left goes to the larger sizes, which then compile a sample and estimate.
            share = 0.5 if size != self.p["scale"][-1][0] else 1.0
            budget = max(10, min(budget, (self.left() - 60) * share))
            out[size] = [self.worker("scale", budget + 300, size=size, budget=budget, yaml_read=(i == 0 and size != "100k"))
                         for i in range(runs)]
        return out

    def all(self):
        self.machine = machine()
        self.section("install", lambda: install.section(self.smoke, self.p["install_runs"]))
        self.section("datapath", lambda: datapath.section(self.p["iperf_runs"], self.p["iperf_seconds"]))
        self.section("remap", lambda: remap.section(self.p["remap_runs"]))
        self.section("ovn", self.ovn)
        self.section("growth", self.growth)
        self.section("incremental", self.incremental)
        self.section("scale", self.scale)
        self.machine["seconds"] = time.monotonic() - self.started
        self.machine["load_end"] = os.getloadavg()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one run each: proves the benchmarks work")
    p.add_argument("--output", default=os.path.join(ROOT, "BENCHMARKS.md"))
    p.add_argument("--results", help="also keep the raw results here (JSON)")
    p.add_argument("--from-results", metavar="FILE", help="only write the report from kept raw results")
    args = p.parse_args(argv)
    # Killed by a timeout: unwind, so that every `finally` stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.from_results:
        with open(args.from_results) as f:
            kept = json.load(f)
    else:
        run = Run(args.smoke)
        run.all()
        kept = {"machine": run.machine, "results": run.results, "smoke": args.smoke}
        if args.results:
            with open(args.results, "w") as f:
                json.dump(kept, f)
    with open(args.output, "w") as f:
        f.write(report.render(kept["machine"], kept["results"], kept["smoke"]))
    print(f"bench: wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
