"""The overlay of seed 004: embedded substrate addresses, as flows.

Sending (table route): a destination in the packet's network lives on this switch (deliver
locally), on another host (encapsulate: VNI = network id, outer destination = embed(host
prefix, network id, IPv4)), or outside every network (toward the edge, via nat_out).
Receiving (table substrate_in): a tunnelled packet is accepted only if its outer source lies in
the prefix of the switch where its inner source (network id, IPv4) really lives.
Delivering (table deliver): destination MAC = the interface's, source MAC = the sender's dummy.
"""
from __future__ import annotations

import functools
from typing import Optional

from netaddr import IPNetwork

from vpcflow.flows.assemble import Runs, Shared
from vpcflow.flows.base import drop_flow
from vpcflow.flows.core import ETH_IPV4, Flow, Goto, Move, Output, SetField, flow, interned, loads
from vpcflow.flows.index import Endpoint, Index
from vpcflow.flows.matches import cidr, dummy_source_mac, embedded_address_actions, ipv4, network_ipv4
from vpcflow.flows.pipeline import REG_BINDING, REG_DST_CLASS, REG_DST_ZONE, REG_NETWORK
from vpcflow.topology.model import TUNNEL_PORT, Network, Switch, dummy_mac

PRIORITY = 100


def encapsulate(sender: Switch, net: Network, dst: Optional[Endpoint], embed_source: bool,
                prefix: Optional[IPNetwork] = None):
    """Actions that put the packet on the substrate toward the destination's substrate address.

    The VNI is the sender's network `net`; the destination's own network (the same one unless
    an authorization lets `net` reach another) only shapes the outer destination.
    dst: the destination endpoint (its substrate address: Endpoint.outer_destination), or None
    to embed the packet's own ip_dst under prefix (net's, toward the edge).
    embed_source: the sender's OVS honours tun_ipv6_src, so the outer source can embed the
    inner source too; otherwise the outer source is the switch's own substrate address.
    """
    if dst is not None and not embed_source:  # (most routes: every switch's shared ones)
        return (_vni(net.id), dst.outer_destination, _TO_TUNNEL)
    actions = [_vni(net.id)]
    if dst is None:
        actions += embedded_address_actions("tun_ipv6_dst", prefix, net.id, "ipv4_dst")
    else:
        actions.append(dst.outer_destination)
    if embed_source:
        actions += embedded_address_actions("tun_ipv6_src", sender.prefix, net.id, "ipv4_src")
    actions.append(_TO_TUNNEL)
    return tuple(actions)


# the parts of every route's actions that are the same for a network: made once, not per route
@functools.lru_cache(maxsize=1 << 16)
def _vni(netid: int) -> SetField:
    return SetField("tunnel_id", netid)


_TO_TUNNEL = Output(TUNNEL_PORT)


def host_runs(ix: Index, sw: Switch, embed_source: bool):
    """The Shared runs of the host's networks (routes, accepts)."""
    for net in ix.local_networks(sw.name):
        yield from routes(ix, sw, net, ix.by_network[net.name], "overlay", embed_source, OWN_NOT)
        yield network_accepts(ix, net)


def host_own(ix: Index, sw: Switch, net: Network, embed_source: bool):
    """The host's own flows of one of its networks: its routes to its local destinations, and
    the delivery to them."""
    yield from _route(ix, sw, net, embed_source)
    yield from _deliver(ix, sw, net)


def switch_own(sw: Switch):
    """What the host has once, whatever its networks."""
    yield own_prefix_is_spoofed(sw)


# which part of routes() to make: the Shared run every switch of the network shares, or the
# switch's own routes (a local destination's, or every one where nothing is shared)
OWN_NOT, OWN = False, True


def _route(ix: Index, sw: Switch, net: Network, embed_source: bool):
    yield from routes(ix, sw, net, ix.by_network[net.name], "overlay", embed_source, OWN)
    # An unused address of the network is not external: it goes nowhere.
    yield drop_flow("route", PRIORITY - 50, {REG_NETWORK: net.id, **ipv4(ipv4_dst=cidr(net.cidr))},
                    "no_destination")
    edge = ix.edge
    if edge is not None:
        yield flow("route", PRIORITY - 90, {REG_NETWORK: net.id, **ipv4()}, (Goto("nat_out"),),
                   feature="overlay", obj=f"{net.name}:external")
        yield flow("nat_out", 1, {REG_NETWORK: net.id, **ipv4()},
                   encapsulate(sw, net, None, embed_source, edge.prefix),
                   feature="overlay", obj=f"{net.name}:to-edge")


