"""The ARP responder (seed 004): the switch answers an instance's ARP request itself.

The answer carries the destination's dummy MAC, and exists only for destinations the instance
may reach: addresses of its network that its security groups and theirs let it talk to (either
way: a server must resolve its clients to answer them), and the network's gateway when its rules
concern addresses outside the network. Any other request is dropped and counted
(arp_unanswered); no ARP ever leaves the host.
"""
from __future__ import annotations

from vpcflow.flows.authz import groups_may_send, may_send, talks_outside
from vpcflow.flows.base import drop_flow
from vpcflow.flows.core import ETH_ARP, Flow
from vpcflow.flows.index import Index
from vpcflow.flows.matches import arp, arp_reply
from vpcflow.flows.pipeline import REG_NETWORK, REG_SRC_ZONE
from vpcflow.topology.model import Switch, dummy_mac

PRIORITY = 100


def integration_flows(ix: Index, sw: Switch):
    zones = ix.zones(sw.name)
    # Per address, its reply actions and its match entry, shared by every asker: a switch has
    # thousands of these flows and little else.
    replies = ix.cached("arp_replies", dict)
    for src in ix.by_switch.get(sw.name, ()):
        asker = src.interface.name
        request = ((REG_SRC_ZONE, zones[asker]), ("eth_type", ETH_ARP), ("arp_op", 1), ("arp_spa", src.ip_text))
        for ip, text in _targets(ix, src):
            known = replies.get(text)
            if known is None:
                known = replies[text] = (arp_reply(ip, dummy_mac(ip)), (("arp_tpa", text),))
            reply, target = known
            yield Flow("arp_responder", PRIORITY, request + target, reply, "arp", f"{asker}->{text}")
    # A request for one's own address (a gratuitous ARP or a duplicate check) gets no answer.
    for ep in ix.by_switch.get(sw.name, ()):
        yield drop_flow("arp_responder", PRIORITY + 10,
                        {REG_NETWORK: ep.network.id, **arp(arp_spa=ep.ip_text, arp_tpa=ep.ip_text)},
                        "arp_own_address")


def _targets(ix: Index, src):
    """(address, text) of what src may ask for, in address order: the addresses of its network it
    may talk to either way, and the gateway when it talks outside."""
    net = src.network
    mine = src.interface.security_groups
    found = {}
    for groups, peers in _peers_by_groups(ix, net.name).items():
        there, back = groups_may_send(ix, mine, groups), groups_may_send(ix, groups, mine)
        if there is True or back is True:
            found.update((dst.ip, dst.ip_text) for dst in peers)
        elif there is not False or back is not False:
            found.update((dst.ip, dst.ip_text) for dst in peers if may_send(ix, src, dst) or may_send(ix, dst, src))
    found.pop(src.ip, None)
    if talks_outside(ix, src.interface, net.cidr) and net.gateway_ip not in found:
        found[net.gateway_ip] = str(net.gateway_ip)
    return sorted(found.items(), key=_address_order)


def _address_order(item):
    return int(item[0])  # IPv4 only: the order of the addresses, without netaddr's slower compare


def _peers_by_groups(ix: Index, network: str):
    """The network's endpoints by their interface's security groups."""
    def make():
        out = {}
        for ep in ix.by_network[network]:
            out.setdefault(ep.interface.security_groups, []).append(ep)
        return out
    return ix.cached(("peers_by_groups", network), make)
