"""Compiler benchmarks: compile scale, incremental change, flows per switch.

Every measurement runs in a fresh worker process pinned to one core (`python -m bench.compile
JOB ARGS`), so that peak memory is that of the job alone and nothing is cached across runs.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import tempfile

import yaml

from bench import generate
from bench.util import median, now, peak_rss, profile, rss, worker_main
from vpcflow.controller import records
from vpcflow.flows.compiler import Options, compile_switch
from vpcflow.flows.follow import ElasticFollow
from vpcflow.flows.incremental import Compiled, next_index
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
    out.update(compile=now() - t, switches=len(compiled), hosts=len(names) - 1, flows=sum(map(_count, compiled)),
               rss_end=rss(), peak_rss=peak_rss(), edge_flows=_count(compiled[0]), edge_time=times[0],
               host_flows=[_count(sf) for sf in compiled[1:]], host_times=times[1:])
    return out


def _with_interface(dep, name, **changes):
    return dep.with_interfaces({name: dataclasses.replace(dep.interfaces[name], **changes)})  # as records.py does


def _with_rule(dep, group, direction, index, **changes):
    sg = dep.security_groups[group]
    rules = list(getattr(sg, direction))
    rules[index] = dataclasses.replace(rules[index], **changes)
    sg = dataclasses.replace(sg, **{direction: tuple(rules)})
    return dataclasses.replace(dep, security_groups=frozen_map({**dep.security_groups, group: sg}))


def _api_call(dep, make):
    """The API's own work for a change (records.py, as state.change runs it): the checks and the
    new model (make), then the state file. The controller has looked up instances' interfaces
    and written the state file before: both are carried over, as they are in a running one."""
    directory = tempfile.mkdtemp(prefix="vpcflow-bench-state-")
    path = os.path.join(directory, "state.json")
    dep.interfaces_of("")
    previous = records.save(path, dep, dep, {})

    def call():
        new, remap = make()
        records.save(path, new, dep, {remap.id: remap} if remap else {}, previous)
        return new
    return call, directory


def _changes(dep, data):
    """(what, new deployment, draining remaps, changed file data, tenant concerned, hosts concerned,
    the API call that makes the change or None: _api_call)."""
    racks = sum(1 for n in dep.instances if n.startswith("spare"))
    spare = f"spare{racks - 1}"
    moved = generate.iface_name(1)  # network n0, rack 0
    old_host = dep.instances[dep.interfaces[moved].attach_to].switch
    move_data = {**data, "interfaces": {**data["interfaces"], moved: {**data["interfaces"][moved], "attach_to": spare}}}
    group = generate.group_names(0)[0]
    rule_data = {**data, "security_groups": {**data["security_groups"], group: {
        **data["security_groups"][group],
        "ingress": [{**data["security_groups"][group]["ingress"][0], "ports": "80-81"}]
        + data["security_groups"][group]["ingress"][1:]}}}
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

    def move():
        return records.attach(dep, moved, {"instance": spare, "requester": requester, "follow_connections": False},
                              "bench")

    def remap():
        return records.remap_elastic_ip(dep, str(eip.ip), {"interface": target, "follow_connections": True}, "bench")
    return [
        (f"interface move ({moved}: {old_host} -> {dep.instances[spare].switch})",
         move()[0], (), move_data, "t0", {old_host, dep.instances[spare].switch}, move),
        (f"security-group rule edit ({group} ingress[0]: tcp 80 -> 80-81)",
         _with_rule(dep, group, "ingress", 0, ports=PortRange(80, 81)), (), rule_data, "t0", set(), None),
        (f"elastic-IP remap, followed ({eip.ip}: {eip.interface} on {holders[0]} -> {target} on {holders[1]})",
         remap()[0], (ElasticFollow("bench", str(eip.ip), eip.interface),), remap_data, "t0", set(holders), remap),
    ]


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
    the changed switches); more runs, while within `budget` seconds, time the whole again.
    """
    started = now()
    data = generate.sized(size)
    dep = parse(data)
    old_ix = Index(dep)
    # every switch compiled, as in a running controller: the Index then holds the work of all of
    # them, which a change carries over (its cost grows with that, not with the switches examined)
    t = now()
    old = {name: compile_switch(old_ix, name) for name in dep.switches}
    compiled_all = now() - t
    results = []
    for what, new_dep, follows, new_data, tenant, named, make in _changes(dep, data):
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
        module = _through_incremental(old_ix, old, new_dep, follows, changed, max(runs, 3))
        api = None
        if make is not None:
            call, directory = _api_call(dep, make)
            try:
                api = []
                for _ in range(max(runs, 3)):
                    t = now()
                    call()
                    api.append(now() - t)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        results.append({"module": module, "api": api, "what": what, "validate": validate, "times": times, "index": index_time,
                        "changed": changed, "examined": len(examined), "sampled_others": len(sample),
                        "others_changed": [s for s in changed if s in sample],
                        "flows_added": added, "flows_removed": removed,
                        "switch_flows": sum(_count(old[n]) for n in changed)})
    # the last change once more, as the controller runs it, under the profiler
    results[-1].update(profile=profile(lambda: _through_incremental(old_ix, old, new_dep, follows, changed, 1,
                                                                     sync=False)))
    return {"switches_total": len(dep.switches), "compiled_all": compiled_all, "changes": results}


def _through_incremental(old_ix, old_flows, new_dep, follows, changed, runs: int, sync: bool = True) -> dict:
    """The same change as the controller runs it (state._install): the next Index derived from
    the one in force (incremental.next_index, which carries over what the change did not touch),
    the switches it finds changed, recompiled; the others keep their flows. `before` is not
    changed by a run, so each run starts from the same state."""
    before = Compiled(old_ix, {(name, Options()): flows for name, flows in old_flows.items()})
    times, found, synced = [], [], []
    for _ in range(runs):
        t = now()
        after, flagged = before.update(next_index(old_ix, new_dep, follows))
        found.append(now() - t)
        flagged = set(new_dep.switches) if flagged is None else flagged
        for name in flagged:
            after.switch(name)
        times.append(now() - t)
        if sync:  # (not under the profiler: its set-up encodes every flow of those switches)
            synced.append(_sync_work({name: old_flows[name] for name in changed},
                                     {name: after.switch(name) for name in changed}))
    out = {"seconds": median(times), "times": times, "find": median(found), "flagged": len(flagged),
           "missed": sorted(set(changed) - flagged)}
    return {**out, "sync": median(synced)} if synced else out


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
