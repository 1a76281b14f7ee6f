"""BENCHMARKS.md from the results of bench.run: every figure with its same-run baseline and ratio."""
from __future__ import annotations

from bench import datapath, generate, install, ovn, remap
from bench.util import median

GIB = 1 << 30
SECTIONS = ("Compile scale", "Incremental change", "Flows per switch", "Install rate", "Data path",
            "Remap convergence", "The peer: OVN")


def _s(x) -> str:
    return "-" if x is None else (f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s")


def _gib(b) -> str:
    return f"{b / GIB:.2f} GiB"


def _met(ok) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def _error(r):
    """A failure's first line: enough to say why, short enough for a table."""
    e = r.get("error") if isinstance(r, dict) else None
    return e and e.strip().splitlines()[0][:300]


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _doc(module, skip: int = 0):
    """A module's docstring as markdown lines (its bullet lists stay lists)."""
    return [ln.strip() if not ln.startswith("  ") else ln for ln in module.__doc__.split("\n\n", skip)[-1].splitlines()] + [""]


def _block(text: str):
    return ["```", text.strip(), "```", ""]


class Report:
    def __init__(self, machine, results, smoke):
        self.m, self.r, self.smoke = machine, results, smoke
        self.lines, self.summary = [], []

    def add(self, *lines):
        self.lines.extend(lines)

    def failed(self, r) -> bool:
        if _error(r):
            self.add(f"Not measured: {_error(r)}", "")
            return True
        return False

    def headline(self, figure, value, baseline, ratio, target, ok):
        self.summary.append(f"| {figure} | {value} | {baseline} | {ratio} | {target} | {_met(ok)} |")

    # --- sections ----------------------------------------------------------------------------------
    def scale(self):
        self.add("## 1. Compile scale", "",
                 "Synthetic deployments from `bench/generate.py` (sizes: interfaces / hosts, networks of 100, "
                 "racks of 10 hosts):", "", *_doc(generate, 1),
                 "Each run is a fresh process pinned to one core: validate the generated data "
                 "(`loader.parse`, the **baseline**), build the `Index`, then `compile_switch` for every "
                 "switch, keeping all results as `compile_deployment` does. When a size does not fit its "
                 "time budget, the run stops and the full compile is **estimated** from the switches done "
                 "(the edge, then hosts in order; hosts are alike by construction). Memory: peak RSS of the "
                 "process, estimated the same way when partial. YAML read = `load_file` of the same "
                 "deployment written as YAML, what the controller does at start and on every reload.", "",
                 "| size | interfaces / hosts | validate (baseline) | YAML read | Index | full compile | ratio to baseline "
                 "| flows (host mean, edge) | peak memory | target <10 s, <2 GiB |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        scale = self.r.get("scale", {})
        if self.failed(scale):
            return
        self.compile_seconds, self.yaml_read = {}, {}
        for size, runs in scale.items():
            ok_runs = [r for r in runs if not _error(r)]
            if not ok_runs:
                self.add(f"| {size} | {_error(runs[0])} |||||||||")
                continue
            n, h = {**generate.SIZES, **generate.SMOKE_SIZES}[size][:2]
            full = [r for r in ok_runs if r["switches"] == r["hosts"] + 1]
            if full:
                seconds = median([r["compile"] for r in full])  # (the Index and every switch)
                memory = median([r["peak_rss"] for r in full])
                flows = full[0]["flows"]
                note = _n(len(full), "run")
            else:  # partial: extrapolate from the hosts done
                r = ok_runs[0]
                done = len(r["host_times"])
                seconds = r["index"] + r["edge_time"] + median(r["host_times"]) * r["hosts"]
                flows = r["edge_flows"] + sum(r["host_flows"]) / max(done, 1) * r["hosts"]
                memory = r["rss_model"] + (r["rss_end"] - r["rss_model"]) * flows / r["flows"]
                note = f"**estimate** from {done + 1} of {r['hosts'] + 1} switches"
            validate = median([r["validate"] for r in ok_runs])
            yaml_read = next((r["yaml_read"] for r in ok_runs if "yaml_read" in r), None)
            hosts_mean = median([sum(r["host_flows"]) / max(len(r["host_flows"]), 1) for r in ok_runs])
            self.compile_seconds[size] = seconds
            self.yaml_read[size] = yaml_read
            ok = seconds < 10 and memory < 2 * GIB if size == "100k" else None
            self.add(f"| {size} | {n:,} / {h:,} | {_s(validate)} | {_s(yaml_read)} | {_s(ok_runs[0]['index'])} "
                     f"| {_s(seconds)} ({note}) | {seconds / validate:.0f}x | {flows:,.0f} ({hosts_mean:,.0f}, "
                     f"{ok_runs[0]['edge_flows']:,}) | {_gib(memory)} | {_met(ok)} |")
            if size in ("100k", "smoke"):
                self.headline(f"compile {size} (all switches)", _s(seconds), f"validate {_s(validate)}",
                              f"{seconds / validate:.0f}x", "< 10 s, < 2 GiB", ok)
        self.add("")
        for size, runs in scale.items():
            r = next((r for r in runs if not _error(r) and r["switches"] == r["hosts"] + 1), None)
            if r is not None and "flow_objects" in r and size in ("100k", "smoke"):
                self._where_the_compile_goes(size, r)

    def _where_the_compile_goes(self, size: str, r: dict):
        rack = {**generate.SIZES, **generate.SMOKE_SIZES}[size][3]
        times = r["host_times"]
        first = [t for i, t in enumerate(times) if i % rack == 0]
        others = [t for i, t in enumerate(times) if i % rack]
        seconds = r["compile"]
        self.add(f"Where the time of the full compile goes ({size}, the run above): the Index "
                 f"{_s(r['index'])}, the edge {_s(r['edge_time'])} ({r['edge_flows']:,} flows), the hosts "
                 f"{_s(sum(times))}: the first host of each rack of {rack}, which makes the runs of its "
                 f"networks that the rack's hosts share, {_s(median(first))} (median), each other host "
                 f"{_s(median(others) if others else 0)}. The switches hold {r['flows']:,} flows, "
                 f"{r['flow_objects']:,} of them distinct objects (a run several switches share is made once): "
                 f"{seconds / r['flow_objects'] * 1e6:.1f} µs per flow made, all included. Each costs at "
                 f"least its object, its check against the pipeline (`pipeline.verify`) and the hash of "
                 f"its key (`assemble.Shared`): {r['per_flow_floor'] * 1e6:.2f} µs together, measured in the "
                 f"same run on {r['per_flow_sample']:,} of the hosts'; "
                 f"{_s(r['per_flow_floor'] * r['flow_objects'])} for all." + _kernel_share(r, seconds), "")

    def incremental(self):
        self.add("## 2. Incremental change", "",
                 "Each change is made through a running `Controller` (`controller/state.py`), as the API makes "
                 "it: `Controller.change` with the API's own functions (`controller/records.py`: checks, new "
                 "model) for a move and a remap; a rule edit, which comes with a reload, is put in force the "
                 "same way as a changed model value (`dataclasses.replace`). "
                 "Switches examined: every switch hosting an interface of the tenant concerned, the hosts "
                 "named by the change, the edge, and a few others far away (a check that they do not "
                 "change). Every switch of the deployment was compiled before the change, as in a running "
                 "controller: the Index in force then holds the work of all of them, which the change carries "
                 "over. **Time to new desired flows**: from the API call to the new flows of every switch it "
                 "changed. `Controller.change` runs the API's checks, writes the state file, derives the next "
                 "Index from the one in force (`incremental.next_index`: the work the change did not touch "
                 "carried over) and finds the switches to recompile (`Compiled.update`); then those switches' "
                 "flows are compiled, as their syncs ask for them (`Controller.desired`). Each run starts from "
                 "where the one before left the controller: the change was undone (not timed) by the same kind "
                 "of change (moved back, the rule put back, the remap's drain ended and the address given "
                 "back), and what the changes replaced was freed, as the app does after a change's syncs "
                 "(`Controller.release_retired`). After it, not in that time: the controller's diff of each "
                 "changed switch against what its bridge holds (`sync.diff_since`, new flows encoded; no "
                 "switch). "
                 "For comparison, the same switches compiled from a fresh `Index` (what a "
                 "restart does). **Baseline**: validating the changed file (`loader.parse`).", "",
                 "| size | change | switches changed (examined) | flows added / removed (of the flows on those switches) "
                 "| time to new desired flows | fresh Index + compile | validate (baseline) | ratio | target < 20 ms |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        inc = self.r.get("incremental", {})
        if self.failed(inc):
            return
        self.change_seconds = {}
        profiles = []
        for size, r in inc.items():
            if _error(r):
                self.add(f"| {size} | {_error(r)} ||||||||")
                continue
            for c in r["changes"]:
                m = c["module"]
                t = m["seconds"]
                self.change_seconds.setdefault(size, {})[c["what"].split(" (")[0]] = t
                others = "none of the far ones" if not c["others_changed"] else "far ones too: " + ", ".join(c["others_changed"])
                missed = f"; **missed {', '.join(m['missed'])}**" if m["missed"] else ""
                self.add(f"| {size} | {c['what']} | {len(c['changed'])} ({c['examined']}; {others}{missed}) "
                         f"| {c['flows_added']:,} / {c['flows_removed']:,} ({c['switch_flows']:,}) "
                         f"| {_s(t)} ({_n(len(m['times']), 'run')}, slowest {_s(max(m['times']))}; "
                         f"the change, to finding the switches {_s(m['find'])}"
                         f"{'; then the sync diff of those switches ' + _s(m['sync']) if 'sync' in m else ''}) "
                         f"| {_s(median(c['times']))} (Index {_s(c['index'])}) | {_s(c['validate'])} "
                         f"| {t / c['validate']:.2f} | {_met(t < 0.02)} |")
                if size in ("100k", "smoke"):
                    self.headline(f"{c['what'].split(' (')[0]}, {size}", _s(t), f"validate {_s(c['validate'])}",
                                  f"{t / c['validate']:.2f}", "< 20 ms", t < 0.02)
                profiles.append((size, c))
        self.add("", "The remap here is the compile's share (its old holder drains: both holders' switches "
                     "and the edge change); the same remap end to end, through the controller and the "
                     "switches to the first connection answered: section 6.", "")
        for size, seconds in getattr(self, "compile_seconds", {}).items():
            if size in inc:
                yaml_read = self.yaml_read.get(size)
                self.add(f"What a change costs the controller today ({size}): an API change, what the table "
                         f"above measures; a reload re-reads the file (YAML read "
                         f"{_s(yaml_read) if yaml_read else 'not measured at this size'}), derives the next Index "
                         f"where only interfaces and security groups changed (a fresh one otherwise) and "
                         f"recompiles the switches `flows/incremental.py` finds (all of them, the full compile "
                         f"of section 1, {_s(seconds)}, only when what every switch reads changed).", "")
        for size, c in profiles[-1:]:
            self.add(f"Where the time goes ({size}, {c['what']}, as the controller runs it: "
                     "`Controller.change`, then the changed switches' flows; cProfile, by own time):", "")
            self.add(*_block(c["profile"]))

    def growth(self):
        self.add("## 3. Flows per switch", "",
                 "host0 keeps the same 50 interfaces (5 networks of its rack) while the deployment grows "
                 "around it (racks of 10 hosts, 50 interfaces each). The edge's NAT demultiplexing flows (those "
                 "that send a block's ports from the uplink to the block's host) are compared with the minimal "
                 "value/mask cover of the NAT blocks (`portmask.range_to_masks` of each block, for TCP and for "
                 "UDP: no OpenFlow field matches the ports of both; the **baseline**).", "",
                 "| deployment (interfaces / hosts) | host0 interfaces / networks | host0 flows | host0 compile | Index "
                 "| edge flows | edge NAT demux flows / minimal cover of the blocks |",
                 "| --- | --- | --- | --- | --- | --- | --- |")
        growth = self.r.get("growth", [])
        if self.failed(growth):
            return
        ok = [g for g in growth if not _error(g)]
        for g in growth:
            if _error(g):
                self.add(f"| {_error(g)} ||||||")
                continue
            self.add(f"| {g['interfaces']:,} / {g['hosts']:,} | {g['host0_interfaces']} / {g['host0_networks']} "
                     f"| {g['host0_flows']:,} | {_s(g['host0_compile'])} | {_s(g['index'])} | {g['edge_flows']:,} "
                     f"| {g['edge_nat_flows']} / {g['block_cover']} ({g['blocks']} blocks) |")
        if ok:
            self.add("", "host0's flows by table (largest deployment): " + ", ".join(
                f"{t} {n}" for t, n in ok[-1]["by_table"].items()), "")
            if not any(g["edge_nat_flows"] for g in ok):
                self.add("The edge got **no** NAT demultiplexing flows for these deployments, although they have NAT "
                         "blocks: the 'at the minimum' target cannot be judged from this run.", "")
            self.add("The edge's overlay flows (one per interface address) grow with the deployment.", "")
            first, last = ok[0]["host0_flows"], ok[-1]["host0_flows"]
            self.headline("host0 flows, deployment x{:.0f}".format(ok[-1]["interfaces"] / ok[0]["interfaces"]),
                          f"{last:,}", f"{first:,} (smallest)", f"{last / first:.2f}", "flat",
                          last <= first * 1.05)
            demux, cover = ok[-1]["edge_nat_flows"], ok[-1]["block_cover"]
            if demux:
                self.headline("edge NAT demux flows (largest deployment)", f"{demux:,}", f"minimal cover {cover:,}",
                              f"{demux / cover:.2f}", "the minimum", demux <= cover)

    def install(self):
        self.add("## 4. Install rate", "", *_doc(install))
        r = self.r.get("install", {})
        if self.failed(r):
            return
        ratio = r["controller_rate"] / r["ofctl_rate"]
        self.add("| bridge | flows | `ovs-ofctl --bundle add-flows` (baseline) | controller sync | ratio | target >= 0.5 |",
                 "| --- | --- | --- | --- | --- | --- |",
                 f"| {r['switch']} br-int | {r['flows']:,} | {_s(median(r['ofctl']))}, {r['ofctl_rate']:,.0f}/s "
                 f"({_n(len(r['ofctl']), 'run')}) | {_s(median(r['controller']))}, {r['controller_rate']:,.0f}/s "
                 f"({_n(len(r['controller']), 'run')}) | {ratio:.2f} | {_met(ratio >= 0.5)} |", "",
                 f"The first sync after the controller starts, which also compiles the switch: {_s(r['first_sync'])}.", "")
        if r.get("api_stalls"):
            self.add(f"While it synced, {r['api_stalls']} status requests to its REST API got no answer within 5 s: "
                     "compile and sync run in the controller's one (green) thread, and the API waits for them.", "")
        self.headline("install rate (flow-mods/s)", f"{r['controller_rate']:,.0f}/s", f"ovs-ofctl {r['ofctl_rate']:,.0f}/s",
                      f"{ratio:.2f}", ">= 0.5", ratio >= 0.5)
        rr = r.get("render", {})
        if not _error(rr):
            self.add(f"The controller's Python work alone (no switch: match key, flow-mod, bundle adds) "
                     f"for the same {rr['flows']:,} flows: {_s(rr['seconds'])}, {rr['flows'] / rr['seconds']:,.0f}/s. "
                     "Profile, by cumulative time:", "")
            self.add(*_block(rr["profile"]))

    def datapath(self):
        self.add("## 5. Data path", "", *_doc(datapath),
                 f"Guests' MTU {datapath.MTU} in every setup (Geneve over IPv6 adds 70 bytes to 1500-byte substrate links).", "",
                 "| setup | iperf3 TCP a -> b | ping a -> b (median) | ping b -> a (median) |",
                 "| --- | --- | --- | --- |")
        r = self.r.get("datapath", {})
        if self.failed(r):
            return
        for name, v in r.items():
            if name == "nat":
                continue
            self.add(f"| {name} | {median(v['gbps']):.2f} Gbit/s ({_n(len(v['gbps']), 'run')}) | {median(v['ping_ab']):.3f} ms "
                     f"| {median(v['ping_ba']):.3f} ms |")
        ours, plain = median(r["vpcflow"]["gbps"]), median(r["plain OVS"]["gbps"])
        ratio = ours / plain if plain else float("nan")
        self.add("", f"Ratio vpcflow / plain OVS: **{ratio:.2f}** (target >= 0.8: {_met(ratio >= 0.8)}).", "")
        self.headline("iperf3 TCP across hosts", f"{ours:.2f} Gbit/s", f"plain OVS {plain:.2f} Gbit/s", f"{ratio:.2f}",
                      ">= 0.8", ratio >= 0.8)
        self.nat(r.get("nat", {"error": "not in these results"}))

    def nat(self, r):
        self.add("### The NAT path", "")
        if self.failed(r):
            self.headline("iperf3 through NAT", "not measured", "-", "-", ">= 0.8", None)
            return
        base = next(name for name in r if name != "vpcflow")
        self.add("| setup | iperf3 TCP instance -> external (SNAT) | iperf3 TCP external -> elastic IP (DNAT) "
                 "| ping instance -> external (median) | ping external -> elastic IP (median) |",
                 "| --- | --- | --- | --- | --- |")
        for name, v in r.items():
            self.add(f"| {name} | {median(v['out_gbps']):.2f} Gbit/s ({_n(len(v['out_gbps']), 'run')}) "
                     f"| {median(v['in_gbps']):.2f} Gbit/s ({_n(len(v['in_gbps']), 'run')}) "
                     f"| {median(v['ping_out']):.3f} ms | {median(v['ping_in']):.3f} ms |")
        ratios = {}
        for what, label in (("out_gbps", "instance -> external"), ("in_gbps", "external -> elastic IP")):
            ours, theirs = median(r["vpcflow"][what]), median(r[base][what])
            ratios[what] = (ours, theirs, ours / theirs if theirs else float("nan"))
        self.add("", "Ratio vpcflow / " + base + ": " + ", ".join(
            f"{label} **{ratios[what][2]:.2f}**" for what, label in (("out_gbps", "instance -> external (SNAT)"),
                                                                     ("in_gbps", "external -> elastic IP (DNAT)")))
                 + f" (target >= 0.8: {_met(min(x[2] for x in ratios.values()) >= 0.8)}).", "")
        for what, label in (("out_gbps", "SNAT, instance -> external"), ("in_gbps", "DNAT, external -> elastic IP")):
            ours, theirs, ratio = ratios[what]
            self.headline(f"iperf3 through NAT ({label})", f"{ours:.2f} Gbit/s", f"{base} {theirs:.2f} Gbit/s",
                          f"{ratio:.2f}", ">= 0.8", ratio >= 0.8)

    def remap(self):
        self.add("## 6. Remap convergence", "", *_doc(remap))
        r = self.r.get("remap", {"error": "not in these results"})
        if self.failed(r):
            self.headline("remap convergence", "not measured", "-", "-", "< 50 ms", None)
            return
        conv, prog, base = median(r["convergence_ms"]), median(r["programmed_ms"]), median(r["baseline_ms"])
        before, after = median(r["rtt_before_ms"]), median(r["rtt_after_ms"])
        lost = sum(r["lost_attempts"])
        ratio, rtt_ratio = conv / base if base else float("nan"), after / before if before else float("nan")
        self.add("| figure | median | runs |", "| --- | --- | --- |",
                 f"| convergence: remap call -> first new connection answered by the new holder | {conv:.1f} ms "
                 f"| {', '.join(f'{x:.1f}' for x in r['convergence_ms'])} |",
                 f"| programmed: remap call -> edge's last bundle committed | {prog:.1f} ms "
                 f"| {', '.join(f'{x:.1f}' for x in r['programmed_ms'])} |",
                 f"| lost attempts (new connections timed out in the switch-over) | {median(r['lost_attempts']):g} "
                 f"({lost} in all) | {', '.join(str(x) for x in r['lost_attempts'])} |",
                 f"| **baseline**: a new connection when nothing changes (the same prober, before the call) | {base:.1f} ms "
                 f"| {', '.join(f'{x:.1f}' for x in r['baseline_ms'])} |",
                 f"| ratio convergence / baseline | {ratio:.2f} | |",
                 f"| followed connection RTT before the remap | {before:.3f} ms "
                 f"| {', '.join(f'{x:.3f}' for x in r['rtt_before_ms'])} |",
                 f"| followed connection RTT after the remap | {after:.3f} ms "
                 f"| {', '.join(f'{x:.3f}' for x in r['rtt_after_ms'])} |",
                 *([f"| followed connection RTT in the switch-over (prober on, from the first new answer) "
                    f"| {median(r['rtt_switch_over_ms']):.3f} ms "
                    f"| {', '.join(f'{x:.3f}' for x in r['rtt_switch_over_ms'])} |"] if r.get("rtt_switch_over_ms") else []),
                 f"| ratio after / before | {rtt_ratio:.2f} | |",
                 *([f"| programmed on a quiet edge: the same remap with no traffic at all | "
                    f"{median(r['programmed_quiet_ms']):.1f} ms | "
                    f"{', '.join(f'{x:.1f}' for x in r['programmed_quiet_ms'])} |"] if r.get("programmed_quiet_ms") else []),
                 *([f"| an interface moved to another host (and back), another instance of its network connecting "
                    f"to it every few ms: the call -> first new connection answered at the new place | "
                    f"{median(r['move_convergence_ms']):.1f} ms | "
                    f"{', '.join(f'{x:.1f}' for x in r['move_convergence_ms'])} |",
                    f"| lost attempts in those moves | {sum(r['move_lost_attempts'])} in all | "
                    f"{', '.join(str(x) for x in r['move_lost_attempts'])} |",
                    f"| **baseline** of those: a new connection before the call (the same prober) | "
                    f"{median(r['move_baseline_ms']):.1f} ms | {', '.join(f'{x:.1f}' for x in r['move_baseline_ms'])} |"]
                   if r.get("move_convergence_ms") else []),
                 *([f"| an interface moved to another host (and back), no traffic: the call -> every bridge synced | "
                    f"{median(r['move_programmed_quiet_ms']):.1f} ms | "
                    f"{', '.join(f'{x:.1f}' for x in r['move_programmed_quiet_ms'])} |"]
                   if r.get("move_programmed_quiet_ms") else []),
                 "",
                 "A followed connection keeps its path after the remap: the edge still sends it to the old "
                 "holder's host, the same edge -> old host path as before (no extra substrate hop), so its "
                 "round trip should not change: a ratio near 1 (counted as met up to 1.25, the noise of a shared "
                 "machine; one more substrate hop would add a whole switch's traversal).", "")
        self.headline("remap convergence", f"{conv:.1f} ms", f"unchanged new connection {base:.1f} ms", f"{ratio:.2f}",
                      "< 50 ms", conv < 50)
        if r.get("move_convergence_ms"):
            move, move_base = median(r["move_convergence_ms"]), median(r["move_baseline_ms"])
            self.headline("interface move convergence (to another host)", f"{move:.1f} ms",
                          f"unchanged new connection {move_base:.1f} ms", f"{move / move_base:.2f}" if move_base else "-",
                          "< 50 ms", move < 50)
        if r.get("programmed_quiet_ms"):  # (what a first new connection waits for there: no prober's)
            quiet = median(r["programmed_quiet_ms"])
            self.headline("remap programmed on a quiet edge (no traffic)", f"{quiet:.1f} ms",
                          f"busy edge {prog:.1f} ms", f"{quiet / prog:.2f}" if prog else "-", "< 50 ms", quiet < 50)
        self.headline("followed connection RTT (after / before the remap)", f"{after:.3f} ms", f"before {before:.3f} ms",
                      f"{rtt_ratio:.2f}", "no more than one substrate hop: same edge -> old host path, "
                      "ratio near 1 (<= 1.25)", rtt_ratio <= 1.25)

    def ovn(self):
        self.add("## 7. The peer: OVN", "", *_doc(ovn))
        r = self.r.get("ovn", {})
        if self.failed(r):
            return
        self.add(f"{r['version']}, deployment {r['size']}: {r['rows']:,} NB rows in one transaction; "
                 f"northd wrote {r.get('lflows', 0):,} logical flows.", "",
                 "| figure | OVN | vpcflow | vpcflow / OVN |", "| --- | --- | --- | --- |")
        size = r["size"]
        ours = getattr(self, "compile_seconds", {}).get(size)
        self.add(f"| full load: NB transaction {_s(median(r['load']))} + `--wait=sb sync` {_s(median(r['sync']))} "
                 f"| {_s(r['total_median'])} ({_n(len(r['total']), 'run')}) | full compile {_s(ours)} "
                 f"| {ours / r['total_median']:.2f} |" if ours else
                 f"| full load | {_s(r['total_median'])} | not measured | - |")
        change = getattr(self, "change_seconds", {}).get(size, {}).get("security-group rule edit")
        self.add(f"| security-group rule edit (ACL del + add, `--wait=sb`) | {_s(r['change_median'])} "
                 f"({_n(len(r['change']), 'change')}) | {_s(change)} | " + (f"{change / r['change_median']:.2f} |" if change else "- |"), "")
        if ours:
            self.headline(f"full compile {size} vs OVN", _s(ours), f"OVN {_s(r['total_median'])}",
                          f"{ours / r['total_median']:.2f}", "(lower is better)", None)
        if change:
            self.headline(f"rule edit {size} vs OVN", _s(change), f"OVN {_s(r['change_median'])}",
                          f"{change / r['change_median']:.2f}", "(lower is better)", None)

    def render(self) -> str:
        for part in (self.scale, self.incremental, self.growth, self.install, self.datapath, self.remap, self.ovn):
            part()
        m = self.m
        head = ["# Benchmarks", "",
                f"Written by `python -m bench.run{' --smoke' if self.smoke else ''}` (what `make bench` runs) in "
                f"{m['seconds'] / 60:.1f} minutes. "
                + ("**Smoke run**: tiny sizes, one run each; the figures mean nothing." if self.smoke else
                   "Each figure is the median of the runs stated, with a baseline measured in the same run."), "",
                "| machine | |", "| --- | --- |",
                f"| CPU | {m['cpu']}, {m['cores']} cores |", f"| memory | {m['memory_gib']} GiB |",
                f"| Open vSwitch | {m['ovs']} |", f"| Debian | {m['debian']} (kernel {m['kernel']}), Python {m['python']} |",
                f"| date | {m['date']} |", f"| commit | {m['commit']} |",
                "| load average (1 min) | {:.2f} at the start, {:.2f} at the end (the machine is shared: "
                "other work runs beside the benchmarks) |".format(m["load"][0], m["load_end"][0]), "",
                "## Headlines", "", "| figure | vpcflow | baseline (same run) | ratio | target | |",
                "| --- | --- | --- | --- | --- | --- |", *self.summary, ""]
        return "\n".join(head + self.lines) + "\n"


def render(machine, results, smoke) -> str:
    return Report(machine, results, smoke).render()


def _kernel_share(r: dict, seconds: float) -> str:
    """The compile's time in the kernel (getrusage), where the run measured it."""
    if "compile_sys" not in r:
        return ""
    return (f" Of the compile, {_s(r['compile_sys'])} ({r['compile_sys'] / seconds:.0%}) went in the kernel: "
            f"{r['compile_faults']:,} page faults, the memory the flows fill touched for the first time "
            f"(costly on this machine: less memory per flow is less time).")
