"""Compiler benchmarks: compile scale, incremental change, flows per switch.

Every measurement runs in a fresh worker process pinned to one core (`python -m bench.compile
JOB ARGS`), so that peak memory is that of the job alone and nothing is cached across runs.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import resource
import shutil
import tempfile

import yaml

from bench import generate
from bench.util import median, now, peak_rss, profile, rss, worker_main
from vpcflow.controller import records
from vpcflow.controller.state import Controller
from vpcflow.flows import pipeline
from vpcflow.flows.compiler import compile_switch
from vpcflow.flows.core import Flow
from vpcflow.flows.follow import ElasticFollow
from vpcflow.flows.index import Index
from vpcflow.flows.nat import PORTED, block_name
from vpcflow.flows.portmask import range_to_masks
from vpcflow.topology.loader import load_file, parse
from vpcflow.topology.model import EDGE, PortRange, frozen_map


def _switch_order(dep):
    """The edge first (one big switch), then hosts in file order: a partial run is a fair sample."""
    return sorted(dep.switches, key=lambda n: dep.switches[n].role != EDGE)


def _count(sf) -> int:
    return len(sf.integration) + len(sf.underlay)


# --- jobs (run in the worker) ---------------------------------------------------------------------

def job_scale(size: str, budget: float, yaml_read: bool = False) -> dict:
    """Validate, then compile every switch (as compile_deployment does) until done or out of budget."""
    data = generate.sized(size)
    out = {}
    if yaml_read:  # what the controller does at start and on reload: read the YAML file
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.dump(data, f, Dumper=yaml.CSafeDumper, sort_keys=False)
        try:
            t = now()
            load_file(f.name)
            out["yaml_read"] = now() - t
        finally:
            os.unlink(f.name)
    t = now()
    dep = parse(data)
    out["validate"] = now() - t
    del data
    out["rss_model"] = rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    t = now()
    ix = Index(dep)
    out["index"] = now() - t
    names, compiled, times = _switch_order(dep), [], []
    for name in names:
        started = now()
        compiled.append(compile_switch(ix, name))
        times.append(now() - started)
        if now() - t > budget:
            break
    # compile: the Index and every switch, as compile_deployment (the Index is in it, not beside it)
    compile_time, after = now() - t, resource.getrusage(resource.RUSAGE_SELF)
    # the kernel's share: the page faults of the memory the flows fill as it is first touched
    out.update(compile_sys=after.ru_stime - usage.ru_stime, compile_faults=after.ru_minflt - usage.ru_minflt)
    out.update(compile=compile_time, switches=len(compiled), hosts=len(names) - 1, flows=sum(map(_count, compiled)),
               rss_end=rss(), peak_rss=peak_rss(), edge_flows=_count(compiled[0]), edge_time=times[0],
               host_flows=[_count(sf) for sf in compiled[1:]], host_times=times[1:])
    # (after the figures: its set would count in the peak) flow objects made: a run that several
    # switches share is made once, what a compile's time is spent on
    made = set()
    for sf in compiled:
        made.update(map(id, sf.integration))
        made.update(map(id, sf.underlay))
    out["flow_objects"] = len(made)
    sample = list({id(f): f for sf in compiled[1:3] for f in sf.integration}.values())[:20_000]  # (the hosts')
    out.update(per_flow_floor=_per_flow_floor(sample), per_flow_sample=len(sample))
    return out


def _per_flow_floor(flows) -> float:
    """What each flow a compile makes costs at least, in seconds, measured on these flows: its
    object, its check against the pipeline and the hash of its key (as assemble.Shared makes it)."""
    fields = [(f.table, f.priority, f.match, f.actions, f.feature, f.obj) for f in flows]  # (none has timeouts)
    verify = pipeline.verify
    t = now()
    for args in fields:
        f = Flow(*args)
        verify(f)
        hash((f.table, f.priority, frozenset(f.match)))
    return (now() - t) / max(len(fields), 1)


def _with_interface(dep, name, **changes):
    return dep.with_interfaces({name: dataclasses.replace(dep.interfaces[name], **changes)})  # as records.py does


def _with_rule(dep, group, direction, index, **changes):
    sg = dep.security_groups[group]
    rules = list(getattr(sg, direction))
    rules[index] = dataclasses.replace(rules[index], **changes)
    sg = dataclasses.replace(sg, **{direction: tuple(rules)})
    return dataclasses.replace(dep, security_groups=frozen_map({**dep.security_groups, group: sg}))


def _changes(dep, data):
    """(what, new deployment, draining remaps, changed file data, tenant concerned, hosts concerned,
    the change as a running controller makes it and undoes it: a _Steps)."""
    racks = sum(1 for n in dep.instances if n.startswith("spare"))
    spare = f"spare{racks - 1}"
    moved = generate.iface_name(1)  # network n0, rack 0
    home = dep.interfaces[moved].attach_to
    old_host = dep.instances[home].switch
    move_data = {**data, "interfaces": {**data["interfaces"], moved: {**data["interfaces"][moved], "attach_to": spare}}}
    group = generate.group_names(0)[0]
    rule_data = {**data, "security_groups": {**data["security_groups"], group: {
        **data["security_groups"][group],
        "ingress": [{**data["security_groups"][group]["ingress"][0], "ports": "80-81"}]
        + data["security_groups"][group]["ingress"][1:]}}}
    ports = dep.security_groups[group].ingress[0].ports
    # an elastic IP remapped to another interface of its network, its connections followed (the
    # old holder drains): what `vpcflow remap --follow` does
    eip = dep.elastic_ips[0]
    holder = dep.interfaces[eip.interface]
    target = next(i.name for i in dep.interfaces.values()
                  if i.network == holder.network and i.attach_to and i.name != holder.name
                  and dep.instances[i.attach_to].switch != dep.instances[holder.attach_to].switch)
    holders = [dep.instances[dep.interfaces[n].attach_to].switch for n in (eip.interface, target)]
    remap_data = {**data, "elastic_ips": [{**data["elastic_ips"][0], "interface": target}] + data["elastic_ips"][1:]}
    requester = dep.networks[dep.interfaces[moved].network].entity

    def attach(instance):
        return lambda d: records.attach(d, moved, {"instance": instance, "requester": requester,
                                                   "follow_connections": False}, "bench")

    def rule(ports):
        return lambda d: _with_rule(d, group, "ingress", 0, ports=ports)

    def remap(interface, follow):
        return lambda d: records.remap_elastic_ip(d, str(eip.ip), {"interface": interface, "follow_connections": follow},
                                                  f"bench-{interface}")

    def remap_undone(ctl, made):  # its drain ends, then the address goes back, not followed
        ctl.remap_progress(made.id, 0)
        return [remap(eip.interface, False)]
    return [
        (f"interface move ({moved}: {old_host} -> {dep.instances[spare].switch})",
         attach(spare)(dep)[0], (), move_data, "t0", {old_host, dep.instances[spare].switch},
         _Steps(attach(spare), lambda ctl, _: [attach(home)])),
        (f"security-group rule edit ({group} ingress[0]: tcp 80 -> 80-81)",
         rule(PortRange(80, 81))(dep), (), rule_data, "t0", set(), _Steps(rule(PortRange(80, 81)), lambda ctl, _: [rule(ports)])),
        (f"elastic-IP remap, followed ({eip.ip}: {eip.interface} on {holders[0]} -> {target} on {holders[1]})",
         remap(target, True)(dep)[0], (ElasticFollow("bench", str(eip.ip), eip.interface),), remap_data, "t0",
         set(holders), _Steps(remap(target, True), remap_undone)),
    ]


@dataclasses.dataclass
class _Steps:
    """A change as the controller takes it (Controller.change), and how to undo it between runs:
    undo(controller, the change's Remap or None) -> more changes to make (after what it did itself)."""
    make: object
    undo: object


def _candidates(dep, tenant, hosts):
    """Switches a change of this tenant could touch: its hosts, the ones named, the edge."""
    names = set(hosts) | {s.name for s in dep.switches.values() if s.role == EDGE}
    for iface, inst, sw in dep.attached_interfaces():
        if dep.networks[iface.network].entity == tenant:
            names.add(sw.name)
    return sorted(names)


def job_incremental(size: str, runs: int, others: int, budget: float) -> dict:
    """Each change: which switches' flows change, and the time to compile those from the new model.

    The first run is timed switch by switch while finding what changed (a fresh Index, then
    the changed switches); more runs, while within `budget` seconds, time the whole again. The
    change itself, then, through a running Controller (_through_controller).
    """
    started = now()
    data = generate.sized(size)
    dep = parse(data)
    state_dir = tempfile.mkdtemp(prefix="vpcflow-bench-state-")
    try:
        ctl = Controller(dep, state_file=os.path.join(state_dir, "state.json"))
        # every switch compiled, as in a running controller: the Index then holds the work of all of
        # them, which a change carries over (its cost grows with that, not with the switches examined)
        t = now()
        for name in dep.switches:
            ctl.desired(name, pipeline.INTEGRATION, BENCH_OVS_VERSION)
        compiled_all = now() - t
        model = ctl.model_in_force()[1]
        old = {name: model.switch(name) for name in dep.switches}
        results = []
        for what, new_dep, follows, new_data, tenant, named, steps in _changes(dep, data):
            results.append(_incremental_one(ctl, old, dep, what, new_dep, follows, new_data, tenant, named, steps,
                                            runs, others, budget, started))
        # the last change once more, as the controller runs it, under the profiler
        results[-1].update(profile=_profiled_change(ctl, steps))
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return {"switches_total": len(dep.switches), "compiled_all": compiled_all, "changes": results}


def _incremental_one(ctl, old, dep, what, new_dep, follows, new_data, tenant, named, steps, runs, others, budget,
                     started) -> dict:
    t = now()
    parse(new_data)
    validate = now() - t
    t = now()
    new_ix = Index(new_dep, follows)
    index_time = now() - t
    changed, seconds, added, removed = [], index_time, 0, 0
    candidates = _candidates(dep, tenant, named)
    far = [s for s in dep.switches if s not in candidates]
    sample = far[len(far) // (others + 1)::len(far) // (others + 1) or 1][:others]
    examined = candidates + sample
    for name in examined:
        t = now()
        b = compile_switch(new_ix, name)
        took = now() - t
        before = set(old[name].integration) | set(old[name].underlay)
        after = set(b.integration) | set(b.underlay)
        if before != after:
            changed.append(name)
            seconds += took
            added += len(after - before)
            removed += len(before - after)

    def recompile(names):
        ix = Index(new_dep, follows)
        for name in names:
            compile_switch(ix, name)
    times = [seconds]
    while len(times) < runs and now() - started < budget:
        t = now()
        recompile(changed)
        times.append(now() - t)
    module = _through_controller(ctl, steps, changed, max(runs, 9))
    return {"module": module, "what": what, "validate": validate, "times": times, "index": index_time,
            "changed": changed, "examined": len(examined), "sampled_others": len(sample),
            "others_changed": [s for s in changed if s in sample],
            "flows_added": added, "flows_removed": removed,
            "switch_flows": sum(_count(old[n]) for n in changed)}


BENCH_OVS_VERSION = "3.1.0"  # what the switches report (Open vSwitch of Debian 12): no embedded outer source


def _through_controller(ctl, steps, changed, runs: int) -> dict:
    """The change as a running controller makes it: `Controller.change` (the API's checks, the
    new model, the state file, then the next Index derived from the one in force and the
    switches it finds changed), then those switches' flows (`Controller.desired`, what a sync
    asks for). Not timed: its sync diff (measured apart), and undoing it for the next run (as
    the same kind of change, its switches compiled too, and what it replaced freed, as the app
    does after the syncs: Controller.release_retired)."""
    times, found, synced, flagged = [], [], [], set()
    for _ in range(runs):
        before = ctl.model_in_force()[1]  # (what the bridges hold: the flows synced last)
        t = now()
        generation, remap = ctl.change(steps.make)
        found.append(now() - t)
        flagged = _compiled_as_synced(ctl, generation - 1)
        times.append(now() - t)
        after = ctl.model_in_force()[1]
        synced.append(_sync_work({name: before.switch(name) for name in changed},
                                 {name: after.switch(name) for name in changed}))
        _undo(ctl, steps, remap)
    return {"seconds": median(times), "times": times, "find": median(found), "flagged": len(flagged),
            "missed": sorted(set(changed) - flagged), "sync": median(synced)}


def _compiled_as_synced(ctl, since: int) -> set:
    """The flows of the switches the changes after generation `since` touched, as their syncs ask
    for them."""
    flagged = ctl.changed_switches(since)
    flagged = set(ctl.deployment.switches) if flagged is None else flagged
    for name in flagged:
        ctl.desired(name, pipeline.INTEGRATION, BENCH_OVS_VERSION)
    return flagged


def _undo(ctl, steps, remap):
    ctl.release_retired()
    since = ctl.generation
    for make in steps.undo(ctl, remap):
        ctl.change(make)
    _compiled_as_synced(ctl, since)
    ctl.release_retired()


def _profiled_change(ctl, steps) -> str:
    since, made = ctl.generation, []
    text = profile(lambda: made.append(ctl.change(steps.make)[1]) or _compiled_as_synced(ctl, since))
    _undo(ctl, steps, made[0])
    return text


def _sync_work(old, new) -> float:
    """The controller's own work to sync the changed switches' integration bridges once their new
    flows are compiled (app._sync_once with its cache of the bridge: sync.diff_since, the new
    flows encoded), with made-up port numbers; no switch, no message sent."""
    from vpcflow.controller import render
    from vpcflow.controller.sync import diff_since, held, split_by_resolvable

    total = 0.0
    for name, flows in new.items():
        names = sorted({p for f in old[name].integration + flows.integration for p in f.ports()})
        ports = {p: n for n, p in enumerate(names, 1)}
        hold = held(split_by_resolvable(old[name].integration, lambda f: render.desired_key(f, ports))[0],
                    old[name].integration)
        t = now()
        diff_since(hold, flows.integration, lambda f: render.desired_key(f, ports),
                   lambda f: render.desired_content(f, ports))
        total += now() - t
    return total


def job_host_growth(interfaces: int, hosts: int, net_size: int, rack: int) -> dict:
    """host0's flows (its own interfaces fixed by the generator's racks) and the edge's."""
    dep = parse(generate.generate(interfaces, hosts, net_size, rack))
    t = now()
    ix = Index(dep)
    index_time = now() - t
    t = now()
    sf = compile_switch(ix, "host0")
    host_time = now() - t
    by_table = collections.Counter(f.table for f in sf.integration)
    t = now()
    edge = compile_switch(ix, "edge1")
    edge_time = now() - t
    # the demultiplexing: the edge's flows that send a block's ports (to the block's host), and the
    # fewest value/mask pairs that match each block's ports, for TCP and for UDP (no OpenFlow
    # field matches the ports of both)
    blocks = {block_name(b) for b in dep.nat.blocks}
    edge_nat = sum(1 for f in edge.integration if f.table == "uplink_in" and f.obj in blocks)
    cover = sum(len(range_to_masks(b.ports.lo, b.ports.hi)) for b in dep.nat.blocks) * len(PORTED)
    return {"interfaces": interfaces, "hosts": hosts, "host0_interfaces": len(ix.local_interfaces("host0")),
            "host0_networks": len(ix.local_networks("host0")), "host0_flows": _count(sf),
            "by_table": dict(by_table), "index": index_time, "host0_compile": host_time,
            "edge_flows": _count(edge), "edge_compile": edge_time, "edge_nat_flows": edge_nat,
            "blocks": len(dep.nat.blocks), "block_cover": cover}


JOBS = {"scale": job_scale, "incremental": job_incremental, "host_growth": job_host_growth}

if __name__ == "__main__":
    worker_main(JOBS)
