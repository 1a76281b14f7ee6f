"""Traffic between two networks (seed 004): only where `authorizations` allow, checked at both ends.

The packet travels with the sender's network as VNI (the receiver checks the sender's location
against that network) and an outer destination that embeds the receiver's network and address.
At the receiving switch, dest_lookup moves the packet into the receiver's network (reg0) and keeps
the sender's in reg3. Both ends then check the authorization after their conntrack step, so
they know a request from a reply: a request must match an authorization from its network to
the other (protocol and ports); a reply needs one the other way.

Addresses of the other network that fall inside the sender's own CIDR can never be reached
(the sender's own network wins); the compiler leaves them out.
"""
from __future__ import annotations

from typing import Dict, List, Set, Tuple

from vpcflow.flows.authz import l4_matches
from vpcflow.flows.base import drop_flow
from vpcflow.flows.core import Flow, Goto, Load, ct_flags, flow, loads
from vpcflow.flows.index import Index
from vpcflow.flows.matches import cidr, ipv4, network_ipv4
from vpcflow.flows.overlay import OWN, OWN_NOT, PRIORITY, network_accepts, routes
from vpcflow.flows.pipeline import REG_DST_CLASS, REG_DST_ZONE, REG_NETWORK, REG_SRC_NETWORK
from vpcflow.topology.model import Authorization, Network, Switch


def _pairs(ix: Index) -> Dict[Tuple[str, str], List[Authorization]]:
    return ix.cached("authorization_pairs", lambda: _make_pairs(ix))


def _make_pairs(ix: Index) -> Dict[Tuple[str, str], List[Authorization]]:
    out: Dict[Tuple[str, str], List[Authorization]] = {}
    for a in ix.dep.authorizations:
        out.setdefault((a.src, a.dst), []).append(a)
    return out


def _talking(ix: Index) -> Set[Tuple[str, str]]:
    """(from, to) network pairs that exchange packets: authorized either way."""
    pairs = set()
    for a in ix.dep.authorizations:
        pairs |= {(a.src, a.dst), (a.dst, a.src)}
    return pairs


def _reachable(ix: Index, src: Network, dst: Network):
    """The other network's endpoints the sender's network can address."""
    return ix.cached(("reachable", src.name, dst.name),
                     lambda: [ep for ep in ix.by_network[dst.name] if _addressable(src, ep)])


def _addressable(src: Network, ep) -> bool:
    """Whether src's senders can address this endpoint of another network: not where src's own
    CIDR covers its address (src's own network wins there)."""
    return ep.ip not in src.cidr


def _talking_by_network(ix: Index) -> Dict[str, List[Tuple[str, str]]]:
    """network -> the talking pairs it is in."""
    def make():
        out = {}
        for pair in _talking(ix):
            for name in set(pair):
                out.setdefault(name, []).append(pair)
        return out
    return ix.cached("talking_by_network", make)


def host_runs(ix: Index, sw: Switch, embed_source: bool):
    """The Shared runs of the host's authorized pairs (routes toward the other network, the
    checks on where its senders live)."""
    nets = ix.dep.networks
    local = {n.name for n in ix.local_networks(sw.name)}
    authz = _pairs(ix)
    by_network = _talking_by_network(ix)
    for a_name, b_name in sorted({pair for name in local for pair in by_network.get(name, ())}):
        a, b = nets[a_name], nets[b_name]
        if a_name in local:
            yield from _send(ix, sw, a, b, authz, embed_source, OWN_NOT)
        if b_name in local:
            yield from _receive(ix, sw, a, b, authz, OWN_NOT)


def host_own(ix: Index, sw: Switch, net: Network, embed_source: bool):
    """The host's own flows of the authorized pairs one of its networks is in: the checks, its
    destinations (of each pair, the side this network is on)."""
    nets, authz = ix.dep.networks, _pairs(ix)
    for a_name, b_name in sorted(_talking_by_network(ix).get(net.name, ())):
        a, b = nets[a_name], nets[b_name]
        if a_name == net.name:
            yield from _send(ix, sw, a, b, authz, embed_source, OWN)
        if b_name == net.name:
            yield from _receive(ix, sw, a, b, authz, OWN)


def _send(ix: Index, sw: Switch, a: Network, b: Network, authz, embed_source: bool, own: bool):
    obj = f"{a.name}->{b.name}"
    targets = _reachable(ix, a, b)
    if not targets:
        return
    yield from routes(ix, sw, a, targets, "authz", embed_source, own, dst_net=b)
    if own:
        peer = {"ipv4_dst": cidr(b.cidr)}
        yield from _check(ix, "network_acl", "follow", a, b, authz, {REG_NETWORK: a.id}, peer, obj)


def _receive(ix: Index, sw: Switch, a: Network, b: Network, authz, own: bool):
    """Packets from network a to local endpoints of network b."""
    if not own:
        # a's senders are checked against where they live, as for b's own.
        yield network_accepts(ix, a)
        return
    obj = f"{a.name}->{b.name}"
    zones, classes = ix.zones(sw.name), ix.group_classes()
    zone_loads, class_loads = loads(REG_DST_ZONE, 0, 16), loads(REG_DST_CLASS)
    into_b = (Load(a.id, REG_SRC_NETWORK, 0, 24), Load(b.id, REG_NETWORK, 0, 24))  # every endpoint's: made once
    lookup_done = Goto("ingress_acl")
    head = network_ipv4(a.id)
    # the switch's own endpoints of b that a can address (not all of b's, looked through at every host)
    for ep in ix.local_endpoints(sw.name, b.name):
        if not _addressable(a, ep):
            continue
        # {reg0: a.id, eth_type: IPv4, ipv4_dst: ep's address}
        yield Flow("dest_lookup", PRIORITY, head + ep.dst_match,
                   into_b + (zone_loads[zones[ep.interface.name]],
                             class_loads[classes[ep.interface.security_groups]], lookup_done),
                   "authz", obj)
    yield from _check(ix, "network_acl_in", "deliver", a, b, authz,
                      {REG_SRC_NETWORK: a.id, REG_NETWORK: b.id}, {"ipv4_src": cidr(a.cidr)}, obj)


_REQUEST, _REPLY = ct_flags("+trk-rpl"), ct_flags("+trk+rpl")


def _check(ix: Index, table, next_table, a: Network, b: Network, authz, where, peer, obj):
    """The same on every host of the pair's side: made once, the objects shared by the hosts'
    own runs (checked against the pipeline once)."""
    return ix.cached(("network_checks", table, a.name, b.name),
                     lambda: tuple(_checks(table, next_table, a, b, authz, where, peer, obj)))


def _checks(table, next_table, a: Network, b: Network, authz, where, peer, obj):
    """A request from a to b needs an a->b authorization that matches it; a reply needs b->a."""
    for rule in authz.get((a.name, b.name), ()):
        for l4 in l4_matches(rule):
            yield flow(table, PRIORITY, {**where, "ct_state": _REQUEST, **ipv4(**peer, **l4)},
                       (Goto(next_table),), feature="authz", obj=obj)
    if (b.name, a.name) in authz:
        yield flow(table, PRIORITY, {**where, "ct_state": _REPLY, **ipv4(**peer)},
                   (Goto(next_table),), feature="authz", obj=obj)
    yield drop_flow(table, PRIORITY - 10, {**where, **ipv4(**peer)}, "network_denied")
