"""The overlay of seed 004: embedded substrate addresses, as flows.

Sending (table route): a destination in the packet's network lives on this switch (deliver
locally), on another host (encapsulate: VNI = network id, outer destination = embed(host
prefix, network id, IPv4)), or outside every network (toward the edge, via nat_out).
Receiving (table substrate_in): a tunnelled packet is accepted only if its outer source lies in
the prefix of the switch where its inner source (network id, IPv4) really lives.
Delivering (table deliver): destination MAC = the interface's, source MAC = the sender's dummy.
"""
from __future__ import annotations

from typing import Optional

from netaddr import IPAddress, IPNetwork

from vpcflow.flows.base import drop_flow
from vpcflow.flows.core import Goto, Load, Move, Output, SetField, flow
from vpcflow.flows.index import Index
from vpcflow.flows.matches import cidr, dummy_source_mac, embedded_address_actions, ipv4
from vpcflow.flows.pipeline import REG_BINDING, REG_DST_ZONE, REG_NETWORK
from vpcflow.topology.model import TUNNEL_PORT, Network, Switch, dummy_mac, embed

PRIORITY = 100


def encapsulate(sender: Switch, net: Network, prefix: IPNetwork, dst_ip, embed_source: bool,
                dst_net: Optional[Network] = None):
    """Actions that put the packet on the substrate toward embed(prefix, dst_net.id, destination).

    The VNI is the sender's network `net`; the destination's network `dst_net` (the same one
    unless an authorization lets `net` reach another) only shapes the outer destination.
    dst_ip: a constant destination, or None to embed the packet's own ip_dst (edge traffic).
    embed_source: the sender's OVS honours tun_ipv6_src, so the outer source can embed the
    inner source too; otherwise the outer source is the switch's own substrate address.
    """
    dst_id = (dst_net or net).id
    actions = [SetField("tunnel_id", net.id)]
    if dst_ip is None:
        actions += embedded_address_actions("tun_ipv6_dst", prefix, dst_id, "ipv4_dst")
    else:
        actions.append(SetField("tun_ipv6_dst", str(embed(prefix, dst_id, IPAddress(dst_ip)))))
    if embed_source:
        actions += embedded_address_actions("tun_ipv6_src", sender.prefix, net.id, "ipv4_src")
    actions.append(Output(TUNNEL_PORT))
    return tuple(actions)


def host_flows(ix: Index, sw: Switch, embed_source: bool):
    for net in ix.local_networks(sw.name):
        yield from _route(ix, sw, net, embed_source)
        yield from _accept(ix, sw, net)
    yield from _deliver(ix, sw)


def _route(ix: Index, sw: Switch, net: Network, embed_source: bool):
    if embed_source:  # the outer source is the sender's own: nothing to share between switches
        for ep in ix.by_network[net.name]:
            match = {REG_NETWORK: net.id, **ipv4(ipv4_dst=ep.ip_text)}
            if ep.switch.name == sw.name:
                actions = (Goto("dest_lookup"),)
            else:
                actions = encapsulate(sw, net, ep.switch.prefix, ep.ip, embed_source)
            yield followed_route(ep, match, actions, "overlay")
    else:
        for where, local, remote in shared_routes(ix, net, ix.by_network[net.name], "overlay"):
            yield local if where == sw.name else remote
    # An unused address of the network is not external: it goes nowhere.
    yield drop_flow("route", PRIORITY - 50, {REG_NETWORK: net.id, **ipv4(ipv4_dst=cidr(net.cidr))},
                    "no_destination")
    edge = ix.edge
    if edge is not None:
        yield flow("route", PRIORITY - 90, {REG_NETWORK: net.id, **ipv4()}, (Goto("nat_out"),),
                   feature="overlay", obj=f"{net.name}:external")
        yield flow("nat_out", 1, {REG_NETWORK: net.id, **ipv4()},
                   encapsulate(sw, net, edge.prefix, None, embed_source),
                   feature="overlay", obj=f"{net.name}:to-edge")


def shared_routes(ix: Index, net: Network, endpoints, feature: str, dst_net: Optional[Network] = None):
    """(switch of the endpoint, its route flow there, its route flow elsewhere) for endpoints
    of dst_net (net unless an authorization lets net reach another), sent from net without
    embedding the outer source: the same flows on every switch that serves net, built once."""
    def make():
        out = []
        for ep in endpoints:
            match = {REG_NETWORK: net.id, **ipv4(ipv4_dst=ep.ip_text)}
            actions = encapsulate(None, net, ep.switch.prefix, ep.ip, False, dst_net=dst_net)
            out.append((ep.switch.name, followed_route(ep, match, (Goto("dest_lookup"),), feature),
                        followed_route(ep, match, actions, feature)))
        return out
    return ix.cached(("routes", net.name, (dst_net or net).name, feature), make)


