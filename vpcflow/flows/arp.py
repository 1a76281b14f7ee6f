"""The ARP responder (seed 004): the switch answers an instance's ARP request itself.

The answer carries the destination's dummy MAC, and exists only for destinations the instance
may reach: addresses of its network that its security groups and theirs let it talk to (either
way: a server must resolve its clients to answer them), and the network's gateway when its rules
concern addresses outside the network. Any other request is dropped and counted
(arp_unanswered); no ARP ever leaves the host.

One flow per (asker, destination) pair would make the responder most of a host's flows. Askers
of one network that may reach the same destinations (mostly: the same security groups) form a
class, and each class is one conjunctive match: clause 1 is the askers (their zone and address),
clause 2 the destinations (the requested address in their network). The reply itself is the
same for every destination, since the dummy MAC is computed from the requested address.
"""
from __future__ import annotations

import zlib
from typing import Dict, List, Tuple

from vpcflow.flows.authz import groups_may_send, may_send, talks_outside
from vpcflow.flows.base import drop_flow
from vpcflow.flows.core import ETH_ARP, Conjunction, Flow, Load, Move, Output
from vpcflow.flows.index import Index
from vpcflow.flows.matches import arp
from vpcflow.flows.pipeline import REG_NETWORK, REG_SRC_ZONE
from vpcflow.topology.model import DUMMY_MAC_HIGH16, Switch

PRIORITY = 100
CONJ_SLOTS = 1 << 32


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
    zones = ix.zones(sw.name)
    classes: Dict[Tuple[int, tuple], List] = {}  # (network id, destinations) -> askers
    for src in ix.by_switch.get(sw.name, ()):
        classes.setdefault((src.network.id, _targets(ix, src)), []).append(src)
    ids = _class_ids(classes)
    request = (("eth_type", ETH_ARP), ("arp_op", 1))
    wanted: Dict[Tuple[int, str], List[Conjunction]] = {}  # (network id, destination) -> clause 2 of
    for (netid, targets), askers in classes.items():
        if not targets:
            continue  # may reach nothing: its requests go unanswered (the table's miss)
        cid = ids[(netid, targets)]
        yield Flow("arp_responder", PRIORITY, (("conj_id", cid),) + request[:1], computed_reply(), "arp",
                   f"net{netid}:class{cid}")
        for src in askers:
            yield Flow("arp_responder", PRIORITY, ((REG_SRC_ZONE, zones[src.interface.name]),) + request
                       + (("arp_spa", src.ip_text),), (Conjunction(cid, 1, 2),), "arp", src.interface.name)
        for text in targets:
            wanted.setdefault((netid, text), []).append(Conjunction(cid, 2, 2))
    for (netid, text), clauses in wanted.items():
        yield Flow("arp_responder", PRIORITY, ((REG_NETWORK, netid),) + request + (("arp_tpa", text),),
                   tuple(sorted(clauses, key=lambda c: c.id)), "arp", f"net{netid}->{text}")
    # A request for one's own address (a gratuitous ARP or a duplicate check) gets no answer.
    for ep in ix.by_switch.get(sw.name, ()):
        yield drop_flow("arp_responder", PRIORITY + 10,
                        {REG_NETWORK: ep.network.id, **arp(arp_spa=ep.ip_text, arp_tpa=ep.ip_text)},
                        "arp_own_address")


def _class_ids(classes) -> Dict[Tuple[int, tuple], int]:
    """A conjunction id per class, from what the class is (a class keeps its id while others
    come and go); a rare collision on one switch is resolved in a fixed order."""
    taken, ids = set(), {}
    for key in sorted(classes, key=lambda k: (k[0], k[1])):
        cid = zlib.crc32(repr(key).encode()) % CONJ_SLOTS or 1
        while cid in taken:
            cid = cid % (CONJ_SLOTS - 1) + 1
        taken.add(cid)
        ids[key] = cid
    return ids


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
