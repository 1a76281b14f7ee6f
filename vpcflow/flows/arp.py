"""The ARP responder (seed 004): the switch answers an instance's ARP request itself.

The answer carries the destination's dummy MAC, and exists only for destinations the instance
may reach: addresses of its network that its security groups and theirs let it talk to (either
way: a server must resolve its clients to answer them), and the network's gateway when its rules
concern addresses outside the network. Any other request is dropped and counted
(arp_unanswered); no ARP ever leaves the host.

One flow per (asker, destination) pair would make the responder most of a host's flows. Askers
that may reach the same destinations for the same reason (their network, their security groups,
whether they talk outside; their address too where a rule depends on it) form a class: port
security loads the asker's class into reg1, and the class's flows (one per destination) are the
same on every switch, built once. The reply itself is the same for every destination, since the
dummy MAC is computed from the requested address.
"""
from __future__ import annotations

from typing import Dict, Tuple

from vpcflow.flows.authz import groups_may_send, may_send, talks_outside
from vpcflow.flows.base import drop_flow
from vpcflow.flows.assemble import Shared
from vpcflow.flows.core import ETH_ARP, Flow, Load, Move, Output
from vpcflow.flows.index import Index, stable_ids
from vpcflow.flows.matches import arp
from vpcflow.flows.pipeline import REG_NETWORK, REG_SRC_CLASS
from vpcflow.topology.model import DUMMY_MAC_HIGH16, Switch

PRIORITY = 100


def computed_reply():
    """Turn an ARP request into its reply from the requested address at that address's dummy
    MAC (model.dummy_mac), sent back where it came from. The requested address is kept in the
    low bits of eth_src while arp_tpa is overwritten."""
    return (
        Move("eth_src", "eth_dst"),
        Move("arp_tpa", "eth_src", 32, 0, 0),
        Load(DUMMY_MAC_HIGH16, "eth_src", 32, 16),
        Load(2, "arp_op"),
        Move("arp_sha", "arp_tha"),
        Move("eth_src", "arp_sha"),
        Move("arp_spa", "arp_tpa"),
        Move("eth_src", "arp_spa", 32, 0, 0),
        Output("IN_PORT"),
    )


def integration_flows(ix: Index, sw: Switch):
    classes = _classes(ix)
    for key in dict.fromkeys(classes.of_endpoint[(ep.interface.name, ep.ip_text)]
                             for ep in ix.by_switch.get(sw.name, ())):
        yield ix.cached(("arp_class", key), lambda: Shared(_class_flows(ix, classes, key)))
    for net in ix.local_networks(sw.name):
        yield ix.cached(("arp_own", net.name), lambda: Shared(_own_address_drops(ix, net)))


def asker_class(ix: Index, iface_name: str, ip_text: str) -> int:
    """The class id port security loads into reg1 for an ARP request from this address."""
    classes = _classes(ix)
    return classes.ids[classes.of_endpoint[(iface_name, ip_text)]]


class _Classes:
    """Every endpoint's class key, the ids of the keys, and one endpoint of each (which decides
    the class's destinations)."""

    def __init__(self, ix: Index):
        self.of_endpoint: Dict[Tuple[str, str], tuple] = {}
        self.example = {}
        for ep in ix.endpoints:
            key = _class_key(ix, ep)
            self.of_endpoint[(ep.interface.name, ep.ip_text)] = key
            self.example.setdefault(key, ep)
        self.ids = stable_ids(self.example)


def _classes(ix: Index) -> _Classes:
    return ix.cached("arp_classes", lambda: _Classes(ix))


def _class_key(ix: Index, ep) -> tuple:
    net, groups = ep.network, ep.interface.security_groups
    outside = talks_outside(ix, ep.interface, net.cidr)
    decided = ix.cached(("arp_decided", net.name, groups, outside), lambda: _by_groups(ix, ep, outside))
    return (net.name, groups, outside) if decided is not None else (net.name, groups, outside, ep.ip_text)


def _class_flows(ix: Index, classes: _Classes, key):
    cid = classes.ids[key]
    example = classes.example[key]
    netid = example.network.id
    request = ((REG_SRC_CLASS, cid), ("eth_type", ETH_ARP), ("arp_op", 1))
    for text in _targets(ix, example):
        yield Flow("arp_responder", PRIORITY, request + (("arp_tpa", text),), computed_reply(), "arp",
                   f"net{netid}:class{cid}")


def _own_address_drops(ix: Index, net):
    """A request for one's own address (a gratuitous ARP or a duplicate check) gets no answer."""
    for ep in ix.by_network[net.name]:
        yield drop_flow("arp_responder", PRIORITY + 10,
                        {REG_NETWORK: net.id, **arp(arp_spa=ep.ip_text, arp_tpa=ep.ip_text)}, "arp_own_address")


def _targets(ix: Index, src) -> tuple:
    """The addresses (text, in address order) that src may ask for: those of its network it may
    talk to either way, and the gateway when it talks outside. Its own address is among them
    when its groups let it reach their members: a request for it is dropped before (PRIORITY + 10).

    Askers whose groups decide alone (no rule that depends on addresses) share one answer."""
    net, mine = src.network, src.interface.security_groups
    outside = talks_outside(ix, src.interface, net.cidr)
    decided = ix.cached(("arp_decided", net.name, mine, outside), lambda: _by_groups(ix, src, outside))
    return decided if decided is not None else _for_address(ix, src, outside)


def _by_groups(ix: Index, src, outside: bool):
    """The targets of every asker of src's network and groups, or None if they depend on addresses."""
    found = {}
    net = src.network
    for groups, peers in _peers_by_groups(ix, net.name).items():
        verdicts = (_within(groups_may_send(ix, src.interface.security_groups, groups), net.cidr),
                    _within(groups_may_send(ix, groups, src.interface.security_groups), net.cidr))
        if True in verdicts:
            found.update((int(dst.ip), dst.ip_text) for dst in peers)
        elif verdicts != (False, False):
            return None
    return _with_gateway(found, src.network, outside)


def _within(verdict, network_cidr):
    """A groups verdict (authz.groups_may_send) between two addresses of one network: ranges
    that hold for the whole network decide it."""
    if verdict is True or verdict is False:
        return verdict
    if any((out is None or network_cidr in out) and (into is None or network_cidr in into) for out, into in verdict):
        return True
    return verdict


def _for_address(ix: Index, src, outside: bool):
    mine = src.interface.security_groups
    found = {}
    for groups, peers in _peers_by_groups(ix, src.network.name).items():
        there, back = groups_may_send(ix, mine, groups), groups_may_send(ix, groups, mine)
        if there is True or back is True:
            found.update((int(dst.ip), dst.ip_text) for dst in peers)
        elif there is not False or back is not False:
            found.update((int(dst.ip), dst.ip_text) for dst in peers if may_send(ix, src, dst) or may_send(ix, dst, src))
    return _with_gateway(found, src.network, outside)


def _with_gateway(found: dict, net, outside: bool) -> tuple:
    if outside:
        found.setdefault(int(net.gateway_ip), str(net.gateway_ip))
    return tuple(found[k] for k in sorted(found))


def _peers_by_groups(ix: Index, network: str):
    """The network's endpoints by their interface's security groups."""
    def make():
        out = {}
        for ep in ix.by_network[network]:
            out.setdefault(ep.interface.security_groups, []).append(ep)
        return out
    return ix.cached(("peers_by_groups", network), make)