def network_accepts(ix: Index, net: Network, sw: Switch):
    """accept_sources for every endpoint of net: the same flows on every switch, built once."""
    flows = ix.cached(("accepts", net.name),
                      lambda: [(ep.switch.name, f) for ep, f in _accepts(net, ix.by_network[net.name])])
    return (f for where, f in flows if where != sw.name)


def _accepts(net: Network, endpoints):
    for ep in endpoints:
        match = {"tunnel_id": net.id, "tun_ipv6_src": cidr(ep.switch.prefix), **ipv4(ipv4_src=ep.ip_text)}
        yield ep, flow("substrate_in", PRIORITY, match, (Move("tunnel_id", REG_NETWORK, 24), Goto("dest_lookup")),
                       feature="overlay", obj=ep.interface.name)


def accept_sources(net: Network, endpoints, sw: Switch):
    """substrate_in flows: a packet of `net` from one of these endpoints is accepted only from the
    prefix of the switch where the endpoint lives."""
    return (f for ep, f in _accepts(net, endpoints) if ep.switch.name != sw.name)


def followed_route(ep, match, actions, feature):
    """The route flow of an endpoint; an old binding takes only the connections recorded under it."""
    if ep.binding is None:
        return flow("route", PRIORITY, match, actions, feature=feature, obj=ep.interface.name)
    return flow("route", PRIORITY + 10, {**match, REG_BINDING: ep.binding}, actions, feature="follow",
                obj=f"{ep.interface.name}@{ep.interface.attach_to}")


def _accept(ix: Index, sw: Switch, net: Network):
    """Accept tunnelled packets of `net` whose outer source matches where the inner source lives."""
    yield from network_accepts(ix, net, sw)
    appliances = {ep.switch for ep in ix.by_network[net.name]
                  if ep.switch.name != sw.name and not ep.interface.source_dest_check}
    for other in sorted(appliances, key=lambda s: s.name):
        # An appliance may send from any address; it must still come from its own switch.
        yield flow("substrate_in", PRIORITY - 10,
                   {"tunnel_id": net.id, "tun_ipv6_src": cidr(other.prefix), **ipv4()},
                   (Move("tunnel_id", REG_NETWORK, 24), Goto("dest_lookup")),
                   feature="overlay", obj=f"{net.name}:appliances@{other.name}")
    edge = ix.edge
    if edge is not None:
        # From the edge come external sources only: one of the network's own addresses is spoofed.
        yield drop_flow("substrate_in", PRIORITY - 20,
                        {"tunnel_id": net.id, "tun_ipv6_src": cidr(edge.prefix), **ipv4(ipv4_src=cidr(net.cidr))},
                        "substrate_spoofed")
        yield flow("substrate_in", PRIORITY - 30,
                   {"tunnel_id": net.id, "tun_ipv6_src": cidr(edge.prefix), **ipv4()},
                   (Move("tunnel_id", REG_NETWORK, 24), Goto("dest_lookup")),
                   feature="overlay", obj=f"{net.name}:from-edge")


def _deliver(ix: Index, sw: Switch):
    zones = ix.zones(sw.name)
    for ep in ix.by_switch.get(sw.name, ()):
        yield flow("dest_lookup", PRIORITY, {REG_NETWORK: ep.network.id, **ipv4(ipv4_dst=ep.ip_text)},
                   (Load(zones[ep.interface.name], REG_DST_ZONE, 0, 16), Goto("ingress_acl")),
                   feature="overlay", obj=ep.interface.name)
        net = ep.network
        base = {REG_NETWORK: net.id, **ipv4(ipv4_dst=ep.ip_text)}
        to_port = (SetField("eth_dst", ep.interface.mac), Output(ep.port))
        yield flow("deliver", PRIORITY, {**base, "ipv4_src": cidr(net.cidr)},
                   dummy_source_mac() + to_port, feature="overlay", obj=ep.interface.name)
        # From outside the network the packet comes, as the instance sees it, from its gateway.
        yield flow("deliver", PRIORITY - 10, base,
                   (SetField("eth_src", dummy_mac(net.gateway_ip)),) + to_port,
                   feature="overlay", obj=ep.interface.name)


def edge_flows(ix: Index, sw: Switch):
    """The edge accepts traffic of an instance only from the switch where that instance lives."""
    for ep in ix.endpoints:
        match = {"tunnel_id": ep.network.id, "tun_ipv6_src": cidr(ep.switch.prefix),
                 **ipv4(ipv4_src=ep.ip_text)}
        yield flow("substrate_in", PRIORITY, match,
                   (SetField("eth_src", sw.uplink.mac), Goto("edge_out")),
                   feature="overlay", obj=ep.interface.name)