def routes(ix: Index, sw: Switch, net: Network, endpoints, feature: str, embed_source: bool, own: bool,
           dst_net: Optional[Network] = None):
    """The route flows from net to endpoints (of dst_net: net unless an authorization lets net
    reach another). Every switch that serves net has the same flows toward every endpoint's
    switch, built once (Shared); a destination on this switch takes a local route above its
    shared one (LOCAL). Where the outer source embeds the inner one it is the sender's own: then
    nothing is shared. own: the switch's own routes (OWN), else the Shared run (OWN_NOT)."""
    head = network_ipv4(net.id)

    def route(ep, local: bool):
        # {reg0: net.id, eth_type: IPv4, ipv4_dst: ep's address}
        match = ep.own_dst_match if ep.network.id == net.id else head + ep.dst_match
        if local:
            return followed_route(ep, match, _TO_LOOKUP, feature, local=True)
        return followed_route(ep, match, encapsulate(sw if embed_source else None, net, ep, embed_source), feature)

    if embed_source:
        if own:
            for ep in endpoints:
                yield route(ep, ep.switch.name == sw.name)
        return

    key = ("routes", net.name, (dst_net or net).name, feature)

    def make():
        by_switch = {}
        for ep in endpoints:
            by_switch.setdefault(ep.switch.name, []).append(ep)
        previous = ix.replaced_value(key)
        before = _routes_before(previous)
        flows = []
        for ep in endpoints:
            known = before.get(id(ep))
            flows.append(known[1] if known is not None and known[0] is ep else route(ep, False))
        return Shared(flows, like=previous[0] if previous is not None else None), by_switch, tuple(endpoints)
    shared, by_switch, _ = ix.cached(key, make)
    if not own:
        yield shared
        return
    for ep in by_switch.get(sw.name, ()):
        yield route(ep, True)


def _routes_before(previous) -> dict:
    """id(endpoint) -> (endpoint, its route) of the routes a change makes again (previous: their
    value in the Index before it, Index.replaced_value, or None): an endpoint the change kept
    (the same object: the same address, switch and binding) keeps its route, and only the
    others' are made (most of a network's, after a move of one)."""
    if previous is None:
        return {}
    run, _, endpoints = previous
    if len(run.flows) != len(endpoints):  # (a flow per endpoint, in their order, unless some were one)
        return {}
    return _by_endpoint(run, endpoints)


def _by_endpoint(run: Shared, endpoints) -> dict:
    """id(endpoint) -> (endpoint, its flow), of a run whose first flows are its endpoints', one
    each, in their order (the endpoints kept with it in the cache)."""
    return {id(ep): (ep, f) for ep, f in zip(endpoints, run.flows)}


def network_accepts(ix: Index, net: Network):
    """Accepting net's packets from the substrate, the same on every switch (Shared): each
    endpoint's address only from the prefix of the switch where it lives, an appliance's any
    address from its own switch, external sources from the edge. A packet from a switch's own
    prefix is dropped before (own_prefix_is_spoofed): no endpoint of the switch is accepted
    from the substrate."""
    key = ("accepts", net.name)
    return ix.cached(key, lambda: _accept_run(ix, key, net, lambda kept: _accepts(ix, net, kept)))[0]


def _accept_run(ix: Index, key, net: Network, make):
    """(the run, the endpoints its first flows are of, one each, in order). A run made again
    after a change (an interface moved) takes the flows of the endpoints the change kept from
    the run it replaces, with their key hashes (like): only the changed ones are made, and
    Shared.reuse finds the others as they are instead of comparing each."""
    previous = ix.replaced_value(key)
    kept = _by_endpoint(*previous) if previous is not None else {}
    return (Shared(make(kept), like=previous[0] if previous is not None else None),
            tuple(ix.by_network[net.name]))


def own_prefix_is_spoofed(sw: Switch):
    return drop_flow("substrate_in", PRIORITY + 10, {"tun_ipv6_src": cidr(sw.prefix)}, "substrate_spoofed")


def _from_sources(ix: Index, net: Network, actions, kept):
    """A flow per endpoint of net taking its packets from the substrate only from the prefix of
    the switch where it lives. Matches as tuples from parts made once (the network and switch's,
    interned per switch; the address's): one per interface of the deployment, at every edge.
    kept: id(endpoint) -> (endpoint, its flow) of the run made before a change (_accept_run)."""
    heads = {}  # switch name -> the match items before the address
    for ep in ix.by_network[net.name]:
        known = kept.get(id(ep))
        # (the same endpoint object: the same address, switch and binding; checked to be its flow)
        if known is not None and known[0] is ep and known[1].obj == ep.interface.name \
                and known[1].match[-1] == ep.src_match[-1]:
            yield known[1]
            continue
        head = heads.get(ep.switch.name)
        if head is None:
            head = heads[ep.switch.name] = interned((("tunnel_id", net.id), ("tun_ipv6_src", cidr(ep.switch.prefix)),
                                                     ("eth_type", ETH_IPV4)))
        yield Flow("substrate_in", PRIORITY, head + ep.src_match, actions, "overlay", ep.interface.name)


