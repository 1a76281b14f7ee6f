"""Model in, flows out: the desired flows of every bridge of every switch.

Pure: no I/O, no os-ken. Each feature module contributes flows for its tables; the result is
sorted into a deterministic order and every flow is checked against the pipeline declaration.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
from typing import Dict, FrozenSet, Optional, Tuple

from vpcflow.flows import arp, authz, base, edge, follow, nat, networks, overlay, pipeline, port_security, underlay
from vpcflow.flows.assemble import Distinct, Overlaps, Shared, finish, sort_key  # noqa: F401 (sort_key: the order of a switch's flows)
from vpcflow.flows.core import Flow, forget_items
from vpcflow.flows.index import Index
from vpcflow.topology.model import EDGE, Deployment, Switch


@dataclasses.dataclass(frozen=True)
class Options:
    # Switches whose Open vSwitch honours set_field to tun_ipv6_src (3.1.5+, 3.3.1+, 3.4+):
    # only there can the outer source embed the inner one.
    embed_outer_source: FrozenSet[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class SwitchFlows:
    integration: Tuple[Flow, ...]
    underlay: Tuple[Flow, ...]

    def bridge(self, which: str) -> Tuple[Flow, ...]:
        return self.integration if which == pipeline.INTEGRATION else self.underlay


def integration_flows(ix: Index, sw: Switch, options: Options):
    if sw.role == EDGE:
        yield from base.integration_flows(ix, sw)
        yield from edge.integration_flows(sw)
        yield from overlay.edge_flows(ix, sw)
        yield from nat.edge_flows(ix, sw)
        yield from follow.edge_flows(ix, sw)
        return
    # every host's plumbing is the same: one run, not ~20 flows made at each host's compile
    yield ix.cached("base:host", lambda: Shared(base.integration_flows(ix, sw)))
    embed = sw.name in options.embed_outer_source
    # A host's own flows are runs too, one per feature and network of the host (and one of
    # what it has once), kept in the Index: a runtime change carries those it did not change
    # (flows/incremental.py: a move remakes its network's on the two hosts), and the switch's
    # compile then only gathers them.
    yield from _own(ix, sw, "port_security", embed, lambda net: port_security.network_flows(ix, sw, net),
                    lambda: port_security.switch_flows(ix, sw))
    yield from arp.integration_flows(ix, sw)
    yield from authz.integration_flows(ix, sw)
    yield from overlay.host_runs(ix, sw, embed)
    yield from _own(ix, sw, "overlay", embed, lambda net: overlay.host_own(ix, sw, net, embed),
                    lambda: overlay.switch_own(sw))
    yield from networks.host_runs(ix, sw, embed)
    yield from _own(ix, sw, "networks", embed, lambda net: networks.host_own(ix, sw, net, embed))
    yield from _own(ix, sw, "nat", embed, lambda net: nat.host_network_flows(ix, sw, net),
                    lambda: nat.host_switch_flows(ix, sw, embed))
    yield from follow.host_flows(ix, sw)


def _own(ix: Index, sw: Switch, feature: str, embed: bool, of_network, of_switch=None):
    """One feature's own flows of a host, as runs kept in the Index: one per network of the
    host, and one of what it has once (key: own:FEATURE, switch, whether the outer source is
    embedded there, the network's name or None)."""
    for net in ix.local_networks(sw.name):
        yield ix.cached((f"own:{feature}", sw.name, embed, net.name), lambda: Shared(of_network(net), own=True))
    if of_switch is not None:
        yield ix.cached((f"own:{feature}", sw.name, embed, None), lambda: Shared(of_switch(), own=True))


@contextlib.contextmanager
def without_gc():
    """Compiling makes no reference cycles, only many objects that live on (the flows, kept as
    long as the model holds). The cyclic collector would walk the growing heap again and again
    for nothing: measured, it took more time than the compile itself (70 s of a 110 s compile of
    100k interfaces). So it is off while compiling, and what exists afterwards is moved out of its
    sight (gc.freeze). No collection before the freeze: with the collector off, the youngest
    generation holds everything the compile made, and walking it cost 1.6 ms per host switch
    (3 s of a 100k-interface compile). Garbage cycles made meanwhile elsewhere in the process
    are kept only until the next model comes in force (release_frozen). Freed flows are still
    freed at once (reference counting)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


def release_frozen():
    """Give what earlier compiles kept from the cyclic collector back to it (the controller calls
    this when a new model comes in force), and collect the young garbage before the next
    compile's freeze would keep it: the reference cycles made since the last one (an API call's,
    the state file's JSON encoder's), which lived as long as the process (measured: a
    10k-interface controller grew by ~80 allocated blocks with every move and back; 3,300
    unreachable objects were kept after 50 of them at 1k). The young
    generations only: what was frozen goes back to the oldest, which a full collection would
    walk (millions of objects at 100k interfaces). The match items kept for sharing (core.Flow)
    go too."""
    gc.unfreeze()
    gc.collect(1)
    forget_items()


def compile_switch(ix: Index, name: str, options: Options = Options(), previous: Optional[SwitchFlows] = None) -> SwitchFlows:
    """previous: the switch's flows before a runtime change (flows/incremental.py): the runs it
    had are not checked against each other again."""
    sw = ix.dep.switches[name]
    # an edge's runs (thousands) are counted once and then by what a change replaced (a
    # host's are few: counting them all would cost memory for every host, for little)
    overlaps = ix.cached(("finish:overlaps", name), Overlaps) if sw.role == EDGE else None
    before = previous.integration if previous is not None else None
    # hosts compiled one after the other share most runs: what was found distinct is kept
    distinct = ix.cached("finish:distinct", Distinct) if overlaps is None and before is None else None
    with without_gc():
        return SwitchFlows(finish(integration_flows(ix, sw, options), overlaps, before, distinct),
                           ix.cached(("underlay", name), lambda: finish(underlay.underlay_flows(sw))))


def compile_deployment(dep: Deployment, options: Options = Options(), follows=()) -> Dict[str, SwitchFlows]:
    """follows: the draining remaps (flows.follow.Follow) whose old bindings still take traffic."""
    ix = Index(dep, follows)
    return {name: compile_switch(ix, name, options) for name in dep.switches}