def _accepts(ix: Index, net: Network, kept):
    into = (Move("tunnel_id", REG_NETWORK, 24), Goto("dest_lookup"))
    yield from _from_sources(ix, net, into, kept)
    appliances = {ep.switch for ep in ix.by_network[net.name] if not ep.interface.source_dest_check}
    for other in sorted(appliances, key=lambda s: s.name):
        # An appliance may send from any address; it must still come from its own switch.
        yield flow("substrate_in", PRIORITY - 10, {"tunnel_id": net.id, "tun_ipv6_src": cidr(other.prefix), **ipv4()},
                   into, feature="overlay", obj=f"{net.name}:appliances@{other.name}")
    edge = ix.edge
    if edge is not None:
        # From the edge come external sources only: one of the network's own addresses is spoofed.
        yield drop_flow("substrate_in", PRIORITY - 20,
                        {"tunnel_id": net.id, "tun_ipv6_src": cidr(edge.prefix), **ipv4(ipv4_src=cidr(net.cidr))},
                        "substrate_spoofed")
        yield flow("substrate_in", PRIORITY - 30, {"tunnel_id": net.id, "tun_ipv6_src": cidr(edge.prefix), **ipv4()},
                   into, feature="overlay", obj=f"{net.name}:from-edge")


LOCAL = 5  # a route to a destination on this switch: above the shared one every switch has
_TO_LOOKUP = (Goto("dest_lookup"),)  # a local route's actions: one tuple for every host's


def followed_route(ep, match: tuple, actions: tuple, feature, local: bool = False):
    """The route flow of an endpoint (match: interned items); an old binding takes only the
    connections recorded under it."""
    bonus = LOCAL if local else 0
    if ep.binding is None:
        return Flow("route", PRIORITY + bonus, match, actions, feature, ep.interface.name)
    return Flow("route", PRIORITY + 10 + bonus, match + interned(((REG_BINDING, ep.binding),)), actions, "follow",
                f"{ep.interface.name}@{ep.interface.attach_to}")


def _deliver(ix: Index, sw: Switch, net: Network):
    zones, classes = ix.zones(sw.name), ix.group_classes()
    zone_loads, class_loads = loads(REG_DST_ZONE, 0, 16), loads(REG_DST_CLASS)
    # made once for the network (netaddr's hash and str were most of what an endpoint's flows
    # cost here)
    net_cidr, from_gateway = cidr(net.cidr), SetField("eth_src", dummy_mac(net.gateway_ip))
    lookup_done = Goto("ingress_acl")
    from_network = interned((("ipv4_src", net_cidr),))
    for ep in ix.local_endpoints(sw.name, net.name):
        name = ep.interface.name
        base = ep.own_dst_match  # {reg0: net.id, eth_type: IPv4, ipv4_dst: ep's address}
        yield Flow("dest_lookup", PRIORITY, base,
                   (zone_loads[zones[name]],
                    class_loads[classes[ep.interface.security_groups]], lookup_done),
                   "overlay", name)
        to_port = (SetField("eth_dst", ep.interface.mac), Output(ep.port))
        yield Flow("deliver", PRIORITY, base + from_network, dummy_source_mac() + to_port, "overlay", name)
        # From outside the network the packet comes, as the instance sees it, from its gateway.
        yield Flow("deliver", PRIORITY - 10, base, (from_gateway,) + to_port, "overlay", name)


EDGE_CHUNK = 64  # networks per Runs at the edge


def edge_flows(ix: Index, sw: Switch):
    """The edge accepts traffic of an instance only from the switch where that instance lives:
    a run per network (a change of one network leaves the others' runs as they are), taken
    EDGE_CHUNK networks at a time (Runs: a compile of the edge gathers a few hundred, not a
    run per network)."""
    for key, nets in _edge_chunks(ix, sw):
        yield ix.cached(key, lambda: Runs(_edge_accept_run(ix, sw, net) for net in nets if ix.by_network.get(net.name)))


def _edge_accept_run(ix: Index, sw: Switch, net: Network) -> Shared:
    key = ("edge_accepts", net.name, sw.name)
    return ix.cached(key, lambda: _accept_run(ix, key, net, lambda kept: _edge_accepts(ix, sw, net, kept)))[0]


def _edge_chunks(ix: Index, sw: Switch):
    """(key, networks) of each Runs of the edge's accepts; the key names its networks."""
    def make():
        nets = list(ix.dep.networks.values())
        parts = [nets[i:i + EDGE_CHUNK] for i in range(0, len(nets), EDGE_CHUNK)]
        return [(("edge_accepts:runs", sw.name, frozenset(n.name for n in part)), part) for part in parts]
    return ix.cached(("edge_accepts:chunks", sw.name), make)


def _edge_accepts(ix: Index, sw: Switch, net: Network, kept):
    return _from_sources(ix, net, (SetField("eth_src", sw.uplink.mac), Goto("edge_out")), kept)

